//! Live server discovery: a backend's servers taken from a watched inventory
//! file ([`file`]), from DNS A/AAAA or SRV records ([`dns`]), or from keys
//! under an etcd prefix ([`etcd`]).
//!
//! A source runs as one task per backend ([`spawn`]). Each time its list of
//! servers changes it calls `Runtime::apply(Change::SetDiscovered { .. })`, the
//! same path as every other change. Servers missing from the new list get no new
//! traffic and their requests in flight finish (the runtime drains them).
//! A source that fails (bad file, DNS timeout) keeps the last good list and
//! reports the failure through [`status`] / [`last_error`].

pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod file;
pub mod inventory;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::types::{DiscoveryConfig, ServerConfig};
use crate::runtime::{Change, Runtime};

/// What a backend's discovery source last did, for the status API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// The source, e.g. `file /etc/fulcrum/web.json` or `dns web.internal`.
    pub source: String,
    /// Why the last attempt failed (with file:line:col for a bad inventory);
    /// `None` once an attempt succeeds again.
    pub last_error: Option<String>,
    /// When the source last produced a valid server list.
    pub last_success: Option<SystemTime>,
    /// Servers in the list last applied.
    pub servers: usize,
    /// How many times a changed list was applied.
    pub updates: u64,
    /// For a source with a connection (etcd): whether it can read the store
    /// now. `false`: the last known list stays in use until it can again.
    pub connected: Option<bool>,
    /// Entries skipped in the last list because their value was bad.
    pub skipped: u64,
    /// etcd: the store revision the applied list reflects.
    pub revision: Option<i64>,
}

struct Registered {
    runtime: Weak<Runtime>,
    /// Identifies the task that owns the entry, so a task that stops after its
    /// replacement started does not erase the replacement's status.
    task: u64,
    status: SourceStatus,
}

/// Status of every running source, keyed by (runtime address, backend). A
/// process normally has one runtime; tests have several.
static REGISTRY: LazyLock<Mutex<HashMap<(usize, String), Registered>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_TASK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, HashMap<(usize, String), Registered>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(rt: &Arc<Runtime>, backend: &str) -> (usize, String) {
    (Arc::as_ptr(rt) as usize, backend.to_string())
}

/// The status of `backend`'s discovery source in `rt`, if one is running.
pub fn status(rt: &Arc<Runtime>, backend: &str) -> Option<SourceStatus> {
    let reg = registry();
    let r = reg.get(&key(rt, backend))?;
    (r.runtime.as_ptr() == Arc::as_ptr(rt)).then(|| r.status.clone())
}

/// The status of every discovery source running in `rt`, sorted by backend.
pub fn all(rt: &Arc<Runtime>) -> Vec<(String, SourceStatus)> {
    let me = Arc::as_ptr(rt) as usize;
    let mut v: Vec<_> = registry()
        .iter()
        .filter(|((ptr, _), r)| *ptr == me && r.runtime.as_ptr() == Arc::as_ptr(rt))
        .map(|((_, backend), r)| (backend.clone(), r.status.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Like [`all`], for a `&Runtime` (the metrics renderer has no `Arc`).
pub fn all_of(rt: &Runtime) -> Vec<(String, SourceStatus)> {
    let me = rt as *const Runtime as usize;
    let mut v: Vec<_> = registry()
        .iter()
        .filter(|((ptr, _), r)| *ptr == me && r.runtime.strong_count() > 0)
        .map(|((_, backend), r)| (backend.clone(), r.status.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// True while `backend`'s discovery source has neither produced a first list nor
/// failed: its task has not registered yet, or its first read is under way. The
/// cold start ([`crate::health::warm`]) waits for it, so a new process (start or
/// hitless upgrade) does not say "ready" with a discovered backend still empty.
pub fn first_list_pending(rt: &Runtime, backend: &str) -> bool {
    let reg = registry();
    match reg.get(&(rt as *const Runtime as usize, backend.to_string())) {
        None => true,
        Some(r) => r.status.last_success.is_none() && r.status.last_error.is_none(),
    }
}

/// Why `backend`'s discovery source last failed, if its last attempt failed.
pub fn last_error(rt: &Arc<Runtime>, backend: &str) -> Option<String> {
    status(rt, backend).and_then(|s| s.last_error)
}

/// A running source's link to the runtime: applies lists and records status.
pub(crate) struct Reporter {
    rt: Arc<Runtime>,
    backend: String,
    /// The source, for the log (e.g. `file /etc/fulcrum/web.json`).
    source: String,
    task: u64,
    /// The list last applied; `None` before the first one.
    applied: Option<Vec<ServerConfig>>,
}

impl Reporter {
    fn new(rt: Arc<Runtime>, backend: String, source: String) -> Reporter {
        let task = NEXT_TASK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reg = registry();
        reg.retain(|_, r| r.runtime.strong_count() > 0);
        reg.insert(
            key(&rt, &backend),
            Registered {
                runtime: Arc::downgrade(&rt),
                task,
                status: SourceStatus {
                    source: source.clone(),
                    ..SourceStatus::default()
                },
            },
        );
        drop(reg);
        Reporter {
            rt,
            backend,
            source: format!("discovery {source}"),
            task,
            applied: None,
        }
    }

    fn edit(&self, f: impl FnOnce(&mut SourceStatus)) {
        if let Some(r) = registry().get_mut(&key(&self.rt, &self.backend)) {
            if r.task == self.task {
                f(&mut r.status);
            }
        }
    }

    /// The source produced a valid list: apply it when it differs from the
    /// last one applied. Returns false when the runtime refused it.
    pub(crate) async fn found(&mut self, servers: Vec<ServerConfig>) -> bool {
        if self.applied.as_ref() == Some(&servers) {
            self.edit(|s| {
                s.last_error = None;
                s.last_success = Some(SystemTime::now());
            });
            return true;
        }
        let change = Change::SetDiscovered {
            backend: self.backend.clone(),
            servers: servers.clone(),
        };
        match self.rt.apply_by(change, &self.source).await {
            Ok(generation) => {
                tracing::debug!(backend = %self.backend, servers = servers.len(), generation, "discovered servers applied");
                let n = servers.len();
                self.applied = Some(servers);
                self.edit(|s| {
                    s.last_error = None;
                    s.last_success = Some(SystemTime::now());
                    s.servers = n;
                    s.updates += 1;
                });
                true
            }
            Err(e) => {
                tracing::warn!(backend = %self.backend, error = %e, "discovered servers refused");
                self.failed(format!("the runtime refused the discovered servers: {e}"));
                false
            }
        }
    }

    /// The source failed; the last good list stays.
    pub(crate) fn failed(&self, error: String) {
        self.edit(|s| s.last_error = Some(error));
    }

    /// A connected source's state: reachable or not, values skipped, revision.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn etcd_state(&self, connected: Option<bool>, skipped: u64, revision: Option<i64>) {
        self.edit(|s| {
            s.connected = connected;
            s.skipped = skipped;
            if revision.is_some() {
                s.revision = revision;
            }
        });
    }

    /// A connected source lost its store; the last list stays.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn etcd_down(&self, error: String) {
        self.edit(|s| {
            s.connected = Some(false);
            s.last_error = Some(error);
        });
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let mut reg = registry();
        let k = key(&self.rt, &self.backend);
        if reg.get(&k).is_some_and(|r| r.task == self.task) {
            reg.remove(&k);
        }
    }
}

/// Run the discovery source of `backend` until `stop` turns true (or its sender is dropped),
/// applying every change of the server list through `rt.apply(Change::SetDiscovered{..})`.
///
/// The list is applied only when it differs from the one last applied by this
/// task. Stopping the task leaves the last applied list in place (a restarted
/// source replaces it with its first list).
pub fn spawn(
    rt: Arc<Runtime>,
    backend: String,
    cfg: DiscoveryConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if *stop.borrow_and_update() {
            return;
        }
        let source = match &cfg {
            DiscoveryConfig::File { path, .. } => format!("file {}", path.display()),
            DiscoveryConfig::Dns { name, record, .. } => match record {
                crate::config::types::DnsRecord::A => format!("dns {name}"),
                crate::config::types::DnsRecord::Srv => format!("srv {name}"),
            },
            DiscoveryConfig::Etcd(e) => format!("etcd {}", e.prefix),
        };
        let reporter = Reporter::new(rt, backend, source);
        let run = async move {
            match cfg {
                DiscoveryConfig::File { path, poll } => file::run(reporter, path, poll).await,
                DiscoveryConfig::Dns {
                    name,
                    record,
                    port,
                    interval,
                    resolver,
                } => {
                    let opts = dns::DnsSource {
                        name,
                        record,
                        port,
                        interval,
                        resolver,
                    };
                    dns::run(reporter, opts).await
                }
                #[cfg(feature = "etcd")]
                DiscoveryConfig::Etcd(e) => etcd::run(reporter, e).await,
                #[cfg(not(feature = "etcd"))]
                DiscoveryConfig::Etcd(_) => {
                    reporter.failed("this fulcrum was built without the `etcd` feature".into());
                    std::future::pending::<()>().await
                }
            }
        };
        tokio::select! {
            _ = run => {}
            _ = wait_stop(&mut stop) => {}
        }
    })
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
