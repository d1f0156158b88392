//! The forwarding policy both HTTP paths share (the hyper path in
//! `proxy::http`, the relay in `proxy::h1::forward`): which server an attempt
//! goes to (sticky first, then the balancer, else a wait in the backend's
//! queue), how many attempts a request gets, the stale keep-alive retries,
//! passive health on failures, and the answer when every attempt failed.
//!
//! No I/O here beyond the queue wait: each path connects, sends and decides
//! for itself when a failure may not be retried (a body that went out, an
//! interim answer the client already has).

use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::pool::ConnectError;
use crate::runtime::{BackendRt, ServerState};

/// At most this many stale pooled connections are skipped per request before
/// the attempt counts as failed.
pub(crate) const STALE_RETRIES: u32 = 4;

/// Why an attempt failed, as told to the client when no attempt is left.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) why: String,
}

/// The attempts of one request on one backend.
pub(crate) struct Attempts<'a> {
    backend: &'a BackendRt,
    hash: Option<u64>,
    /// The server a sticky cookie names; only the first attempt goes there.
    sticky: Option<usize>,
    /// Servers this request failed on (indexes into `backend.servers`).
    tried: Vec<usize>,
    /// Attempts made, stale keep-alive retries not counted.
    attempts: u32,
    max_attempts: u32,
    /// Stale pooled connections skipped so far.
    stale: u32,
    /// The last failure, told to the client when no attempt is left.
    failure: Option<Failure>,
    /// When the wait in the backend's queue ends (set on the first wait).
    queue_deadline: Option<Instant>,
}

impl<'a> Attempts<'a> {
    /// Attempts at a request whose balancing key is `hash`; `sticky` is the
    /// server a sticky cookie names.
    pub(crate) fn new(backend: &'a BackendRt, hash: Option<u64>, sticky: Option<usize>) -> Self {
        Attempts {
            backend,
            hash,
            sticky,
            tried: Vec::new(),
            attempts: 0,
            max_attempts: backend.config.retries + 1,
            stale: 0,
            failure: None,
            queue_deadline: None,
        }
    }

    /// The server for the next attempt and its index in the backend, or None
    /// when the request gets no further attempt (all used, no usable server,
    /// or the queue gave up). When every usable server is at its maxconn, wait
    /// in the queue (HAProxy `timeout queue`) for a slot instead of failing.
    pub(crate) async fn next_server(&mut self) -> Option<(Arc<ServerState>, usize)> {
        let backend = self.backend;
        while self.attempts < self.max_attempts {
            let sticky = self
                .sticky
                .filter(|i| self.attempts == 0 && !self.tried.contains(i));
            let picked = match sticky {
                Some(i) => backend.servers.get(i),
                None => backend.pick(self.hash, &self.tried),
            };
            let Some(server) = picked.cloned() else {
                if self.failure.is_none() && backend.all_busy() {
                    match wait_in_queue(backend, &mut self.queue_deadline).await {
                        Ok(()) => continue,
                        Err(why) => {
                            self.failure = Some(Failure {
                                status: StatusCode::SERVICE_UNAVAILABLE,
                                why,
                            });
                        }
                    }
                }
                return None;
            };
            if self.attempts > 0 {
                backend.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let idx = backend.index_of(&server).unwrap_or(usize::MAX);
            self.attempts += 1;
            return Some((server, idx));
        }
        None
    }

    /// Connecting to `server` (index `idx`) failed: passive health, and the
    /// next attempt goes elsewhere.
    pub(crate) fn connect_failed(&mut self, server: &ServerState, idx: usize, e: &ConnectError) {
        self.eject_check(server, e);
        self.failure = Some(connect_failure(server, e));
        self.tried.push(idx);
    }

    /// A reused connection turned out stale (the keep-alive race): when the
    /// request may go again on another connection without using up an
    /// attempt, note it and return true.
    pub(crate) fn retry_stale(&mut self) -> bool {
        if self.stale < STALE_RETRIES {
            self.stale += 1;
            self.attempts -= 1;
            true
        } else {
            false
        }
    }

    /// True when another send of this request may follow the current one: an
    /// attempt is left, or (on a `reused` connection) a stale retry is.
    pub(crate) fn may_follow(&self, reused: bool) -> bool {
        self.attempts < self.max_attempts || (reused && self.stale < STALE_RETRIES)
    }

    /// Sending to `server` (index `idx`) or reading its answer failed with
    /// `err`: passive health, a 502 unless a later attempt does better, and
    /// the next attempt goes elsewhere.
    pub(crate) fn send_failed(&mut self, server: &ServerState, idx: usize, err: impl Display) {
        self.eject_check(server, &err);
        self.failure = Some(Failure {
            status: StatusCode::BAD_GATEWAY,
            why: format!(
                "server {}/{} failed before responding: {err}",
                self.backend.config.name,
                server.name()
            ),
        });
        self.tried.push(idx);
    }

    /// Retries before the current attempt (for the access log).
    pub(crate) fn retries(&self) -> u32 {
        self.attempts - 1
    }

    /// No attempt is left: the last failure, or 503 (counted as `no_server`)
    /// when no server could be tried.
    pub(crate) fn give_up(self) -> Failure {
        let backend = self.backend;
        self.failure.unwrap_or_else(|| {
            backend.stats.no_server.fetch_add(1, Ordering::Relaxed);
            Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                why: format!(
                    "no server is available in backend `{}`",
                    backend.config.name
                ),
            }
        })
    }

    /// Count a failure against `server` (the server logs an ejection).
    fn eject_check(&self, server: &ServerState, err: &dyn Display) {
        let cfg = &self.backend.config;
        if server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout) {
            tracing::debug!(backend = %cfg.name, server = %server.name(), error = %err, "ejecting failure");
        }
    }
}

fn connect_failure(server: &ServerState, e: &ConnectError) -> Failure {
    let status = match e {
        ConnectError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    Failure {
        status,
        why: format!(
            "server {}/{} ({}): {e}",
            server.key.backend,
            server.name(),
            server.address()
        ),
    }
}

/// Wait for a server slot; the deadline is set on the first wait.
async fn wait_in_queue(backend: &BackendRt, deadline: &mut Option<Instant>) -> Result<(), String> {
    let cfg = &backend.config;
    let stats = &backend.stats;
    let until = *deadline.get_or_insert_with(|| Instant::now() + cfg.queue_timeout);
    if stats.queued.load(Ordering::Relaxed) >= cfg.max_queue {
        return Err(format!(
            "backend `{}`: every server is at maxconn and the queue is full",
            cfg.name
        ));
    }
    stats.queued.fetch_add(1, Ordering::Relaxed);
    let notified = stats.freed.notified();
    let waited = tokio::time::timeout_at(until.into(), notified).await;
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    waited.map_err(|_| {
        format!(
            "backend `{}`: every server is at maxconn and no slot freed within {:?}",
            cfg.name, cfg.queue_timeout
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Balancer;
    use crate::config::types::Algorithm;
    use crate::config::validate::{default_backend, default_server};

    /// Backend `b` with `n` servers s0..s(n-1), all up, `retries` retries.
    fn backend(n: usize, retries: u32) -> BackendRt {
        let servers: Vec<_> = (0..n)
            .map(|i| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                default_server(&format!("s{i}"), addr)
            })
            .collect();
        let epoch = Instant::now();
        let states = servers
            .iter()
            .map(|c| Arc::new(ServerState::new("b", c, epoch, true)))
            .collect();
        let mut config = default_backend("b", servers);
        config.retries = retries;
        BackendRt {
            name: Arc::from("b"),
            config,
            tls: None,
            sticky_ids: vec![String::new(); n],
            stats: Default::default(),
            balancer: Balancer::new(Algorithm::RoundRobin, &vec![1; n]),
            servers: states,
        }
    }

    fn stat(a: &std::sync::atomic::AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_never_repeat_a_server() {
        let b = backend(4, 2);
        let mut att = Attempts::new(&b, None, None);
        let mut seen = Vec::new();
        while let Some((server, idx)) = att.next_server().await {
            assert!(Arc::ptr_eq(&server, &b.servers[idx]));
            assert!(!seen.contains(&idx));
            assert_eq!(att.retries() as usize, seen.len());
            seen.push(idx);
            att.send_failed(&server, idx, "boom");
        }
        assert_eq!(seen.len(), 3, "retries 2: three attempts");
        assert_eq!(stat(&b.stats.retries), 2);
        let f = att.give_up();
        assert_eq!(f.status, StatusCode::BAD_GATEWAY);
        let last = b.servers[*seen.last().unwrap()].name().to_string();
        assert_eq!(
            f.why,
            format!("server b/{last} failed before responding: boom")
        );
        assert_eq!(stat(&b.stats.no_server), 0);
    }

    #[tokio::test]
    async fn sticky_server_only_on_the_first_attempt() {
        let b = backend(3, 2);
        let mut att = Attempts::new(&b, None, Some(2));
        let (s, idx) = att.next_server().await.unwrap();
        assert_eq!(idx, 2);
        // A stale retry does not use up the first attempt: sticky again.
        assert!(att.retry_stale());
        assert_eq!(att.next_server().await.unwrap().1, 2);
        att.send_failed(&s, idx, "boom");
        let (_, idx) = att.next_server().await.unwrap();
        assert_ne!(idx, 2);
        // A sticky index past the servers finds none, like the hyper path.
        let mut att = Attempts::new(&b, None, Some(7));
        assert!(att.next_server().await.is_none());
    }

    #[tokio::test]
    async fn stale_retries_are_bounded_and_do_not_count() {
        let b = backend(1, 0);
        let mut att = Attempts::new(&b, None, None);
        assert!(att.next_server().await.is_some());
        assert!(!att.may_follow(false), "retries 0: no attempt left");
        for _ in 0..STALE_RETRIES {
            assert!(att.may_follow(true));
            assert!(att.retry_stale());
            assert!(att.next_server().await.is_some());
            assert_eq!(att.retries(), 0);
        }
        assert!(!att.may_follow(true));
        assert!(!att.retry_stale());
        assert_eq!(att.retries(), 0, "a refused stale retry changes nothing");
        assert!(att.next_server().await.is_none());
        assert_eq!(stat(&b.stats.retries), 0);
    }

    #[tokio::test]
    async fn give_up_without_a_server_is_503_no_server() {
        let b = backend(0, 3);
        let mut att = Attempts::new(&b, None, None);
        assert!(att.next_server().await.is_none());
        let f = att.give_up();
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.why, "no server is available in backend `b`");
        assert_eq!(stat(&b.stats.no_server), 1);
    }

    #[tokio::test]
    async fn connect_failures_tell_why_and_count_against_the_server() {
        let b = backend(2, 1);
        let mut att = Attempts::new(&b, None, None);
        let (s, idx) = att.next_server().await.unwrap();
        att.connect_failed(&s, idx, &ConnectError::Refused);
        let (s2, idx2) = att.next_server().await.unwrap();
        assert_ne!(idx, idx2);
        let timeout = std::time::Duration::from_secs(1);
        att.connect_failed(&s2, idx2, &ConnectError::Timeout(timeout));
        assert!(att.next_server().await.is_none());
        let f = att.give_up();
        assert_eq!(f.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            f.why,
            format!(
                "server b/{} ({}): connect timeout after 1s",
                s2.name(),
                s2.address()
            )
        );
        assert_eq!(stat(&b.stats.no_server), 0);
        assert_eq!(stat(&b.stats.retries), 1);
    }

    #[tokio::test]
    async fn a_full_queue_fails_at_once() {
        let mut b = backend(1, 0);
        b.config.max_queue = 0;
        let mut cfg = default_server("s0", b.servers[0].address());
        cfg.maxconn = Some(1);
        let s = Arc::new(ServerState::new("b", &cfg, Instant::now(), true));
        b.servers = vec![s.clone()];
        let _busy = s.begin_in(&b.stats);
        let mut att = Attempts::new(&b, None, None);
        assert!(att.next_server().await.is_none());
        let f = att.give_up();
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            f.why,
            "backend `b`: every server is at maxconn and the queue is full"
        );
        assert_eq!(stat(&b.stats.no_server), 0);
    }
}
