//! Per-server live state shared by the balancer, the proxy, health checks,
//! the admin API and metrics. Everything on the request path is an atomic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::desired::ServerSource;
use super::stats::{class_of, PerWorker, ResponseSlot};
use crate::config::types::{AdminState, ServerConfig};

/// Active check results kept per server for the dashboard.
pub const CHECK_HISTORY: usize = 20;

/// Outcome of one active health check, for status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// True when the check succeeded.
    pub ok: bool,
    /// Short human reason ("HTTP 200", "connection refused", "timeout after 1s").
    pub detail: String,
    /// How long the check took.
    pub latency: Duration,
    /// When the check finished (time since the process epoch).
    pub at: Duration,
}

/// Database role a server reported in its last role-aware health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// No role-aware check has answered yet (or the check does not report roles).
    Unknown,
    /// Writable node (PostgreSQL not in recovery, Redis master).
    Primary,
    /// Read-only replica (PostgreSQL in recovery, Redis replica).
    Standby,
}

impl Role {
    /// "unknown", "primary" or "standby".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Role::Unknown => 0,
            Role::Primary => 1,
            Role::Standby => 2,
        }
    }
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Primary,
            2 => Role::Standby,
            _ => Role::Unknown,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a server: state survives a reload when this is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub backend: String,
    pub name: String,
    pub address: SocketAddr,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RETIREMENTS: AtomicU64 = AtomicU64::new(0);

/// How many servers have left the running configuration so far: the proxy
/// sweeps its pools when this moves.
pub fn retirements() -> u64 {
    RETIREMENTS.load(Ordering::Acquire)
}

/// Live state of one upstream server.
#[derive(Debug)]
pub struct ServerState {
    pub key: ServerKey,
    /// Process-wide epoch used for the millisecond timestamps below.
    epoch: Instant,
    weight: AtomicU32,
    backup: AtomicBool,
    maxconn: AtomicU32,
    admin: AtomicU8,
    up: AtomicBool,
    /// Passive health: consecutive failed requests.
    consecutive_fails: AtomicU32,
    /// Passive health: ejected until this many ms after `epoch` (0 = not ejected).
    ejected_until_ms: AtomicU64,
    /// Requests in progress: one atomic every worker writes (twice per
    /// request), since the balancer (`leastconn`) and `maxconn` read it as
    /// one current value on the request path.
    active: AtomicU32,
    /// Requests, responses by class and bytes: a shard per worker.
    traffic: PerWorker<Traffic>,
    /// The response counters of the first frontends that sent this server
    /// requests (their `FrontendStats::id` and slot), filled on each one's
    /// first response: a response finds its frontend's slot here with no
    /// lock and no hashing. Frontends past these go through the registry.
    fe_responses: [OnceLock<(u64, Arc<ResponseSlot>)>; FE_SLOTS],
    failures: AtomicU64,
    /// Most recent active check results, oldest first (at most `CHECK_HISTORY`).
    checks: Mutex<std::collections::VecDeque<CheckReport>>,
    /// Requests per second over the last sampling period, in thousandths.
    rate_milli: AtomicU64,
    /// The request total the rate sampler saw last (`u64::MAX`: not sampled yet).
    rate_last_total: AtomicU64,
    /// Active checks run so far that succeeded (for `/metrics`).
    checks_ok: AtomicU64,
    /// Active checks run so far that failed (for `/metrics`).
    checks_failed: AtomicU64,
    /// Process-unique, kept while the server stays in the configuration:
    /// what the proxy keys its connection pools by.
    id: u64,
    /// Set once the server has left the running configuration (its pools go).
    retired: AtomicBool,
    /// Idle connections handed out again (HAProxy `reuse`), for `/metrics`.
    reused: AtomicU64,
    /// Last reported database [`Role`] (as u8).
    role: AtomicU8,
    /// Which source defines the server ([`ServerSource`] as u8).
    source: AtomicU8,
    /// Bumped whenever the role or the up/down state changes, so open
    /// connections can react (`on_role_change = "close"`).
    changes: tokio::sync::watch::Sender<u64>,
    /// Operator's view (HAProxy `smax`, `rate_max`, `chkdown`, `lastchg`, `downtime`).
    pub history: ServerHistory,
    /// Errors and aborts by kind (HAProxy `econ`, `eresp`, `cli_abrt`, `srv_abrt`).
    pub errors: super::stats::ErrorCounts,
}

/// How many frontends' response counters a server keeps at hand.
const FE_SLOTS: usize = 4;

/// One worker's share of a server's traffic counters (8 words: one cache line).
#[derive(Debug, Default)]
struct Traffic {
    total: AtomicU64,
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    responses: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// What HAProxy's stats keep per server beyond the live counters: highest
/// concurrency and rate seen, up/down transitions, when the state last
/// changed and the total time spent down. Relaxed atomics, written off the
/// request path except `active_max` (read per request, written when a new
/// highest is reached).
#[derive(Debug, Default)]
pub struct ServerHistory {
    /// Highest `active` seen.
    pub active_max: AtomicU32,
    /// Highest request rate sampled, in thousandths per second.
    pub rate_max_milli: AtomicU64,
    /// Transitions up → down.
    pub went_down: AtomicU64,
    /// Transitions down → up.
    pub went_up: AtomicU64,
    /// Last up/down change, ms after the process epoch (0 = never changed).
    pub last_change_ms: AtomicU64,
    /// Down since this many ms after the epoch + 1 (0 = up).
    down_since_ms: AtomicU64,
    /// Time spent down in completed down periods, ms.
    downtime_ms: AtomicU64,
}

fn admin_to_u8(a: AdminState) -> u8 {
    match a {
        AdminState::Ready => 0,
        AdminState::Drain => 1,
        AdminState::Maint => 2,
    }
}

fn admin_from_u8(v: u8) -> AdminState {
    match v {
        1 => AdminState::Drain,
        2 => AdminState::Maint,
        _ => AdminState::Ready,
    }
}

impl ServerState {
    /// A new server. `initially_up` is true when the backend has no active checks.
    pub fn new(backend: &str, cfg: &ServerConfig, epoch: Instant, initially_up: bool) -> Self {
        ServerState {
            key: ServerKey {
                backend: backend.to_string(),
                name: cfg.name.clone(),
                address: cfg.address,
            },
            epoch,
            weight: AtomicU32::new(cfg.weight),
            backup: AtomicBool::new(cfg.backup),
            maxconn: AtomicU32::new(cfg.maxconn.unwrap_or(0)),
            admin: AtomicU8::new(admin_to_u8(cfg.admin)),
            up: AtomicBool::new(initially_up),
            consecutive_fails: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            active: AtomicU32::new(0),
            traffic: PerWorker::default(),
            fe_responses: Default::default(),
            failures: AtomicU64::new(0),
            checks: Mutex::new(std::collections::VecDeque::with_capacity(CHECK_HISTORY)),
            rate_milli: AtomicU64::new(0),
            rate_last_total: AtomicU64::new(u64::MAX),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            retired: AtomicBool::new(false),
            reused: AtomicU64::new(0),
            role: AtomicU8::new(Role::Unknown.to_u8()),
            source: AtomicU8::new(ServerSource::File.to_u8()),
            changes: tokio::sync::watch::Sender::new(0),
            history: ServerHistory {
                down_since_ms: AtomicU64::new(u64::from(!initially_up)),
                ..Default::default()
            },
            errors: Default::default(),
        }
    }

    /// Seconds since the last up/down change (since start when it never changed).
    pub fn seconds_since_change(&self) -> f64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.history.last_change_ms.load(Ordering::Relaxed)) as f64 / 1000.0
    }

    /// Total seconds this server has been down (the current down period included).
    pub fn downtime_seconds(&self) -> f64 {
        let h = &self.history;
        let mut ms = h.downtime_ms.load(Ordering::Relaxed);
        let since = h.down_since_ms.load(Ordering::Relaxed);
        if since > 0 {
            ms += (self.epoch.elapsed().as_millis() as u64).saturating_sub(since - 1);
        }
        ms as f64 / 1000.0
    }

    /// Highest request rate sampled so far (requests per second).
    pub fn request_rate_max(&self) -> f64 {
        self.history.rate_max_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Apply the non-identity settings of a (re)loaded server config.
    pub fn update_settings(&self, cfg: &ServerConfig) {
        self.weight.store(cfg.weight, Ordering::Relaxed);
        self.backup.store(cfg.backup, Ordering::Relaxed);
        self.maxconn
            .store(cfg.maxconn.unwrap_or(0), Ordering::Relaxed);
    }

    /// Process-unique identity of this live server (a server that is
    /// replaced — new address, or removed and added again — gets a new one).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Mark the server as gone from the running configuration (done once
    /// the snapshot without it is published): connections are no longer
    /// pooled for it and its pools are dropped.
    pub fn retire(&self) {
        if !self.retired.swap(true, Ordering::AcqRel) {
            RETIREMENTS.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// True once [`ServerState::retire`]d.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Count one lookup of an idle connection (a hit is a reuse).
    pub fn count_reuse(&self, hit: bool) {
        if hit {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Idle connections handed out again so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Which source defines the server (file, inventory, dns, api, …).
    pub fn source(&self) -> ServerSource {
        ServerSource::from_u8(self.source.load(Ordering::Relaxed))
    }

    /// Set when the merged server list is applied.
    pub fn set_source(&self, s: ServerSource) {
        self.source.store(s.to_u8(), Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.key.name
    }
    pub fn address(&self) -> SocketAddr {
        self.key.address
    }
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }
    /// None when unlimited.
    pub fn maxconn(&self) -> Option<u32> {
        match self.maxconn.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
    pub fn admin(&self) -> AdminState {
        admin_from_u8(self.admin.load(Ordering::Relaxed))
    }
    pub fn set_admin(&self, a: AdminState) {
        self.admin.store(admin_to_u8(a), Ordering::Relaxed);
    }
    /// Health as seen by active checks.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
    /// Set by the health checker; returns the previous value.
    pub fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            self.bump_changes();
            let h = &self.history;
            let now = self.epoch.elapsed().as_millis() as u64;
            h.last_change_ms.store(now.max(1), Ordering::Relaxed);
            if up {
                // An active check has just seen `rise` successes in a row after the server
                // was down: a passive ejection from before (the requests that failed while
                // it was dying) is stale. Kept, it took a healthy, checked-up server out for
                // the rest of `fail_timeout` — with its peer down at the same time, the
                // backend answered 503 with a good server in it (found by bench/soak.sh).
                self.ejected_until_ms.store(0, Ordering::Relaxed);
                self.consecutive_fails.store(0, Ordering::Relaxed);
                h.went_up.fetch_add(1, Ordering::Relaxed);
                let since = h.down_since_ms.swap(0, Ordering::Relaxed);
                if since > 0 {
                    h.downtime_ms
                        .fetch_add(now.saturating_sub(since - 1), Ordering::Relaxed);
                }
            } else {
                h.went_down.fetch_add(1, Ordering::Relaxed);
                h.down_since_ms.store(now + 1, Ordering::Relaxed);
            }
        }
        was
    }

    /// Database role from the last role-aware check.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Relaxed))
    }

    /// Set by a role-aware health check; returns the previous role.
    pub fn set_role(&self, role: Role) -> Role {
        let was = Role::from_u8(self.role.swap(role.to_u8(), Ordering::Relaxed));
        if was != role {
            self.bump_changes();
        }
        was
    }

    /// A receiver that sees a change whenever the role or up/down state changes
    /// after this call.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump_changes(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// True while passive health has ejected the server.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// At its `maxconn`: new requests wait in the backend's queue.
    pub fn is_full(&self) -> bool {
        self.maxconn().is_some_and(|m| self.active() >= m)
    }

    /// Eligible for new traffic: ready, up and not ejected.
    pub fn is_usable(&self) -> bool {
        self.admin() == AdminState::Ready && self.is_up() && !self.is_ejected()
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.traffic
            .iter()
            .fold(0u64, |a, t| a.wrapping_add(t.total.load(Ordering::Relaxed)))
    }
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Count a new request/connection; the guard decrements `active` on drop.
    pub fn begin(self: &std::sync::Arc<Self>) -> ActiveGuard {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        // A read in the steady state: the line is written only when the
        // highest so far is passed (a `fetch_max` writes every time).
        let max = &self.history.active_max;
        if now > max.load(Ordering::Relaxed) {
            max.fetch_max(now, Ordering::Relaxed);
        }
        self.traffic.local().total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            server: self.clone(),
            queue: None,
        }
    }

    /// Like [`ServerState::begin`]; the end of the request also wakes one
    /// request queued in the backend (see `maxconn`).
    pub fn begin_in(
        self: &std::sync::Arc<Self>,
        backend: &std::sync::Arc<super::stats::BackendStats>,
    ) -> ActiveGuard {
        let mut g = self.begin();
        g.queue = Some(backend.clone());
        g
    }

    /// Passive health: a request to this server succeeded.
    pub fn record_success(&self) {
        if self.consecutive_fails.load(Ordering::Relaxed) != 0 {
            self.consecutive_fails.store(0, Ordering::Relaxed);
        }
    }

    /// Passive health: a request failed (connect error, reset, timeout).
    /// Returns true when this failure ejected the server.
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if max_fails == 0 {
            return false;
        }
        let n = self.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= max_fails && !self.is_ejected() {
            let until = self.now_ms() + fail_timeout.as_millis() as u64;
            self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
            self.consecutive_fails.store(0, Ordering::Relaxed);
            tracing::warn!(backend = %self.key.backend, server = %self.key.name, failures = n, "passive health: server ejected for {fail_timeout:?}");
            return true;
        }
        false
    }

    /// Store the latest active check outcome (kept in a short history).
    pub fn set_last_check(&self, report: CheckReport) {
        let counter = if report.ok {
            &self.checks_ok
        } else {
            &self.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.checks.lock() {
            if g.len() >= CHECK_HISTORY {
                g.pop_front();
            }
            g.push_back(report);
        }
    }

    /// The latest active check outcome, if any check ran.
    pub fn last_check(&self) -> Option<CheckReport> {
        self.checks.lock().ok().and_then(|g| g.back().cloned())
    }

    /// Active checks run since this server was added: (succeeded, failed).
    pub fn check_counts(&self) -> (u64, u64) {
        (
            self.checks_ok.load(Ordering::Relaxed),
            self.checks_failed.load(Ordering::Relaxed),
        )
    }

    /// Recent active check outcomes, oldest first.
    pub fn check_history(&self) -> Vec<CheckReport> {
        self.checks
            .lock()
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Count a response sent to a client by its status code.
    pub fn record_status(&self, status: u16) {
        let t = self.traffic.local();
        if let Some(c) = t.responses.get(class_of(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a response with `status` in the counters of the frontend
    /// `frontend` (a `FrontendStats::id`); `slot` finds or makes them in the
    /// frontend's registry, called once per frontend while a place is free
    /// here (every time for a fifth frontend on one server).
    pub fn record_frontend_status(
        &self,
        frontend: u64,
        status: u16,
        slot: impl FnOnce() -> Arc<ResponseSlot>,
    ) {
        for c in &self.fe_responses {
            match c.get() {
                Some((id, s)) if *id == frontend => return s.add(status),
                Some(_) => {}
                None => {
                    let s = slot();
                    s.add(status);
                    // Kept for the next responses, unless another worker has
                    // just taken this place (for this frontend or another).
                    let _ = c.set((frontend, s));
                    return;
                }
            }
        }
        slot().add(status);
    }

    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses(&self) -> [u64; 5] {
        let mut out = [0u64; 5];
        for t in self.traffic.iter() {
            for (o, c) in out.iter_mut().zip(&t.responses) {
                *o = o.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        out
    }

    /// Count bytes relayed for this server (client→server, server→client).
    /// A zero is not written (the relay counts one direction at a time).
    pub fn add_bytes(&self, inbound: u64, outbound: u64) {
        let t = self.traffic.local();
        if inbound != 0 {
            t.bytes_in.fetch_add(inbound, Ordering::Relaxed);
        }
        if outbound != 0 {
            t.bytes_out.fetch_add(outbound, Ordering::Relaxed);
        }
    }

    /// Bytes relayed so far: (client→server, server→client).
    pub fn bytes(&self) -> (u64, u64) {
        self.traffic.iter().fold((0u64, 0u64), |(i, o), t| {
            (
                i.wrapping_add(t.bytes_in.load(Ordering::Relaxed)),
                o.wrapping_add(t.bytes_out.load(Ordering::Relaxed)),
            )
        })
    }

    /// Requests per second measured by the rate sampler.
    pub fn request_rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Set by the rate sampler.
    pub fn set_request_rate(&self, per_second: f64) {
        let milli = (per_second * 1000.0).max(0.0) as u64;
        self.rate_milli.store(milli, Ordering::Relaxed);
        self.history
            .rate_max_milli
            .fetch_max(milli, Ordering::Relaxed);
    }

    /// One tick of the rate sampler: the rate since its previous tick
    /// `secs` ago (none at the first tick). No allocation, no map: the
    /// previous total is kept here.
    pub fn sample_rate(&self, secs: f64) {
        let total = self.total();
        let before = self.rate_last_total.swap(total, Ordering::Relaxed);
        if before != u64::MAX {
            self.set_request_rate(total.saturating_sub(before) as f64 / secs);
        }
    }

    /// Time since the process epoch (for check report timestamps).
    pub fn since_epoch(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Holds one unit of a server's `active` count; decrements it on drop.
#[derive(Debug)]
pub struct ActiveGuard {
    server: std::sync::Arc<ServerState>,
    queue: Option<std::sync::Arc<super::stats::BackendStats>>,
}

impl ActiveGuard {
    pub fn server(&self) -> &std::sync::Arc<ServerState> {
        &self.server
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(q) = &self.queue {
            if q.queued.load(Ordering::Relaxed) > 0 {
                q.freed.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::default_server;

    fn server(up: bool) -> ServerState {
        let cfg = default_server("s1", SocketAddr::from(([127, 0, 0, 1], 8080)));
        ServerState::new("web", &cfg, Instant::now(), up)
    }

    /// Regression (bench/soak.sh): a server killed and restarted was ejected by the requests
    /// that failed while it died, then brought back up by its active checks — and stayed out
    /// for the rest of `fail_timeout`, so a backend whose other server was down answered 503.
    #[test]
    fn an_active_check_bringing_a_server_up_ends_its_passive_ejection() {
        let s = server(true);
        for _ in 0..3 {
            s.record_failure(3, Duration::from_secs(60));
        }
        assert!(s.is_ejected());
        s.set_up(false);
        assert!(s.is_ejected() && !s.is_usable());
        s.set_up(true);
        assert!(
            !s.is_ejected(),
            "checked up again: the old ejection is stale"
        );
        assert!(s.is_usable());
    }

    /// The ejection still means something while active checks keep saying up (the app fails
    /// requests but answers its health path): no down→up flip, no reset.
    #[test]
    fn a_passive_ejection_of_a_server_checks_call_up_lasts_its_fail_timeout() {
        let s = server(true);
        for _ in 0..3 {
            s.record_failure(3, Duration::from_secs(60));
        }
        s.set_up(true);
        assert!(s.is_ejected() && !s.is_usable());
    }
}
