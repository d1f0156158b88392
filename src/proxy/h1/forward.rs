//! Forwarding one request on the relay: the relay's [`Upstream`] (take a
//! pooled connection or dial, write the head and body, read the answer's
//! head), driven by the shared attempt loop; then the answer is relayed.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::{at, Framing, Kind};
use super::{
    give_buf, take_buf, write_all, ChunkScanner, ClientIo, Exchange, Fallback, Next, Relay,
};
use crate::proxy::attempts::{attempt, Lost, Upstream, Won};
use crate::proxy::conn::ReqCtx;
use crate::proxy::decide::{Answer, Forward, RequestId};
use crate::proxy::error::{AttemptError, Retry, Stage};
use crate::proxy::log::Pending;
use crate::proxy::pool;
use crate::runtime::stats::ResponseEnd;
use crate::runtime::{BackendRt, ServerState};

/// Why sending a request or reading its response head failed, as the relay
/// sees it; [`SendError::into_attempt`] says what that means for a retry.
enum SendError {
    /// Writing the request failed: the server had closed the connection, so
    /// it cannot have acted on the request (on a reused connection, the
    /// keep-alive race).
    NotSent(std::io::Error),
    /// The server closed or reset the connection after the request went out,
    /// before any byte of an answer.
    Closed(std::io::Error),
    /// The answer was not HTTP.
    Bad(String),
    /// The client went away while its body was being relayed.
    ClientGone,
}

impl SendError {
    /// The shared form: whose fault, and whether the request may go again
    /// (`sent`: how far this attempt got; `cl`: the body's length).
    fn into_attempt(self, sent: &Sent, cl: u64) -> AttemptError {
        // The body went out (the server may have acted on it), or the
        // client already has an interim answer: not again.
        let committed = sent.body || sent.answered;
        match self {
            SendError::ClientGone => AttemptError::client(Stage::Body, "the client went away"),
            // Never written: safe everywhere, without an attempt on reuse.
            SendError::NotSent(e) => AttemptError::server(Stage::Send, Retry::Stale, e),
            // The hyper path's rule: a reused connection closed under a
            // request without a body is the keep-alive race (a pooled
            // connection is checked for a close before a body goes on it).
            SendError::Closed(e) if cl == 0 && !sent.answered => {
                AttemptError::server(Stage::Head, Retry::Stale, e)
            }
            SendError::Closed(e) => AttemptError::server(
                Stage::Head,
                if committed {
                    Retry::Never
                } else {
                    Retry::Another
                },
                e,
            ),
            SendError::Bad(why) => AttemptError::server(
                Stage::Head,
                if committed {
                    Retry::Never
                } else {
                    Retry::Another
                },
                why,
            ),
        }
    }
}

/// The relay's side of one request's attempts.
struct RelayUp<'a, I> {
    relay: &'a mut Relay<I>,
    backend: &'a BackendRt,
    h: &'a mut Exchange,
    /// Body bytes that came with the head (sent from `inbuf`).
    buffered: usize,
    head_request: bool,
    sent: Sent,
}

impl<I: ClientIo> Upstream for RelayUp<'_, I> {
    type Conn = TcpStream;
    /// The server connection and the length of the answer's head in `upbuf`.
    type Answer = (TcpStream, usize);

    async fn connect(
        &mut self,
        server: &Arc<ServerState>,
    ) -> Result<(TcpStream, bool), AttemptError> {
        let t = &self.backend.config.timeouts;
        let pooled = take_alive(server, t.pool_idle, self.h.req.content_length > 0);
        pool::pooled_or_dial(server, pooled, t.connect).await
    }

    async fn send(
        &mut self,
        server: &Arc<ServerState>,
        mut up: TcpStream,
        _reused: bool,
        _again: bool,
    ) -> Result<(TcpStream, usize), AttemptError> {
        let cl = self.h.req.content_length;
        match self
            .relay
            .send(
                self.h,
                &mut up,
                server,
                self.buffered,
                self.head_request,
                &mut self.sent,
            )
            .await
        {
            Ok(n) => Ok((up, n)),
            Err(e) => Err(e.into_attempt(&self.sent, cl)),
        }
    }

    fn client_timeout(&self) -> Option<AttemptError> {
        // The client did not send its (Content-Length) body in time: its
        // fault, not the server's (no passive health, no retry).
        (self.h.req.content_length > 0 && !self.sent.body_done).then(AttemptError::body_timeout)
    }
}

impl<I: ClientIo> Relay<I> {
    /// Forward the current request as `f` says and relay the answer.
    pub(super) async fn forward(
        &mut self,
        h: &mut Exchange,
        f: Forward,
        mut ctx: ReqCtx,
    ) -> Result<Next, Fallback> {
        let backend: Arc<BackendRt> = f.backend.clone();
        let cfg = &backend.config;
        let head_len = h.len;
        let head_request = at(&self.inbuf, h.req.method.clone()) == b"HEAD";
        // Taken now: a streamed body replaces the head in `inbuf`.
        (ctx.method, ctx.uri) = self.method_uri(h, ctx.format);
        let cl = h.req.content_length;
        let buffered = ((self.inbuf.len() - head_len) as u64).min(cl) as usize;
        self.build_request(h, &f.request_id);
        let fe = self.fe.clone();
        let mut up = RelayUp {
            relay: self,
            backend: &backend,
            h,
            buffered,
            head_request,
            sent: Sent::default(),
        };
        let won = attempt(
            &backend,
            &fe.stats,
            (f.hash, f.sticky),
            Some(cfg.timeouts.response),
            &mut up,
        )
        .await;
        let streamed = up.sent.streamed;
        let Won {
            answer: (conn, resp_len),
            server,
            guard,
            tc,
            tr,
            retries,
            ..
        } = match won {
            Ok(w) => w,
            // A body that did not arrive in time: 408, and the connection
            // closes (the rest of the body is unread).
            Err(Lost::Client(e)) if e.status == StatusCode::REQUEST_TIMEOUT => {
                let a = Answer {
                    status: e.status,
                    why: e.why.into(),
                    retry_after: None,
                    location: None,
                    backend: Some(backend.name.clone()),
                    error: true,
                };
                return self.local(h, ctx, &a, true).await;
            }
            // Gone: nothing to answer (and nothing blamed on the server).
            Err(Lost::Client(_)) => return Ok(Next::Close),
            Err(Lost::Server(failure)) => {
                if streamed {
                    // Part of the body is unread or was consumed by a failed attempt.
                    h.req.close = true;
                }
                let a = Answer {
                    status: failure.status,
                    why: failure.why.into(),
                    retry_after: None,
                    location: None,
                    backend: Some(backend.name.clone()),
                    error: true,
                };
                return self.local(h, ctx, &a, false).await;
            }
        };
        let pending = Pending {
            format: ctx.format,
            client: self.conn.client,
            frontend: self.conn.frontend.clone(),
            backend: backend.name.clone(),
            stats: backend.stats.clone(),
            frontend_stats: fe.stats.clone(),
            guard,
            method: ctx.method,
            uri: ctx.uri,
            status: h.resp.status,
            tq: ctx.tq,
            start: ctx.start,
            tc,
            tr,
            retries,
        };
        if !streamed {
            self.inbuf.drain(..head_len + buffered);
        }
        Ok(self
            .relay_response(h, conn, resp_len, &server, &backend, pending)
            .await)
    }

    /// The request head as the server gets it, in `out`: request line, the
    /// client's fields minus hop-by-hop ones, forwarded fields, a request id.
    /// (The part of the body that came with the head is sent from `inbuf`.)
    fn build_request(&mut self, h: &mut Exchange, id: &RequestId) {
        let buf = &self.inbuf;
        let req = &h.req;
        let out = &mut h.out;
        out.clear();
        // Heads only: a small buffer, not one of the pooled 16 KiB ones.
        out.reserve(h.len + 256);
        out.extend_from_slice(at(buf, req.method.clone()));
        out.push(b' ');
        out.extend_from_slice(at(buf, req.target.clone()));
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut xff = None;
        let mut has_id = false;
        for f in &req.fields {
            match f.kind {
                Kind::Connection | Kind::Hop | Kind::XForwardedOwn => continue,
                Kind::XForwardedFor => {
                    // The first one carries on (as `proxy::headers::add_forwarded`).
                    xff.get_or_insert(f.value.clone());
                    continue;
                }
                Kind::XRequestId => has_id = true,
                _ => {}
            }
            out.extend_from_slice(at(buf, f.name.clone()));
            out.extend_from_slice(b": ");
            out.extend_from_slice(at(buf, f.value.clone()));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = xff.filter(|r| !r.is_empty()) {
            out.extend_from_slice(at(buf, prev));
            out.extend_from_slice(b", ");
        }
        let mut ip = [0u8; 64];
        out.extend_from_slice(crate::proxy::headers::fmt_ip(
            self.conn.client.ip(),
            &mut ip,
        ));
        out.extend_from_slice(if self.conn.https {
            b"\r\nx-forwarded-proto: https"
        } else {
            b"\r\nx-forwarded-proto: http"
        });
        if let Some(h) = req.host.clone() {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(at(buf, h));
        }
        // `decide` saw the same fields: a new id only when none came.
        if let (RequestId::New(id), false) = (id, has_id) {
            out.extend_from_slice(b"\r\nx-request-id: ");
            out.extend_from_slice(id);
        }
        out.extend_from_slice(b"\r\n\r\n");
    }

    /// Send the request (streaming the rest of its body from the client) and
    /// read the response head into `resp`/`upbuf`; returns the head's length.
    /// Interim (1xx) answers are passed to the client on the way.
    async fn send(
        &mut self,
        h: &mut Exchange,
        up: &mut TcpStream,
        server: &Arc<ServerState>,
        buffered: usize,
        head_request: bool,
        sent: &mut Sent,
    ) -> Result<usize, SendError> {
        crate::proxy::batch::others_first().await;
        let body = self.inbuf.get(h.len..h.len + buffered).unwrap_or_default();
        super::write_both(up, &h.out, body)
            .await
            .map_err(SendError::NotSent)?;
        let cl = h.req.content_length;
        sent.body = cl > 0;
        if (buffered as u64) < cl {
            sent.streamed = true;
            self.stream_body(up, cl - buffered as u64).await?;
        }
        sent.body_done = true;
        server.add_bytes(h.out.len() as u64 + cl, 0); // head + body (issue 19)
        if h.upbuf.capacity() == 0 {
            h.upbuf = take_buf();
        }
        h.upbuf.clear();
        loop {
            if h.upbuf.len() == h.upbuf.capacity() {
                if h.upbuf.len() >= 64 * 1024 {
                    return Err(SendError::Bad("response head too large".into()));
                }
                h.upbuf.reserve(super::BUF);
            }
            let n = up.read_buf(&mut h.upbuf).await.map_err(SendError::Closed)?;
            if n == 0 {
                return Err(if h.upbuf.is_empty() {
                    SendError::Closed(std::io::ErrorKind::UnexpectedEof.into())
                } else {
                    SendError::Bad("connection closed inside the response head".into())
                });
            }
            loop {
                let len = match h.resp.parse(&h.upbuf, head_request) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => return Err(SendError::Bad(e.to_string())),
                };
                match h.resp.status {
                    101 => return Err(SendError::Bad("101 without an upgrade request".into())),
                    100..=199 => {
                        // Interim answer (103 Early Hints…): pass it on, read on.
                        let mut interim = Vec::with_capacity(256);
                        self.write_response_head(h, &mut interim, false);
                        let limit = self.fe.config.timeouts.client_idle;
                        sent.answered = true;
                        if !write_all(&mut self.io, &interim, &[], limit).await {
                            return Err(SendError::ClientGone);
                        }
                        h.upbuf.drain(..len);
                    }
                    _ => return Ok(len),
                }
            }
        }
    }

    /// Copy the `left` body bytes not yet read from the client to the server.
    async fn stream_body(&mut self, up: &mut TcpStream, mut left: u64) -> Result<(), SendError> {
        let idle = self.fe.config.timeouts.client_idle;
        // `inbuf` holds the head and the part of the body already sent.
        self.inbuf.clear();
        // A body worth streaming gets a full-size buffer (the request
        // buffer is small: see `REQ_BUF`).
        self.inbuf.reserve(super::BUF);
        while left > 0 {
            let n = match tokio::time::timeout(idle, self.io.read_buf(&mut self.inbuf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Err(SendError::ClientGone),
            };
            let take = (n as u64).min(left) as usize;
            up.write_all(self.inbuf.get(..take).unwrap_or_default())
                .await
                .map_err(SendError::Closed)?;
            self.inbuf.drain(..take);
            left -= take as u64;
        }
        Ok(())
    }

    /// The response head as the client gets it.
    fn write_response_head(&self, h: &Exchange, out: &mut Vec<u8>, close: bool) {
        let buf = &h.upbuf;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(at(buf, h.resp.status_line.clone()));
        out.extend_from_slice(b"\r\n");
        for f in &h.resp.fields {
            if h.resp.forwards(buf, f) {
                out.extend_from_slice(at(buf, f.name.clone()));
                out.extend_from_slice(b": ");
                out.extend_from_slice(at(buf, f.value.clone()));
                out.extend_from_slice(b"\r\n");
            }
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Write the response to the client, streaming its body; give the server
    /// connection back to the pool when the exchange ended cleanly.
    async fn relay_response(
        &mut self,
        h: &mut Exchange,
        mut up: TcpStream,
        head_len: usize,
        server: &Arc<ServerState>,
        backend: &BackendRt,
        pending: Pending,
    ) -> Next {
        let t = &backend.config.timeouts;
        let (max_idle, max_age, server_idle) =
            (backend.config.pool_max_idle, t.pool_idle, t.response);
        let framing = h.resp.framing;
        // Draining: tell the client this is the last answer (HAProxy too).
        let close =
            h.req.close || self.closing || self.conn.rt.is_draining() || framing == Framing::Close;
        let mut out = std::mem::take(&mut h.out);
        out.clear();
        self.write_response_head(h, &mut out, close);
        let mut body = Body::new(framing);
        let avail = h.upbuf.get(head_len..).unwrap_or_default();
        let client_idle = self.fe.config.timeouts.client_idle;
        let Ok(take) = body.scan(avail) else {
            // The body bytes that came with the head are not valid: nothing
            // went to the client yet, so it gets a 502 (as for a bad head),
            // logged as the proxy ending it on the data (`PD`).
            let a = Answer {
                status: StatusCode::BAD_GATEWAY,
                why: "invalid response body from the server".into(),
                retry_after: None,
                location: None,
                backend: Some(backend.name.clone()),
                error: true,
            };
            crate::proxy::answer::write(&mut out, &a, true);
            let _ = write_all(&mut self.io, &out, &[], client_idle).await;
            h.out = out;
            let mut pending = pending;
            pending.status = StatusCode::BAD_GATEWAY.as_u16();
            pending.end(0, ResponseEnd::Malformed);
            return Next::Close;
        };
        let mut excess = avail.len() > take;
        let mut bytes = take as u64;
        crate::proxy::batch::others_first().await;
        let wrote = |ok: bool| {
            if ok {
                ResponseEnd::Clean
            } else {
                ResponseEnd::ClientAbort
            }
        };
        let mut end = wrote(
            write_all(
                &mut self.io,
                &out,
                avail.get(..take).unwrap_or_default(),
                client_idle,
            )
            .await,
        );
        h.out = out;
        while end == ResponseEnd::Clean && !body.done {
            h.upbuf.clear();
            let n = match tokio::time::timeout(server_idle, up.read_buf(&mut h.upbuf)).await {
                Ok(Ok(n)) => n,
                // Reset, or silent past the response timeout.
                _ => {
                    end = ResponseEnd::ServerAbort;
                    break;
                }
            };
            if n == 0 {
                // End of stream ends a close-delimited body and nothing else.
                if framing != Framing::Close {
                    end = ResponseEnd::ServerAbort;
                }
                break;
            }
            let Ok(take) = body.scan(&h.upbuf) else {
                end = ResponseEnd::Malformed;
                break;
            };
            excess = take < n;
            bytes += take as u64;
            end = wrote(
                write_all(
                    &mut self.io,
                    h.upbuf.get(..take).unwrap_or_default(),
                    &[],
                    client_idle,
                )
                .await,
            );
        }
        let ok = end == ResponseEnd::Clean;
        if ok && framing == Framing::Close {
            let _ = self.io.shutdown().await;
        }
        if ok && body.done && h.resp.keep_alive && !excess {
            pool::put_raw(server, up, max_idle, max_age);
        }
        pending.end(bytes, end);
        if !ok || close {
            return Next::Close;
        }
        // A big response grew the buffer: do not keep it.
        if h.upbuf.capacity() > super::BUF {
            give_buf(std::mem::take(&mut h.upbuf));
        }
        Next::KeepAlive
    }
}

/// How far an attempt got.
#[derive(Default)]
struct Sent {
    /// Part of the body was read from the client (not in `inbuf` any more).
    streamed: bool,
    /// The request, with a body, was written.
    body: bool,
    /// An interim (1xx) answer went to the client.
    answered: bool,
    /// The whole body was read from the client and written.
    body_done: bool,
}

/// A pooled connection to `server`; when `check` (the request has a body
/// that must not be sent twice), one the server has not closed meanwhile.
fn take_alive(server: &Arc<ServerState>, max_age: Duration, check: bool) -> Option<TcpStream> {
    loop {
        let s = pool::take_raw(server, max_age)?;
        if !check || is_open(&s) {
            return Some(s);
        }
    }
}

/// True when an idle connection has neither been closed by its server nor
/// received unexpected bytes (one non-blocking peek).
fn is_open(s: &TcpStream) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(s).peek(&mut b),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// Where the response body ends.
struct Body {
    framing: Framing,
    left: u64,
    chunks: ChunkScanner,
    done: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Body {
            framing,
            left,
            chunks: ChunkScanner::default(),
            done: framing == Framing::None,
        }
    }

    /// How many of `bytes` belong to the body; sets `done` at its end.
    fn scan(&mut self, bytes: &[u8]) -> Result<usize, super::ChunkError> {
        let take = match self.framing {
            Framing::None => 0,
            Framing::Length(_) => {
                let t = (bytes.len() as u64).min(self.left);
                self.left -= t;
                self.done = self.left == 0;
                t as usize
            }
            Framing::Chunked => {
                let t = self.chunks.scan(bytes)?;
                self.done = self.chunks.is_done();
                t
            }
            Framing::Close => bytes.len(),
        };
        Ok(take)
    }
}
