//! Counters for frontends and backends that survive reloads (reused by name
//! when the next snapshot is built), read by the admin API and `/metrics`.
//!
//! Every worker (a thread per core, `proxy::workers`) counts its requests in
//! its own shard of each hot counter — a cache line no other worker writes —
//! and a read sums the shards. A request then writes no line that another
//! core writes too: no cache-line ping-pong between cores on the request
//! path. What is still shared (written by every worker) is listed in README
//! "Per core": a server's `active` count, a frontend's open connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One `T` per proxy worker, each on its own cache line(s): a worker writes
/// only its own (`local`), readers sum them all (`iter`). Sized when created
/// from the number of workers running then (1 without workers: one thread,
/// or the library used without `proxy::workers::start`).
#[derive(Debug)]
pub struct PerWorker<T> {
    shards: Box<[CachePadded<T>]>,
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker {
            shards: (0..crate::proxy::workers::shards().max(1))
                .map(|_| CachePadded::new(T::default()))
                .collect(),
        }
    }
}

impl<T> PerWorker<T> {
    /// The shard of the worker this runs on (the first one off the workers,
    /// or when created before the workers started: then they share it).
    #[inline]
    pub fn local(&self) -> &T {
        let i = crate::proxy::workers::index();
        match self.shards.get(i).or_else(|| self.shards.first()) {
            Some(s) => s,
            // Never: built with at least one shard.
            None => unreachable!("PerWorker has no shard"),
        }
    }

    /// Every worker's shard.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &**s)
    }
}

/// A counter with one shard per worker. `fetch_add` and `load` take an
/// `Ordering` like `AtomicU64`'s so call sites read the same; both are
/// relaxed (a counter orders nothing).
#[derive(Debug, Default)]
pub struct Counter(PerWorker<AtomicU64>);

impl Counter {
    /// Add `n` to this worker's shard.
    #[inline]
    pub fn fetch_add(&self, n: u64, _: Ordering) {
        self.0.local().fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over the workers.
    pub fn load(&self, _: Ordering) -> u64 {
        self.0
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// Status class index of a status code: 0 = 1xx … 4 = 5xx.
#[inline]
pub fn class_of(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

/// Sum `[AtomicU64; N]` shards.
fn sum_arrays<const N: usize>(shards: &PerWorker<[AtomicU64; N]>) -> [u64; N] {
    let mut out = [0u64; N];
    for s in shards.iter() {
        for (o, c) in out.iter_mut().zip(s) {
            *o = o.wrapping_add(c.load(Ordering::Relaxed));
        }
    }
    out
}

/// One worker's part of a [`Histogram`] (15 words: one 128-byte line).
#[derive(Debug, Default)]
struct HistShard {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A cumulative-at-read histogram of durations with fixed buckets, one
/// shard per worker.
#[derive(Debug, Default)]
pub struct Histogram(PerWorker<HistShard>);

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        let h = self.0.local();
        if let Some(b) = h.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (Prometheus `le` semantics), the last being +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut per = [0u64; DURATION_BUCKETS.len() + 1];
        for s in self.0.iter() {
            for (o, b) in per.iter_mut().zip(&s.buckets) {
                *o = o.wrapping_add(b.load(Ordering::Relaxed));
            }
        }
        let mut acc = 0u64;
        per.iter()
            .map(|n| {
                acc = acc.wrapping_add(*n);
                acc
            })
            .collect()
    }

    /// Sum of observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        let micros = self.0.iter().fold(0u64, |a, s| {
            a.wrapping_add(s.sum_micros.load(Ordering::Relaxed))
        });
        micros as f64 / 1e6
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.count.load(Ordering::Relaxed)))
    }
}

/// Traffic through one frontend. The per-request counters are sharded by
/// worker ([`Counter`]); `connections` is one atomic, since `maxconn` takes
/// its slots with a compare-and-swap across the workers (once per
/// connection, not per request).
#[derive(Debug)]
pub struct FrontendStats {
    /// Unique in the process (these stats are kept across reloads, so the
    /// frontend keeps it): how a server finds this frontend's response
    /// counters among the ones it keeps at hand.
    pub id: u64,
    /// Requests (HTTP) or sessions (TCP) received.
    pub requests: Counter,
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Requests answered locally because no route or no server matched.
    pub local_errors: Counter,
    /// Requests refused by a rate limit (429), also counted in `local_errors`.
    pub denied: Counter,
    /// Completed TLS handshakes, of which resumed (ticket or session id), and failed ones.
    pub tls_handshakes: Counter,
    pub tls_resumptions: Counter,
    pub tls_failures: Counter,
    /// Requests that failed by the client's fault (body aborted or
    /// malformed, client gone): never counted against a server.
    pub client_errors: Counter,
    /// Signalled when a client connection closes (for `maxconn`).
    pub closed: tokio::sync::Notify,
    /// Responses this frontend's requests got, by backend and server: the
    /// `frontend` label of `fulcrum_requests_total` (a backend reached from
    /// two frontends is split between them as the requests were).
    pub responses: ResponseCounts,
}

/// One frontend's responses from one server, by status class (index 0 =
/// 1xx … 4 = 5xx), a shard per worker. Reached on the request path from
/// the server (`ServerState::record_frontend_status`): one relaxed add per
/// response.
#[derive(Debug, Default)]
pub struct ResponseSlot(PerWorker<[AtomicU64; 5]>);

impl ResponseSlot {
    /// Count one response with `status`.
    #[inline]
    pub fn add(&self, status: u16) {
        if let Some(n) = self.0.local().get(class_of(status)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts by class, summed over the workers.
    pub fn get(&self) -> [u64; 5] {
        sum_arrays(&self.0)
    }
}

/// Response counts by (backend, server) and status class (1xx..5xx): the
/// registry that keeps the slots by name across reloads (a server that
/// stays, or comes back under the same name, keeps counting on).
#[derive(Debug, Default)]
pub struct ResponseCounts(RwLock<HashMap<Box<str>, ByServer>>);

/// One backend's response counts by server name.
type ByServer = HashMap<Box<str>, Arc<ResponseSlot>>;

impl ResponseCounts {
    /// The slot of `backend`/`server`, created when missing.
    pub fn slot(&self, backend: &str, server: &str) -> Arc<ResponseSlot> {
        if let Ok(m) = self.0.read() {
            if let Some(c) = m.get(backend).and_then(|b| b.get(server)) {
                return c.clone();
            }
        }
        match self.0.write() {
            Ok(mut m) => m
                .entry(backend.into())
                .or_default()
                .entry(server.into())
                .or_default()
                .clone(),
            // Poisoned (a panic while inserting): count apart rather than not at all.
            Err(_) => Arc::default(),
        }
    }

    /// Count one response with `status` from `backend`/`server` by name (a
    /// lookup: for tests and tools; a response goes through [`FrontendStats::record_response`]).
    pub fn add(&self, backend: &str, server: &str, status: u16) {
        self.slot(backend, server).add(status);
    }

    /// The counts of `backend`/`server` (zeros before its first response).
    pub fn get(&self, backend: &str, server: &str) -> [u64; 5] {
        let Ok(m) = self.0.read() else {
            return [0; 5];
        };
        match m.get(backend).and_then(|b| b.get(server)) {
            Some(c) => c.get(),
            None => [0; 5],
        }
    }
}

impl Default for FrontendStats {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        FrontendStats {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            requests: Counter::default(),
            connections: AtomicU64::new(0),
            local_errors: Counter::default(),
            denied: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_resumptions: Counter::default(),
            tls_failures: Counter::default(),
            client_errors: Counter::default(),
            closed: tokio::sync::Notify::new(),
            responses: ResponseCounts::default(),
        }
    }
}

/// How an exchange that got a response head from a server ended, for the
/// error counters ([`ErrorCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseEnd {
    /// The whole response reached the client.
    Clean,
    /// The client went away (closed, reset, stopped reading past its
    /// timeout) before the response ended (HAProxy `cli_abrt`).
    ClientAbort,
    /// The server closed, reset or went silent past its timeout in the
    /// middle of the body (HAProxy `srv_abrt`; also a response error).
    ServerAbort,
    /// The body the server sent was not valid (its chunked framing): a
    /// response error that is not a server abort.
    Malformed,
}

/// Errors and aborts by kind, kept per server and per backend (the
/// backend's survive its servers' removal): HAProxy `econ`, `eresp`,
/// `cli_abrt`, `srv_abrt`.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    /// Attempts that could not get a connection (refused, timeout, TLS).
    pub connection: AtomicU64,
    /// Answers that were not good HTTP: no head (closed, reset, timed out
    /// before it, or not HTTP), or a body that broke after the head went to
    /// the client — server aborts included, as HAProxy counts `eresp`.
    pub response: AtomicU64,
    /// Responses the client did not take to their end.
    pub client_aborts: AtomicU64,
    /// Responses whose body the server did not send to its end.
    pub server_aborts: AtomicU64,
    /// On a server: requests that failed on it and were tried again
    /// (HAProxy `wretr`).
    pub retries: AtomicU64,
    /// Of those, the ones tried again on another server (HAProxy `wredis`;
    /// fulcrum retries on another server whenever one is left).
    pub redispatches: AtomicU64,
}

impl ErrorCounts {
    /// Count how a response ended (nothing for a clean end).
    pub fn record_end(&self, end: ResponseEnd) {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match end {
            ResponseEnd::Clean => {}
            ResponseEnd::ClientAbort => bump(&self.client_aborts),
            ResponseEnd::ServerAbort => {
                bump(&self.server_aborts);
                bump(&self.response);
            }
            ResponseEnd::Malformed => bump(&self.response),
        }
    }

    /// (retries, redispatches) now (see the fields).
    pub fn retried(&self) -> [u64; 2] {
        [&self.retries, &self.redispatches].map(|c| c.load(Ordering::Relaxed))
    }

    /// (connection, response, client aborts, server aborts) now.
    pub fn get(&self) -> [u64; 4] {
        [
            &self.connection,
            &self.response,
            &self.client_aborts,
            &self.server_aborts,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

impl FrontendStats {
    /// Count a response with `status` from `server` for this frontend
    /// (`fulcrum_requests_total`): one relaxed add in the server's slot for
    /// this frontend, found without a lock or a hash.
    #[inline]
    pub fn record_response(&self, server: &crate::runtime::server::ServerState, status: u16) {
        server.record_frontend_status(self.id, status, || {
            self.responses.slot(&server.key.backend, server.name())
        });
    }

    /// Count one completed TLS handshake (resumed or full).
    pub fn record_tls(&self, kind: Option<rustls::HandshakeKind>) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        if kind == Some(rustls::HandshakeKind::Resumed) {
            self.tls_resumptions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Traffic through one backend. The three histograms every request writes
/// are sharded by worker; the rest is written on rare paths (no server,
/// retry, queueing).
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Total time of requests, accept/request start to the end of the response body.
    pub duration: Histogram,
    /// Requests that found no usable server (503).
    pub no_server: AtomicU64,
    /// Attempts retried onto another server.
    pub retries: AtomicU64,
    /// Requests waiting for a server below its `maxconn`.
    pub queued: AtomicUsize,
    /// Highest `queued` seen.
    pub queue_max: AtomicUsize,
    /// Time requests waited in the queue for a server slot.
    pub queue_wait: Histogram,
    /// Time to get an upstream connection (0 when reused from the pool).
    pub connect: Histogram,
    /// Request sent → response head received.
    pub response: Histogram,
    /// Signalled when a request ends, so a queued one can take the slot.
    pub freed: tokio::sync::Notify,
    /// Errors and aborts of this backend's servers, summed as they happen.
    pub errors: ErrorCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let c = h.cumulative();
        assert_eq!(c[0], 1);
        assert_eq!(c[4], 2); // 0.025
        assert_eq!(*c.last().unwrap(), 3);
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.0205).abs() < 1e-6);
    }

    #[test]
    fn counter_sums_its_shards() {
        let c = Counter::default();
        c.fetch_add(2, Ordering::Relaxed);
        c.fetch_add(3, Ordering::Relaxed);
        assert_eq!(c.load(Ordering::Relaxed), 5);
    }

    /// A slot a server keeps at hand and the registry's view are one and
    /// the same counter; a fifth frontend on one server counts through the
    /// registry; a new server of the same name (a reload that changed its
    /// address) counts on.
    #[test]
    fn a_response_counts_for_its_frontend_and_server() {
        use crate::config::validate::default_server;
        let cfg = default_server("b", std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        let srv =
            crate::runtime::server::ServerState::new("web", &cfg, std::time::Instant::now(), true);
        let fes: Vec<FrontendStats> = (0..6).map(|_| FrontendStats::default()).collect();
        for (i, fe) in fes.iter().enumerate() {
            for _ in 0..=i {
                fe.record_response(&srv, 200);
            }
            fe.record_response(&srv, 503);
        }
        for (i, fe) in fes.iter().enumerate() {
            assert_eq!(
                fe.responses.get("web", "b"),
                [0, i as u64 + 1, 0, 0, 1],
                "frontend {i}"
            );
            assert_eq!(fe.responses.get("web", "a"), [0; 5]);
        }
        let again =
            crate::runtime::server::ServerState::new("web", &cfg, std::time::Instant::now(), true);
        fes[0].record_response(&again, 404);
        fes[5].responses.add("web", "b", 204);
        assert_eq!(fes[0].responses.get("web", "b"), [0, 1, 0, 1, 1]);
        assert_eq!(fes[5].responses.get("web", "b"), [0, 7, 0, 0, 1]);
    }

    #[test]
    fn a_server_abort_is_also_a_response_error() {
        let e = ErrorCounts::default();
        for end in [
            ResponseEnd::Clean,
            ResponseEnd::ClientAbort,
            ResponseEnd::ServerAbort,
            ResponseEnd::Malformed,
        ] {
            e.record_end(end);
        }
        // connection, response (abort + malformed), client aborts, server aborts
        assert_eq!(e.get(), [0, 2, 1, 1]);
    }
}
