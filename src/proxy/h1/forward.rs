//! Forwarding one request on the relay: pick a server, send, retry onto
//! another server when that is safe, relay the response.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::{Framing, Kind};
use super::{
    give_buf, take_buf, write_all, ChunkScanner, ClientIo, Exchange, Fallback, Next, Relay,
};
use crate::config::types::AccessLog;
use crate::proxy::attempts::Attempts;
use crate::proxy::log::Pending;
use crate::proxy::pool;
use crate::runtime::{BackendRt, ServerState};

/// Why sending a request or reading its response head failed.
enum SendError {
    /// Writing the request failed: the server had closed the connection, so
    /// it cannot have acted on the request (on a reused connection, the
    /// keep-alive race). Safe to send again.
    NotSent(std::io::Error),
    /// The server closed or reset the connection after the request went out,
    /// before any byte of an answer.
    Closed(std::io::Error),
    /// The answer was not HTTP.
    Bad(String),
    /// The client went away while its body was being relayed.
    ClientGone,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotSent(e) | SendError::Closed(e) => e.fmt(f),
            SendError::Bad(why) => f.write_str(why),
            SendError::ClientGone => f.write_str("the client went away"),
        }
    }
}

impl<I: ClientIo> Relay<I> {
    /// Forward the current request to `backend` and relay the answer.
    pub(super) async fn forward(
        &mut self,
        h: &mut Exchange,
        backend: Arc<BackendRt>,
        client_ip: IpAddr,
        format: AccessLog,
        start: Instant,
        tq: Duration,
    ) -> Result<Next, Fallback> {
        let cfg = &backend.config;
        let t = &self.inbuf[h.req.target.clone()];
        let path = &t[..t.iter().position(|&b| b == b'?').unwrap_or(t.len())];
        let hash = crate::balance::request_key(cfg.balance, client_ip, path);
        let head_len = h.len;
        let head_request = &self.inbuf[h.req.method.clone()] == b"HEAD";
        // Taken now: a streamed body replaces the head in `inbuf`.
        let mut method_uri = Some(self.method_uri(h, format));
        let cl = h.req.content_length;
        let buffered = ((self.inbuf.len() - head_len) as u64).min(cl) as usize;
        self.build_request(h);
        let mut sent = Sent::default();
        let mut att = Attempts::new(&backend, hash, None);
        while let Some((server, idx)) = att.next_server().await {
            let guard = server.begin_in(&backend.stats);
            let tc_start = Instant::now();
            let pooled = take_alive(&server, cfg.timeouts.pool_idle, cl > 0);
            let (mut up, reused) = match pooled {
                Some(s) => (s, true),
                None => match pool::dial(server.address(), cfg.timeouts.connect).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        att.connect_failed(&server, idx, &e);
                        continue;
                    }
                },
            };
            let tc = if reused {
                Duration::ZERO
            } else {
                tc_start.elapsed()
            };
            let tr_start = Instant::now();
            let outcome = tokio::time::timeout(
                cfg.timeouts.response,
                self.send(h, &mut up, &server, buffered, head_request, &mut sent),
            )
            .await;
            let resp_len = match outcome {
                Ok(Ok(n)) => n,
                Err(_) if cl > 0 && !sent.body_done => {
                    // The client did not send its body in time: its fault,
                    // not the server's (no passive health, no retry).
                    drop(guard);
                    let mu = method_uri.take();
                    let why = "the request body did not arrive in time";
                    return self
                        .fail(h, format, start, &cfg.name, (408, why), true, mu)
                        .await;
                }
                Err(_) => {
                    server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout);
                    server.record_status(504);
                    let why = format!(
                        "server {}/{} did not answer within {:?}",
                        cfg.name,
                        server.name(),
                        cfg.timeouts.response
                    );
                    drop(guard);
                    let mu = method_uri.take();
                    let streamed = sent.streamed;
                    return self
                        .fail(h, format, start, &cfg.name, (504, &why), streamed, mu)
                        .await;
                }
                Ok(Err(SendError::ClientGone)) => return Ok(Next::Close),
                // The server closed this idle connection as we reused it:
                // again on another connection, when the request cannot have
                // been acted on — never written, or written without a body
                // (the hyper path's rule; a pooled connection is checked for
                // a close before a request with a body goes on it).
                Ok(Err(SendError::NotSent(_))) if reused && att.retry_stale() => continue,
                Ok(Err(SendError::Closed(_)))
                    if reused && cl == 0 && !sent.answered && att.retry_stale() =>
                {
                    continue
                }
                Ok(Err(err)) => {
                    att.send_failed(&server, idx, err);
                    if sent.body || sent.answered {
                        // The body went out (the server may have acted on it),
                        // or the client already has an interim answer.
                        break;
                    }
                    continue;
                }
            };
            server.record_success();
            let (method, uri) = method_uri.take().unwrap_or_default();
            let pending = Pending {
                format,
                client: self.client,
                frontend: self.frontend.clone(),
                backend: backend.name.clone(),
                stats: backend.stats.clone(),
                guard,
                method,
                uri,
                status: h.resp.status,
                tq,
                start,
                tc,
                tr: tr_start.elapsed(),
                retries: att.retries(),
            };
            if !sent.streamed {
                self.inbuf.drain(..head_len + buffered);
            }
            return Ok(self
                .relay_response(
                    h,
                    up,
                    resp_len,
                    &server,
                    (cfg.pool_max_idle, cfg.timeouts.pool_idle),
                    cfg.timeouts.response,
                    pending,
                )
                .await);
        }
        let f = att.give_up();
        self.fail(
            h,
            format,
            start,
            &cfg.name,
            (f.status.as_u16(), &f.why),
            sent.streamed,
            method_uri,
        )
        .await
    }

    /// Answer a failed request locally; the connection closes when part of
    /// its body is unread or was consumed by a failed attempt.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &mut self,
        h: &mut Exchange,
        format: AccessLog,
        start: Instant,
        backend: &str,
        (status, why): (u16, &str),
        streamed: bool,
        method_uri: Option<(http::Method, http::Uri)>,
    ) -> Result<Next, Fallback> {
        if streamed {
            h.req.close = true;
        }
        self.local(h, format, start, backend, (status, why), None, method_uri)
            .await
    }

    /// The request head as the server gets it, in `out`: request line, the
    /// client's fields minus hop-by-hop ones, forwarded fields, a request id.
    /// (The part of the body that came with the head is sent from `inbuf`.)
    fn build_request(&mut self, h: &mut Exchange) {
        let buf = &self.inbuf;
        let req = &h.req;
        let out = &mut h.out;
        out.clear();
        // Heads only: a small buffer, not one of the pooled 16 KiB ones.
        out.reserve(h.len + 256);
        out.extend_from_slice(&buf[req.method.clone()]);
        out.push(b' ');
        out.extend_from_slice(&buf[req.target.clone()]);
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
            out.extend_from_slice(&buf[f.name.clone()]);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&buf[f.value.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = xff.filter(|r| !r.is_empty()) {
            out.extend_from_slice(&buf[prev]);
            out.extend_from_slice(b", ");
        }
        let mut ip = [0u8; 64];
        out.extend_from_slice(crate::proxy::headers::fmt_ip(self.client.ip(), &mut ip));
        out.extend_from_slice(if self.https {
            b"\r\nx-forwarded-proto: https"
        } else {
            b"\r\nx-forwarded-proto: http"
        });
        if let Some(h) = req.host.clone() {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(&buf[h]);
        }
        if self.fe.config.request_id && !has_id {
            let mut id = [0u8; 32];
            crate::proxy::edge::write_request_id(&mut id);
            out.extend_from_slice(b"\r\nx-request-id: ");
            out.extend_from_slice(&id);
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
        let body = &self.inbuf[h.len..h.len + buffered];
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
        server.add_bytes(cl, 0);
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
        while left > 0 {
            let n = match tokio::time::timeout(idle, self.io.read_buf(&mut self.inbuf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Err(SendError::ClientGone),
            };
            let take = (n as u64).min(left) as usize;
            up.write_all(&self.inbuf[..take])
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
        out.extend_from_slice(&buf[h.resp.status_line.clone()]);
        out.extend_from_slice(b"\r\n");
        for f in &h.resp.fields {
            if h.resp.forwards(buf, f) {
                out.extend_from_slice(&buf[f.name.clone()]);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&buf[f.value.clone()]);
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
    #[allow(clippy::too_many_arguments)]
    async fn relay_response(
        &mut self,
        h: &mut Exchange,
        mut up: TcpStream,
        head_len: usize,
        server: &Arc<ServerState>,
        (max_idle, max_age): (usize, Duration),
        server_idle: Duration,
        pending: Pending,
    ) -> Next {
        let framing = h.resp.framing;
        // Draining: tell the client this is the last answer (HAProxy too).
        let close =
            h.req.close || self.closing || self.rt.is_draining() || framing == Framing::Close;
        let mut out = std::mem::take(&mut h.out);
        out.clear();
        self.write_response_head(h, &mut out, close);
        let mut body = Body::new(framing);
        let avail = &h.upbuf[head_len..];
        let Ok(take) = body.scan(avail) else {
            h.out = out;
            pending.finish(0, false);
            return Next::Close;
        };
        let mut excess = avail.len() > take;
        let mut bytes = take as u64;
        let client_idle = self.fe.config.timeouts.client_idle;
        crate::proxy::batch::others_first().await;
        let mut ok = write_all(&mut self.io, &out, &avail[..take], client_idle).await;
        h.out = out;
        while ok && !body.done {
            h.upbuf.clear();
            let n = match tokio::time::timeout(server_idle, up.read_buf(&mut h.upbuf)).await {
                Ok(Ok(n)) => n,
                _ => {
                    ok = false;
                    break;
                }
            };
            if n == 0 {
                // End of stream ends a close-delimited body and nothing else.
                ok = framing == Framing::Close;
                break;
            }
            let Ok(take) = body.scan(&h.upbuf) else {
                ok = false;
                break;
            };
            excess = take < n;
            bytes += take as u64;
            ok = write_all(&mut self.io, &h.upbuf[..take], &[], client_idle).await;
        }
        if ok && framing == Framing::Close {
            let _ = self.io.shutdown().await;
        }
        if ok && body.done && h.resp.keep_alive && !excess {
            server.pool.put_raw(up, max_idle, max_age);
        }
        pending.finish(bytes, ok);
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
fn take_alive(server: &ServerState, max_age: Duration, check: bool) -> Option<TcpStream> {
    loop {
        let s = server.pool.take_raw(max_age)?;
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
