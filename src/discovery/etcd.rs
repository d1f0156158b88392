//! etcd discovery: one key per server under a prefix, read consistently once
//! and then watched (not polled).
//!
//! Key `PREFIX/NAME`, value JSON:
//! `{"address":"10.0.0.5:8080","weight":1,"state":"ready","name":"web1","backup":false,"metadata":{…}}`
//! — only `address` is required; `weight` defaults to 1, `state` (`ready`,
//! `drain`, `maint`) to ready, `name` to the key's last segment; `metadata`
//! and unknown fields are ignored. A value that does not parse is skipped
//! with a warning and counted in the status (`skipped`); it never drops the
//! other servers. A deleted key (e.g. its lease expired because the app box
//! died) removes the server: it gets no new requests and those in flight
//! finish (the runtime drains servers that vanish from a discovered list).
//!
//! The watch starts at the read's revision + 1 and a broken watch resumes from
//! the last revision seen, on the next member when one fails; a compacted
//! revision means a fresh read. While etcd is unreachable or has no quorum the
//! last applied list stays (the status says `store_reachable: false`, the
//! `fulcrum_discovery_source_up` metric is 0, and a warning is logged once
//! per kind of failure); on return the source resyncs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::inventory::valid_name;
use super::Reporter;
use crate::config::types::{AdminState, EtcdConfig, ServerConfig};

/// The JSON value of one server's key.
#[derive(Debug, Deserialize)]
struct Entry {
    address: String,
    weight: Option<i64>,
    state: Option<String>,
    name: Option<String>,
    backup: Option<bool>,
    maxconn: Option<i64>,
    /// Free-form; carried by registrations for people and tools, unused here.
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
}

/// Parse one key's value into a server. `key` is the key without the prefix.
pub fn parse_entry(key: &str, value: &[u8]) -> Result<ServerConfig, String> {
    let e: Entry =
        serde_json::from_slice(value).map_err(|err| format!("key `{key}`: bad JSON: {err}"))?;
    let name = e.name.unwrap_or_else(|| {
        key.rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or(key)
            .to_string()
    });
    if !valid_name(&name) {
        return Err(format!(
            "key `{key}`: bad server name `{name}` (letters, digits, '-', '_', '.'; at most 64)"
        ));
    }
    let address: SocketAddr = e
        .address
        .parse()
        .map_err(|_| format!("key `{key}`: bad address `{}`; write IP:PORT", e.address))?;
    let weight = e.weight.unwrap_or(1);
    if !(1..=256).contains(&weight) {
        return Err(format!(
            "key `{key}`: weight {weight} is out of range 1..=256"
        ));
    }
    let admin = match e.state.as_deref().unwrap_or("ready") {
        "ready" => AdminState::Ready,
        "drain" => AdminState::Drain,
        "maint" => AdminState::Maint,
        other => {
            return Err(format!(
                "key `{key}`: bad state `{other}`; use ready, drain or maint"
            ))
        }
    };
    let maxconn = match e.maxconn {
        None => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(n) => return Err(format!("key `{key}`: maxconn {n} must be at least 1")),
    };
    Ok(ServerConfig {
        name,
        address,
        weight: weight as u32,
        backup: e.backup.unwrap_or(false),
        maxconn,
        admin,
    })
}

/// The servers of a whole prefix, sorted by name (a duplicate name: the
/// first key wins), and the errors of the values skipped.
pub fn parse_all(keys: &BTreeMap<String, Vec<u8>>) -> (Vec<ServerConfig>, Vec<String>) {
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(keys.len());
    let mut errors = Vec::new();
    for (k, v) in keys {
        match parse_entry(k, v) {
            Ok(s) => servers.push(s),
            Err(e) => errors.push(e),
        }
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    let before = servers.len();
    servers.dedup_by(|a, b| a.name == b.name);
    if servers.len() != before {
        errors.push(format!(
            "{} keys repeat a server name; the first of each kept",
            before - servers.len()
        ));
    }
    (servers, errors)
}

/// The client's connect options from the config (reads the password file).
pub fn connect_options(cfg: &EtcdConfig) -> Result<crate::cluster::client::ConnectOptions, String> {
    let password = match &cfg.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    Ok(crate::cluster::client::ConnectOptions {
        endpoints: cfg.endpoints.clone(),
        username: cfg.username.clone(),
        password,
        tls: cfg.tls.as_ref().map(|t| crate::cluster::client::TlsFiles {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
    })
}

/// Mirror the prefix and apply each new list until the task is dropped.
pub(crate) async fn run(mut reporter: Reporter, cfg: EtcdConfig) {
    // The mirror publishes its latest parse here; the applier takes the
    // newest one, so a burst of events (1 000 registrations) costs one apply.
    let (tx, mut rx) = watch::channel::<Option<(Vec<ServerConfig>, Vec<String>, i64)>>(None);
    let prefix = cfg.prefix.clone();
    let (up_tx, mut up_rx) = watch::channel::<Result<(), String>>(Ok(()));
    let mirror = async move {
        let mut backoff = Duration::from_millis(100);
        let mut mirror: Option<crate::cluster::client::PrefixMirror> = None;
        loop {
            let m = match &mut mirror {
                Some(m) => m,
                None => match connect_options(&cfg) {
                    Ok(opts) => mirror.insert(crate::cluster::client::PrefixMirror::new(
                        opts,
                        cfg.prefix.clone(),
                    )),
                    Err(e) => {
                        let _ = up_tx.send(Err(e));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            // The password file is read at each connect, so rotating it needs no reload.
            if let Ok(opts) = connect_options(&cfg) {
                m.set_options(opts);
            }
            let started = tokio::time::Instant::now();
            let mut on = |m: &crate::cluster::client::PrefixMirror| {
                let (servers, errors) = parse_all(&m.keys);
                let _ = tx.send(Some((servers, errors, m.revision)));
                let _ = up_tx.send(Ok(()));
            };
            let why = m.run_once(&mut on).await;
            let _ = up_tx.send(Err(why));
            // A watch that ran a while before breaking retries at once.
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    };
    let apply = async move {
        let mut last_skipped: Vec<String> = Vec::new();
        let mut last_down: Option<String> = None;
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() { return; }
                    let Some((servers, errors, revision)) = rx.borrow_and_update().clone() else { continue };
                    if errors != last_skipped {
                        for e in &errors {
                            tracing::warn!(prefix = %prefix, error = %e, "etcd discovery: value skipped");
                        }
                        last_skipped = errors.clone();
                    }
                    reporter.etcd_state(Some(true), errors.len() as u64, Some(revision));
                    reporter.found(servers).await;
                    if last_down.take().is_some() {
                        tracing::info!(prefix = %prefix, revision, "etcd discovery resynced");
                    }
                }
                r = up_rx.changed() => {
                    if r.is_err() { return; }
                    let state = up_rx.borrow_and_update().clone();
                    match state {
                        Ok(()) => {}
                        Err(e) => {
                            if last_down.is_none() {
                                tracing::warn!(prefix = %prefix, error = %e, "etcd unreachable or without quorum; keeping the last known servers");
                            }
                            reporter.etcd_down(e.clone());
                            last_down = Some(e);
                        }
                    }
                }
            }
        }
    };
    tokio::join!(mirror, apply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_defaults() {
        let s = parse_entry("web1", br#"{"address":"127.0.0.1:80"}"#).unwrap();
        assert_eq!(s.name, "web1");
        assert_eq!(s.weight, 1);
        assert_eq!(s.admin, AdminState::Ready);
        let s = parse_entry(
            "x",
            br#"{"address":"127.0.0.1:80","weight":7,"state":"drain","name":"a1","metadata":{"az":"b"}}"#,
        )
        .unwrap();
        assert_eq!(
            (s.name.as_str(), s.weight, s.admin),
            ("a1", 7, AdminState::Drain)
        );
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            &b"nope"[..],
            br#"{"weight":1}"#,
            br#"{"address":"web:80"}"#,
            br#"{"address":"127.0.0.1:80","weight":0}"#,
            br#"{"address":"127.0.0.1:80","state":"down"}"#,
            br#"{"address":"127.0.0.1:80","name":"a b"}"#,
        ] {
            assert!(
                parse_entry("k", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_bad_value_skips_only_itself() {
        let mut keys = BTreeMap::new();
        keys.insert("a".to_string(), br#"{"address":"127.0.0.1:1"}"#.to_vec());
        keys.insert("b".to_string(), b"{".to_vec());
        keys.insert("c".to_string(), br#"{"address":"127.0.0.1:3"}"#.to_vec());
        let (servers, errors) = parse_all(&keys);
        assert_eq!(servers.len(), 2);
        assert_eq!(errors.len(), 1);
    }
}
