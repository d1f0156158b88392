//! The immutable snapshot read once per request: frontends with routes resolved
//! to backends, backends with their servers' live state and a balancer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::balance::{Balancer, ServerView};
#[cfg(test)]
use crate::config::types::HostMatch;
use crate::config::types::{BackendConfig, Config, FrontendConfig, RoleFilter, Route};

use super::server::{Role, ServerState};
use super::stats::{BackendStats, FrontendStats};
use crate::routing::ratelimit::RateLimiter;
use crate::routing::route::RouteIndex;

/// One published generation of the live configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every applied change.
    pub generation: u64,
    /// The configuration file as loaded (runtime edits are in the overlay;
    /// each backend's merged servers are in its `BackendRt`).
    pub config: Arc<Config>,
    pub frontends: HashMap<String, Arc<FrontendRt>>,
    pub backends: BTreeMap<String, Arc<BackendRt>>,
}

impl Snapshot {
    /// Find a server's live state by backend and server name.
    pub fn server(&self, backend: &str, server: &str) -> Option<&Arc<ServerState>> {
        self.backends
            .get(backend)?
            .servers
            .iter()
            .find(|s| s.name() == server)
    }
}

/// A frontend with its routes resolved.
pub struct FrontendRt {
    pub config: FrontendConfig,
    /// TLS handshakes for this frontend's listeners (certificates as loaded by the last reload).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Counters kept across reloads.
    pub stats: Arc<FrontendStats>,
    /// The routes in config order, with their index (built with the snapshot).
    pub routes: Routes,
    pub default: Option<Arc<BackendRt>>,
    /// The frontend-wide rate limiter (buckets kept across reloads when unchanged).
    pub limiter: Option<Arc<RateLimiter>>,
}

/// A route with its backend and rate limiter resolved.
#[derive(Debug)]
pub struct RouteRt {
    pub route: Route,
    pub backend: Arc<BackendRt>,
    pub limiter: Option<Arc<RateLimiter>>,
}

impl std::fmt::Debug for FrontendRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendRt")
            .field("name", &self.config.name)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl FrontendRt {
    /// The backend for a request with this host (may include a port) and
    /// path, with the matching route's rate limiter: the first route that
    /// matches (found by index, see `routing::route`), else the default backend.
    pub fn route(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Option<(&Arc<BackendRt>, Option<&Arc<RateLimiter>>)> {
        let found = self.routes.index.lookup(host.map(strip_port), path);
        match found.and_then(|i| self.routes.list.get(i)) {
            Some(rt) => Some((&rt.backend, rt.limiter.as_ref())),
            None => self.default.as_ref().map(|b| (b, None)),
        }
    }
}

/// A frontend's routes in config order and the index that finds the first
/// match without a scan. Collected from `RouteRt`s (the index is built then).
#[derive(Debug, Default)]
pub struct Routes {
    list: Vec<RouteRt>,
    index: RouteIndex,
    /// The distinct backends the routes lead to (a frontend's 10 000 routes
    /// usually share a few), for checks over "every backend of a frontend".
    backends: Vec<Arc<BackendRt>>,
}

impl Routes {
    /// The distinct backends these routes lead to.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendRt>> {
        self.backends.iter()
    }
}

impl FromIterator<RouteRt> for Routes {
    fn from_iter<T: IntoIterator<Item = RouteRt>>(iter: T) -> Self {
        let list: Vec<RouteRt> = iter.into_iter().collect();
        let index = RouteIndex::build(
            list.iter()
                .map(|r| (r.route.host.as_ref(), r.route.path_prefix.as_deref())),
        );
        let mut seen = std::collections::HashSet::new();
        let backends = list
            .iter()
            .filter(|r| seen.insert(Arc::as_ptr(&r.backend)))
            .map(|r| r.backend.clone())
            .collect();
        Routes {
            list,
            index,
            backends,
        }
    }
}

impl std::ops::Deref for Routes {
    type Target = [RouteRt];
    fn deref(&self) -> &[RouteRt] {
        &self.list
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port → [v6]
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The linear scan's host rule, kept as the reference for the tests below.
#[cfg(test)]
fn host_matches(m: &HostMatch, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    match m {
        HostMatch::Exact(e) => host.eq_ignore_ascii_case(e),
        HostMatch::Suffix(s) => {
            host.len() > s.len()
                && host
                    .get(host.len() - s.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
        }
    }
}

/// A backend: its servers' live state and the balancer over them.
#[derive(Debug)]
pub struct BackendRt {
    pub config: BackendConfig,
    /// The backend's name, shared by every log entry (no allocation per request).
    pub name: Arc<str>,
    /// TLS towards the servers, when the backend asks for it.
    pub tls: Option<Arc<crate::tls::UpstreamTlsRt>>,
    /// Sticky-cookie value of each server (same order as `servers`).
    pub sticky_ids: Vec<String>,
    /// Counters kept across reloads.
    pub stats: Arc<BackendStats>,
    pub servers: Vec<Arc<ServerState>>,
    pub balancer: Balancer,
}

/// The view a balancer sees: one tier (primaries or backups), minus servers
/// this request already tried.
struct TierView<'a> {
    servers: &'a [Arc<ServerState>],
    backup: bool,
    /// Only servers reporting this role (None: any role).
    role: Option<Role>,
    tried: &'a [usize],
}

impl ServerView for TierView<'_> {
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn usable(&self, i: usize) -> bool {
        match self.servers.get(i) {
            Some(s) => {
                s.is_backup() == self.backup
                    && s.is_usable()
                    && !s.is_full()
                    && self.role.is_none_or(|r| s.role() == r)
                    && !self.tried.contains(&i)
            }
            None => false,
        }
    }
    fn weight(&self, i: usize) -> u32 {
        self.servers.get(i).map_or(0, |s| s.weight())
    }
    fn active(&self, i: usize) -> u32 {
        self.servers.get(i).map_or(0, |s| s.active())
    }
    fn maxconn(&self, i: usize) -> Option<u32> {
        self.servers.get(i).and_then(|s| s.maxconn())
    }
}

impl BackendRt {
    /// Pick a server for a request: primaries first, backups only when no
    /// primary is usable. `tried` lists servers this request already failed on.
    /// With a `role` filter only servers reporting that role count; a
    /// `standby` backend falls back to the primary when no standby is usable.
    pub fn pick(&self, hash_key: Option<u64>, tried: &[usize]) -> Option<&Arc<ServerState>> {
        for &role in role_tiers(self.config.role.want) {
            for backup in [false, true] {
                let view = TierView {
                    servers: &self.servers,
                    backup,
                    role,
                    tried,
                };
                if let Some(i) = self.balancer.pick(&view, hash_key) {
                    return self.servers.get(i);
                }
            }
        }
        None
    }

    /// Index of a server in this backend (for the `tried` list).
    pub fn index_of(&self, server: &Arc<ServerState>) -> Option<usize> {
        self.servers.iter().position(|s| Arc::ptr_eq(s, server))
    }

    /// The server a sticky cookie names, if it may still take this session:
    /// up and not in maintenance (a drained server keeps its sessions, as in HAProxy).
    pub fn sticky_server(&self, cookie: &str) -> Option<usize> {
        let i = self.sticky_ids.iter().position(|id| id == cookie)?;
        let s = self.servers.get(i)?;
        let ok =
            s.is_up() && !s.is_ejected() && s.admin() != crate::config::types::AdminState::Maint;
        ok.then_some(i)
    }

    /// True when some server could take traffic but is at its `maxconn`
    /// (a request should queue rather than fail).
    pub fn all_busy(&self) -> bool {
        self.servers.iter().any(|s| s.is_usable() && s.is_full())
    }

    /// Number of servers that can take traffic now.
    /// With a role filter, only servers whose role the backend accepts.
    pub fn usable_count(&self) -> usize {
        let tiers = role_tiers(self.config.role.want);
        self.servers
            .iter()
            .filter(|s| s.is_usable() && tiers.iter().any(|r| r.is_none_or(|r| s.role() == r)))
            .count()
    }
}

/// Roles tried in order when picking: `standby` reads fall back to the primary.
fn role_tiers(want: RoleFilter) -> &'static [Option<Role>] {
    match want {
        RoleFilter::Any => &[None],
        RoleFilter::Primary => &[Some(Role::Primary)],
        RoleFilter::Standby => &[Some(Role::Standby), Some(Role::Primary)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_backend(want: RoleFilter, roles: &[(Role, bool)]) -> BackendRt {
        use crate::config::types::*;
        use std::time::Instant;
        let servers: Vec<ServerConfig> = (0..roles.len())
            .map(|i| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5432 + i as u16));
                crate::config::validate::default_server(&format!("db{i}"), addr)
            })
            .collect();
        let epoch = Instant::now();
        let states: Vec<Arc<ServerState>> = servers
            .iter()
            .zip(roles)
            .map(|(c, &(role, up))| {
                let s = ServerState::new("db", c, epoch, up);
                s.set_role(role);
                Arc::new(s)
            })
            .collect();
        let mut config = crate::config::validate::default_backend("db", servers);
        config.role = RolePolicy {
            want,
            on_change: OnRoleChange::Close,
        };
        BackendRt {
            name: Arc::from(config.name.as_str()),
            config,
            tls: None,
            sticky_ids: vec![String::new(); roles.len()],
            stats: Default::default(),
            balancer: Balancer::new(Algorithm::RoundRobin, &vec![1; roles.len()]),
            servers: states,
        }
    }

    fn picked(b: &BackendRt) -> Option<String> {
        b.pick(None, &[]).map(|s| s.name().to_string())
    }

    #[test]
    fn role_filter_in_picking() {
        use Role::*;
        let writes = role_backend(RoleFilter::Primary, &[(Standby, true), (Primary, true)]);
        for _ in 0..4 {
            assert_eq!(picked(&writes).as_deref(), Some("db1"));
        }
        assert_eq!(writes.usable_count(), 1);
        // The primary is demoted: nothing takes writes, at once.
        writes.servers[1].set_role(Standby);
        assert_eq!(picked(&writes), None);
        assert_eq!(writes.usable_count(), 0);

        // Reads prefer standbys and fall back to the primary.
        let reads = role_backend(
            RoleFilter::Standby,
            &[(Primary, true), (Standby, true), (Standby, true)],
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(picked(&reads).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["db1", "db2"]);
        reads.servers[1].set_up(false);
        reads.servers[2].set_role(Unknown);
        assert_eq!(
            picked(&reads).as_deref(),
            Some("db0"),
            "fallback to the primary"
        );
        assert_eq!(reads.usable_count(), 1);

        // `any` ignores roles, unknown included.
        let any = role_backend(RoleFilter::Any, &[(Unknown, true)]);
        assert_eq!(picked(&any).as_deref(), Some("db0"));
    }

    #[test]
    fn role_and_health_changes_are_watched() {
        let b = role_backend(RoleFilter::Primary, &[(Role::Primary, true)]);
        let s = &b.servers[0];
        let mut rx = s.watch_changes();
        assert!(!rx.has_changed().unwrap());
        s.set_role(Role::Primary);
        assert!(!rx.has_changed().unwrap(), "same role: no change");
        s.set_role(Role::Standby);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        s.set_up(false);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn host_matching() {
        let e = HostMatch::Exact("api.example.com".into());
        assert!(host_matches(&e, "API.example.com"));
        assert!(host_matches(&e, "api.example.com."));
        assert!(!host_matches(&e, "www.example.com"));
        let s = HostMatch::Suffix(".example.com".into());
        assert!(host_matches(&s, "a.example.com"));
        assert!(host_matches(&s, "a.b.EXAMPLE.com"));
        assert!(!host_matches(&s, "example.com"));
        assert!(!host_matches(&s, "badexample.com"));
    }
}
