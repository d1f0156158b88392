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
//! Policy is not here: each request's facts go to `proxy::decide`, and the
//! forwarding to `proxy::attempts` (this module implements its `Upstream`).
//!
//! Whatever the relay does not handle itself — HTTP/1.0, upgrades,
//! `Expect`, chunked requests, malformed or oversized heads, and frontends or
//! backends with TLS to servers, HTTP/2, PROXY headers to servers, sticky
//! cookies, redirects or header rules ([`eligible`]) — is handed back, with
//! the bytes already read ([`Handover`]), to `proxy::serve`, which gives the
//! rest of the connection to the general hyper path, so both paths answer
//! such requests identically.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod chunked;
mod forward;
mod head;
mod rewind;

pub use chunked::{ChunkError, ChunkScanner};
pub use head::{Framing, Parsed, ReqHead, RespHead};

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::head::{Field, Kind};
use super::answer;
use super::conn::{ConnGuards, ConnInfo, ReqCtx};
use super::decide::{self, Answer, Decision, RequestFacts};
use super::lazy::LazyTcp;
use crate::config::types::AccessLog;
use crate::runtime::{BackendRt, FrontendRt};

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

impl ClientIo for crate::tls::alert_flush::AlertFlush {
    fn socket(&mut self) -> Option<&TcpStream> {
        None
    }
}

/// True when the relay can serve every request of this frontend that it
/// can parse: nothing the frontend or any of its backends asks for needs
/// the general path. Decided when the connection is accepted
/// (`proxy::serve`), and again by a relay connection when a new snapshot
/// comes (then it hands the connection over before deciding the request).
pub(crate) fn eligible(fe: &FrontendRt) -> bool {
    let c = &fe.config;
    // Normalised paths are rewritten by the hyper path only.
    enabled()
        && !c.h2c
        && !c.normalize_path
        && c.redirect_https.is_none()
        && c.request_headers.is_empty()
        && c.response_headers.is_empty()
        && fe.default.as_deref().is_none_or(backend_eligible)
        && fe.routes.backends().all(|b| backend_eligible(b))
}

/// False when the environment says `FULCRUM_RELAY=off` (read once): every
/// HTTP connection then takes the hyper path — to compare the two paths
/// (the parity test does) or to rule the relay out when chasing a problem.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FULCRUM_RELAY").is_none_or(|v| v != "off"))
}

fn backend_eligible(b: &BackendRt) -> bool {
    let c = &b.config;
    b.tls.is_none() && !c.http2 && c.proxy_protocol.is_none() && c.sticky.is_none()
}

/// The request headers `decide` reads, over the relay's parsed head.
struct HeadFields<'a> {
    buf: &'a [u8],
    fields: &'a [Field],
}

impl decide::Headers for HeadFields<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| {
                self.buf
                    .get(f.name.clone())
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            })
            .and_then(|f| self.buf.get(f.value.clone()))
    }
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.fields
            .iter()
            .filter(|f| f.kind == Kind::XForwardedFor)
            .filter_map(|f| self.buf.get(f.value.clone()))
    }
    fn has_request_id(&self) -> bool {
        self.fields.iter().any(|f| f.kind == Kind::XRequestId)
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .filter(|f| {
                self.buf
                    .get(f.name.clone())
                    .is_some_and(|n| n.eq_ignore_ascii_case(b"cookie"))
            })
            .filter_map(|f| self.buf.get(f.value.clone()))
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
    }
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

thread_local! {
    /// Request buffers ([`REQ_BUF`]) of finished exchanges.
    static REQ_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// What a client's request is first read into: a request head is rarely
/// more than a few hundred bytes (nginx's `client_header_buffer_size` is
/// 1 KiB), and the buffer is held from the request's first byte to the
/// end of its response, so at 200 requests in flight a 16 KiB one would
/// cost 2.4 MiB more for nothing. A bigger head or a body grows it
/// (`fill`), and the grown buffer joins the [`BUF`] pool.
const REQ_BUF: usize = 4 * 1024;

fn take_buf() -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF))
}

/// A buffer for a client's request (see [`REQ_BUF`]).
fn take_req_buf() -> Vec<u8> {
    REQ_BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(REQ_BUF))
}

fn give_buf(mut buf: Vec<u8>) {
    // By size class; smaller ones are dropped (a small buffer would turn
    // every read into many).
    let pool = match buf.capacity() {
        c if (REQ_BUF..BUF).contains(&c) => &REQ_BUFFERS,
        c if (BUF..=4 * BUF).contains(&c) => &BUFFERS,
        _ => return,
    };
    buf.clear();
    pool.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOLED {
            b.push(buf);
        }
    });
}

/// Per-connection state (boxed once, so the connection's task holds a pointer).
pub(crate) struct Relay<I> {
    conn: ConnInfo,
    fe: Arc<FrontendRt>,
    io: I,
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

/// A connection the relay hands to the general path: the stream with the
/// bytes already read put back in front.
pub(crate) struct Handover<I> {
    pub(crate) guards: ConnGuards,
    pub(crate) conn: ConnInfo,
    pub(crate) fe: Arc<FrontendRt>,
    pub(crate) io: rewind::Rewind<I>,
}

/// A relay for a client connection, to [`run`]. The state is boxed once and
/// the exchange is boxed per request, so an idle keep-alive connection costs
/// a few hundred bytes plus its socket.
pub(crate) fn relay<I: ClientIo>(
    conn: ConnInfo,
    fe: Arc<FrontendRt>,
    io: I,
    guards: ConnGuards,
) -> Box<Relay<I>> {
    Box::new(Relay {
        conn,
        fe,
        io,
        inbuf: Vec::new(),
        generation: 0,
        closing: false,
        accepted: Instant::now(),
        first: true,
        guards,
    })
}

/// Serve a client connection with the relay until it ends, or until a
/// request needs the general path: then the connection is handed back.
pub(crate) async fn run<I: ClientIo>(mut r: Box<Relay<I>>) -> Option<Handover<I>> {
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
                return None;
            }
        }
        r.closing = r.conn.rt.is_draining();
        // Boxed: the task of a connection waiting for its next request holds
        // only the waiting state, not the largest state of an exchange.
        match Box::pin(r.request()).await {
            // Also while draining: an answer that went out before the drain
            // began kept the connection open, and the client may be sending
            // its next request already; `next_request` lingers for it.
            Step::KeepAlive => {}
            Step::Close => return None,
            Step::Fallback => return Some((*r).handover()),
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
            self.inbuf = take_req_buf();
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
        let rt = self.conn.rt.clone();
        let mut drained = std::pin::pin!(rt.drained(usize::from(self.conn.client.port())));
        drained.as_mut().enable();
        let mut timer = std::pin::pin!(tokio::time::sleep(wait));
        // Draining: a request may already be on its way; wait a little for
        // it (it is answered with `Connection: close`) rather than close
        // under it.
        let linger = |timer: std::pin::Pin<&mut tokio::time::Sleep>| {
            let until = tokio::time::Instant::now() + super::DRAIN_IDLE_LINGER;
            if until < timer.deadline() {
                timer.reset(until);
            }
        };
        let mut draining = rt.is_draining();
        if draining {
            linger(timer.as_mut());
        }
        // `&mut` (not `&`) to the stream: `I` is `Send`, not `Sync`.
        let (io, inbuf) = (&mut self.io, &mut self.inbuf);
        std::future::poll_fn(move |cx| loop {
            if !draining && drained.as_mut().poll(cx).is_ready() {
                draining = true;
                linger(timer.as_mut());
            }
            if timer.as_mut().poll(cx).is_ready() {
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
                *inbuf = take_req_buf();
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

    /// `fill` within `wait`; once the process drains, within
    /// [`super::DRAIN_IDLE_LINGER`] at most.
    async fn fill_within(&mut self, wait: Duration) -> bool {
        let (rt, key) = (self.conn.rt.clone(), usize::from(self.conn.client.port()));
        let deadline = tokio::time::Instant::now() + wait;
        let fill = self.fill();
        let mut fill = std::pin::pin!(fill);
        tokio::select! {
            biased;
            got = tokio::time::timeout_at(deadline, fill.as_mut()) => {
                return matches!(got, Ok(Ok(n)) if n > 0)
            }
            () = rt.until_draining(key) => {}
        }
        let linger = deadline.min(tokio::time::Instant::now() + super::DRAIN_IDLE_LINGER);
        matches!(tokio::time::timeout_at(linger, fill).await, Ok(Ok(n)) if n > 0)
    }

    /// Read more client bytes into `inbuf`; 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() == 0 {
            if let Some(s) = self.io.socket() {
                // Idle connections hold no buffer: wait first, take one after.
                s.readable().await?;
            }
            self.inbuf = take_req_buf();
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
    fn handover(self) -> Handover<I> {
        Handover {
            guards: self.guards,
            conn: self.conn,
            fe: self.fe,
            io: rewind::Rewind::new(self.inbuf, self.io),
        }
    }

    /// One request: decide, forward, relay the answer.
    async fn exchange(
        &mut self,
        h: &mut Exchange,
        start: Instant,
        tq: Duration,
    ) -> Result<Next, Fallback> {
        // The frontend as the current snapshot has it, so a reload or a
        // runtime change (servers added, removed, routes) reaches keep-alive
        // connections too; looked up again only when the snapshot changed.
        let (format, removed) = {
            let snap = self.conn.rt.snapshot();
            let mut removed = false;
            if snap.generation != self.generation {
                match snap.frontends.get(&*self.conn.frontend) {
                    Some(fe) => {
                        if !eligible(fe) {
                            // The new snapshot needs the general path: hand
                            // over before deciding, so nothing counts twice.
                            return Err(Fallback);
                        }
                        self.fe = fe.clone();
                        self.generation = snap.generation;
                    }
                    None => removed = true,
                }
            }
            (snap.config.log.access, removed)
        };
        let fe = self.fe.clone();
        let buf = &self.inbuf;
        let req = &h.req;
        let host = req
            .host
            .clone()
            .and_then(|h| std::str::from_utf8(head::at(buf, h)).ok());
        let target = head::at(buf, req.target.clone());
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let path = std::str::from_utf8(head::at(target, 0..path_end)).unwrap_or("");
        let facts = RequestFacts {
            kind: decide::Kind::Http,
            // The relay parses only what `strict::check` lets through (see `head`).
            refused: None,
            host,
            path,
            path_and_query: std::str::from_utf8(target).unwrap_or(""),
            content_length: Some(req.content_length),
            peer: self.conn.client.ip(),
            headers: &HeadFields {
                buf,
                fields: &req.fields,
            },
            now: start,
        };
        let decision = decide::decide((!removed).then_some(&*fe), &facts);
        let ctx = ReqCtx {
            format,
            start,
            tq,
            method: http::Method::GET,
            uri: http::Uri::default(),
        };
        match decision {
            Decision::Answer(a) => {
                let close = removed;
                self.local(h, ctx, &a, close).await
            }
            Decision::Forward(f) => self.forward(h, f, ctx).await,
        }
    }

    /// Answer locally (no server) and log it when it is an error; closes the
    /// connection when the request's body was not read (or `close`).
    async fn local(
        &mut self,
        h: &mut Exchange,
        mut ctx: ReqCtx,
        a: &Answer,
        close: bool,
    ) -> Result<Next, Fallback> {
        if a.error && ctx.format != AccessLog::Off {
            if ctx.uri == http::Uri::default() {
                (ctx.method, ctx.uri) = self.method_uri(h, ctx.format);
            }
            ctx.log_local(
                &self.conn,
                a.backend.as_deref().unwrap_or("-"),
                a.status.as_u16(),
                &a.why,
            );
        }
        let close = close || h.req.close || h.req.content_length > 0;
        answer::write(&mut h.out, a, close);
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
        let m = http::Method::from_bytes(head::at(&self.inbuf, h.req.method.clone()))
            .unwrap_or(http::Method::GET);
        let u = if format == AccessLog::Off {
            http::Uri::default()
        } else {
            http::Uri::try_from(head::at(&self.inbuf, h.req.target.clone())).unwrap_or_default()
        };
        (m, u)
    }
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
    // `n` is at most head.len() + body.len() (what was offered).
    match head.get(n..) {
        Some(rest) if !rest.is_empty() => {
            io.write_all(rest).await?;
            io.write_all(body).await
        }
        _ => {
            io.write_all(body.get(n - head.len()..).unwrap_or_default())
                .await
        }
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
