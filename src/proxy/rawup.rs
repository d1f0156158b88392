//! The hyper path's HTTP/1.1 upstream for requests without a body, written
//! and read in the request's own task, as the relay does (`proxy::h1`).
//!
//! Through hyper's client, every request crossed two channels and three task
//! wake-ups (the request to the connection's task, the answer back on a
//! oneshot, the body on a third channel), and its headers were copied into a
//! second map for a possible retry. Here the head is encoded once, written
//! on a pooled plain connection (the relay's pool, `pool::take_raw`), the
//! answer's head read and parsed with the relay's parser
//! (`h1::RespHead`: the same framing rules), and the body streamed from the
//! socket by [`RawBody`] as the client's connection asks for it (HTTP/2 flow
//! control bounds it as before: nothing is read ahead of the send buffer
//! but one read of [`READ`] bytes).
//!
//! Used for requests without a body to plain HTTP/1.1 servers with no PROXY
//! header (`proxy::http` decides); everything else still goes through
//! hyper's client. `FULCRUM_UPSTREAM=hyper` turns it off (to compare the two).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::attempts::Upstream;
use super::error::{AttemptError, Retry, Stage};
use super::h1::{Framing, RespHead};
use super::log::Pending;
use super::pool;
use crate::runtime::stats::ResponseEnd;
use crate::runtime::{BackendRt, ServerState};

/// One read from a server.
pub(crate) const READ: usize = 16 * 1024;
/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Largest trailer section of a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// The error of a body read from a server.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// False when the environment says `FULCRUM_UPSTREAM=hyper` (read once).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FULCRUM_UPSTREAM").is_none_or(|v| v != "hyper"))
}

/// The request head as a server gets it. `join_cookies` (an HTTP/2
/// request): its `cookie` fields become one, joined by "; " (RFC 9113
/// §8.2.3: a MUST before passing them to HTTP/1.1).
pub(crate) fn encode_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    join_cookies: bool,
) -> Vec<u8> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(64 + pq.len() + headers.len() * 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookies = false;
    for (name, value) in headers {
        if join_cookies && name == http::header::COOKIE {
            if !cookies {
                cookies = true;
                out.extend_from_slice(b"cookie: ");
                for (i, v) in headers.get_all(http::header::COOKIE).iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"; ");
                    }
                    out.extend_from_slice(v.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One request's attempts over plain HTTP/1.1 connections.
pub(crate) struct RawUp<'a> {
    pub(crate) backend: &'a BackendRt,
    /// From [`encode_head`].
    pub(crate) head: Vec<u8>,
    pub(crate) head_request: bool,
}

/// A server's answer: its head, and the connection its body comes on.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) conn: TcpStream,
    /// What was read past the head.
    pub(crate) rest: BytesMut,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

impl Upstream for RawUp<'_> {
    type Conn = TcpStream;
    type Answer = Answer;

    async fn connect(
        &mut self,
        server: &Arc<ServerState>,
    ) -> Result<(TcpStream, bool), AttemptError> {
        let t = &self.backend.config.timeouts;
        pool::pooled_or_dial(server, pool::take_raw(server, t.pool_idle), t.connect).await
    }

    async fn send(
        &mut self,
        server: &Arc<ServerState>,
        mut up: TcpStream,
        reused: bool,
        _again: bool,
    ) -> Result<Answer, AttemptError> {
        // No body: a reused connection that fails before any byte of an
        // answer was closed by its server (the keep-alive race), and the
        // request cannot have been acted on.
        let early = if reused { Retry::Stale } else { Retry::Another };
        if let Err(e) = up.write_all(&self.head).await {
            return Err(AttemptError::server(Stage::Send, early, e));
        }
        // The head as written counts in `fulcrum_server_bytes_in_total`, as
        // on the relay and the hyper path.
        server.add_bytes(self.head.len() as u64, 0);
        let mut buf = BytesMut::with_capacity(READ);
        let mut resp = RespHead::default();
        loop {
            if buf.len() == buf.capacity() {
                if buf.len() >= MAX_HEAD {
                    return Err(bad("response head too large"));
                }
                buf.reserve(READ);
            }
            let n = match up.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) if buf.is_empty() => {
                    return Err(AttemptError::server(Stage::Head, early, e))
                }
                Err(e) => return Err(bad(e)),
            };
            if n == 0 {
                return Err(if buf.is_empty() {
                    AttemptError::server(
                        Stage::Head,
                        early,
                        "the server closed the connection before answering",
                    )
                } else {
                    bad("connection closed inside the response head")
                });
            }
            loop {
                let len = match resp.parse(&buf, self.head_request) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => return Err(bad(e)),
                };
                match resp.status {
                    101 => return Err(bad("101 without an upgrade request")),
                    // Interim answers (103 Early Hints…) are not passed on.
                    100..=199 => buf.advance(len),
                    code => {
                        let status = StatusCode::from_u16(code).map_err(bad)?;
                        let head = buf.split_to(len).freeze();
                        let headers = fields(&resp, &head)?;
                        return Ok(Answer {
                            status,
                            headers,
                            conn: up,
                            rest: buf,
                            framing: resp.framing,
                            keep_alive: resp.keep_alive,
                        });
                    }
                }
            }
        }
    }
}

/// A malformed answer: the server's fault; another server may be tried.
fn bad(why: impl std::fmt::Display) -> AttemptError {
    AttemptError::server(Stage::Head, Retry::Another, why)
}

/// The answer's fields as the client gets them (values share `head`).
fn fields(resp: &RespHead, head: &Bytes) -> Result<HeaderMap, AttemptError> {
    let mut map = HeaderMap::with_capacity(resp.fields.len());
    for f in &resp.fields {
        if !resp.forwards(head, f) {
            continue;
        }
        let name = head
            .get(f.name.clone())
            .and_then(|n| HeaderName::from_bytes(n).ok());
        let value = HeaderValue::from_maybe_shared(head.slice(f.value.clone())).ok();
        match (name, value) {
            (Some(n), Some(v)) => {
                map.append(n, v);
            }
            _ => return Err(bad("invalid header field in the response")),
        }
    }
    Ok(map)
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// This many data bytes of the current chunk to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// A response body read from the server's connection as the client takes it.
pub struct RawBody {
    conn: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    /// Bytes of a `Content-Length` body still to come.
    left: u64,
    chunk: Chunk,
    done: bool,
    keep_alive: bool,
    server: Arc<ServerState>,
    max_idle: usize,
    max_age: Duration,
    log: Option<Pending>,
    bytes: u64,
}

impl RawBody {
    /// The body of `a`; the connection goes back to `server`'s pool (up to
    /// `max_idle`, for `max_age`) when it ends cleanly.
    pub(crate) fn new(
        a: Answer,
        server: Arc<ServerState>,
        max_idle: usize,
        max_age: Duration,
        log: Pending,
    ) -> Self {
        let left = match a.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        RawBody {
            conn: Some(a.conn),
            buf: a.rest,
            framing: a.framing,
            left,
            chunk: Chunk::Size,
            done: a.framing == Framing::None,
            keep_alive: a.keep_alive,
            server,
            max_idle,
            max_age,
            log: Some(log),
            bytes: 0,
        }
    }

    /// True when there is no body at all (HEAD, 204, 304, `Content-Length: 0`).
    pub(crate) fn is_empty(&self) -> bool {
        self.done
    }

    /// The body ended (`end`: as its framing says, or how it broke): the
    /// connection goes back to the pool when it ended cleanly and nothing
    /// came after the body, and the access log and error counters are
    /// written.
    pub(crate) fn finish(&mut self, end: ResponseEnd) {
        let clean = end == ResponseEnd::Clean;
        self.done = true;
        if let Some(conn) = self.conn.take() {
            if clean && self.keep_alive && self.buf.is_empty() && self.framing != Framing::Close {
                pool::put_raw(&self.server, conn, self.max_idle, self.max_age);
            }
        }
        if let Some(log) = self.log.take() {
            log.end(self.bytes, end);
        }
    }

    /// The server's body is not valid framing (a response error).
    fn fail(&mut self, why: &str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fail_as(ResponseEnd::Malformed, why)
    }

    fn fail_as(
        &mut self,
        end: ResponseEnd,
        why: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(end);
        Poll::Ready(Some(Err(why.to_string().into())))
    }

    /// The next frame from what is buffered: data, trailers, the end
    /// (`Ready(None)`), or `Pending` when more must be read first.
    fn next_frame(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.framing {
            Framing::None => Poll::Ready(None),
            Framing::Close => {
                if self.buf.is_empty() {
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(Frame::data(self.data(self.buf.len())))))
            }
            Framing::Length(_) => {
                if self.buf.is_empty() {
                    return Poll::Pending;
                }
                let take = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                self.left -= take as u64;
                let d = self.data(take);
                if self.left == 0 {
                    self.finish(ResponseEnd::Clean);
                }
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Framing::Chunked => self.next_chunk(),
        }
    }

    fn data(&mut self, n: usize) -> Bytes {
        self.bytes += n as u64;
        self.buf.split_to(n).freeze()
    }

    fn next_chunk(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.chunk {
                Chunk::Size => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.buf.advance(len);
                        self.chunk = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_TRAILERS => {
                        return Poll::Pending
                    }
                    _ => return self.fail("malformed chunk size in the response body"),
                },
                Chunk::Data(left) => {
                    if self.buf.is_empty() {
                        return Poll::Pending;
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let rest = left - take as u64;
                    self.chunk = if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(self.data(take)))));
                }
                Chunk::DataEnd => match self.buf.first() {
                    None => return Poll::Pending,
                    Some(b'\n') => {
                        self.buf.advance(1);
                        self.chunk = Chunk::Size;
                    }
                    Some(b'\r') => match self.buf.get(1) {
                        None => return Poll::Pending,
                        Some(b'\n') => {
                            self.buf.advance(2);
                            self.chunk = Chunk::Size;
                        }
                        Some(_) => return self.fail("missing CRLF after chunk data"),
                    },
                    Some(_) => return self.fail("missing CRLF after chunk data"),
                },
                Chunk::Trailers => return self.trailers(),
            }
        }
    }

    /// The trailer section after the last chunk: forwarded as trailers.
    fn trailers(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut raw = [httparse::EMPTY_HEADER; 64];
        match httparse::parse_headers(&self.buf, &mut raw) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut map = HeaderMap::new();
                for f in fields.iter() {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(f.name.as_bytes()),
                        HeaderValue::from_bytes(f.value),
                    ) {
                        map.append(n, v);
                    }
                }
                self.buf.advance(len);
                self.finish(ResponseEnd::Clean);
                if map.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::trailers(map))))
                }
            }
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_TRAILERS => Poll::Pending,
            _ => self.fail("malformed trailer section in the response body"),
        }
    }

    /// Read more from the server: Ready(true) on bytes, Ready(false) at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let Some(conn) = self.conn.as_ref() else {
            return Poll::Ready(Ok(false));
        };
        if self.buf.capacity() - self.buf.len() < READ / 4 {
            self.buf.reserve(READ);
        }
        loop {
            match conn.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::task::ready!(conn.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        // Dropped before its end (the client went away): the connection is
        // mid-body and closes. (After an end, `finish` finds nothing left.)
        self.finish(ResponseEnd::ClientAbort);
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Poll::Ready(f) = this.next_frame() {
                return Poll::Ready(f);
            }
            match std::task::ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) if this.framing == Framing::Close => {
                    this.finish(ResponseEnd::Clean);
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    return this.fail_as(
                        ResponseEnd::ServerAbort,
                        "the server closed the connection inside the body",
                    )
                }
                Err(e) => {
                    this.finish(ResponseEnd::ServerAbort);
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::None => SizeHint::with_exact(0),
            Framing::Length(_) => SizeHint::with_exact(self.left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_has_the_request_line_and_every_field() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.append("cookie", HeaderValue::from_static("x=1"));
        h.append("cookie", HeaderValue::from_static("y=2"));
        let uri: Uri = "/p?q=1".parse().unwrap();
        let head = encode_head(&Method::GET, &uri, &h, false);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: a\r\ncookie: x=1\r\ncookie: y=2\r\n\r\n"
        );
        // From HTTP/2: one cookie field.
        let head = encode_head(&Method::GET, &uri, &h, true);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: a\r\ncookie: x=1; y=2\r\n\r\n"
        );
    }
}
