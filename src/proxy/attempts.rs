//! One attempt loop for every transport: which server an attempt goes to
//! (sticky first, then the balancer, else a wait in the backend's queue at
//! `maxconn`), how many attempts a request gets, the stale keep-alive
//! retries, passive health on failures, and the answer when every attempt
//! failed. The relay (`proxy::h1::forward`), the hyper path (`proxy::http`)
//! and TCP (`proxy::tcp`) each implement [`Upstream`] — connect, send — and
//! call [`attempt`]; what may be retried is said once, by [`AttemptError`].
//!
//! A failure the client caused (an aborted or malformed request body, a
//! body that did not arrive within the response timeout, a client gone
//! while its interim answer was written) has origin
//! [`Origin::Client`]: it is never counted against the server, never retried
//! and ends the loop with [`Lost::Client`] — the transport answers 400 or
//! closes, and the frontend counts a client error.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use http::StatusCode;

use super::error::{AttemptError, Origin, Retry, Stage};
use crate::runtime::server::ActiveGuard;
use crate::runtime::stats::FrontendStats;
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
    /// The server of the attempt before the next one.
    last: Option<usize>,
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
            last: None,
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
            let idx = backend.index_of(&server).unwrap_or(usize::MAX);
            if self.attempts > 0 {
                backend.stats.retries.fetch_add(1, Ordering::Relaxed);
                // Counted on the server the request failed on.
                if let Some(prev) = self.last.and_then(|i| backend.servers.get(i)) {
                    prev.errors.retries.fetch_add(1, Ordering::Relaxed);
                    if !Arc::ptr_eq(prev, &server) {
                        prev.errors.redispatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.last = Some(idx);
            self.attempts += 1;
            return Some((server, idx));
        }
        None
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

    /// Count a failed attempt by kind on `server` and its backend: no
    /// connection (HAProxy `econ`), or no good answer (`eresp`).
    fn count_error(&self, server: &ServerState, stage: Stage) {
        for c in [&server.errors, &self.backend.stats.errors] {
            let n = if stage == Stage::Connect {
                &c.connection
            } else {
                &c.response
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a failure against `server` (the server logs an ejection).
    fn eject_check(&self, server: &ServerState, err: &dyn Display) {
        let cfg = &self.backend.config;
        if server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout) {
            tracing::debug!(backend = %cfg.name, server = %server.name(), error = %err, "ejecting failure");
        }
    }
}

/// What a transport does for one attempt; the loop around it is [`attempt`].
pub(crate) trait Upstream {
    /// A connection to a server.
    type Conn;
    /// What a successful send yields (the response head, or the stream).
    type Answer;
    /// A connection to `server`: a pooled one (`true`: reused) or a new one.
    fn connect(
        &mut self,
        server: &Arc<ServerState>,
    ) -> impl Future<Output = Result<(Self::Conn, bool), AttemptError>> + Send;
    /// Send the request on `conn` and read the answer's head. `again`: a
    /// later send of the same request may follow (keep what it needs).
    fn send(
        &mut self,
        server: &Arc<ServerState>,
        conn: Self::Conn,
        reused: bool,
        again: bool,
    ) -> impl Future<Output = Result<Self::Answer, AttemptError>> + Send;
    /// A send ran out the response timeout: when that is the client's fault
    /// (its request body has not all arrived — a trickling client), the
    /// client error to end the request with; else None, the server's (504).
    fn client_timeout(&self) -> Option<AttemptError> {
        None
    }
}

/// A request's attempt that got an answer.
pub(crate) struct Won<A> {
    pub(crate) answer: A,
    pub(crate) server: Arc<ServerState>,
    /// The server's index in the backend.
    pub(crate) idx: usize,
    /// Holds the server's active count until the exchange ends.
    pub(crate) guard: ActiveGuard,
    /// Time to get the connection (zero when reused).
    pub(crate) tc: Duration,
    /// Request sent → answer head.
    pub(crate) tr: Duration,
    pub(crate) retries: u32,
}

/// Why a request got no answer from a server.
#[derive(Debug)]
pub(crate) enum Lost {
    /// Every attempt failed or none could be made: tell the client this.
    Server(Failure),
    /// The client caused it (counted as the frontend's client error): the
    /// transport answers `status` (400) or closes, as it still can.
    Client(AttemptError),
}

/// The attempt loop: pick a server (sticky, balancer, queue), connect, send;
/// on failure count it (passive health), and go again while the error and
/// the attempts left allow. `response`: time allowed from sending to the
/// answer's head (504 after; not retried).
pub(crate) async fn attempt<U: Upstream>(
    backend: &BackendRt,
    frontend: &FrontendStats,
    (hash, sticky): (Option<u64>, Option<usize>),
    response: Option<Duration>,
    up: &mut U,
) -> Result<Won<U::Answer>, Lost> {
    let mut att = Attempts::new(backend, hash, sticky);
    while let Some((server, idx)) = att.next_server().await {
        let guard = server.begin_in(&backend.stats);
        let t0 = Instant::now();
        let (conn, reused) = match up.connect(&server).await {
            Ok(c) => c,
            Err(e) => match att.failed(frontend, &server, idx, false, e) {
                Some(lost) => return Err(lost),
                None => continue,
            },
        };
        let tc = if reused { Duration::ZERO } else { t0.elapsed() };
        let t1 = Instant::now();
        let again = att.may_follow(reused);
        let sent = up.send(&server, conn, reused, again);
        let result = match response {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r,
                Err(_) => Err(up
                    .client_timeout()
                    .unwrap_or_else(|| timed_out(backend, frontend, &server, limit))),
            },
            None => sent.await,
        };
        match result {
            Ok(answer) => {
                server.record_success();
                return Ok(Won {
                    answer,
                    server,
                    idx,
                    guard,
                    tc,
                    tr: t1.elapsed(),
                    retries: att.retries(),
                });
            }
            Err(e) => {
                if let Some(lost) = att.failed(frontend, &server, idx, reused, e) {
                    return Err(lost);
                }
            }
        }
    }
    // Answered without a server's answer: the frontend's local error.
    frontend.local_errors.fetch_add(1, Ordering::Relaxed);
    Err(Lost::Server(att.give_up()))
}

/// The server did not answer within `limit`: 504, counted against it (the
/// request may be in progress there, so it does not go again).
fn timed_out(
    backend: &BackendRt,
    frontend: &FrontendStats,
    server: &ServerState,
    limit: Duration,
) -> AttemptError {
    server.record_status(504);
    frontend.record_response(server, 504);
    AttemptError {
        status: StatusCode::GATEWAY_TIMEOUT,
        ..AttemptError::server(
            Stage::Head,
            Retry::Never,
            format!(
                "server {}/{} did not answer within {limit:?}",
                backend.config.name,
                server.name()
            ),
        )
    }
}

impl Attempts<'_> {
    /// An attempt on `server` (index `idx`) failed with `e`: a stale retry,
    /// the next server, or the end of the request (returned).
    fn failed(
        &mut self,
        frontend: &FrontendStats,
        server: &ServerState,
        idx: usize,
        reused: bool,
        e: AttemptError,
    ) -> Option<Lost> {
        if e.origin == Origin::Client {
            frontend.client_errors.fetch_add(1, Ordering::Relaxed);
            return Some(Lost::Client(e));
        }
        if e.retry == Retry::Stale && reused && self.retry_stale() {
            return None;
        }
        let e = e.no_longer_stale();
        self.count_error(server, e.stage);
        self.eject_check(server, &e);
        self.tried.push(idx);
        let never = e.retry == Retry::Never;
        self.failure = Some(Failure {
            status: e.status,
            why: match e.stage {
                Stage::Connect => e.why,
                _ if e.status == StatusCode::GATEWAY_TIMEOUT => e.why,
                _ => format!(
                    "server {}/{} failed before responding: {}",
                    self.backend.config.name,
                    server.name(),
                    e.why
                ),
            },
        });
        if never {
            frontend.local_errors.fetch_add(1, Ordering::Relaxed);
            return self.failure.take().map(Lost::Server);
        }
        None
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
    let queued_at = Instant::now();
    (stats.queue_max).fetch_max(
        stats.queued.fetch_add(1, Ordering::Relaxed) + 1,
        Ordering::Relaxed,
    );
    let notified = stats.freed.notified();
    let waited = tokio::time::timeout_at(until.into(), notified).await;
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    stats.queue_wait.observe(queued_at.elapsed());
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
    use crate::proxy::pool::ConnectError;

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

    /// A counter's value: a plain atomic or a per-worker [`Counter`].
    ///
    /// [`Counter`]: crate::runtime::stats::Counter
    trait Stat {
        fn value(&self) -> u64;
    }
    impl Stat for std::sync::atomic::AtomicU64 {
        fn value(&self) -> u64 {
            self.load(Ordering::Relaxed)
        }
    }
    impl Stat for crate::runtime::stats::Counter {
        fn value(&self) -> u64 {
            self.load(Ordering::Relaxed)
        }
    }

    fn stat(a: &impl Stat) -> u64 {
        a.value()
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
            assert!(att
                .failed(
                    &FrontendStats::default(),
                    &server,
                    idx,
                    false,
                    AttemptError::server(Stage::Head, Retry::Another, "boom")
                )
                .is_none());
        }
        assert_eq!(seen.len(), 3, "retries 2: three attempts");
        assert_eq!(stat(&b.stats.retries), 2);
        // Each retry counts on the server it left, as a redispatch too (it
        // went to another one); the last server was not left.
        for (k, &i) in seen.iter().enumerate() {
            let left = u64::from(k + 1 < seen.len());
            assert_eq!(b.servers[i].errors.retried(), [left, left], "server {i}");
        }
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
        assert!(att
            .failed(
                &FrontendStats::default(),
                &s,
                idx,
                false,
                AttemptError::server(Stage::Head, Retry::Another, "boom")
            )
            .is_none());
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
        assert!(att
            .failed(
                &FrontendStats::default(),
                &s,
                idx,
                false,
                AttemptError::connect(&s, &ConnectError::Refused)
            )
            .is_none());
        let (s2, idx2) = att.next_server().await.unwrap();
        assert_ne!(idx, idx2);
        let timeout = std::time::Duration::from_secs(1);
        assert!(att
            .failed(
                &FrontendStats::default(),
                &s2,
                idx2,
                false,
                AttemptError::connect(&s2, &ConnectError::Timeout(timeout))
            )
            .is_none());
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
        // Two connection errors (econ), one on each server; no response error.
        assert_eq!(b.stats.errors.get(), [2, 0, 0, 0]);
        assert_eq!(s.errors.get(), [1, 0, 0, 0]);
        assert_eq!(s2.errors.get(), [1, 0, 0, 0]);
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

    /// An [`Upstream`] that answers from a script: one result per send, in
    /// order; connects always succeed (reused as scripted).
    struct Scripted {
        sends: Vec<Result<(), AttemptError>>,
        reused: bool,
        seen: Vec<String>,
    }

    impl Upstream for Scripted {
        type Conn = ();
        type Answer = ();
        async fn connect(&mut self, _: &Arc<ServerState>) -> Result<((), bool), AttemptError> {
            Ok(((), self.reused))
        }
        async fn send(
            &mut self,
            server: &Arc<ServerState>,
            _: (),
            _: bool,
            _: bool,
        ) -> Result<(), AttemptError> {
            self.seen.push(server.name().to_string());
            if self.sends.is_empty() {
                return Ok(());
            }
            self.sends.remove(0)
        }
    }

    fn script(sends: Vec<Result<(), AttemptError>>, reused: bool) -> Scripted {
        Scripted {
            sends,
            reused,
            seen: Vec::new(),
        }
    }

    fn failures(b: &BackendRt) -> u64 {
        b.servers.iter().map(|s| s.failures()).sum()
    }

    #[tokio::test]
    async fn a_client_failure_is_never_the_servers() {
        let b = backend(3, 2);
        let fe = FrontendStats::default();
        let mut up = script(
            vec![Err(AttemptError::client(Stage::Body, "aborted"))],
            false,
        );
        let r = attempt(&b, &fe, (None, None), None, &mut up).await;
        let Err(Lost::Client(e)) = r else {
            panic!("a client failure")
        };
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(up.seen.len(), 1, "not retried");
        assert_eq!(failures(&b), 0, "not counted against the server");
        assert_eq!(b.stats.errors.get(), [0; 4]);
        assert_eq!(stat(&fe.client_errors), 1);
        assert_eq!(stat(&fe.local_errors), 0);
        assert_eq!(stat(&b.stats.retries), 0);
    }

    /// Never answers; its client has not finished sending its body.
    struct Trickled;

    impl Upstream for Trickled {
        type Conn = ();
        type Answer = ();
        async fn connect(&mut self, _: &Arc<ServerState>) -> Result<((), bool), AttemptError> {
            Ok(((), false))
        }
        async fn send(
            &mut self,
            _: &Arc<ServerState>,
            _: (),
            _: bool,
            _: bool,
        ) -> Result<(), AttemptError> {
            std::future::pending().await
        }
        fn client_timeout(&self) -> Option<AttemptError> {
            Some(AttemptError::body_timeout())
        }
    }

    #[tokio::test]
    async fn a_body_not_sent_in_time_is_the_clients_408() {
        let b = backend(3, 2);
        let fe = FrontendStats::default();
        let limit = Some(Duration::from_millis(20));
        let r = attempt(&b, &fe, (None, None), limit, &mut Trickled).await;
        let Err(Lost::Client(e)) = r else {
            panic!("a client failure")
        };
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(failures(&b), 0, "not counted against the server");
        assert_eq!(stat(&fe.client_errors), 1);
        assert_eq!(stat(&b.stats.retries), 0);
    }

    #[tokio::test]
    async fn retry_kinds_decide_what_happens_next() {
        let never = || AttemptError::server(Stage::Head, Retry::Never, "half sent");
        let another = || AttemptError::server(Stage::Head, Retry::Another, "reset");
        let stale = || AttemptError::server(Stage::Send, Retry::Stale, "closed");

        // Another: next server, counted; then success.
        let b = backend(3, 2);
        let fe = FrontendStats::default();
        let mut up = script(vec![Err(another())], false);
        let won = attempt(&b, &fe, (None, None), None, &mut up)
            .await
            .ok()
            .unwrap();
        assert_eq!(won.retries, 1);
        assert_ne!(up.seen[0], up.seen[1]);
        assert_eq!(failures(&b), 1);
        assert_eq!(b.stats.errors.get(), [0, 1, 0, 0], "a response error");

        // Never: stops at once with the server's failure (502), counted.
        let b = backend(3, 2);
        let mut up = script(vec![Err(never())], false);
        let r = attempt(&b, &fe, (None, None), None, &mut up).await;
        let Err(Lost::Server(f)) = r else {
            panic!("lost")
        };
        assert_eq!(f.status, StatusCode::BAD_GATEWAY);
        assert!(
            f.why.ends_with("failed before responding: half sent"),
            "{}",
            f.why
        );
        assert_eq!(up.seen.len(), 1);
        assert_eq!(failures(&b), 1);

        // Stale on a reused connection: again on the same server, free.
        let b = backend(1, 0);
        let mut up = script(vec![Err(stale()), Err(stale())], true);
        let won = attempt(&b, &fe, (None, None), None, &mut up)
            .await
            .ok()
            .unwrap();
        assert_eq!((won.retries, up.seen.len()), (0, 3));
        assert_eq!(
            failures(&b),
            0,
            "the keep-alive race is not the server's fault"
        );
        assert_eq!(b.stats.errors.get(), [0; 4], "nor an error of the server");

        // Stale on a new connection is an ordinary failure.
        let b = backend(1, 0);
        let mut up = script(vec![Err(stale())], false);
        assert!(attempt(&b, &fe, (None, None), None, &mut up).await.is_err());
        assert_eq!(failures(&b), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_504_and_not_retried() {
        struct Silent;
        impl Upstream for Silent {
            type Conn = ();
            type Answer = ();
            async fn connect(&mut self, _: &Arc<ServerState>) -> Result<((), bool), AttemptError> {
                Ok(((), false))
            }
            async fn send(
                &mut self,
                _: &Arc<ServerState>,
                _: (),
                _: bool,
                _: bool,
            ) -> Result<(), AttemptError> {
                std::future::pending().await
            }
        }
        let b = backend(2, 1);
        let fe = FrontendStats::default();
        let limit = std::time::Duration::from_secs(3);
        let r = attempt(&b, &fe, (None, None), Some(limit), &mut Silent).await;
        let Err(Lost::Server(f)) = r else {
            panic!("lost")
        };
        assert_eq!(f.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(f.why.ends_with("did not answer within 3s"), "{}", f.why);
        assert_eq!(stat(&b.stats.retries), 0);
        assert_eq!(stat(&fe.local_errors), 1);
    }
}
