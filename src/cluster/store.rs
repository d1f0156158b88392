//! Shared runtime state in etcd (`[cluster] store = { etcd = { … } }`).
//!
//! With a store, an admin change (`ctl drain`, weight, maint, add, remove)
//! is not applied to this node alone: it is checked against this node's
//! state, written to etcd under `PREFIX/BACKEND/SERVER` (default prefix
//! `/fulcrum/state/`), and every node — this one included — applies it from
//! its watch. The API answers once this node has applied it. A node that was
//! down reads every record at start (a consistent read) and so catches up.
//!
//! A record is JSON, every field optional:
//! `{"state":"drain","weight":5}` overrides a server's admin state / weight;
//! `"server":{"address":…,"weight":…,"backup":…,"maxconn":…}` adds the server
//! where it is missing; `"removed":true` removes it. Deleting a record stops
//! the override (the running state stays until the next reload).
//!
//! When etcd cannot take the write (unreachable, no quorum) the change is
//! refused with 503 and applied nowhere, so nodes never diverge; the running
//! state stays and the store reconnects and resyncs in the background
//! (status `cluster_store`, metric `fulcrum_cluster_store_up`, a log line).
//!
//! Writes keep one connection to the member that last worked (starting from
//! the member the watch is on), and move to the next member when a call on
//! it fails: a dead first member costs one failed attempt, not one per write.
//!
//! A reload that changes `[cluster] store` (endpoints, prefix, auth, TLS, or
//! adds or removes it) restarts the store with the new settings; the running
//! state stays meanwhile, and the new prefix's records are applied from its
//! first read. New settings that cannot be used (an unreadable password file)
//! keep the running store, with an error naming the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::client::{Client, ConnectOptions, PrefixMirror};
use crate::config::types::{AdminState, EtcdConfig, ServerConfig};
use crate::runtime::{ApplyError, Change, Runtime};

/// One server's record under the store prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Set for a server added through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<AddedServer>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A server added through the API, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedServer {
    pub address: std::net::SocketAddr,
    pub weight: u32,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub maxconn: Option<u32>,
}

/// The store's state, for the status API and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStatus {
    /// `etcd PREFIX`.
    pub source: String,
    /// Whether the store can be read now.
    pub reachable: bool,
    /// Why it cannot, when it cannot.
    pub last_error: Option<String>,
    /// The revision last applied.
    pub revision: i64,
    /// Records applied so far.
    pub applied: u64,
    /// Records skipped because their value was bad.
    pub skipped: u64,
}

struct Store {
    runtime: Weak<Runtime>,
    prefix: String,
    opts: ConnectOptions,
    status: Mutex<StoreStatus>,
    /// The revision applied locally, to answer a write once it took effect here.
    applied_rev: watch::Sender<i64>,
    /// The connection writes and their reads use, to the member that last worked.
    writer: tokio::sync::Mutex<Option<Client>>,
    /// The member to try first when `writer` has no connection: the one after
    /// a member that failed, or the one the watch is on.
    next_member: AtomicUsize,
}

impl Store {
    /// Run `call` on the member that last worked (kept connected); when that
    /// fails, or there is no connection yet, connect from the next member on
    /// and run it there. At most two attempts, so a write without quorum is
    /// refused in bounded time.
    async fn with_client<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let mut slot = self.writer.lock().await;
        let mut last = String::new();
        for _ in 0..2 {
            let c = match slot.clone() {
                Some(c) => c,
                None => {
                    let start = self.next_member.load(Ordering::Relaxed);
                    match Client::connect(&self.opts, start).await {
                        Ok(c) => c,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    }
                }
            };
            match call(c.clone()).await {
                Ok(v) => {
                    *slot = Some(c);
                    return Ok(v);
                }
                Err(e) => {
                    tracing::info!(endpoint = %c.endpoint, error = %e, "cluster store: a call failed on this member; the next write tries the next one");
                    *slot = None;
                    self.next_member.store(c.index + 1, Ordering::Relaxed);
                    last = format!("{}: {e}", c.endpoint);
                }
            }
        }
        Err(last)
    }
}

static STORES: LazyLock<Mutex<HashMap<usize, Arc<Store>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn stores() -> std::sync::MutexGuard<'static, HashMap<usize, Arc<Store>>> {
    STORES.lock().unwrap_or_else(|p| p.into_inner())
}

fn store_of(rt: &Runtime) -> Option<Arc<Store>> {
    let s = stores().get(&(rt as *const Runtime as usize)).cloned()?;
    (s.runtime.strong_count() > 0).then_some(s)
}

/// The store's status for `rt`, when it has one.
pub fn status(rt: &Runtime) -> Option<StoreStatus> {
    store_of(rt).map(|s| s.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

fn state_name(a: AdminState) -> &'static str {
    match a {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

fn parse_state(s: &str) -> Option<AdminState> {
    match s {
        "ready" => Some(AdminState::Ready),
        "drain" => Some(AdminState::Drain),
        "maint" => Some(AdminState::Maint),
        _ => None,
    }
}

/// Start the store for `rt` when `cfg` is set (read every record, apply them,
/// then watch), and follow `[cluster] store` across reloads: a reload that
/// changes it restarts the store with the new settings, adds it or removes it.
pub fn spawn(rt: &Arc<Runtime>, cfg: Option<&EtcdConfig>) -> Result<(), String> {
    let mut running: Option<(EtcdConfig, tokio::task::AbortHandle)> = match cfg {
        Some(c) => Some((c.clone(), start(rt, c)?)),
        None => None,
    };
    let mut reloads = rt.watch_reloads();
    reloads.borrow_and_update();
    let weak = Arc::downgrade(rt);
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let want = reloads.borrow_and_update().cluster.store.clone();
            if want.as_ref() == running.as_ref().map(|(c, _)| c) {
                continue;
            }
            let Some(rt) = weak.upgrade() else { break };
            match want {
                None => {
                    if let Some((old, task)) = running.take() {
                        task.abort();
                        stores().remove(&(Arc::as_ptr(&rt) as usize));
                        tracing::info!(prefix = %old.prefix, "[cluster] store removed by the reload: admin changes apply to this node only; the running state stays");
                    }
                }
                Some(new) => match start(&rt, &new) {
                    Ok(task) => {
                        if let Some((_, old)) = running.take() {
                            old.abort();
                        }
                        tracing::info!(prefix = %new.prefix, endpoints = ?new.endpoints, "[cluster] store changed by the reload: store restarted with the new settings; the running state stays until its first read");
                        running = Some((new, task));
                    }
                    Err(e) => tracing::error!(
                        "[cluster] store: the reloaded settings cannot be used ({e}); the running store keeps its old settings"
                    ),
                },
            }
        }
        if let Some((_, task)) = running {
            task.abort();
        }
    });
    Ok(())
}

/// Register a store with `cfg` for `rt` (replacing any other) and start its watch.
fn start(rt: &Arc<Runtime>, cfg: &EtcdConfig) -> Result<tokio::task::AbortHandle, String> {
    let opts = crate::discovery::etcd::connect_options(cfg)?;
    let (applied_rev, _) = watch::channel(0);
    let store = Arc::new(Store {
        runtime: Arc::downgrade(rt),
        prefix: cfg.prefix.clone(),
        opts,
        status: Mutex::new(StoreStatus {
            source: format!("etcd {}", cfg.prefix),
            ..StoreStatus::default()
        }),
        applied_rev,
        writer: tokio::sync::Mutex::new(None),
        next_member: AtomicUsize::new(0),
    });
    {
        let mut all = stores();
        all.retain(|_, s| s.runtime.strong_count() > 0);
        all.insert(Arc::as_ptr(rt) as usize, store.clone());
    }
    Ok(tokio::spawn(watch_loop(store)).abort_handle())
}

async fn watch_loop(store: Arc<Store>) {
    let mut mirror = PrefixMirror::new(store.opts.clone(), store.prefix.clone());
    // The records as last applied, to apply only what changed.
    let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let (tx, mut rx) = watch::channel::<Option<(BTreeMap<String, Vec<u8>>, i64)>>(None);
    let (down_tx, mut down_rx) = watch::channel::<Option<String>>(None);
    let mirror_task = async {
        loop {
            let mut on = |m: &PrefixMirror| {
                let _ = tx.send(Some((m.keys.clone(), m.revision)));
                let _ = down_tx.send(None);
                // Writes without a connection start at the member the watch reads from.
                if let Some(i) = m.member() {
                    store.next_member.store(i, Ordering::Relaxed);
                }
            };
            let why = mirror.run_once(&mut on).await;
            let _ = down_tx.send(Some(why));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let apply_task = async {
        let mut was_down = false;
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() { return; }
                    let Some((keys, rev)) = rx.borrow_and_update().clone() else { continue };
                    let Some(rt) = store.runtime.upgrade() else { return };
                    let (applied, skipped) = apply_records(&rt, &seen, &keys).await;
                    seen = keys;
                    {
                        let mut st = store.status.lock().unwrap_or_else(|p| p.into_inner());
                        st.reachable = true;
                        st.last_error = None;
                        st.revision = rev;
                        st.applied += applied;
                        st.skipped = skipped;
                    }
                    store.applied_rev.send_replace(rev);
                    if was_down {
                        tracing::info!(prefix = %store.prefix, revision = rev, "cluster store resynced");
                        was_down = false;
                    }
                }
                r = down_rx.changed() => {
                    if r.is_err() { return; }
                    let Some(why) = down_rx.borrow_and_update().clone() else { continue };
                    if !was_down {
                        tracing::warn!(prefix = %store.prefix, error = %why, "cluster store unreachable; keeping the running state, admin changes refused until it returns");
                        was_down = true;
                    }
                    let mut st = store.status.lock().unwrap_or_else(|p| p.into_inner());
                    st.reachable = false;
                    st.last_error = Some(why);
                }
            }
        }
    };
    tokio::join!(mirror_task, apply_task);
}

/// Apply the records that differ from `before`; returns (applied, skipped).
async fn apply_records(
    rt: &Arc<Runtime>,
    before: &BTreeMap<String, Vec<u8>>,
    now: &BTreeMap<String, Vec<u8>>,
) -> (u64, u64) {
    let mut applied = 0;
    let mut skipped = 0;
    for (key, value) in now {
        if before.get(key) == Some(value) {
            continue;
        }
        let Some((backend, server)) = key.split_once('/') else {
            skipped += 1;
            continue;
        };
        let record: Record = match serde_json::from_slice(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cluster store: bad record skipped");
                skipped += 1;
                continue;
            }
        };
        for change in changes_for(rt, backend, server, &record) {
            match rt.apply_by(change, "etcd cluster store").await {
                Ok(_) => applied += 1,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "cluster store: record not applicable here")
                }
            }
        }
    }
    (applied, skipped)
}

/// The changes that bring this node in line with `record`.
fn changes_for(rt: &Runtime, backend: &str, server: &str, r: &Record) -> Vec<Change> {
    let snap = rt.snapshot();
    let live = snap.server(backend, server);
    let mut out = Vec::new();
    if r.removed {
        if live.is_some() {
            // The node that took the change checked it; here it just goes
            // (its requests in flight finish).
            out.push(Change::RemoveServer {
                backend: backend.into(),
                server: server.into(),
                force: true,
            });
        }
        return out;
    }
    let state = r.state.as_deref().and_then(parse_state);
    if live.is_none() {
        if let Some(a) = &r.server {
            out.push(Change::AddServer {
                backend: backend.into(),
                server: ServerConfig {
                    name: server.into(),
                    address: a.address,
                    weight: r.weight.unwrap_or(a.weight),
                    backup: a.backup,
                    maxconn: a.maxconn,
                    admin: state.unwrap_or(AdminState::Ready),
                },
            });
        }
        return out;
    }
    if let Some(s) = live {
        if let Some(st) = state {
            if s.admin() != st {
                out.push(Change::SetAdmin {
                    backend: backend.into(),
                    server: server.into(),
                    state: st,
                });
            }
        }
        if let Some(w) = r.weight {
            if s.weight() != w {
                out.push(Change::SetWeight {
                    backend: backend.into(),
                    server: server.into(),
                    weight: w,
                });
            }
        }
    }
    out
}

/// Why a change could not go through the store.
fn unavailable(e: String) -> ApplyError {
    ApplyError::Unavailable(format!(
        "cluster store unavailable, change not applied on any node: {e}"
    ))
}

/// Apply an admin change: through the store when `rt` has one, else locally.
/// The one entry point the admin API uses for changes.
pub async fn apply(rt: &Arc<Runtime>, change: Change, by: &str) -> Result<u64, ApplyError> {
    let Some(store) = store_of(rt) else {
        return rt.apply_by(change, by).await;
    };
    let (backend, server, record) = record_for(rt, &store, &change).await?;
    let key = format!("{}{backend}/{server}", store.prefix);
    let value = serde_json::to_vec(&record).map_err(|e| ApplyError::Invalid(e.to_string()))?;
    let rev = store
        .with_client(|c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(&key, &value, 0).await }
        })
        .await
        .map_err(unavailable)?;
    // Answer once this node applied it, like a local change.
    let mut applied = store.applied_rev.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while *applied.borrow_and_update() < rev {
            if applied.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(key = %key, revision = rev, "cluster store: change written but not yet seen by this node's watch");
    }
    Ok(rt.generation())
}

/// Check `change` against this node and build the record to write: the
/// stored record for that server (if any) with the change merged in.
async fn record_for(
    rt: &Arc<Runtime>,
    store: &Store,
    change: &Change,
) -> Result<(String, String, Record), ApplyError> {
    let snap = rt.snapshot_arc();
    let known = |b: &str, s: &str| -> Result<(), ApplyError> {
        crate::runtime::find_server(&snap, b, s).map(|_| ())
    };
    let (backend, server) = match change {
        Change::SetAdmin {
            backend, server, ..
        }
        | Change::SetWeight {
            backend, server, ..
        }
        | Change::RemoveServer {
            backend, server, ..
        } => {
            known(backend, server)?;
            (backend.clone(), server.clone())
        }
        Change::AddServer { backend, server } => {
            crate::runtime::find_backend(&snap, backend)?;
            if snap.server(backend, &server.name).is_some() {
                return Err(ApplyError::Invalid(format!(
                    "backend `{backend}` already has a server named `{}`",
                    server.name
                )));
            }
            (backend.clone(), server.name.clone())
        }
        // Reloads and discovery stay local.
        Change::Reload(_) | Change::ReloadReset(_) | Change::SetDiscovered { .. } => {
            return Err(ApplyError::Invalid(
                "only server changes go through the cluster store".into(),
            ))
        }
    };
    let key = format!("{}{backend}/{server}", store.prefix);
    let (_, kv) = store
        .with_client(|c| {
            let key = key.clone();
            async move { c.get(&key).await }
        })
        .await
        .map_err(unavailable)?;
    let mut record: Record = kv
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .unwrap_or_default();
    match change {
        Change::SetAdmin { state, .. } => record.state = Some(state_name(*state).into()),
        Change::SetWeight { weight, .. } => {
            if !(1..=256).contains(weight) {
                return Err(ApplyError::Invalid(format!(
                    "weight {weight} is out of range; use 1..=256 (to stop traffic, drain the server)"
                )));
            }
            record.weight = Some(*weight);
        }
        Change::RemoveServer { force, .. } => {
            if let Some(s) = snap.server(&backend, &server) {
                let active = s.active();
                if active > 0 && !force {
                    return Err(ApplyError::Busy {
                        backend,
                        server,
                        active,
                    });
                }
            }
            record = Record {
                removed: true,
                ..Record::default()
            };
        }
        Change::AddServer { server: s, .. } => {
            if !(1..=256).contains(&s.weight) {
                return Err(ApplyError::Invalid(format!(
                    "weight {} is out of range; use 1..=256",
                    s.weight
                )));
            }
            record = Record {
                state: Some(state_name(s.admin).into()),
                weight: None,
                server: Some(AddedServer {
                    address: s.address,
                    weight: s.weight,
                    backup: s.backup,
                    maxconn: s.maxconn,
                }),
                removed: false,
            };
        }
        Change::Reload(_) | Change::ReloadReset(_) | Change::SetDiscovered { .. } => {}
    }
    Ok((backend, server, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_compactly() {
        let r = Record {
            state: Some("drain".into()),
            ..Record::default()
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"state":"drain"}"#);
        let back: Record = serde_json::from_str(r#"{"weight":5,"removed":true}"#).unwrap();
        assert_eq!(back.weight, Some(5));
        assert!(back.removed);
    }
}
