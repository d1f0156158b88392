//! The HTTP/1.1 relay: the fast path for plain HTTP/1.1 traffic.
//!
//! One task per client connection does everything in turn — read the request
//! head, pick a server, write the rewritten head and the body to a pooled
//! upstream connection, read the response head, write it and stream the body
//! back — with heads parsed in place (httparse), fields copied once into a
//! reused output buffer, and the body relayed as it is (chunked bodies are
//! scanned for their end, not decoded). No hyper dispatcher, no channel or
//! second task per exchange, no header map: this is what HAProxy does, and it
//! halves the CPU per request (see README, Performance).
//!
//! Whatever the relay does not handle itself — HTTP/1.0, upgrades,
//! `Expect`, chunked requests, malformed or oversized heads, and frontends or
//! backends with TLS to servers, HTTP/2, PROXY headers to servers, sticky
//! cookies, redirects or header rules — is handed, with the bytes already
//! read, to the general hyper path (`proxy::http`) for the rest of the
//! connection, so both paths answer such requests identically.

mod chunked;
mod forward;
mod head;
mod rewind;

pub use chunked::{ChunkError, ChunkScanner};
pub use head::{Framing, Parsed, ReqHead, RespHead};

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::head::Kind;
use super::lazy::LazyTcp;
use super::log;
use crate::config::types::AccessLog;
use crate::runtime::{BackendRt, FrontendRt, Runtime};

/// Read buffer size (one per direction, taken only while a request is in flight).
const BUF: usize = 16 * 1024;

/// A client stream the relay can serve.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The plain socket (registered with the event loop), when waiting for
    /// readability on it is exact (no bytes can be buffered above it): idle
    /// connections then hold no buffer.
    fn socket(&mut self) -> Option<&TcpStream>;

    /// True while a plain socket is not registered with the event loop yet:
    /// reads are tried at once, without waiting for readiness.
    fn fresh(&self) -> bool {
        false
    }
}

impl ClientIo for TcpStream {
    fn socket(&mut self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientIo for LazyTcp {
    fn socket(&mut self) -> Option<&TcpStream> {
        self.registered().ok().map(|s| &*s)
    }

    fn fresh(&self) -> bool {
        self.is_fresh()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&mut self) -> Option<&TcpStream> {
        None
    }
}

/// True when every request of this frontend may take the relay (the backend
/// is checked per request).
pub(crate) fn frontend_eligible(fe: &FrontendRt) -> bool {
    let c = &fe.config;
    // Normalised paths are rewritten by the hyper path only.
    !c.h2c
        && !c.normalize_path
        && c.redirect_https.is_none()
        && c.request_headers.is_empty()
        && c.response_headers.is_empty()
}

fn backend_eligible(b: &BackendRt) -> bool {
    let c = &b.config;
    b.tls.is_none() && !c.http2 && c.proxy_protocol.is_none() && c.sticky.is_none()
}

thread_local! {
    /// Buffers of finished exchanges, reused by the next ones on this thread.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// Field indexes of finished exchanges (see `Relay::release_buffers`).
    static FIELDS: RefCell<Vec<Vec<head::Field>>> = const { RefCell::new(Vec::new()) };
}

/// A field index from the pool (an idle connection holds none).
pub(crate) fn take_fields() -> Vec<head::Field> {
    FIELDS
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(16))
}

fn give_fields(mut v: Vec<head::Field>) {
    if v.capacity() == 0 || v.capacity() > head::MAX_FIELDS {
        return;
    }
    v.clear();
    FIELDS.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < POOLED {
            f.push(v);
        }
    });
}

/// Buffers and field indexes kept per thread for reuse: enough for the
/// exchanges in flight at once on a busy thread, little next to the
/// connections it holds.
const POOLED: usize = 64;

fn take_buf() -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF))
}

fn give_buf(mut buf: Vec<u8>) {
    // Only full-size buffers: a small one would turn every read into many.
    if !(BUF..=4 * BUF).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOLED {
            b.push(buf);
        }
    });
}

/// Per-connection state.
struct Relay<I> {
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    io: I,
    client: SocketAddr,
    local: SocketAddr,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    https: bool,
    /// Bytes from the client not consumed yet.
    inbuf: Vec<u8>,
    /// The snapshot generation `fe` was taken from.
    generation: u64,
    /// The process is draining: close after the current exchange.
    closing: bool,
    accepted: Instant,
    first: bool,
    guards: ConnGuards,
}

/// How an exchange left the client connection.
enum Next {
    KeepAlive,
    Close,
}

/// Guards a client connection holds for its whole life, whichever task
/// serves it: the frontend's connection count (maxconn) and the process's
/// open-connection count (graceful stop).
pub(crate) struct ConnGuards {
    _count: super::http::ConnCount,
    _open: crate::runtime::conns::ConnGuard,
}

impl ConnGuards {
    pub(crate) fn new(rt: &Runtime, count: super::http::ConnCount) -> Self {
        ConnGuards {
            _count: count,
            _open: rt.conns.track(),
        }
    }
}

/// Start serving a plain client connection with the relay in its own task.
/// The task holds little more than the wait for the next request: its
/// state is boxed once, and the exchange is boxed per request, so an idle
/// keep-alive connection costs a few hundred bytes plus its socket.
pub(crate) fn spawn<I: ClientIo>(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    io: I,
    addrs: (SocketAddr, SocketAddr),
    https: bool,
    guards: ConnGuards,
) {
    tokio::spawn(run(relay(rt, frontend, fe, io, addrs, https, guards)));
}

/// Serve a client connection with the relay in the current task, handing it
/// to the general path when a request needs it.
pub(crate) async fn serve<I: ClientIo>(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    io: I,
    addrs: (SocketAddr, SocketAddr),
    https: bool,
    guards: ConnGuards,
) {
    run(relay(rt, frontend, fe, io, addrs, https, guards)).await
}

fn relay<I: ClientIo>(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    io: I,
    (client, local): (SocketAddr, SocketAddr),
    https: bool,
    guards: ConnGuards,
) -> Box<Relay<I>> {
    Box::new(Relay {
        rt,
        frontend,
        fe,
        io,
        client,
        local,
        https,
        inbuf: Vec::new(),
        generation: 0,
        closing: false,
        accepted: Instant::now(),
        first: true,
        guards,
    })
}

/// The request loop of a connection.
async fn run<I: ClientIo>(mut r: Box<Relay<I>>) {
    loop {
        if r.inbuf.is_empty() {
            r.release_buffers();
            let t = &r.fe.config.timeouts;
            let wait = if r.first {
                t.client_header
            } else {
                t.client_header.min(t.client_idle)
            };
            if !r.next_request(wait).await {
                return;
            }
        }
        r.closing = r.rt.is_draining();
        // Boxed: the task of a connection waiting for its next request holds
        // only the waiting state, not the largest state of an exchange.
        match Box::pin(r.request()).await {
            Step::KeepAlive if !r.rt.is_draining() => {}
            Step::KeepAlive | Step::Close => return,
            // Boxed too: rare, and large (it holds the whole connection).
            Step::Fallback => return Box::pin(r.fallback()).await,
        }
    }
}

/// What a request left the connection in.
enum Step {
    KeepAlive,
    Close,
    Fallback,
}

/// The request needs the general path.
struct Fallback;

/// What one exchange holds: its request's and response's indexes and the
/// buffers toward the server. It lives in the exchange's (boxed) future, not
/// in the connection, and gives its indexes and buffers back to the pools
/// when the exchange ends.
#[derive(Default)]
pub(super) struct Exchange {
    req: ReqHead,
    resp: RespHead,
    /// Length of the request's head in `inbuf`.
    len: usize,
    /// Bytes from the server.
    upbuf: Vec<u8>,
    /// What is written next, to the server or to the client.
    out: Vec<u8>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        give_fields(std::mem::take(&mut self.req.fields));
        give_fields(std::mem::take(&mut self.resp.fields));
        give_buf(std::mem::take(&mut self.upbuf));
        give_buf(std::mem::take(&mut self.out));
    }
}

impl<I: ClientIo> Relay<I> {
    /// Read one request head and serve the request.
    async fn request(&mut self) -> Step {
        let start = Instant::now();
        let mut h = Exchange::default();
        h.len = match self.read_head(&mut h.req).await {
            Some(Parsed::Complete(n)) => n,
            Some(Parsed::Unsupported) => return Step::Fallback,
            _ => return Step::Close,
        };
        let tq = if self.first {
            start.duration_since(self.accepted)
        } else {
            Duration::ZERO
        };
        self.first = false;
        match self.exchange(&mut h, start, tq).await {
            Ok(Next::KeepAlive) => Step::KeepAlive,
            Ok(Next::Close) => Step::Close,
            Err(Fallback) => Step::Fallback,
        }
    }

    /// Wait, holding no buffer, for the first bytes of the next request:
    /// true when they are in `inbuf`; false when the client closed, the wait
    /// took longer than `wait` or the process is draining. The waiting state
    /// is small (a timer and a drain notification, polled by hand) because
    /// an idle keep-alive connection holds nothing else.
    async fn next_request(&mut self, wait: Duration) -> bool {
        if self.io.fresh() {
            // Just accepted: the request is usually here already. Read it
            // without registering the socket (HAProxy reads at once too);
            // when nothing is there, the read registers it and we wait below.
            self.inbuf = take_buf();
            match futures_util::FutureExt::now_or_never(self.io.read_buf(&mut self.inbuf)) {
                Some(Ok(n)) => return n > 0,
                Some(Err(_)) => return false,
                None => give_buf(std::mem::take(&mut self.inbuf)),
            }
        }
        if self.io.socket().is_none() {
            // TLS may hold decrypted bytes above the socket: read through it.
            return Box::pin(self.fill_within(wait)).await;
        }
        let rt = self.rt.clone();
        let mut drained = std::pin::pin!(rt.drained(usize::from(self.client.port())));
        drained.as_mut().enable();
        if rt.is_draining() {
            return false;
        }
        let mut timer = std::pin::pin!(tokio::time::sleep(wait));
        // `&mut` (not `&`) to the stream: `I` is `Send`, not `Sync`.
        let (io, inbuf) = (&mut self.io, &mut self.inbuf);
        std::future::poll_fn(move |cx| loop {
            if drained.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            let Some(s) = io.socket() else {
                return Poll::Ready(false);
            };
            match s.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(())) => {}
            }
            if inbuf.capacity() == 0 {
                *inbuf = take_buf();
            }
            match s.try_read_buf(inbuf) {
                Ok(n) => return Poll::Ready(n > 0),
                // Readiness was stale (it is cleared now): wait again,
                // without the buffer.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    give_buf(std::mem::take(inbuf));
                }
                Err(_) => return Poll::Ready(false),
            }
        })
        .await
    }

    /// `fill` within `wait`, unless the process starts draining.
    async fn fill_within(&mut self, wait: Duration) -> bool {
        let (rt, key) = (self.rt.clone(), usize::from(self.client.port()));
        tokio::select! {
            biased;
            got = tokio::time::timeout(wait, self.fill()) => matches!(got, Ok(Ok(n)) if n > 0),
            () = rt.until_draining(key) => false,
        }
    }

    /// Read more client bytes into `inbuf`; 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() == 0 {
            if let Some(s) = self.io.socket() {
                // Idle connections hold no buffer: wait first, take one after.
                s.readable().await?;
            }
            self.inbuf = take_buf();
        }
        if self.inbuf.len() == self.inbuf.capacity() {
            self.inbuf.reserve(BUF);
        }
        self.io.read_buf(&mut self.inbuf).await
    }

    /// Between requests a connection holds no buffer and no index: an idle
    /// connection costs its task and socket only (HAProxy does the same).
    fn release_buffers(&mut self) {
        give_buf(std::mem::take(&mut self.inbuf));
    }

    /// Read until the request head is complete (within `client_header_timeout`
    /// of the first request byte, or of the accept for the first request).
    async fn read_head(&mut self, req: &mut ReqHead) -> Option<Parsed> {
        let cfg = &self.fe.config;
        let since = if self.first {
            self.accepted
        } else {
            Instant::now()
        };
        let deadline = tokio::time::Instant::from_std(since + cfg.timeouts.client_header);
        let (max_bytes, max_fields) = (cfg.max_header_bytes, cfg.max_headers);
        loop {
            match req.parse(&self.inbuf, max_fields) {
                Parsed::Partial if self.inbuf.len() >= max_bytes => {
                    return Some(Parsed::Unsupported)
                }
                Parsed::Partial => {}
                Parsed::Complete(n) if n > max_bytes => return Some(Parsed::Unsupported),
                // httparse knows only 1.0 and 1.1: a later 1.x is read as
                // 1.1 (RFC 9110 §2.5), here and on the hyper path it may go to.
                Parsed::Unsupported if head::lower_minor_version(&mut self.inbuf) => continue,
                done => return Some(done),
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(Ok(n)) if n > 0 => {}
                // A partial head then EOF or an error: the general path answers 400.
                Ok(Ok(_)) => return Some(Parsed::Unsupported),
                _ => return None,
            }
        }
    }

    /// Give the connection, with what was read of it, to the hyper path.
    async fn fallback(self: Box<Self>) {
        let this = *self;
        let _guards = this.guards;
        let io = rewind::Rewind::new(this.inbuf, this.io);
        Box::pin(super::http::serve_io(
            this.rt,
            this.frontend,
            this.fe,
            io,
            (this.client, this.local),
            this.https,
            super::http::Proto::Http1,
        ))
        .await;
    }

    /// One request: route, forward, relay the answer.
    async fn exchange(
        &mut self,
        h: &mut Exchange,
        start: Instant,
        tq: Duration,
    ) -> Result<Next, Fallback> {
        // The frontend as the current snapshot has it, so a reload or a
        // runtime change (servers added, removed, routes) reaches keep-alive
        // connections too; looked up again only when the snapshot changed.
        let format = {
            let snap = self.rt.snapshot();
            if snap.generation != self.generation {
                match snap.frontends.get(&*self.frontend) {
                    Some(fe) => self.fe = fe.clone(),
                    None => {
                        drop(snap);
                        return self
                            .local(
                                h,
                                AccessLog::Off,
                                start,
                                "-",
                                (503, "this frontend is being removed"),
                                None,
                                None,
                            )
                            .await
                            .map(|_| Next::Close);
                    }
                }
                self.generation = snap.generation;
            }
            snap.config.log.access
        };
        let fe = self.fe.clone();
        if !frontend_eligible(&fe) {
            return Err(Fallback);
        }
        let buf = &self.inbuf;
        let req = &h.req;
        let host = req
            .host
            .clone()
            .and_then(|h| std::str::from_utf8(&buf[h]).ok());
        let target = &buf[req.target.clone()];
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let path = std::str::from_utf8(&target[..path_end]).unwrap_or("");
        if fe
            .config
            .max_body_bytes
            .is_some_and(|max| req.content_length > max)
        {
            return Err(Fallback);
        }
        let Some((backend, limiter)) = fe.route(host, path) else {
            fe.stats.requests.fetch_add(1, Ordering::Relaxed);
            return self
                .local(
                    h,
                    format,
                    start,
                    "-",
                    (503, "no backend is configured for this host and path"),
                    None,
                    None,
                )
                .await;
        };
        if !backend_eligible(backend) {
            return Err(Fallback);
        }
        let (backend, limiter) = (backend.clone(), limiter.cloned());
        fe.stats.requests.fetch_add(1, Ordering::Relaxed);
        let client_ip = if fe.config.trusted_proxies.is_empty() {
            self.client.ip()
        } else {
            super::edge::client_ip_from(
                self.client.ip(),
                req.fields
                    .iter()
                    .filter(|f| f.kind == Kind::XForwardedFor)
                    .map(|f| &buf[f.value.clone()]),
                &fe.config.trusted_proxies,
            )
        };
        for limiter in [fe.limiter.as_ref(), limiter.as_ref()]
            .into_iter()
            .flatten()
        {
            let key = super::edge::rate_key(&limiter.config.key, client_ip, |name| {
                req.fields
                    .iter()
                    .find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
                    .map(|f| &buf[f.value.clone()])
            });
            if let Err(wait) = limiter.check(&key, Instant::now()) {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return self
                    .local(
                        h,
                        format,
                        start,
                        &backend.config.name,
                        (429, "rate limit exceeded; slow down"),
                        Some(secs),
                        None,
                    )
                    .await;
            }
        }
        self.forward(h, backend, client_ip, format, start, tq).await
    }

    /// Answer locally (no server) and log it; closes the connection when the
    /// request's body was not read.
    #[allow(clippy::too_many_arguments)]
    async fn local(
        &mut self,
        h: &mut Exchange,
        format: AccessLog,
        start: Instant,
        backend: &str,
        (status, why): (u16, &str),
        retry_after: Option<u64>,
        method_uri: Option<(http::Method, http::Uri)>,
    ) -> Result<Next, Fallback> {
        self.fe.stats.local_errors.fetch_add(1, Ordering::Relaxed);
        if format != AccessLog::Off {
            let (m, u) = method_uri.unwrap_or_else(|| self.method_uri(h, format));
            log::local(
                format,
                self.client,
                &self.frontend,
                backend,
                &m,
                &u,
                status,
                start,
                why,
            );
        }
        let close = h.req.close || h.req.content_length > 0;
        write_local(&mut h.out, status, why, retry_after, close);
        let ok = write_all(
            &mut self.io,
            &h.out,
            &[],
            self.fe.config.timeouts.client_idle,
        )
        .await;
        Ok(if ok && !close {
            self.inbuf.drain(..h.len);
            Next::KeepAlive
        } else {
            Next::Close
        })
    }

    /// The request's method and target for the access log (the target is
    /// only parsed when a log line will be written).
    fn method_uri(&self, h: &Exchange, format: AccessLog) -> (http::Method, http::Uri) {
        let m = http::Method::from_bytes(&self.inbuf[h.req.method.clone()])
            .unwrap_or(http::Method::GET);
        let u = if format == AccessLog::Off {
            http::Uri::default()
        } else {
            http::Uri::try_from(&self.inbuf[h.req.target.clone()]).unwrap_or_default()
        };
        (m, u)
    }
}

/// A short local answer, like `proxy::http::local_response`.
fn write_local(out: &mut Vec<u8>, status: u16, why: &str, retry_after: Option<u64>, close: bool) {
    use std::io::Write;
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let reason = code.canonical_reason().unwrap_or("");
    let body = super::http::local_body(code, why);
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(s) = retry_after {
        let _ = write!(out, "retry-after: {s}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Write `head` then `body`: at once when the socket has room (one `writev`,
/// no timer), else within `limit`. False when the peer is gone or too slow.
async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> bool {
    let mut fut = std::pin::pin!(write_both(io, head, body));
    if let Some(r) = futures_util::FutureExt::now_or_never(fut.as_mut()) {
        return r.is_ok();
    }
    matches!(tokio::time::timeout(limit, fut).await, Ok(Ok(())))
}

/// Write `head` then `body`, both in one `writev` when they fit: the body is
/// sent from where it was read, not copied behind the head.
async fn write_both<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let n = if body.is_empty() {
        io.write(head).await?
    } else {
        let bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
        io.write_vectored(&bufs).await?
    };
    if n == 0 && head.len() + body.len() > 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    if n < head.len() {
        io.write_all(&head[n..]).await?;
        io.write_all(body).await
    } else {
        io.write_all(&body[n - head.len()..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::write_all;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// Head and body arrive whole and in order even when the peer takes a
    /// few bytes at a time (partial `writev`s, the rest written after).
    #[tokio::test]
    async fn head_and_body_arrive_whole_through_small_writes() {
        for (head, body) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], &b"0123456789abcdef"[..]),
            (&b"H"[..], &b""[..]),
            (&b"HEAD"[..], &b"B"[..]),
        ] {
            let (mut w, mut r) = tokio::io::duplex(3);
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.map(|_| got)
            });
            assert!(write_all(&mut w, head, body, Duration::from_secs(10)).await);
            drop(w);
            let got = reader.await.expect("reader task").expect("read");
            assert_eq!(got, [head, body].concat());
        }
    }

    /// A peer that is gone makes the write fail, not hang.
    #[tokio::test]
    async fn a_closed_peer_fails_the_write() {
        let (mut w, r) = tokio::io::duplex(3);
        drop(r);
        assert!(!write_all(&mut w, b"head", b"body", Duration::from_secs(10)).await);
    }
}
