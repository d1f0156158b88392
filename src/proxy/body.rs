//! Request and response body types that stream without buffering, and a
//! response body that, when the upstream body ends, returns the connection
//! to the pool, releases the server's active count and writes the access log.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::log::Pending;
use super::pool::Idle;
use crate::runtime::stats::ResponseEnd;
use crate::runtime::ServerState;

/// Body sent upstream: none, or the client's body streamed as it arrives
/// (its bytes counted on the server it goes to; its [`ClientFault`] marks
/// how reading it from the client went, so that failure is blamed on the client).
#[derive(Debug)]
pub enum ReqBody {
    Empty,
    Stream(Incoming, Option<Arc<ServerState>>, ClientFault),
}

/// How reading the client's request body went, shared with whoever sent it.
///
/// A failure to read it (malformed chunked framing, a body cut short, the
/// client gone) reaches the sender as a send error like any other, and a
/// client that trickles its body runs out the response timeout: without this
/// mark both would be blamed on the server (passive health, retries), so any
/// client could take every server out of rotation. Whoever handles a failed
/// or timed-out send asks this first.
#[derive(Debug, Clone, Default)]
pub struct ClientFault(Arc<AtomicU8>);

// 0: still reading.
const DONE: u8 = 1;
const FAILED: u8 = 2;

impl ClientFault {
    /// True once reading the client's body failed.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == FAILED
    }
    /// True while the client's body has not been read to its end.
    pub fn unfinished(&self) -> bool {
        self.0.load(Ordering::Relaxed) != DONE
    }
    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }
}

impl ReqBody {
    /// Count this body's bytes on `server` from now on.
    pub fn count_for(&mut self, server: &Arc<ServerState>) {
        if let ReqBody::Stream(_, counter, _) = self {
            *counter = Some(server.clone());
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream(b, counter, fault) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let (Some(d), Some(server)) = (f.data_ref(), counter.as_ref()) {
                            server.add_bytes(d.len() as u64, 0);
                        }
                        if b.is_end_stream() {
                            fault.set(DONE);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => fault.set(FAILED),
                    Poll::Ready(None) => fault.set(DONE),
                    Poll::Pending => {}
                }
                r
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b, _, _) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b, _, _) => b.size_hint(),
        }
    }
}

/// Body sent to the client.
pub enum RespBody {
    /// A short local answer (errors, redirects).
    Full(Option<Bytes>),
    /// The upstream's body, streamed.
    Upstream(Box<UpstreamBody>),
    /// The upstream's body read from its socket (`proxy::rawup`).
    Raw(Box<super::rawup::RawBody>),
}

/// The upstream's body plus what must happen when it ends.
pub struct UpstreamBody {
    pub(crate) inner: Incoming,
    /// Connection to give back to the pool after a clean end of body.
    pub(crate) conn: Option<Idle>,
    /// Access-log entry finished when the body ends or is dropped; it also
    /// holds the server's active-connection guard.
    pub(crate) log: Option<Pending>,
    pub(crate) bytes: u64,
}

impl RespBody {
    /// A local response body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        RespBody::Full(Some(b.into()))
    }
    /// No body.
    pub fn empty() -> Self {
        RespBody::Full(None)
    }
}

impl UpstreamBody {
    fn finish(&mut self, end: ResponseEnd) {
        if let Some(conn) = self.conn.take() {
            if end == ResponseEnd::Clean {
                conn.release();
            }
        }
        if let Some(log) = self.log.take() {
            log.end(self.bytes, end);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before the end (client went away): the connection is mid-body
        // and cannot be reused; it closes with `conn`.
        self.finish(ResponseEnd::ClientAbort);
    }
}

/// Why reading a server's body failed: the server sent something that is
/// not a body (hyper's decoder says invalid data or input: chunk framing),
/// else it stopped sending (closed early, reset).
fn body_error(e: &hyper::Error) -> ResponseEnd {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    ResponseEnd::Malformed
                }
                _ => ResponseEnd::ServerAbort,
            };
        }
        cause = c.source();
    }
    if e.is_parse() {
        ResponseEnd::Malformed
    } else {
        ResponseEnd::ServerAbort
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = super::rawup::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RespBody::Raw(r) => Pin::new(&mut **r).poll_frame(cx),
            RespBody::Upstream(u) => {
                let r = Pin::new(&mut u.inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            u.bytes += d.len() as u64;
                        }
                        if u.inner.is_end_stream() {
                            u.finish(ResponseEnd::Clean);
                        }
                    }
                    Poll::Ready(None) => u.finish(ResponseEnd::Clean),
                    Poll::Ready(Some(Err(e))) => u.finish(body_error(e)),
                    Poll::Pending => {}
                }
                r.map(|f| f.map(|f| f.map_err(Into::into)))
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Upstream(u) => u.inner.is_end_stream(),
            RespBody::Raw(r) => r.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Upstream(u) => u.inner.size_hint(),
            RespBody::Raw(r) => r.size_hint(),
        }
    }
}
