//! What a client connection and each of its requests carry, whichever
//! transport serves them: the connection's guards and addresses, and the
//! per-request context (log format, timings, the frontend as the request
//! found it) that forwarding and logging read.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::types::AccessLog;
use crate::runtime::stats::FrontendStats;
use crate::runtime::{FrontendRt, Runtime};

/// Counts one open client connection on a frontend while alive.
pub(crate) struct ConnCount(Arc<FrontendStats>);

impl ConnCount {
    pub(crate) fn new(fe: &FrontendRt) -> Self {
        fe.stats.connections.fetch_add(1, Ordering::Relaxed);
        ConnCount(fe.stats.clone())
    }

    /// A slot under the frontend's `maxconn`, or None when every slot is
    /// taken. One compare-and-swap: with a worker per core several accept
    /// loops take slots at once, and a load-then-add would let two of them
    /// past the last one.
    pub(crate) fn reserve(fe: &FrontendRt) -> Option<Self> {
        let Some(max) = fe.config.maxconn else {
            return Some(Self::new(fe));
        };
        fe.stats
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < u64::from(max)).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnCount(fe.stats.clone()))
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.closed.notify_one();
    }
}

/// Guards a client connection holds for its whole life, whichever task
/// serves it: the frontend's connection count (maxconn) and the process's
/// open-connection count (graceful stop).
pub(crate) struct ConnGuards {
    _count: ConnCount,
    _open: crate::runtime::conns::ConnGuard,
    _worker: super::workers::Open,
}

impl ConnGuards {
    pub(crate) fn new(rt: &Runtime, count: ConnCount) -> Self {
        ConnGuards {
            _count: count,
            _open: rt.conns.track(),
            _worker: super::workers::Open::new(),
        }
    }
}

/// The facts of a client connection every request on it needs.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub(crate) rt: Arc<Runtime>,
    /// The frontend's name (looked up in each new snapshot).
    pub(crate) frontend: Arc<str>,
    pub(crate) client: SocketAddr,
    /// The address the client connected to (for PROXY headers to servers).
    pub(crate) local: SocketAddr,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub(crate) https: bool,
}

impl ConnInfo {
    /// `X-Forwarded-Proto`.
    pub(crate) fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// One request's context: replaces the long argument lists forwarding and
/// logging used to take.
pub(crate) struct ReqCtx {
    pub(crate) format: AccessLog,
    pub(crate) start: Instant,
    /// Accept (first request) or request start → request head received.
    pub(crate) tq: Duration,
    pub(crate) method: http::Method,
    /// The request target, for the log (empty when the log is off).
    pub(crate) uri: http::Uri,
}

impl ReqCtx {
    /// Log a request answered without a server.
    pub(crate) fn log_local(&self, conn: &ConnInfo, backend: &str, status: u16, why: &str) {
        super::log::local(
            self.format,
            conn.client,
            &conn.frontend,
            backend,
            &self.method,
            &self.uri,
            status,
            self.start,
            why,
        );
    }
}
