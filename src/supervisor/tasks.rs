//! The tasks that run beside the snapshot — listeners, health checkers,
//! discovery sources — started and stopped to follow it. The runtime drives
//! them through [`runtime::Tasks`] from `apply` (under its control lock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::types::{DiscoveryConfig, HealthConfig, Mode};
use crate::runtime::{self, ApplyError, BackendRt, Runtime, ServerKey, ServerState, Snapshot};

struct ListenerEntry {
    frontend: String,
    mode: Mode,
    stop: watch::Sender<bool>,
}

struct CheckerEntry {
    health: HealthConfig,
    stop: watch::Sender<bool>,
}

/// Running tasks.
#[derive(Default)]
pub struct Tasks {
    listeners: HashMap<SocketAddr, ListenerEntry>,
    /// Health checkers by backend, then server.
    checkers: HashMap<String, HashMap<ServerKey, CheckerEntry>>,
    /// Running discovery tasks by backend, with the settings they run with.
    discoverers: HashMap<String, (DiscoveryConfig, watch::Sender<bool>)>,
    /// What `prepare` bound for the reload being applied.
    plan: Option<ListenerPlan>,
}

/// Listeners a snapshot needs that are not running yet, bound (not yet
/// serving), and the running ones it no longer needs.
struct ListenerPlan {
    bound: Vec<(SocketAddr, String, Mode, std::net::TcpListener)>,
    to_stop: Vec<SocketAddr>,
}

impl Tasks {
    /// Bind every new listen address of `next` before it is published, so a
    /// port that is taken refuses the whole change instead of half-applying it.
    fn bind_listeners(&mut self, next: &Snapshot) -> Result<ListenerPlan, ApplyError> {
        let mut desired: HashMap<SocketAddr, (String, Mode)> = HashMap::new();
        for fe in next.config.frontends.values() {
            for a in &fe.listen {
                desired.insert(*a, (fe.name.clone(), fe.mode));
            }
        }
        let mut to_stop = Vec::new();
        for (addr, entry) in &self.listeners {
            match desired.get(addr) {
                Some((name, mode)) if *name == entry.frontend && *mode == entry.mode => {}
                _ => to_stop.push(*addr),
            }
        }
        // A listener whose address is reused by another frontend must let go first.
        for addr in &to_stop {
            if desired.contains_key(addr) {
                if let Some(e) = self.listeners.remove(addr) {
                    let _ = e.stop.send(true);
                }
            }
        }
        let mut bound = Vec::new();
        for (addr, (name, mode)) in &desired {
            if self.listeners.contains_key(addr) {
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
        Ok(ListenerPlan { bound, to_stop })
    }

    /// After publishing: stop the listeners no longer wanted, serve the new ones.
    fn start_listeners(&mut self, rt: &Arc<Runtime>, plan: ListenerPlan) {
        for addr in plan.to_stop {
            if let Some(e) = self.listeners.remove(&addr) {
                let _ = e.stop.send(true);
            }
        }
        for (addr, frontend, mode, listener) in plan.bound {
            let (stop, stop_rx) = watch::channel(false);
            let local = listener.local_addr().unwrap_or(addr);
            crate::proxy::listener::spawn(rt.clone(), frontend.clone(), mode, listener, stop_rx);
            // Key by the configured address; port 0 resolves to `local` in logs.
            if local != addr {
                tracing::info!(%local, %frontend, "listening (ephemeral port)");
            }
            self.listeners.insert(
                addr,
                ListenerEntry {
                    frontend,
                    mode,
                    stop,
                },
            );
        }
    }

    /// Start checkers for `b`'s new servers (or all of them when its health
    /// settings changed); stop those of servers it no longer has.
    fn sync_checkers(&mut self, b: &BackendRt) {
        let entry = self.checkers.entry(b.config.name.clone()).or_default();
        let Some(_) = &b.config.health.check else {
            for (_, c) in entry.drain() {
                let _ = c.stop.send(true);
            }
            return;
        };
        let health = &b.config.health;
        let wanted: HashMap<&ServerKey, &Arc<ServerState>> =
            b.servers.iter().map(|s| (&s.key, s)).collect();
        entry.retain(|key, c| {
            let keep = wanted.contains_key(key) && c.health == *health;
            if !keep {
                let _ = c.stop.send(true);
            }
            keep
        });
        for (key, server) in wanted {
            if entry.contains_key(key) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            // On the checks thread, not the control thread (see `checks`).
            super::checks::spawn(crate::health::checker(
                server.clone(),
                health.clone(),
                stop_rx,
            ));
            entry.insert(
                key.clone(),
                CheckerEntry {
                    health: health.clone(),
                    stop,
                },
            );
        }
    }

    /// Stop the checkers of backends `snap` no longer has.
    fn retire_checkers(&mut self, snap: &Snapshot) {
        self.checkers.retain(|name, entry| {
            let keep = snap.backends.contains_key(name);
            if !keep {
                for (_, c) in entry.drain() {
                    let _ = c.stop.send(true);
                }
            }
            keep
        });
    }

    /// One discovery task per backend that has a source; restarted when its
    /// settings change, stopped when the backend or its source goes away.
    fn sync_discovery(&mut self, rt: &Arc<Runtime>, snap: &Snapshot) {
        let wanted: HashMap<String, DiscoveryConfig> = snap
            .config
            .backends
            .iter()
            .filter_map(|(name, b)| b.discovery.clone().map(|d| (name.clone(), d)))
            .collect();
        self.discoverers.retain(|name, (cfg, stop)| {
            let keep = wanted.get(name) == Some(cfg);
            if !keep {
                let _ = stop.send(true);
            }
            keep
        });
        for (name, cfg) in wanted {
            if self.discoverers.contains_key(&name) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            crate::discovery::spawn(rt.clone(), name.clone(), cfg.clone(), stop_rx);
            self.discoverers.insert(name, (cfg, stop));
        }
    }
}

/// After an upgrade: give `b`'s checked servers the old process's last
/// health result, so they do not start cold (once per server: servers
/// seeded before, or with nothing handed over, are left as they are).
fn seed(b: &BackendRt) {
    if b.config.health.check.is_some() {
        for s in &b.servers {
            crate::upgrade::state::seed(s);
        }
    }
}

impl runtime::Tasks for Tasks {
    fn prepare(&mut self, next: &Snapshot) -> Result<(), ApplyError> {
        self.plan = Some(self.bind_listeners(next)?);
        Ok(())
    }

    fn published(&mut self, rt: &Arc<Runtime>, next: &Arc<Snapshot>, rebuilt: &[Arc<BackendRt>]) {
        for b in rebuilt {
            seed(b);
        }
        if let Some(plan) = self.plan.take() {
            self.start_listeners(rt, plan);
        }
        for b in rebuilt {
            self.sync_checkers(b);
        }
        self.retire_checkers(next);
        self.sync_discovery(rt, next);
    }

    fn backend_rebuilt(&mut self, b: &BackendRt) {
        seed(b);
        self.sync_checkers(b);
    }

    fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self
            .listeners
            .iter()
            .map(|(a, l)| (l.frontend.clone(), *a))
            .collect();
        v.sort();
        v
    }

    fn stop_all(&mut self) {
        self.plan = None;
        for (_, l) in self.listeners.drain() {
            let _ = l.stop.send(true);
        }
        for (_, entry) in self.checkers.drain() {
            for (_, c) in entry {
                let _ = c.stop.send(true);
            }
        }
        for (_, (_, stop)) in self.discoverers.drain() {
            let _ = stop.send(true);
        }
    }
}
