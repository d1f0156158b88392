//! Live state: the snapshot read per request, per-server atomics, the
//! desired state (sources merged with the runtime overlay), and
//! [`Runtime::apply`], the one function through which every change goes.
//!
//! A change costs what it touches (see [`Change`]): admin state and weight
//! are atomic stores plus a record in the overlay; adding or removing a
//! server rebuilds that backend; a reload diffs the new file against the
//! running snapshot and keeps every backend and frontend that did not change
//! (their servers, checkers and listeners stay as they are). Runtime edits are
//! kept in a state file ([`statefile`]) so a restart starts from them.

pub mod build;
pub mod change;
pub mod conns;
pub mod desired;
pub mod server;
pub mod snapshot;
pub mod statefile;
pub mod stats;
pub mod tasks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::config::types::{AdminState, BackendConfig, Config, ServerConfig};

pub use change::Change;
pub use conns::ConnTracker;
pub use desired::{Overlay, ServerSource};
pub use server::{ServerKey, ServerState};
pub use snapshot::{BackendRt, FrontendRt, RouteRt, Snapshot};
pub use tasks::Tasks;

use desired::Member;

/// Why a change was refused. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown backend `{name}`; backends: {}", name_list(known))]
    UnknownBackend { name: String, known: Vec<String> },
    #[error(
        "unknown server `{backend}/{server}`; servers of `{backend}`: {}",
        name_list(known)
    )]
    UnknownServer {
        backend: String,
        server: String,
        known: Vec<String>,
    },
    #[error("server `{backend}/{server}` still has {active} active connection(s); drain it first or use force")]
    Busy {
        backend: String,
        server: String,
        active: u32,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr} for frontend `{frontend}`: {source}")]
    Bind {
        addr: SocketAddr,
        frontend: String,
        source: std::io::Error,
    },
    /// The shared store a change must go through cannot take it now.
    #[error("{0}")]
    Unavailable(String),
}

/// "a, b, c" — at most 20 names, then how many more.
fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    if names.is_empty() {
        return "(none)".to_string();
    }
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" … ({} more)", names.len() - SHOWN));
    }
    s
}

/// The backend `name` of `snap`, or the error listing the known ones.
pub fn find_backend<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Arc<BackendRt>, ApplyError> {
    snap.backends
        .get(name)
        .ok_or_else(|| ApplyError::UnknownBackend {
            name: name.to_string(),
            known: snap.backends.keys().cloned().collect(),
        })
}

/// The server `backend/server` of `snap`, or the error listing the known names.
pub fn find_server<'a>(
    snap: &'a Snapshot,
    backend: &str,
    server: &str,
) -> Result<&'a Arc<ServerState>, ApplyError> {
    let b = find_backend(snap, backend)?;
    b.servers
        .iter()
        .find(|s| s.name() == server)
        .ok_or_else(|| ApplyError::UnknownServer {
            backend: backend.to_string(),
            server: server.to_string(),
            known: b.servers.iter().map(|s| s.name().to_string()).collect(),
        })
}

fn admin_name(a: AdminState) -> &'static str {
    match a {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

/// What only `apply` touches (under the control lock).
struct Control {
    /// The supervisor's tasks, told of every change.
    tasks: Box<dyn Tasks>,
    /// Runtime edits by backend.
    overlay: BTreeMap<String, Overlay>,
    /// Servers found by each backend's discovery source, by backend name.
    discovered: HashMap<String, Vec<ServerConfig>>,
    /// Each backend's part of the state file, as last encoded: a change
    /// re-encodes the backend it touched only (`statefile::assemble`).
    encoded: BTreeMap<String, Vec<u8>>,
}

/// Where runtime edits are written; writes are coalesced by a background task.
struct Persist {
    path: PathBuf,
    config_file: Option<PathBuf>,
    pending: std::sync::Mutex<Option<Vec<u8>>>,
    /// Held from taking the pending bytes to the end of their write: the
    /// writer task and a flush (`Runtime::flush_state`, before an upgrade)
    /// never write at once, so the file always ends with the newest edits
    /// and a flush returns only once they are on disk.
    writing: std::sync::Mutex<()>,
    /// Wakes the writer task (capacity one: a pending wake-up covers later edits).
    wake: tokio::sync::mpsc::Sender<()>,
    failing: AtomicBool,
}

impl Persist {
    fn write_pending(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(bytes) = bytes else { return };
        match statefile::write_atomic(&self.path, &bytes) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(file = %self.path.display(), "state file written again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(file = %self.path.display(), "cannot write the state file: {e}; runtime edits will not survive a restart");
                }
            }
        }
    }
}

/// Writes the state file whenever woken; ends when the runtime is dropped.
async fn persist_loop(p: std::sync::Weak<Persist>, mut wake: tokio::sync::mpsc::Receiver<()>) {
    while wake.recv().await.is_some() {
        let Some(strong) = p.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || strong.write_pending()).await;
    }
}

const DRAIN_SHARDS: usize = 8;

/// The running load balancer's state.
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    /// Bumped by every applied change (a snapshot carries the value it was built at).
    generation: AtomicU64,
    epoch: Instant,
    started: SystemTime,
    control: Mutex<Control>,
    persist: Option<Arc<Persist>>,
    /// The configuration of the last applied reload, for the tasks that follow
    /// it outside the runtime (VRRP).
    reloaded: tokio::sync::watch::Sender<Arc<Config>>,
    /// Open client connections, for graceful shutdown.
    pub conns: ConnTracker,
    /// Set when draining starts: read per request, so an atomic.
    drain_started: AtomicBool,
    /// Woken when draining starts, after `drain_started` is set. Sharded:
    /// every idle keep-alive wait registers here, from every worker thread.
    /// (One mechanism for every wait: a watch channel used before it cost a
    /// receiver per connection, and its `send` stores nothing while no
    /// receiver is subscribed.)
    drain: [tokio::sync::Notify; DRAIN_SHARDS],
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("generation", &self.generation())
            .finish()
    }
}

impl Runtime {
    /// Start with `config`: load the runtime edits its state file keeps, and
    /// apply it; `tasks` (the supervisor's) binds its listeners and starts
    /// its health checks and discovery. `crate::supervisor::start` is the
    /// usual way in.
    pub async fn start(config: Config, tasks: Box<dyn Tasks>) -> Result<Arc<Runtime>, ApplyError> {
        let empty = Snapshot {
            generation: 0,
            config: Arc::new(Config {
                source: None,
                global: config.global.clone(),
                admin: config.admin.clone(),
                log: config.log.clone(),
                frontends: BTreeMap::new(),
                backends: BTreeMap::new(),
                cluster: Default::default(),
                vrrp: Default::default(),
            }),
            frontends: Default::default(),
            backends: BTreeMap::new(),
        };
        let mut control = Control {
            tasks,
            overlay: BTreeMap::new(),
            discovered: HashMap::new(),
            encoded: BTreeMap::new(),
        };
        let (wake, wake_rx) = tokio::sync::mpsc::channel(1);
        let persist = config.state_file_path().map(|path| {
            control.overlay = statefile::load(&path, config.source.as_deref());
            let unknown: Vec<String> = control
                .overlay
                .keys()
                .filter(|b| !config.backends.contains_key(*b))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(file = %path.display(), backends = ?unknown, "state file: edits of backends the configuration no longer has are dropped");
            }
            Arc::new(Persist {
                path,
                config_file: config.source.clone(),
                pending: Default::default(),
                writing: Default::default(),
                wake,
                failing: AtomicBool::new(false),
            })
        });
        let rt = Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(empty),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            started: SystemTime::now(),
            control: Mutex::new(control),
            persist,
            reloaded: tokio::sync::watch::Sender::new(Arc::new(config.clone())),
            conns: ConnTracker::default(),
            drain_started: AtomicBool::new(false),
            drain: std::array::from_fn(|_| tokio::sync::Notify::new()),
        });
        if let Some(p) = &rt.persist {
            tokio::spawn(persist_loop(Arc::downgrade(p), wake_rx));
        }
        rt.apply_by(Change::Reload(Box::new(config)), "start")
            .await?;
        tokio::spawn(sample_rates(Arc::downgrade(&rt)));
        Ok(rt)
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot_arc(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Increases with every applied change (reload, API edit, discovery update).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// When the process started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Time since the runtime started.
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Sees the configuration of every applied reload (SIGHUP or API), so
    /// what runs beside the runtime (VRRP) re-applies its section.
    pub fn watch_reloads(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.reloaded.subscribe()
    }

    /// The state file runtime edits are kept in, if any.
    pub fn state_file(&self) -> Option<&std::path::Path> {
        self.persist.as_deref().map(|p| p.path.as_path())
    }

    /// Addresses actually bound, by frontend (useful when a config asked for port 0).
    pub async fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.control.lock().await.tasks.bound_addresses()
    }

    /// True once the process has started draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.drain_started.load(Ordering::SeqCst)
    }

    /// Resolves when draining starts after it was `enable`d: enable it, then
    /// check `is_draining`, then wait (no start is missed in between).
    /// `key` spreads the waiters over the shards (a connection's port, say).
    pub fn drained(&self, key: usize) -> tokio::sync::futures::Notified<'_> {
        self.drain[key % DRAIN_SHARDS].notified()
    }

    /// Resolves once the process has started draining for shutdown (at once
    /// if it has). `key` as for [`Runtime::drained`].
    pub async fn until_draining(&self, key: usize) {
        let mut drained = std::pin::pin!(self.drained(key));
        drained.as_mut().enable();
        if self.is_draining() {
            return;
        }
        drained.await
    }

    /// Apply one change (see [`Runtime::apply_by`]), logged as from "runtime".
    pub async fn apply(self: &Arc<Self>, change: Change) -> Result<u64, ApplyError> {
        self.apply_by(change, "runtime").await
    }

    /// Apply one change on behalf of `by` (an admin client address, a
    /// discovery source, "sighup"…, for the log). Changes are serialised: two
    /// concurrent writers of one server end as one of them after the other.
    /// Returns the generation after the change; on error nothing changed.
    pub async fn apply_by(self: &Arc<Self>, change: Change, by: &str) -> Result<u64, ApplyError> {
        let mut control = self.control.lock().await;
        let current = self.snapshot.load_full();
        let kind = change.kind();
        let result = match change {
            Change::Reload(c) => self.reload(&mut control, &current, *c, false, by),
            Change::ReloadReset(c) => self.reload(&mut control, &current, *c, true, by),
            Change::SetAdmin {
                backend,
                server,
                state,
            } => self.set_admin(&mut control, &current, &backend, &server, state, by),
            Change::SetWeight {
                backend,
                server,
                weight,
            } => self.set_weight(&mut control, &current, &backend, &server, weight, by),
            Change::AddServer { backend, server } => {
                self.add_server(&mut control, &current, &backend, server, by)
            }
            Change::RemoveServer {
                backend,
                server,
                force,
            } => self.remove_server(&mut control, &current, &backend, &server, force, by),
            Change::SetDiscovered { backend, servers } => {
                self.set_discovered(&mut control, &current, &backend, servers, by)
            }
        };
        if let Err(e) = &result {
            tracing::info!(change = kind, %by, error = %e, "change refused");
        }
        result
    }

    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queue the overlay for the state file (written off this task,
    /// coalesced). `touched`: the one backend whose edits changed (only its
    /// part is encoded again), or `None` after a reload (every part).
    fn persist(&self, control: &mut Control, touched: Option<&str>) {
        let Some(p) = &self.persist else { return };
        match touched {
            Some(b) => self.refresh_part(control, b),
            None => {
                control.encoded = control
                    .overlay
                    .iter()
                    .filter(|(_, o)| !o.is_empty())
                    .map(|(n, o)| (n.clone(), statefile::encode_backend(o)))
                    .collect();
            }
        }
        let encoded = &control.encoded;
        let bytes = statefile::assemble(
            p.config_file.as_deref(),
            encoded.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
        );
        *p.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        let _ = p.wake.try_send(());
    }

    /// Encode `backend`'s part of the state file again (its edits changed,
    /// or a source superseded some of them).
    fn refresh_part(&self, control: &mut Control, backend: &str) {
        if self.persist.is_none() {
            return;
        }
        match control.overlay.get(backend).filter(|o| !o.is_empty()) {
            Some(o) => {
                control
                    .encoded
                    .insert(backend.to_string(), statefile::encode_backend(o));
            }
            None => {
                control.encoded.remove(backend);
            }
        }
    }

    /// The settings the source defining `backend/server` gives it.
    fn source_settings<'a>(
        control: &'a Control,
        current: &'a Snapshot,
        backend: &str,
        server: &str,
        source: ServerSource,
    ) -> Option<&'a ServerConfig> {
        let list: &[ServerConfig] = match source {
            ServerSource::File => &current.config.backends.get(backend)?.servers,
            ServerSource::Api => &control.overlay.get(backend)?.added,
            _ => control.discovered.get(backend)?,
        };
        list.iter().find(|s| s.name == server)
    }

    /// A backend's merged server list; logs the runtime edits a source superseded.
    fn members(control: &mut Control, file: &BackendConfig) -> Vec<Member> {
        let discovered: &[ServerConfig] = match &file.discovery {
            Some(_) => control
                .discovered
                .get(&file.name)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            None => &[],
        };
        let kind = file
            .discovery
            .as_ref()
            .map_or(ServerSource::Discovery, ServerSource::of_discovery);
        let overlay = control.overlay.entry(file.name.clone()).or_default();
        let (members, dropped) = desired::merge(&file.servers, discovered, kind, overlay);
        for d in dropped {
            tracing::info!(backend = %file.name, server = %d.server, "runtime edit superseded: {}", d.what);
        }
        if overlay.is_empty() {
            control.overlay.remove(&file.name);
        }
        members
    }

    fn set_admin(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
        server: &str,
        state: AdminState,
        by: &str,
    ) -> Result<u64, ApplyError> {
        let s = find_server(current, backend, server)?;
        let before = s.admin();
        let source = s.source();
        let base = Self::source_settings(control, current, backend, server, source)
            .map_or(before, |c| c.admin);
        let overlay = control.overlay.entry(backend.to_string()).or_default();
        overlay.set_admin(server, state, base, source == ServerSource::Api);
        if overlay.is_empty() {
            control.overlay.remove(backend);
        }
        s.set_admin(state);
        let generation = self.bump();
        tracing::info!(%backend, %server, source = source.as_str(), %by, "admin state {} → {}", admin_name(before), admin_name(state));
        self.persist(control, Some(backend));
        Ok(generation)
    }

    fn set_weight(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
        server: &str,
        weight: u32,
        by: &str,
    ) -> Result<u64, ApplyError> {
        change::check_weight(weight)?;
        let s = find_server(current, backend, server)?;
        let before = s.weight();
        let source = s.source();
        let base = Self::source_settings(control, current, backend, server, source)
            .map_or(before, |c| c.weight);
        let overlay = control.overlay.entry(backend.to_string()).or_default();
        overlay.set_weight(server, weight, base, source == ServerSource::Api);
        if overlay.is_empty() {
            control.overlay.remove(backend);
        }
        s.set_weight(weight);
        let hashed =
            find_backend(current, backend).is_ok_and(|b| build::caches_weights(b.config.balance));
        tracing::info!(%backend, %server, source = source.as_str(), %by, "weight {before} → {weight}");
        // The hash ring lays points out by weight: that backend is rebuilt.
        let generation = if hashed {
            self.rebuild_backend(control, current, backend)?
        } else {
            self.bump()
        };
        self.persist(control, Some(backend));
        Ok(generation)
    }

    fn add_server(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
        server: ServerConfig,
        by: &str,
    ) -> Result<u64, ApplyError> {
        let b = find_backend(current, backend)?;
        if b.servers.iter().any(|s| s.name() == server.name) {
            return Err(ApplyError::Invalid(format!(
                "backend `{backend}` already has a server named `{}`",
                server.name
            )));
        }
        if !(1..=256).contains(&server.weight) {
            return Err(ApplyError::Invalid(format!(
                "weight {} is out of range; use 1..=256",
                server.weight
            )));
        }
        tracing::info!(%backend, server = %server.name, address = %server.address, weight = server.weight, admin = admin_name(server.admin), %by, "server added");
        control
            .overlay
            .entry(backend.to_string())
            .or_default()
            .add(server);
        let generation = self.rebuild_backend(control, current, backend)?;
        self.persist(control, Some(backend));
        Ok(generation)
    }

    fn remove_server(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
        server: &str,
        force: bool,
        by: &str,
    ) -> Result<u64, ApplyError> {
        let s = find_server(current, backend, server)?;
        let active = s.active();
        if active > 0 && !force {
            return Err(ApplyError::Busy {
                backend: backend.to_string(),
                server: server.to_string(),
                active,
            });
        }
        let source = s.source();
        tracing::info!(%backend, %server, address = %s.address(), source = source.as_str(), active, %by, "server removed");
        control
            .overlay
            .entry(backend.to_string())
            .or_default()
            .remove(server, s.address(), source);
        let generation = self.rebuild_backend(control, current, backend)?;
        self.persist(control, Some(backend));
        Ok(generation)
    }

    fn set_discovered(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
        servers: Vec<ServerConfig>,
        by: &str,
    ) -> Result<u64, ApplyError> {
        if !current.config.backends.contains_key(backend) {
            return Err(ApplyError::UnknownBackend {
                name: backend.to_string(),
                known: current.config.backends.keys().cloned().collect(),
            });
        }
        let old = control
            .discovered
            .insert(backend.to_string(), servers)
            .unwrap_or_default();
        let new = control.discovered.get(backend).map_or(&[][..], |v| v);
        let key = |s: &ServerConfig| (s.name.clone(), s.address);
        let before: HashSet<_> = old.iter().map(key).collect();
        let after: HashSet<_> = new.iter().map(key).collect();
        let show = |v: &[&(String, SocketAddr)]| {
            name_list(
                &v.iter()
                    .map(|(n, a)| format!("{n} {a}"))
                    .collect::<Vec<_>>(),
            )
        };
        let added: Vec<_> = after.difference(&before).collect();
        let removed: Vec<_> = before.difference(&after).collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(%backend, %by, added = added.len(), removed = removed.len(), "discovery: added {}; removed {}", show(&added), show(&removed));
        }
        self.rebuild_backend(control, current, backend)
    }

    /// Publish a snapshot where only `backend` (and the frontends routing to
    /// it) is rebuilt; everything else is shared with `current`.
    fn rebuild_backend(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        backend: &str,
    ) -> Result<u64, ApplyError> {
        let file =
            current
                .config
                .backends
                .get(backend)
                .ok_or_else(|| ApplyError::UnknownBackend {
                    name: backend.to_string(),
                    known: current.config.backends.keys().cloned().collect(),
                })?;
        let members = Self::members(control, file);
        // A source may have superseded some of this backend's edits.
        self.refresh_part(control, backend);
        let old = current.backends.get(backend);
        let tls = old.and_then(|o| o.tls.clone());
        let next = Arc::new(build::backend(
            file,
            &members,
            old.map(|o| &**o),
            tls,
            self.epoch,
        ));
        let mut backends = current.backends.clone();
        backends.insert(backend.to_string(), next.clone());
        let frontends = current
            .frontends
            .iter()
            .map(|(name, f)| {
                let f = if build::routes_to(f, backend) {
                    Arc::new(build::frontend(
                        &f.config,
                        &backends,
                        Some(f),
                        f.tls.clone(),
                    ))
                } else {
                    f.clone()
                };
                (name.clone(), f)
            })
            .collect();
        let generation = self.bump();
        self.snapshot.store(Arc::new(Snapshot {
            generation,
            config: current.config.clone(),
            frontends,
            backends,
        }));
        if let Some(old) = old {
            retire_departed(old, Some(&*next));
        }
        control.tasks.backend_rebuilt(&next);
        Ok(generation)
    }

    /// Apply a configuration file: diff it against the running snapshot, keep
    /// what did not change, bind new listeners before publishing.
    fn reload(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        mut config: Config,
        reset: bool,
        by: &str,
    ) -> Result<u64, ApplyError> {
        if current.generation > 0 && config.global != current.config.global {
            tracing::warn!("[global] settings (threads, state_file) take effect at the next start; keeping the running ones");
            config.global = current.config.global.clone();
        }
        let saved = control.overlay.clone();
        let result = self.reload_inner(control, current, config, reset, by);
        if result.is_err() {
            control.overlay = saved;
        }
        result
    }

    fn reload_inner(
        self: &Arc<Self>,
        control: &mut Control,
        current: &Snapshot,
        config: Config,
        reset: bool,
        by: &str,
    ) -> Result<u64, ApplyError> {
        if reset && !control.overlay.is_empty() {
            tracing::info!(%by, backends = control.overlay.len(), "runtime edits dropped (reload --reset)");
            control.overlay.clear();
        }
        control.overlay.retain(|b, _| {
            let keep = config.backends.contains_key(b);
            if !keep {
                tracing::info!(backend = %b, "runtime edits dropped: the backend is gone from the configuration");
            }
            keep
        });
        let mut tls = build_tls(&config)?;
        let mut backends = BTreeMap::new();
        let mut rebuilt = Vec::new();
        for (name, file) in &config.backends {
            let members = Self::members(control, file);
            let old = current.backends.get(name);
            let b = match old {
                Some(o) if build::keep_backend(o, file, &members) => o.clone(),
                _ => {
                    let b = Arc::new(build::backend(
                        file,
                        &members,
                        old.map(|o| &**o),
                        tls.clients.remove(name),
                        self.epoch,
                    ));
                    rebuilt.push(b.clone());
                    b
                }
            };
            backends.insert(name.clone(), b);
        }
        let mut frontends = HashMap::new();
        let mut frontends_kept = 0;
        for (name, fc) in &config.frontends {
            let old = current.frontends.get(name);
            let f = match old {
                Some(o) if build::keep_frontend(o, fc, &backends) => {
                    frontends_kept += 1;
                    o.clone()
                }
                _ => Arc::new(build::frontend(
                    fc,
                    &backends,
                    old.map(|o| &**o),
                    tls.acceptors.remove(name),
                )),
            };
            frontends.insert(name.clone(), f);
        }
        let generation = self.generation() + 1;
        let next = Snapshot {
            generation,
            config: Arc::new(config),
            frontends,
            backends,
        };
        control.tasks.prepare(&next)?;
        self.generation.store(generation, Ordering::SeqCst);
        let kept = next.backends.len() - rebuilt.len();
        let next = Arc::new(next);
        self.snapshot.store(next.clone());
        control.discovered.retain(|name, _| {
            next.config
                .backends
                .get(name)
                .is_some_and(|b| b.discovery.is_some())
        });
        for (name, old) in &current.backends {
            let new = next.backends.get(name);
            if !new.is_some_and(|n| Arc::ptr_eq(n, old)) {
                retire_departed(old, new.map(|n| &**n));
            }
        }
        control.tasks.published(self, &next, &rebuilt);
        // At start, an empty state is not worth a file.
        if current.generation > 0 || !control.overlay.is_empty() {
            self.persist(control, None);
        }
        self.reloaded.send_replace(next.config.clone());
        tracing::info!(generation, backends_kept = kept, backends_rebuilt = rebuilt.len(), frontends_kept, %by, "configuration applied");
        Ok(generation)
    }

    /// Write pending runtime edits to the state file now (before an upgrade
    /// hands over: the next process starts from the file).
    pub fn flush_state(&self) {
        if let Some(p) = &self.persist {
            p.write_pending();
        }
    }

    /// Graceful stop: close listeners, stop checks, write the state file,
    /// let open connections finish their current request (up to `grace`), then return.
    pub async fn shutdown(&self, grace: Duration) {
        self.control.lock().await.tasks.stop_all();
        if let Some(p) = &self.persist {
            p.write_pending();
        }
        self.drain_started.store(true, Ordering::SeqCst);
        for n in &self.drain {
            n.notify_waiters();
        }
        self.conns.wait_idle(grace).await;
    }
}

/// Retire the servers of `old` that `new` (its replacement, if any) does
/// not carry over: they have left the running configuration.
fn retire_departed(old: &BackendRt, new: Option<&BackendRt>) {
    let kept: HashSet<*const ServerState> = new
        .map(|n| n.servers.iter().map(Arc::as_ptr).collect())
        .unwrap_or_default();
    for s in &old.servers {
        if !kept.contains(&Arc::as_ptr(s)) {
            s.retire();
        }
    }
}

/// Once a second, turn each server's request total into a rate for the
/// status API and dashboard. Ends when the runtime is dropped.
async fn sample_rates(rt: std::sync::Weak<Runtime>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = Instant::now();
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let now = Instant::now();
        let secs = now.duration_since(prev).as_secs_f64().max(1e-3);
        prev = now;
        // Each server keeps its previous total (kept across reloads with
        // the server): no map of 10 000 cloned keys rebuilt every second.
        let snap = rt.snapshot_arc();
        for b in snap.backends.values() {
            for s in &b.servers {
                s.sample_rate(secs);
            }
        }
    }
}

/// Certificates and TLS client settings loaded for the next snapshot.
struct TlsMaterial {
    /// Server side, per frontend.
    acceptors: HashMap<String, tokio_rustls::TlsAcceptor>,
    /// Client side towards servers, per backend.
    clients: HashMap<String, Arc<crate::tls::UpstreamTlsRt>>,
}

/// TLS for a reload: certificates and CA files are re-read from disk (that
/// is how certificates are rotated); other changes keep the loaded ones.
fn build_tls(config: &Config) -> Result<TlsMaterial, ApplyError> {
    let mut acceptors = HashMap::new();
    for (name, fe) in &config.frontends {
        let Some(tls) = &fe.tls else { continue };
        let sc = crate::tls::server_config(tls)
            .map_err(|e| ApplyError::Invalid(format!("frontend `{name}`: {e}")))?;
        acceptors.insert(name.clone(), tokio_rustls::TlsAcceptor::from(sc));
    }
    let mut clients = HashMap::new();
    for (name, b) in &config.backends {
        let Some(t) = &b.tls else { continue };
        let rt = crate::tls::upstream(t, b.http2)
            .map_err(|e| ApplyError::Invalid(format!("backend `{name}`: {e}")))?;
        clients.insert(name.clone(), Arc::new(rt));
    }
    Ok(TlsMaterial { acceptors, clients })
}
