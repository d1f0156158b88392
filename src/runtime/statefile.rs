//! The state file: runtime edits ([`Overlay`]s) kept across restarts, like
//! HAProxy's `server-state-file`.
//!
//! JSON, written atomically (a temporary file in the same directory, synced,
//! then renamed over the old one) so a crash leaves the old file or the new
//! one, never half of one. A file that is unreadable, corrupt, of another
//! format version or written for another configuration file is ignored with
//! one warning naming the file and the reason; the process starts from the
//! configuration alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::desired::{Overlay, Pinned};
use crate::config::types::{AdminState, ServerConfig};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: u32,
    /// The configuration file the edits belong to.
    config_file: Option<String>,
    backends: BTreeMap<String, BackendDoc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    added: Vec<ServerDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    removed: BTreeMap<String, SocketAddr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    admin: BTreeMap<String, PinDoc<Admin>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    weight: BTreeMap<String, PinDoc<u32>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDoc {
    name: String,
    address: SocketAddr,
    weight: u32,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    maxconn: Option<u32>,
    admin: Admin,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinDoc<T> {
    value: T,
    base: T,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Admin {
    Ready,
    Drain,
    Maint,
}

impl From<AdminState> for Admin {
    fn from(a: AdminState) -> Admin {
        match a {
            AdminState::Ready => Admin::Ready,
            AdminState::Drain => Admin::Drain,
            AdminState::Maint => Admin::Maint,
        }
    }
}

impl From<Admin> for AdminState {
    fn from(a: Admin) -> AdminState {
        match a {
            Admin::Ready => AdminState::Ready,
            Admin::Drain => AdminState::Drain,
            Admin::Maint => AdminState::Maint,
        }
    }
}

/// The bytes of a state file holding `overlays` for the configuration `config_file`.
pub fn encode(config_file: Option<&Path>, overlays: &BTreeMap<String, Overlay>) -> Vec<u8> {
    let parts: Vec<(&str, Vec<u8>)> = overlays
        .iter()
        .filter(|(_, o)| !o.is_empty())
        .map(|(name, o)| (name.as_str(), encode_backend(o)))
        .collect();
    assemble(config_file, parts.iter().map(|(n, b)| (*n, b.as_slice())))
}

/// One backend's part of the state file: its edits, encoded on their own so
/// a change re-encodes only the backend it touched ([`assemble`] joins the parts).
pub fn encode_backend(o: &Overlay) -> Vec<u8> {
    let doc = BackendDoc {
        added: o
            .added
            .iter()
            .map(|s| ServerDoc {
                name: s.name.clone(),
                address: s.address,
                weight: s.weight,
                backup: s.backup,
                maxconn: s.maxconn,
                admin: s.admin.into(),
            })
            .collect(),
        removed: o.removed.clone(),
        admin: o
            .admin
            .iter()
            .map(|(k, p)| {
                let pin = PinDoc {
                    value: p.value.into(),
                    base: p.base.into(),
                };
                (k.clone(), pin)
            })
            .collect(),
        weight: o
            .weight
            .iter()
            .map(|(k, p)| {
                let pin = PinDoc {
                    value: p.value,
                    base: p.base,
                };
                (k.clone(), pin)
            })
            .collect(),
    };
    serde_json::to_vec(&doc).unwrap_or_else(|_| b"{}".to_vec())
}

/// The state file made of backends' parts ([`encode_backend`]), in the
/// order given (by name, as a `BTreeMap` holds them). Copies bytes only.
pub fn assemble<'a>(
    config_file: Option<&Path>,
    parts: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<u8> {
    let head = serde_json::json!({
        "version": VERSION,
        "config_file": config_file.map(|p| p.display().to_string()),
    });
    let mut v = serde_json::to_vec(&head).unwrap_or_default();
    // `{"config_file":…,"version":1}` → reopen it for the backends.
    v.pop();
    v.extend_from_slice(b",\n\"backends\":{");
    for (i, (name, part)) in parts.into_iter().enumerate() {
        if i > 0 {
            v.push(b',');
        }
        v.extend_from_slice(b"\n");
        if let Ok(n) = serde_json::to_vec(name) {
            v.extend_from_slice(&n);
        }
        v.push(b':');
        v.extend_from_slice(part);
    }
    v.extend_from_slice(b"\n}}\n");
    v
}

/// Parse a state file's bytes written for `config_file`. `Err` says why it
/// cannot be used.
pub fn decode(
    bytes: &[u8],
    config_file: Option<&Path>,
) -> Result<BTreeMap<String, Overlay>, String> {
    let doc: FileDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if doc.version != VERSION {
        return Err(format!(
            "format version {} (this fulcrum writes {VERSION})",
            doc.version
        ));
    }
    let want = config_file.map(|p| p.display().to_string());
    if doc.config_file != want {
        return Err(format!(
            "written for configuration {}, not {}",
            doc.config_file.as_deref().unwrap_or("(none)"),
            want.as_deref().unwrap_or("(none)")
        ));
    }
    let mut out = BTreeMap::new();
    for (name, b) in doc.backends {
        let mut o = Overlay::default();
        for s in b.added {
            if !(1..=256).contains(&s.weight) {
                return Err(format!(
                    "server `{name}/{}`: weight {} out of range",
                    s.name, s.weight
                ));
            }
            o.added.push(ServerConfig {
                name: s.name,
                address: s.address,
                weight: s.weight,
                backup: s.backup,
                maxconn: s.maxconn.filter(|m| *m > 0),
                admin: s.admin.into(),
            });
        }
        o.removed = b.removed;
        o.admin = b
            .admin
            .into_iter()
            .map(|(k, p)| {
                let pin = Pinned {
                    value: p.value.into(),
                    base: p.base.into(),
                };
                (k, pin)
            })
            .collect();
        for (k, p) in b.weight {
            if !(1..=256).contains(&p.value) {
                return Err(format!(
                    "server `{name}/{k}`: weight {} out of range",
                    p.value
                ));
            }
            o.weight.insert(
                k,
                Pinned {
                    value: p.value,
                    base: p.base,
                },
            );
        }
        out.insert(name, o);
    }
    Ok(out)
}

/// Read the state file at `path`; a missing file is an empty state, any
/// other problem is logged once (naming the file and why) and ignored.
pub fn load(path: &Path, config_file: Option<&Path>) -> BTreeMap<String, Overlay> {
    match std::fs::read(path) {
        Ok(bytes) => match decode(&bytes, config_file) {
            Ok(o) => {
                let n: usize = o
                    .values()
                    .map(|o| o.added.len() + o.removed.len() + o.admin.len() + o.weight.len())
                    .sum();
                tracing::info!(file = %path.display(), edits = n, "runtime state loaded");
                o
            }
            Err(why) => {
                tracing::warn!(file = %path.display(), "state file ignored: {why}");
                BTreeMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "state file ignored: cannot read it: {e}");
            BTreeMap::new()
        }
    }
}

/// Write `bytes` to `path` atomically: temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut o = Overlay::default();
        let a = SocketAddr::from(([127, 0, 0, 1], 81));
        o.add(crate::config::validate::default_server("api1", a));
        o.remove("old", a, super::super::desired::ServerSource::File);
        o.set_admin("w2", AdminState::Drain, AdminState::Ready, false);
        o.set_weight("w3", 9, 1, false);
        let mut all = BTreeMap::new();
        all.insert("web".to_string(), o.clone());
        all.insert("empty".to_string(), Overlay::default());
        let cfg = Path::new("/etc/fulcrum/fulcrum.toml");
        let bytes = encode(Some(cfg), &all);
        let back = decode(&bytes, Some(cfg)).unwrap();
        assert_eq!(back.get("web"), Some(&o));
        assert!(!back.contains_key("empty"));
        let other = decode(&bytes, Some(Path::new("/other.toml"))).unwrap_err();
        assert!(other.contains("/other.toml"), "{other}");
        assert!(decode(b"{ not json", Some(cfg))
            .unwrap_err()
            .contains("not a state file"));
        assert!(decode(
            b"{\"version\":9,\"config_file\":null,\"backends\":{}}",
            None
        )
        .unwrap_err()
        .contains("version 9"));
    }

    #[test]
    fn parts_assemble_into_the_file_encode_writes() {
        let a = SocketAddr::from(([127, 0, 0, 1], 81));
        let mut all = BTreeMap::new();
        for (i, name) in ["b\"q", "web", "zz"].iter().enumerate() {
            let mut o = Overlay::default();
            o.set_admin("w2", AdminState::Drain, AdminState::Ready, false);
            o.set_weight(&format!("w{i}"), 9, 1, false);
            o.remove("old", a, super::super::desired::ServerSource::File);
            all.insert(name.to_string(), o);
        }
        let parts: BTreeMap<&str, Vec<u8>> = all
            .iter()
            .map(|(n, o)| (n.as_str(), encode_backend(o)))
            .collect();
        let bytes = assemble(None, parts.iter().map(|(n, b)| (*n, b.as_slice())));
        assert_eq!(bytes, encode(None, &all));
        assert_eq!(decode(&bytes, None).unwrap(), all);
        let none = assemble(None, std::iter::empty());
        assert!(decode(&none, None).unwrap().is_empty());
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
