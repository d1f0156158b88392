//! Inventory-file discovery: poll the file and apply its server list when it changes.
//!
//! Polling (modification time, size and a hash of the content) instead of
//! inotify keeps this portable and also catches editors that replace the file
//! by renaming a new one over it. A bad file changes nothing: its errors are
//! logged with file:line:col and kept for the status API until the file is
//! fixed. A missing file is a warning: no servers until it appears (or, if it
//! disappears later, the last good list stays).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::inventory::{self, Format};
use super::Reporter;

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    size: u64,
    hash: u64,
}

/// What a poll found.
#[derive(Debug)]
enum Seen {
    /// The file could not be read (missing, permissions…).
    Unreadable(String),
    /// The file's current fingerprint and content.
    Content(Fingerprint, String),
}

async fn look(path: &Path) -> Seen {
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) => return Seen::Unreadable(e.to_string()),
    };
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => return Seen::Unreadable(e.to_string()),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let fp = Fingerprint {
        modified: meta.modified().ok(),
        size: bytes.len() as u64,
        hash: h.finish(),
    };
    Seen::Content(fp, String::from_utf8_lossy(&bytes).into_owned())
}

/// Poll `path` every `poll` and apply its servers until the task is dropped.
pub(crate) async fn run(mut reporter: Reporter, path: PathBuf, poll: Duration) {
    let poll = poll.max(Duration::from_millis(10));
    let label = path.display().to_string();
    let format = Format::of_path(&path);
    let mut last: Option<Fingerprint> = None;
    let mut last_unreadable: Option<String> = None;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match look(&path).await {
            Seen::Unreadable(e) => {
                if last_unreadable.as_deref() != Some(e.as_str()) {
                    if last.is_none() {
                        tracing::warn!(file = %label, error = %e, "inventory file not readable; no servers discovered yet");
                    } else {
                        tracing::warn!(file = %label, error = %e, "inventory file not readable; keeping the last good server list");
                    }
                    reporter.failed(format!("{label}: cannot read the inventory file: {e}"));
                    last_unreadable = Some(e);
                }
                // Re-read once it comes back, even if it comes back unchanged.
                last = None;
            }
            Seen::Content(fp, text) => {
                last_unreadable = None;
                if last.as_ref() == Some(&fp) {
                    continue;
                }
                match inventory::parse(&text, &label, format) {
                    Ok(servers) => {
                        // A refusal is logged and reported by `found`; retrying
                        // the same content would only repeat it.
                        reporter.found(servers).await;
                        last = Some(fp);
                    }
                    Err(errors) => {
                        let msg = errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("\n");
                        tracing::warn!(file = %label, "bad inventory file, nothing changed:\n{msg}");
                        reporter.failed(msg);
                        last = Some(fp);
                    }
                }
            }
        }
    }
}
