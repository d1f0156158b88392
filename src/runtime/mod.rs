//! Live state: the snapshot read per request, per-server atomics, and
//! [`Runtime::apply`], the one function through which every change goes.

pub mod change;
pub mod conns;
pub mod server;
pub mod snapshot;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};

use crate::balance::Balancer;
use crate::config::types::{Config, DiscoveryConfig, HealthConfig, Mode, ServerConfig};

pub use change::Change;
pub use conns::ConnTracker;
pub use server::{ServerKey, ServerState};
pub use snapshot::{BackendRt, FrontendRt, RouteRt, Snapshot};

/// Why a change was refused. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown backend `{0}`")]
    UnknownBackend(String),
    #[error("unknown server `{0}/{1}`")]
    UnknownServer(String, String),
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

struct ListenerEntry {
    frontend: String,
    mode: Mode,
    stop: watch::Sender<bool>,
}

struct CheckerEntry {
    health: HealthConfig,
    stop: watch::Sender<bool>,
}

/// What only `apply` touches: running listeners and health checkers.
#[derive(Default)]
struct Control {
    listeners: HashMap<SocketAddr, ListenerEntry>,
    checkers: HashMap<ServerKey, CheckerEntry>,
    /// Servers found by each backend's discovery source, by backend name.
    discovered: HashMap<String, Vec<ServerConfig>>,
    /// Running discovery tasks by backend, with the settings they run with.
    discoverers: HashMap<String, (DiscoveryConfig, watch::Sender<bool>)>,
}

const DRAIN_SHARDS: usize = 8;

/// The running load balancer's state.
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    epoch: Instant,
    started: SystemTime,
    control: Mutex<Control>,
    /// Open client connections, for graceful shutdown.
    pub conns: ConnTracker,
    /// Set when draining starts: read per request, so an atomic.
    drain_started: std::sync::atomic::AtomicBool,
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
            .field("generation", &self.snapshot.load().generation)
            .finish()
    }
}

impl Runtime {
    /// Start with `config`: bind its listeners, start health checks.
    pub async fn start(config: Config) -> Result<Arc<Runtime>, ApplyError> {
        let empty = Snapshot {
            generation: 0,
            config: Arc::new(Config {
                source: None,
                global: config.global.clone(),
                admin: config.admin.clone(),
                log: config.log,
                frontends: BTreeMap::new(),
                backends: BTreeMap::new(),
                cluster: Default::default(),
                vrrp: Default::default(),
            }),
            frontends: HashMap::new(),
            backends: BTreeMap::new(),
        };
        let rt = Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(empty),
            epoch: Instant::now(),
            started: SystemTime::now(),
            control: Mutex::new(Control::default()),
            conns: ConnTracker::default(),
            drain_started: std::sync::atomic::AtomicBool::new(false),
            drain: std::array::from_fn(|_| tokio::sync::Notify::new()),
        });
        rt.apply(Change::Reload(Box::new(config))).await?;
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

    /// When the process started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Time since the runtime started.
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Addresses actually bound, by frontend (useful when a config asked for port 0).
    pub async fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        let c = self.control.lock().await;
        let mut v: Vec<_> = c
            .listeners
            .iter()
            .map(|(a, l)| (l.frontend.clone(), *a))
            .collect();
        v.sort();
        v
    }

    /// True once the process has started draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.drain_started.load(std::sync::atomic::Ordering::SeqCst)
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

    /// Apply one change: build the next snapshot from the current one, bind new
    /// listeners, publish, then retire what is no longer needed. Server state
    /// (health, counters, connections) survives when a server's identity
    /// (backend, name, address) is unchanged. On error nothing changes.
    pub async fn apply(self: &Arc<Self>, change: Change) -> Result<u64, ApplyError> {
        let mut control = self.control.lock().await;
        let current = self.snapshot.load_full();
        let reload = matches!(change, Change::Reload(_));
        let rediscovered = matches!(change, Change::SetDiscovered { .. });
        if let Change::SetDiscovered { backend, servers } = &change {
            if !current.config.backends.contains_key(backend) {
                return Err(ApplyError::UnknownBackend(backend.clone()));
            }
            control.discovered.insert(backend.clone(), servers.clone());
        }
        let mut config = change::next_config(&current, change)?;
        if reload && current.generation > 0 && config.global != current.config.global {
            tracing::warn!("[global] settings (threads) take effect at the next start; keeping the running ones");
            config.global = current.config.global.clone();
        }
        let tls = TlsMaterial {
            acceptors: load_tls(&current, &config, reload)?,
            clients: load_upstream_tls(&current, &config, reload)?,
        };
        let next = self.build_snapshot(
            &current,
            config,
            reload,
            rediscovered,
            &control.discovered,
            tls,
        );

        // Bind every new listen address before publishing, so a port that is
        // taken refuses the whole change instead of half-applying it.
        let mut desired: HashMap<SocketAddr, (String, Mode)> = HashMap::new();
        for fe in next.config.frontends.values() {
            for a in &fe.listen {
                desired.insert(*a, (fe.name.clone(), fe.mode));
            }
        }
        let mut to_stop = Vec::new();
        for (addr, entry) in &control.listeners {
            match desired.get(addr) {
                Some((name, mode)) if *name == entry.frontend && *mode == entry.mode => {}
                _ => to_stop.push(*addr),
            }
        }
        // A listener whose address is reused by another frontend must let go first.
        for addr in &to_stop {
            if desired.contains_key(addr) {
                if let Some(e) = control.listeners.remove(addr) {
                    let _ = e.stop.send(true);
                }
            }
        }
        let mut bound = Vec::new();
        for (addr, (name, mode)) in &desired {
            if control.listeners.contains_key(addr) {
                continue;
            }
            match crate::proxy::listener::bind(*addr) {
                Ok(l) => bound.push((*addr, name.clone(), *mode, l)),
                Err(source) => {
                    return Err(ApplyError::Bind {
                        addr: *addr,
                        frontend: name.clone(),
                        source,
                    })
                }
            }
        }

        let generation = next.generation;
        self.snapshot.store(Arc::new(next));

        for addr in to_stop {
            if let Some(e) = control.listeners.remove(&addr) {
                let _ = e.stop.send(true);
            }
        }
        for (addr, frontend, mode, listener) in bound {
            let (stop, stop_rx) = watch::channel(false);
            let local = listener.local_addr().unwrap_or(addr);
            crate::proxy::listener::spawn(self.clone(), frontend.clone(), mode, listener, stop_rx);
            // Key by the configured address; port 0 resolves to `local` in logs.
            if local != addr {
                tracing::info!(%local, %frontend, "listening (ephemeral port)");
            }
            control.listeners.insert(
                addr,
                ListenerEntry {
                    frontend,
                    mode,
                    stop,
                },
            );
        }
        self.sync_checkers(&mut control);
        self.sync_discovery(&mut control);
        tracing::info!(generation, "configuration applied");
        Ok(generation)
    }

    fn build_snapshot(
        &self,
        current: &Snapshot,
        config: Config,
        reload: bool,
        rediscovered: bool,
        discovered: &HashMap<String, Vec<ServerConfig>>,
        mut tls: TlsMaterial,
    ) -> Snapshot {
        let mut backends = BTreeMap::new();
        for (name, bc) in &config.backends {
            // Discovered servers follow the configured ones; a name already
            // configured wins over a discovered server of the same name.
            let configured = bc.servers.len();
            let mut bc = bc.clone();
            if bc.discovery.is_some() {
                for d in discovered.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                    if !bc.servers.iter().any(|s| s.name == d.name) {
                        bc.servers.push(d.clone());
                    }
                }
            }
            let bc = &bc;
            let old_backend = current.backends.get(name);
            let checks_on = bc.health.check.is_some();
            let servers: Vec<Arc<ServerState>> = bc
                .servers
                .iter()
                .enumerate()
                .map(|(i, sc)| {
                    let reuse = old_backend.and_then(|ob| {
                        ob.servers
                            .iter()
                            .find(|s| s.name() == sc.name && s.address() == sc.address)
                    });
                    match reuse {
                        Some(s) => {
                            s.update_settings(sc);
                            // A reload applies the file's admin state only when the
                            // file changed it, so a drain done through the API
                            // survives an unrelated reload.
                            // A discovered server's drain flag comes from its source.
                            if i >= configured && (reload || rediscovered) {
                                s.set_admin(sc.admin);
                            } else if reload {
                                let file_before = current
                                    .config
                                    .backends
                                    .get(name)
                                    .and_then(|b| b.servers.iter().find(|o| o.name == sc.name))
                                    .map(|o| o.admin);
                                if file_before != Some(sc.admin) {
                                    s.set_admin(sc.admin);
                                }
                            }
                            if !checks_on {
                                s.set_up(true);
                            }
                            s.clone()
                        }
                        None => Arc::new(ServerState::new(name, sc, self.epoch, !checks_on)),
                    }
                })
                .collect();
            let weights: Vec<u32> = bc.servers.iter().map(|s| s.weight).collect();
            let ids: Vec<u64> = bc
                .servers
                .iter()
                .map(|s| crate::balance::hash_key(s.name.as_bytes()))
                .collect();
            backends.insert(
                name.clone(),
                Arc::new(BackendRt {
                    name: Arc::from(name.as_str()),
                    tls: tls.clients.remove(name),
                    sticky_ids: bc
                        .servers
                        .iter()
                        .map(|s| crate::proxy::edge::sticky_id(name, &s.name))
                        .collect(),
                    stats: old_backend.map(|b| b.stats.clone()).unwrap_or_default(),
                    config: bc.clone(),
                    balancer: Balancer::with_ids(bc.balance, &weights, &ids),
                    servers,
                }),
            );
        }
        let mut frontends = HashMap::new();
        for (name, fc) in &config.frontends {
            let old_fe = current.frontends.get(name);
            let routes = fc
                .routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let backend = Arc::clone(backends.get(&r.backend)?);
                    let old = old_fe
                        .and_then(|f| f.routes.get(i))
                        .and_then(|o| o.limiter.as_ref());
                    let limiter = r.rate_limit.as_ref().map(|rl| reuse_limiter(old, rl));
                    Some(RouteRt {
                        route: r.clone(),
                        backend,
                        limiter,
                    })
                })
                .collect();
            let limiter = fc
                .rate_limit
                .as_ref()
                .map(|rl| reuse_limiter(old_fe.and_then(|f| f.limiter.as_ref()), rl));
            let default = fc.backend.as_ref().and_then(|b| backends.get(b)).cloned();
            frontends.insert(
                name.clone(),
                Arc::new(FrontendRt {
                    tls: tls.acceptors.remove(name),
                    limiter,
                    stats: current
                        .frontends
                        .get(name)
                        .map(|f| f.stats.clone())
                        .unwrap_or_default(),
                    config: fc.clone(),
                    routes,
                    default,
                }),
            );
        }
        Snapshot {
            generation: current.generation + 1,
            config: Arc::new(config),
            frontends,
            backends,
        }
    }

    /// Start checkers for new servers or changed health settings; stop the rest.
    fn sync_checkers(&self, control: &mut Control) {
        let snap = self.snapshot.load();
        let mut wanted: HashMap<ServerKey, (Arc<ServerState>, HealthConfig)> = HashMap::new();
        for b in snap.backends.values() {
            if b.config.health.check.is_none() {
                continue;
            }
            for s in &b.servers {
                wanted.insert(s.key.clone(), (s.clone(), b.config.health.clone()));
            }
        }
        control.checkers.retain(|key, entry| {
            let keep = wanted.get(key).is_some_and(|(_, h)| *h == entry.health);
            if !keep {
                let _ = entry.stop.send(true);
            }
            keep
        });
        for (key, (server, health)) in wanted {
            if control.checkers.contains_key(&key) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            crate::health::spawn_checker(server, health.clone(), stop_rx);
            control.checkers.insert(key, CheckerEntry { health, stop });
        }
    }

    /// One discovery task per backend that has a source; restarted when its
    /// settings change, stopped when the backend or its source goes away.
    fn sync_discovery(self: &Arc<Self>, control: &mut Control) {
        let snap = self.snapshot.load();
        let wanted: HashMap<String, DiscoveryConfig> = snap
            .config
            .backends
            .iter()
            .filter_map(|(name, b)| b.discovery.clone().map(|d| (name.clone(), d)))
            .collect();
        control.discoverers.retain(|name, (cfg, stop)| {
            let keep = wanted.get(name) == Some(cfg);
            if !keep {
                let _ = stop.send(true);
            }
            keep
        });
        control
            .discovered
            .retain(|name, _| wanted.contains_key(name));
        for (name, cfg) in wanted {
            if control.discoverers.contains_key(&name) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            crate::discovery::spawn(self.clone(), name.clone(), cfg.clone(), stop_rx);
            control.discoverers.insert(name, (cfg, stop));
        }
    }

    /// Graceful stop: close listeners, stop checks, let open connections
    /// finish their current request (up to `grace`), then return.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut control = self.control.lock().await;
            for (_, l) in control.listeners.drain() {
                let _ = l.stop.send(true);
            }
            for (_, c) in control.checkers.drain() {
                let _ = c.stop.send(true);
            }
            for (_, (_, stop)) in control.discoverers.drain() {
                let _ = stop.send(true);
            }
        }
        self.drain_started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for n in &self.drain {
            n.notify_waiters();
        }
        self.conns.wait_idle(grace).await;
    }
}

/// Once a second, turn each server's request total into a rate for the
/// status API and dashboard. Ends when the runtime is dropped.
async fn sample_rates(rt: std::sync::Weak<Runtime>) {
    let mut last: HashMap<ServerKey, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = Instant::now();
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let now = Instant::now();
        let secs = now.duration_since(prev).as_secs_f64().max(1e-3);
        prev = now;
        let snap = rt.snapshot_arc();
        let mut seen = HashMap::with_capacity(last.len());
        for b in snap.backends.values() {
            for s in &b.servers {
                let total = s.total();
                if let Some(before) = last.get(&s.key) {
                    s.set_request_rate(total.saturating_sub(*before) as f64 / secs);
                }
                seen.insert(s.key.clone(), total);
            }
        }
        last = seen;
    }
}

/// Certificates and TLS client settings loaded for the next snapshot.
struct TlsMaterial {
    /// Server side, per frontend.
    acceptors: HashMap<String, tokio_rustls::TlsAcceptor>,
    /// Client side towards servers, per backend.
    clients: HashMap<String, Arc<crate::tls::UpstreamTlsRt>>,
}

/// TLS acceptors for the next snapshot: certificates are (re)read from disk on
/// a reload; other changes keep the loaded ones.
fn load_tls(
    current: &Snapshot,
    config: &Config,
    reload: bool,
) -> Result<HashMap<String, tokio_rustls::TlsAcceptor>, ApplyError> {
    let mut out = HashMap::new();
    for (name, fe) in &config.frontends {
        let Some(tls) = &fe.tls else { continue };
        let kept = current
            .frontends
            .get(name)
            .filter(|old| !reload && old.config.tls.as_ref() == Some(tls))
            .and_then(|old| old.tls.clone());
        let acceptor = match kept {
            Some(a) => a,
            None => {
                let sc = crate::tls::server_config(tls)
                    .map_err(|e| ApplyError::Invalid(format!("frontend `{name}`: {e}")))?;
                tokio_rustls::TlsAcceptor::from(sc)
            }
        };
        out.insert(name.clone(), acceptor);
    }
    Ok(out)
}

/// Keep a limiter's buckets when its settings did not change.
fn reuse_limiter(
    old: Option<&Arc<crate::proxy::ratelimit::RateLimiter>>,
    cfg: &crate::config::types::RateLimit,
) -> Arc<crate::proxy::ratelimit::RateLimiter> {
    match old {
        Some(l) if l.config == *cfg => l.clone(),
        _ => Arc::new(crate::proxy::ratelimit::RateLimiter::new(cfg)),
    }
}

/// TLS client settings per backend: re-read (CA files) on reload, kept otherwise.
fn load_upstream_tls(
    current: &Snapshot,
    config: &Config,
    reload: bool,
) -> Result<HashMap<String, Arc<crate::tls::UpstreamTlsRt>>, ApplyError> {
    let mut out = HashMap::new();
    for (name, b) in &config.backends {
        let Some(t) = &b.tls else { continue };
        let kept = current
            .backends
            .get(name)
            .and_then(|old| old.tls.clone())
            .filter(|old| !reload && old.config == *t && old.h2 == b.http2);
        let rt = match kept {
            Some(k) => k,
            None => Arc::new(
                crate::tls::upstream(t, b.http2)
                    .map_err(|e| ApplyError::Invalid(format!("backend `{name}`: {e}")))?,
            ),
        };
        out.insert(name.clone(), rt);
    }
    Ok(out)
}
