//! Building snapshot parts, pure: a backend from its merged server list, a
//! frontend from its config and the backends it routes to, and the diff
//! questions a reload asks ("can the running one stay as it is?").
//!
//! Live server state is carried over by identity (backend, name, address):
//! a server that stays keeps its health, counters, connections and checker.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::balance::Balancer;
use crate::config::types::{Algorithm, BackendConfig, FrontendConfig};

use super::desired::Member;
use super::server::ServerState;
use super::snapshot::{BackendRt, FrontendRt, RouteRt};

/// True when the balancer lays its structure out from the weights (the hash
/// ring), so a weight change needs the backend rebuilt. Round robin and the
/// others read live weights at pick time.
pub fn caches_weights(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::Source | Algorithm::Uri)
}

/// Put a member's settings on a live server (atomic stores).
fn settle(s: &ServerState, m: &Member, checks_on: bool) {
    s.update_settings(&m.config);
    s.set_admin(m.config.admin);
    s.set_source(m.source);
    if !checks_on {
        s.set_up(true);
    }
}

/// Build backend `name` from its file settings and merged members, reusing
/// the live state of servers `old` has with the same name and address.
pub fn backend(
    file: &BackendConfig,
    members: &[Member],
    old: Option<&BackendRt>,
    tls: Option<Arc<crate::tls::UpstreamTlsRt>>,
    epoch: Instant,
) -> BackendRt {
    let name = file.name.as_str();
    let checks_on = file.health.check.is_some();
    let reuse: HashMap<(&str, SocketAddr), &Arc<ServerState>> = old
        .map(|o| {
            o.servers
                .iter()
                .map(|s| ((s.name(), s.address()), s))
                .collect()
        })
        .unwrap_or_default();
    let servers: Vec<Arc<ServerState>> = members
        .iter()
        .map(
            |m| match reuse.get(&(m.config.name.as_str(), m.config.address)) {
                Some(s) => {
                    settle(s, m, checks_on);
                    Arc::clone(s)
                }
                None => {
                    let s = ServerState::new(name, &m.config, epoch, !checks_on);
                    s.set_source(m.source);
                    // After an upgrade the supervisor gives it the old
                    // process's last health result before serving.
                    Arc::new(s)
                }
            },
        )
        .collect();
    let weights: Vec<u32> = members.iter().map(|m| m.config.weight).collect();
    let ids: Vec<u64> = members
        .iter()
        .map(|m| crate::balance::hash_key(m.config.name.as_bytes()))
        .collect();
    let mut config = BackendConfig {
        servers: Vec::new(),
        ..file.clone()
    };
    config.servers = members.iter().map(|m| m.config.clone()).collect();
    BackendRt {
        name: Arc::from(name),
        tls,
        sticky_ids: members
            .iter()
            .map(|m| crate::routing::sticky_id(name, &m.config.name))
            .collect(),
        stats: old.map(|b| b.stats.clone()).unwrap_or_default(),
        balancer: Balancer::with_ids(file.balance, &weights, &ids),
        config,
        servers,
    }
}

/// For a reload: when `old` has the same settings and the same servers (same
/// names, addresses, order, and weights if the balancer caches them), settle
/// the members' admin state and weight on its live servers and return true:
/// the running backend stays as it is.
pub fn keep_backend(old: &BackendRt, file: &BackendConfig, members: &[Member]) -> bool {
    if old.tls.is_some() || old.servers.len() != members.len() {
        return false;
    }
    let same_settings = BackendConfig {
        servers: Vec::new(),
        ..old.config.clone()
    } == BackendConfig {
        servers: Vec::new(),
        ..file.clone()
    };
    if !same_settings {
        return false;
    }
    let hashed = caches_weights(file.balance);
    let same_servers = old.servers.iter().zip(members).all(|(s, m)| {
        s.name() == m.config.name
            && s.address() == m.config.address
            && s.is_backup() == m.config.backup
            && (!hashed || s.weight() == m.config.weight)
    });
    if same_servers {
        let checks_on = file.health.check.is_some();
        for (s, m) in old.servers.iter().zip(members) {
            settle(s, m, checks_on);
        }
    }
    same_servers
}

/// True when `fe` routes to `backend` (by default or by a route).
pub fn routes_to(fe: &FrontendRt, backend: &str) -> bool {
    fe.config.backend.as_deref() == Some(backend)
        || fe.config.routes.iter().any(|r| r.backend == backend)
}

/// True when a running frontend can stay on a reload: same settings, no TLS
/// (certificates are re-read on every reload) and the same backends.
pub fn keep_frontend(
    old: &FrontendRt,
    fc: &FrontendConfig,
    backends: &BTreeMap<String, Arc<BackendRt>>,
) -> bool {
    let same_backend = |b: &Arc<BackendRt>| {
        backends
            .get(b.name.as_ref())
            .is_some_and(|n| Arc::ptr_eq(n, b))
    };
    old.config == *fc
        && fc.tls.is_none()
        && old.routes.iter().all(|r| same_backend(&r.backend))
        && old.default.as_ref().is_none_or(same_backend)
        && old.routes.len() == fc.routes.len()
}

/// Build a frontend over `backends`, keeping `old`'s counters and the rate
/// limiters whose settings did not change.
pub fn frontend(
    fc: &FrontendConfig,
    backends: &BTreeMap<String, Arc<BackendRt>>,
    old: Option<&FrontendRt>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> FrontendRt {
    let routes = fc
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let backend = Arc::clone(backends.get(&r.backend)?);
            let old_limiter = old
                .and_then(|f| f.routes.get(i))
                .and_then(|o| o.limiter.as_ref());
            let limiter = r
                .rate_limit
                .as_ref()
                .map(|rl| reuse_limiter(old_limiter, rl));
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
        .map(|rl| reuse_limiter(old.and_then(|f| f.limiter.as_ref()), rl));
    FrontendRt {
        tls,
        limiter,
        stats: old.map(|f| f.stats.clone()).unwrap_or_default(),
        config: fc.clone(),
        routes,
        default: fc.backend.as_ref().and_then(|b| backends.get(b)).cloned(),
    }
}

/// Keep a limiter's buckets when its settings did not change.
fn reuse_limiter(
    old: Option<&Arc<crate::routing::ratelimit::RateLimiter>>,
    cfg: &crate::config::types::RateLimit,
) -> Arc<crate::routing::ratelimit::RateLimiter> {
    match old {
        Some(l) if l.config == *cfg => l.clone(),
        _ => Arc::new(crate::routing::ratelimit::RateLimiter::new(cfg)),
    }
}
