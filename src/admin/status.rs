//! The status document served at `/api/v1/status`, read by `fulcrum ctl`, the
//! dashboard and tests. Built from one snapshot load plus the per-server atomics.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::status_query::StatusQuery;
use crate::config::types::{AdminState, Algorithm, HostMatch, Mode};
use crate::runtime::{BackendRt, Runtime, ServerState};

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: f64,
    /// Increases with every applied change (reload, API edit, discovery update).
    pub generation: u64,
    pub config_file: Option<String>,
    pub frontends: Vec<FrontendStatus>,
    pub backends: Vec<BackendStatus>,
    /// VRRP instances on this node (empty when none are configured).
    pub vrrp: Vec<serde_json::Value>,
    /// The shared runtime-state store (`[cluster] store`), when configured:
    /// `source`, `reachable`, `last_error`, `revision`, `applied`, `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_store: Option<serde_json::Value>,
    /// The configuration's etcd key (`[cluster] config`), when configured:
    /// `source`, `reachable`, `last_error` (a refused value's errors), `applied_revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_source: Option<serde_json::Value>,
    /// Which servers this answer holds, when the query selected some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
}

/// The servers a filtered or paged status answer holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// Servers matching the filters, in all pages.
    pub servers_matched: usize,
    pub offset: usize,
    pub limit: Option<usize>,
    /// Offset of the next page, or null on the last one.
    pub next_offset: Option<usize>,
}

/// A server in the status document: full, or compact (`?compact=true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerEntry {
    Full(ServerStatus),
    Compact(CompactServer),
}

/// A server in the compact status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactServer {
    pub name: String,
    pub address: String,
    pub source: String,
    pub admin: String,
    pub health: String,
    pub usable: bool,
    pub ejected: bool,
    pub backup: bool,
    pub weight: u32,
    pub active: u32,
    pub total: u64,
    /// Responses by class.
    pub responses: ResponseCounts,
    /// Requests per second over the last second.
    pub request_rate: f64,
    pub last_check: Option<CheckStatus>,
}

/// One frontend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontendStatus {
    pub name: String,
    pub mode: String,
    pub listen: Vec<String>,
    pub backend: Option<String>,
    pub routes: Vec<RouteStatus>,
    pub requests_total: u64,
    pub active_connections: u64,
    pub local_errors_total: u64,
    /// Requests refused by a rate limit (429); part of `local_errors_total`.
    #[serde(default)]
    pub denied_total: u64,
    /// Local answers other than rate limits (no route, no server, bad request).
    #[serde(default)]
    pub request_errors_total: u64,
}

/// One routing rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub backend: String,
}

/// One backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub balance: String,
    pub health_check: Option<String>,
    pub servers_total: usize,
    pub servers_usable: usize,
    pub no_server_total: u64,
    pub retries_total: u64,
    /// Requests waiting for a server slot now, the most at once, and the limit (`max_queue`).
    #[serde(default)]
    pub queue_current: u64,
    #[serde(default)]
    pub queue_max: u64,
    #[serde(default)]
    pub queue_limit: u64,
    pub servers: Vec<ServerEntry>,
    /// The live discovery source, when the backend has one.
    pub discovery: Option<DiscoveryStatus>,
}

/// What a backend's discovery source last did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    /// e.g. `file /etc/fulcrum/web.json` or `dns web.internal`.
    pub source: String,
    /// Why the last attempt failed (file:line:col for a bad inventory), or null.
    pub last_error: Option<String>,
    /// Servers in the list last applied.
    pub servers: usize,
    /// Changed lists applied so far.
    pub updates: u64,
    /// etcd: whether the store can be read now (false: serving the last
    /// known list); absent for file and DNS sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_reachable: Option<bool>,
    /// Entries skipped in the last list because their value was bad.
    #[serde(default)]
    pub skipped: u64,
    /// etcd: the store revision the applied list reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// One server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub backup: bool,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// `up` or `down` (active checks).
    pub health: String,
    /// Taken out by passive health for now.
    pub ejected: bool,
    /// Takes new traffic now (ready, up, not ejected).
    pub usable: bool,
    pub active: u32,
    pub total: u64,
    pub failures: u64,
    /// Responses by class.
    pub responses: ResponseCounts,
    /// Requests per second over the last second.
    pub request_rate: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Most requests in flight at once since start (HAProxy smax).
    #[serde(default)]
    pub active_max: u32,
    /// Concurrency limit (HAProxy slim); null = unlimited.
    #[serde(default)]
    pub maxconn: Option<u32>,
    /// Highest sampled request rate.
    #[serde(default)]
    pub request_rate_max: f64,
    /// Idle pooled connections reused.
    #[serde(default)]
    pub reuses: u64,
    /// Up → down transitions (HAProxy chkdown).
    #[serde(default)]
    pub check_down: u64,
    /// Seconds since the last up/down change (HAProxy lastchg).
    #[serde(default)]
    pub last_change_seconds: f64,
    /// Total seconds down since start (HAProxy downtime).
    #[serde(default)]
    pub downtime_seconds: f64,
    /// Where the server comes from: `file`, `inventory`, `dns`, `discovery` or `api`.
    #[serde(default)]
    pub source: String,
    /// Errors and aborts by kind (HAProxy econ, eresp, cli_abrt, srv_abrt).
    #[serde(default)]
    pub errors: ErrorKinds,
    /// Requests that failed on this server and were tried again (HAProxy wretr).
    #[serde(default)]
    pub retries_total: u64,
    /// Of those, the ones tried again on another server (HAProxy wredis).
    #[serde(default)]
    pub redispatches_total: u64,
    pub last_check: Option<CheckStatus>,
    /// Recent checks, oldest first.
    pub check_history: Vec<CheckStatus>,
}

/// A server's errors and aborts by kind (see `fulcrum_server_*_total` in the README).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ErrorKinds {
    /// No connection (refused, timeout, TLS).
    pub connection: u64,
    /// No good answer (before or after the head); server aborts included.
    pub response: u64,
    /// The client went away before the response ended.
    pub client_aborts: u64,
    /// The server stopped in the middle of the body.
    pub server_aborts: u64,
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ResponseCounts {
    #[serde(rename = "1xx")]
    pub c1: u64,
    #[serde(rename = "2xx")]
    pub c2: u64,
    #[serde(rename = "3xx")]
    pub c3: u64,
    #[serde(rename = "4xx")]
    pub c4: u64,
    #[serde(rename = "5xx")]
    pub c5: u64,
}

/// One active check result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatus {
    pub ok: bool,
    pub detail: String,
    pub latency_ms: f64,
    /// Milliseconds since the check finished.
    pub age_ms: u64,
}

/// Name of an administrative state as used in the API.
pub fn admin_name(a: AdminState) -> &'static str {
    match a {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

/// Name of a balancing algorithm as written in the config.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "roundrobin",
        Algorithm::LeastConn => "leastconn",
        Algorithm::Random => "random",
        Algorithm::Source => "source",
        Algorithm::Uri => "uri",
        Algorithm::First => "first",
    }
}

/// Compact status of one server.
pub fn compact_server(s: &ServerState) -> CompactServer {
    CompactServer {
        name: s.name().to_string(),
        address: s.address().to_string(),
        source: s.source().as_str().to_string(),
        admin: admin_name(s.admin()).to_string(),
        health: if s.is_up() { "up" } else { "down" }.to_string(),
        usable: s.is_usable(),
        ejected: s.is_ejected(),
        backup: s.is_backup(),
        weight: s.weight(),
        active: s.active(),
        total: s.total(),
        responses: response_counts(s),
        request_rate: s.request_rate(),
        last_check: s.last_check().map(|c| check_status(s, c)),
    }
}

fn response_counts(s: &ServerState) -> ResponseCounts {
    let r = s.responses();
    ResponseCounts {
        c1: r[0],
        c2: r[1],
        c3: r[2],
        c4: r[3],
        c5: r[4],
    }
}

fn check_status(s: &ServerState, c: crate::runtime::server::CheckReport) -> CheckStatus {
    CheckStatus {
        ok: c.ok,
        detail: c.detail,
        latency_ms: c.latency.as_secs_f64() * 1000.0,
        age_ms: s.since_epoch().saturating_sub(c.at).as_millis() as u64,
    }
}

/// Status of one server, with its check history.
pub fn server_status(s: &ServerState) -> ServerStatus {
    server_status_with(s, true)
}

fn server_status_with(s: &ServerState, history: bool) -> ServerStatus {
    let now = s.since_epoch();
    let check = |c: crate::runtime::server::CheckReport| CheckStatus {
        ok: c.ok,
        detail: c.detail,
        latency_ms: c.latency.as_secs_f64() * 1000.0,
        age_ms: now.saturating_sub(c.at).as_millis() as u64,
    };
    let r = s.responses();
    let (bytes_in, bytes_out) = s.bytes();
    ServerStatus {
        name: s.name().to_string(),
        address: s.address().to_string(),
        weight: s.weight(),
        backup: s.is_backup(),
        admin: admin_name(s.admin()).to_string(),
        health: if s.is_up() { "up" } else { "down" }.to_string(),
        ejected: s.is_ejected(),
        usable: s.is_usable(),
        active: s.active(),
        total: s.total(),
        failures: s.failures(),
        responses: ResponseCounts {
            c1: r[0],
            c2: r[1],
            c3: r[2],
            c4: r[3],
            c5: r[4],
        },
        request_rate: s.request_rate(),
        bytes_in,
        bytes_out,
        active_max: s
            .history
            .active_max
            .load(std::sync::atomic::Ordering::Relaxed),
        maxconn: s.maxconn(),
        request_rate_max: s.request_rate_max(),
        reuses: s.reused(),
        check_down: s
            .history
            .went_down
            .load(std::sync::atomic::Ordering::Relaxed),
        last_change_seconds: s.seconds_since_change(),
        downtime_seconds: s.downtime_seconds(),
        source: s.source().as_str().to_string(),
        errors: {
            let [connection, response, client_aborts, server_aborts] = s.errors.get();
            ErrorKinds {
                connection,
                response,
                client_aborts,
                server_aborts,
            }
        },
        retries_total: s.errors.retried()[0],
        redispatches_total: s.errors.retried()[1],
        last_check: s.last_check().map(check),
        check_history: if history {
            s.check_history().into_iter().map(check).collect()
        } else {
            Vec::new()
        },
    }
}

fn backend_status(rt: &Arc<Runtime>, b: &BackendRt, servers: Vec<ServerEntry>) -> BackendStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let health_check = b.config.health.check.as_ref().map(|c| c.describe());
    BackendStatus {
        name: b.config.name.clone(),
        balance: algorithm_name(b.config.balance).to_string(),
        health_check,
        servers_total: b.servers.len(),
        servers_usable: b.usable_count(),
        no_server_total: b.stats.no_server.load(Relaxed),
        retries_total: b.stats.retries.load(Relaxed),
        queue_current: b.stats.queued.load(Relaxed) as u64,
        queue_max: b.stats.queue_max.load(Relaxed) as u64,
        queue_limit: b.config.max_queue as u64,
        servers,
        discovery: crate::discovery::status(rt, &b.config.name).map(|d| DiscoveryStatus {
            source: d.source,
            last_error: d.last_error,
            servers: d.servers,
            updates: d.updates,
            store_reachable: d.connected,
            skipped: d.skipped,
            revision: d.revision,
        }),
    }
}

#[cfg(feature = "etcd")]
fn cluster_store(rt: &Runtime) -> Option<serde_json::Value> {
    crate::cluster::store::status(rt).and_then(|s| serde_json::to_value(s).ok())
}

#[cfg(not(feature = "etcd"))]
fn cluster_store(_: &Runtime) -> Option<serde_json::Value> {
    None
}

#[cfg(feature = "etcd")]
fn config_source(rt: &Runtime) -> Option<serde_json::Value> {
    crate::cluster::config_source::status(rt).and_then(|s| serde_json::to_value(s).ok())
}

#[cfg(not(feature = "etcd"))]
fn config_source(_: &Runtime) -> Option<serde_json::Value> {
    None
}

/// The body of a status answer: the full document pretty-printed as it
/// always was; filtered or compact answers (for programs) not.
pub fn render(rt: &Arc<Runtime>, vrrp: Vec<serde_json::Value>, q: &StatusQuery) -> Vec<u8> {
    let doc = status_for(rt, vrrp, q);
    let body = if *q == StatusQuery::full() {
        serde_json::to_vec_pretty(&doc)
    } else {
        serde_json::to_vec(&doc)
    };
    body.unwrap_or_else(|_| b"{}".to_vec())
}

/// Build the full status document.
pub fn status(rt: &Arc<Runtime>, vrrp: Vec<serde_json::Value>) -> Status {
    status_for(rt, vrrp, &StatusQuery::full())
}

/// The backends and servers `q` asks for, with the page it makes.
fn select(
    rt: &Arc<Runtime>,
    snap: &crate::runtime::Snapshot,
    q: &StatusQuery,
) -> (Vec<BackendStatus>, Option<Page>) {
    let entry = |s: &ServerState| {
        if q.compact {
            ServerEntry::Compact(compact_server(s))
        } else {
            ServerEntry::Full(server_status_with(s, q.history))
        }
    };
    let end = q.limit.map_or(usize::MAX, |l| q.offset.saturating_add(l));
    let mut matched = 0usize;
    let mut out = Vec::new();
    for b in snap.backends.values().filter(|b| q.wants_backend(&b.name)) {
        let mut servers = Vec::new();
        for s in b.servers.iter().filter(|s| q.wants_server(&b.name, s)) {
            if matched >= q.offset && matched < end {
                servers.push(entry(s));
            }
            matched += 1;
        }
        if servers.is_empty() && q.selects_servers() {
            continue;
        }
        // The discovery source stays in the compact form too (one per
        // backend at most): the dashboard shows its last error.
        out.push(backend_status(rt, b, servers));
    }
    let page = q.selects_servers().then(|| Page {
        servers_matched: matched,
        offset: q.offset,
        limit: q.limit,
        next_offset: (end < matched).then_some(end),
    });
    (out, page)
}

/// Build the status document `q` asks for (see [`super::status_query`]).
pub fn status_for(rt: &Arc<Runtime>, vrrp: Vec<serde_json::Value>, q: &StatusQuery) -> Status {
    use std::sync::atomic::Ordering::Relaxed;
    let snap = rt.snapshot_arc();
    let mut frontends: Vec<FrontendStatus> = snap
        .frontends
        .values()
        .map(|f| FrontendStatus {
            name: f.config.name.clone(),
            mode: match f.config.mode {
                Mode::Http => "http",
                Mode::Tcp => "tcp",
            }
            .to_string(),
            listen: f.config.listen.iter().map(|a| a.to_string()).collect(),
            backend: f.config.backend.clone(),
            routes: f
                .config
                .routes
                .iter()
                .map(|r| RouteStatus {
                    host: r.host.as_ref().map(|h| match h {
                        HostMatch::Exact(e) => e.clone(),
                        HostMatch::Suffix(s) => format!("*{s}"),
                    }),
                    path_prefix: r.path_prefix.clone(),
                    backend: r.backend.clone(),
                })
                .collect(),
            requests_total: f.stats.requests.load(Relaxed),
            active_connections: f.stats.connections.load(Relaxed),
            local_errors_total: f.stats.local_errors.load(Relaxed),
            denied_total: f.stats.denied.load(Relaxed),
            request_errors_total: f
                .stats
                .local_errors
                .load(Relaxed)
                .saturating_sub(f.stats.denied.load(Relaxed)),
        })
        .collect();
    frontends.sort_by(|a, b| a.name.cmp(&b.name));
    let (backends, page) = select(rt, &snap, q);
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: rt.uptime().as_secs_f64(),
        generation: rt.generation(),
        config_file: snap.config.source.as_ref().map(|p| p.display().to_string()),
        frontends,
        backends,
        vrrp,
        page,
        cluster_store: cluster_store(rt),
        config_source: config_source(rt),
    }
}
