//! Counters for frontends and backends that survive reloads (reused by name
//! when the next snapshot is built), read by the admin API and `/metrics`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A cumulative-at-read histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (Prometheus `le` semantics), the last being +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect()
    }

    /// Sum of observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Traffic through one frontend.
#[derive(Debug, Default)]
pub struct FrontendStats {
    /// Requests (HTTP) or sessions (TCP) received.
    pub requests: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Requests answered locally because no route or no server matched.
    pub local_errors: AtomicU64,
    /// Requests refused by a rate limit (429), also counted in `local_errors`.
    pub denied: AtomicU64,
    /// Completed TLS handshakes, of which resumed (ticket or session id), and failed ones.
    pub tls_handshakes: AtomicU64,
    pub tls_resumptions: AtomicU64,
    pub tls_failures: AtomicU64,
    /// Requests that failed by the client's fault (body aborted or
    /// malformed, client gone): never counted against a server.
    pub client_errors: AtomicU64,
    /// Signalled when a client connection closes (for `maxconn`).
    pub closed: tokio::sync::Notify,
    /// Responses this frontend's requests got, by backend and server: the
    /// `frontend` label of `fulcrum_requests_total` (a backend reached from
    /// two frontends is split between them as the requests were).
    pub responses: ResponseCounts,
}

/// Response counts by (backend, server) and status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct ResponseCounts(std::sync::RwLock<std::collections::HashMap<Box<str>, ByServer>>);

/// One backend's response counts by server name.
type ByServer = std::collections::HashMap<Box<str>, [AtomicU64; 5]>;

impl ResponseCounts {
    /// Count one response with `status` from `backend`/`server`.
    pub fn add(&self, backend: &str, server: &str, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let bump = |c: &[AtomicU64; 5]| {
            if let Some(n) = c.get(class) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        };
        // The pair exists after its first response: a shared lock only.
        if let Ok(m) = self.0.read() {
            if let Some(c) = m.get(backend).and_then(|b| b.get(server)) {
                return bump(c);
            }
        }
        if let Ok(mut m) = self.0.write() {
            let b = m.entry(backend.into()).or_default();
            bump(b.entry(server.into()).or_default());
        }
    }

    /// The counts of `backend`/`server` (zeros before its first response).
    pub fn get(&self, backend: &str, server: &str) -> [u64; 5] {
        let Ok(m) = self.0.read() else {
            return [0; 5];
        };
        match m.get(backend).and_then(|b| b.get(server)) {
            Some(c) => std::array::from_fn(|i| c[i].load(Ordering::Relaxed)),
            None => [0; 5],
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

/// Traffic through one backend.
impl FrontendStats {
    /// Count one completed TLS handshake (resumed or full).
    pub fn record_tls(&self, kind: Option<rustls::HandshakeKind>) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        if kind == Some(rustls::HandshakeKind::Resumed) {
            self.tls_resumptions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

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
