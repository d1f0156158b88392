//! The HTTP versions of request lines that hyper's HTTP/1 parser refuses
//! with a bare 400, handled as RFC 9110 §2.5 and HAProxy do, for the hyper
//! path's HTTP/1 connections (`proxy::http`):
//!
//! - `HTTP/1.x` with x > 1 is served as HTTP/1.1 (a recipient treats a later
//!   minor version as the highest it implements; the relay does the same in
//!   `proxy::h1::head::lower_minor_version`);
//! - a later major version (`GET / HTTP/2.0` on an HTTP/1 connection) is
//!   answered 505 HTTP Version Not Supported, then the connection closes.
//!
//! [`Versions`] sits under hyper and follows the request stream — where each
//! head starts and, from its `Content-Length` or chunked framing, where its
//! body ends — so that only request lines are ever looked at. It rewrites a
//! version in place (same length: `HTTP/1.2` → `HTTP/1.1`, `HTTP/2.0` →
//! `HTTP/1.1`) and marks a request whose major version was too high in
//! [`Marks`], which the service reads to answer 505. On anything it does
//! not follow with certainty (an upgrade, `CONNECT`, a malformed or
//! oversized head, conflicting framing, the h2c preface) it stops looking
//! for the rest of the connection, and the bytes go to hyper untouched:
//! hyper's own rules then apply, as before.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1::ChunkScanner;

/// Header fields of a head followed (with more, hyper decides alone).
const MAX_FIELDS: usize = 128;
const NONE: u64 = u64::MAX;

/// Which request of a connection (0-based, in the order of their heads)
/// had an HTTP major version above 1.
#[derive(Debug)]
pub(crate) struct Marks {
    bad: AtomicU64,
}

impl Default for Marks {
    fn default() -> Self {
        Marks {
            bad: AtomicU64::new(NONE),
        }
    }
}

impl Marks {
    /// True when request `index` of the connection asked for HTTP/2 or later.
    pub(crate) fn is_bad(&self, index: u64) -> bool {
        self.bad.load(Ordering::Relaxed) == index
    }
}

#[derive(Debug)]
enum State {
    /// At the start of a request, before the end of its request line.
    Line,
    /// In a head whose request line was seen.
    Fields,
    /// Body bytes still to come.
    Length(u64),
    Chunked(ChunkScanner),
    /// Not followed any more: bytes pass as they are.
    Off,
}

/// The request stream's state, apart from the bytes held back.
#[derive(Debug)]
struct Follow {
    state: State,
    /// The current head so far (request line included), for httparse.
    head: Vec<u8>,
    /// Request lines seen.
    count: u64,
    marks: Arc<Marks>,
    max_head: usize,
    /// The connection may turn out HTTP/2 (h2c): its preface is let through.
    preface_ok: bool,
}

/// A client stream whose HTTP/1 request lines are read before hyper reads
/// them (see the module doc).
pub(crate) struct Versions<T> {
    inner: T,
    follow: Follow,
    /// Bytes read from `inner` and not handed out yet: the first `ready` of
    /// them processed, the rest an unfinished request line.
    held: Vec<u8>,
    ready: usize,
}

impl<T> Versions<T> {
    /// Follow `inner`'s requests (heads up to `max_head` bytes), marking in
    /// `marks`. `preface_ok`: an h2c connection may start with the HTTP/2 preface.
    pub(crate) fn new(inner: T, marks: Arc<Marks>, max_head: usize, preface_ok: bool) -> Self {
        Versions {
            inner,
            follow: Follow {
                state: State::Line,
                head: Vec::new(),
                count: 0,
                marks,
                max_head,
                preface_ok,
            },
            held: Vec::new(),
            ready: 0,
        }
    }

    /// Pass everything as it is (an HTTP/2 connection).
    pub(crate) fn off(inner: T) -> Self {
        let mut v = Versions::new(inner, Arc::default(), 0, false);
        v.follow.state = State::Off;
        v
    }
}

impl Follow {
    /// Process `data`, the next bytes of the stream, in place; returns how
    /// many of them, from the front, may go to hyper now. The rest is the
    /// start of a request line whose end has not come yet.
    fn process(&mut self, data: &mut [u8]) -> usize {
        let mut p = 0;
        while p < data.len() {
            match &mut self.state {
                State::Off => return data.len(),
                State::Length(n) => {
                    let m = usize::try_from(*n)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - p);
                    p += m;
                    *n -= m as u64;
                    if *n == 0 {
                        self.state = State::Line;
                    }
                }
                State::Chunked(s) => match s.scan(&data[p..]) {
                    Ok(m) => {
                        p += m;
                        if s.is_done() {
                            self.state = State::Line;
                        }
                    }
                    Err(_) => self.state = State::Off,
                },
                State::Line => {
                    let rest = &mut data[p..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > self.max_head {
                            self.state = State::Off;
                            return data.len();
                        }
                        return p;
                    };
                    let end = if nl > 0 && rest[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    if end == 0 {
                        // An empty line before a request line (RFC 9112 §2.2: ignored).
                        p += nl + 1;
                        continue;
                    }
                    let index = self.count;
                    self.count += 1;
                    let next = self.request_line(&mut rest[..end], index);
                    self.head.clear();
                    self.head.extend_from_slice(&rest[..=nl]);
                    p += nl + 1;
                    self.state = next;
                }
                State::Fields => {
                    let from = self.head.len();
                    // No more than one byte past the limit is ever copied.
                    let room = (self.max_head + 1).saturating_sub(from);
                    let take = (data.len() - p).min(room);
                    self.head.extend_from_slice(&data[p..p + take]);
                    match self.end_of_head() {
                        Some((len, next)) => {
                            // The head ends `len - from` bytes into this data.
                            p += len.saturating_sub(from);
                            if self.head.capacity() > 4096 {
                                self.head = Vec::new();
                            } else {
                                self.head.clear();
                            }
                            self.state = next;
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                self.state = State::Off;
                            }
                            return data.len();
                        }
                    }
                }
            }
        }
        data.len()
    }

    /// Look at one request line (without its line end), rewriting its
    /// version when it is a later HTTP/1.x or HTTP/2+; the state after it.
    fn request_line(&mut self, line: &mut [u8], index: u64) -> State {
        let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
            return State::Fields;
        };
        let preface = line == b"PRI * HTTP/2.0";
        let Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) = line.get_mut(sp + 1..)
        else {
            return State::Fields;
        };
        if !minor.is_ascii_digit() {
            return State::Fields;
        }
        match *major {
            b'1' if (b'2'..=b'9').contains(minor) => {
                *minor = b'1';
                State::Fields
            }
            b'2'..=b'9' => {
                if self.preface_ok && index == 0 && preface {
                    // The h2c preface: the connection is HTTP/2 from here.
                    return State::Off;
                }
                // Parsed by hyper as 1.1 so the service can answer 505; the
                // connection closes after that answer, so nothing more is followed.
                *major = b'1';
                *minor = b'1';
                self.marks.bad.store(index, Ordering::Relaxed);
                State::Off
            }
            _ => State::Fields,
        }
    }

    /// When the head is complete: its length and how its body is framed.
    fn end_of_head(&self) -> Option<(usize, State)> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut fields);
        let len = match req.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            // hyper refuses it too (and closes), or parses what httparse's
            // defaults do not: either way, not followed further.
            Err(_) => return Some((self.head.len(), State::Off)),
        };
        if req.method == Some("CONNECT") {
            return Some((len, State::Off));
        }
        let (mut length, mut lengths, mut codings) = (None, 0, 0);
        let mut chunked = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("upgrade") {
                return Some((len, State::Off));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                let v = h.value.trim_ascii();
                length = (!v.is_empty() && v.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                    .flatten();
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings += 1;
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        let next = match (lengths, codings, length) {
            (0, 0, _) => State::Line,
            (0, 1, _) if chunked => State::Chunked(ChunkScanner::default()),
            (1, 0, Some(0)) => State::Line,
            (1, 0, Some(n)) => State::Length(n),
            // Anything else hyper refuses or decides (and closes after).
            _ => State::Off,
        };
        Some((len, next))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Versions<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.held.is_empty() && matches!(this.follow.state, State::Off) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let got = buf.filled().len() - before;
            if got == 0 {
                if this.held.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                // End of stream inside a request line: hyper gets it as it is.
                this.follow.state = State::Off;
                this.ready = this.held.len();
                continue;
            }
            if !this.held.is_empty() {
                // The unfinished request line goes on in these bytes.
                this.held.extend_from_slice(&buf.filled()[before..]);
                buf.set_filled(before);
                this.ready = this.follow.process(&mut this.held);
                continue;
            }
            let k = this.follow.process(&mut buf.filled_mut()[before..]);
            if k < got {
                this.held.extend_from_slice(&buf.filled()[before + k..]);
                buf.set_filled(before + k);
            }
            if k > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Versions<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads the given pieces, one per read, then ends.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(mut p) = this.0.pop_front() {
                let n = p.len().min(buf.remaining());
                buf.put_slice(&p[..n]);
                if n < p.len() {
                    this.0.push_front(p.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper would read from `input` cut into `size`-byte reads, and
    /// the index of the request marked for 505.
    async fn through(input: &[u8], size: usize, preface_ok: bool) -> (String, Option<u64>) {
        let pieces = input.chunks(size).map(<[u8]>::to_vec).collect();
        let marks = Arc::new(Marks::default());
        let mut v = Versions::new(Pieces(pieces), marks.clone(), 8192, preface_ok);
        let mut out = Vec::new();
        v.read_to_end(&mut out).await.unwrap();
        let bad = (0..10).find(|&i| marks.is_bad(i));
        (String::from_utf8(out).unwrap(), bad)
    }

    async fn every_cut(input: &str, preface_ok: bool) -> (String, Option<u64>) {
        let whole = through(input.as_bytes(), input.len(), preface_ok).await;
        for size in 1..input.len() {
            assert_eq!(
                through(input.as_bytes(), size, preface_ok).await,
                whole,
                "{size}-byte reads of {input:?}"
            );
        }
        whole
    }

    #[tokio::test]
    async fn a_later_minor_version_is_read_as_1_1_in_every_request() {
        let input = "GET /a HTTP/1.2\r\nHost: x\r\n\r\n\
                     POST /b HTTP/1.9\r\nHost: x\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.2\r\n\r\n\
                     POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                     10\r\n GET / HTTP/1.3\r\r\n0\r\n\r\n\
                     \r\nGET /d HTTP/1.5\nHost: x\n\n";
        let (out, bad) = every_cut(input, false).await;
        let want = input
            .replace("GET /a HTTP/1.2", "GET /a HTTP/1.1")
            .replace("POST /b HTTP/1.9", "POST /b HTTP/1.1")
            .replace("GET /d HTTP/1.5", "GET /d HTTP/1.1");
        // Bodies are bytes, whatever they look like.
        assert!(want.contains("GET / HTTP/1.2\r\n\r\n"));
        assert!(want.contains(" GET / HTTP/1.3\r"));
        assert_eq!(out, want);
        assert_eq!(bad, None);
    }

    #[tokio::test]
    async fn a_later_major_version_is_marked_and_ends_the_following() {
        let input = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\nGET / HTTP/1.2\r\n\r\n";
        let (out, bad) = every_cut(input, false).await;
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.2\r\n\r\n"
        );
        assert_eq!(bad, Some(1));
    }

    #[tokio::test]
    async fn the_h2c_preface_passes_untouched() {
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        assert_eq!(every_cut(preface, true).await, (preface.to_string(), None));
        // Where h2c is not spoken, it is a request for HTTP/2: 505.
        let (_, bad) = every_cut(preface, false).await;
        assert_eq!(bad, Some(0));
    }

    #[tokio::test]
    async fn what_is_not_followed_passes_untouched() {
        for input in [
            // An upgrade: what follows is not HTTP.
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.2\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.2\r\n\r\n",
            // Framing hyper decides (and closes after).
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.2\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabcGET / HTTP/1.2\r\n\r\n",
            // A malformed chunked body.
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.2\r\n\r\n",
            // A malformed head.
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\nGET / HTTP/1.2\r\n\r\n",
            // A request line with no version stays as it is.
            "GET /\r\n\r\n",
            "GET / HTTP/1.10\r\n\r\n",
        ] {
            assert_eq!(every_cut(input, false).await, (input.to_string(), None));
        }
    }

    #[tokio::test]
    async fn an_endless_request_line_is_let_through() {
        let long = format!("GET /{} HTTP/1.2", "a".repeat(9000));
        let (out, _) = through(long.as_bytes(), 100, false).await;
        assert_eq!(out, long);
    }
}
