//! Client sockets registered with the event loop only when they must wait.
//!
//! A connection accepted a moment ago usually has its request waiting
//! already, and the answer usually fits in the socket's send buffer: a
//! connection that asks one question and closes (`Connection: close`, or a
//! client that opens a connection per request) then never needs the event
//! loop. HAProxy works the same way (speculative I/O: it reads at once and
//! subscribes to events only when a read or write would block), which saves
//! the `epoll_ctl` add and delete of every such connection, and tokio's
//! per-registration state.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A plain client socket: unregistered until an operation would block.
pub(crate) enum LazyTcp {
    /// Not (yet) known to the event loop: reads and writes are tried directly.
    Fresh(std::net::TcpStream),
    /// Registered: everything goes through tokio.
    Registered(TcpStream),
    /// Registration failed; the error is reported by the next operation.
    Failed,
}

impl LazyTcp {
    /// `stream` must be non-blocking (accepted with `SOCK_NONBLOCK`).
    pub(crate) fn new(stream: std::net::TcpStream) -> Self {
        LazyTcp::Fresh(stream)
    }

    /// True while the socket is not registered with the event loop.
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self, LazyTcp::Fresh(_))
    }

    /// The registered stream, registering it now if needed.
    pub(crate) fn registered(&mut self) -> io::Result<&mut TcpStream> {
        if let LazyTcp::Fresh(_) = self {
            if let LazyTcp::Fresh(s) = std::mem::replace(self, LazyTcp::Failed) {
                *self = LazyTcp::Registered(TcpStream::from_std(s)?);
            }
        }
        match self {
            LazyTcp::Registered(s) => Ok(s),
            _ => Err(io::Error::other("the socket could not be registered")),
        }
    }
}

impl LazyTcp {
    /// A write: `direct` on the unregistered socket unless it would block,
    /// else `registered` on the stream registered now (or before).
    fn write_with(
        &mut self,
        direct: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
        registered: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let LazyTcp::Fresh(s) = self {
            if let Some(r) = now(direct(s)) {
                return Poll::Ready(r);
            }
        }
        match self.registered() {
            Ok(s) => registered(Pin::new(s)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A direct attempt: `Some` with its result, `None` when it would block.
fn now<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        r => Some(r),
    }
}

impl AsyncRead for LazyTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let LazyTcp::Fresh(s) = &*self {
            // SAFETY: `recv` only writes into the bytes it is given, it never
            // de-initialises any.
            let unfilled = unsafe { buf.unfilled_mut() };
            if let Some(r) = now(socket2::SockRef::from(s).recv(unfilled)) {
                let n = r?;
                // SAFETY: `recv` initialised the first `n` bytes of `unfilled`.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
        }
        match self.registered() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LazyTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(|mut s| s.write(buf), |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(
            |mut s| s.write_vectored(bufs),
            |s| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            LazyTcp::Registered(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            LazyTcp::Fresh(s) => Poll::Ready(s.shutdown(Shutdown::Write)),
            LazyTcp::Registered(s) => Pin::new(s).poll_shutdown(cx),
            LazyTcp::Failed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LazyTcp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (LazyTcp, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        let server = server.into_std().expect("into_std");
        (LazyTcp::new(server), client)
    }

    /// Block until `s` has bytes to read (the peer wrote them already).
    fn wait_readable(s: &LazyTcp) {
        if let LazyTcp::Fresh(s) = s {
            s.set_nonblocking(false).expect("blocking");
            s.peek(&mut [0u8; 1]).expect("peek");
            s.set_nonblocking(true).expect("non-blocking");
        }
    }

    /// Bytes already there are read, and an answer that fits is written,
    /// without registering the socket.
    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_request_and_its_answer_need_no_registration() {
        let (mut s, mut c) = pair().await;
        c.write_all(b"ping").await.expect("write");
        wait_readable(&s);
        let mut buf = Vec::with_capacity(16);
        assert_eq!(s.read_buf(&mut buf).await.expect("read"), 4);
        assert_eq!(buf, b"ping");
        s.write_all(b"pong").await.expect("write");
        assert!(s.is_fresh());
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }

    /// A read with nothing there registers the socket and waits for the bytes.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_that_would_block_registers_and_waits() {
        let (mut s, mut c) = pair().await;
        let reader = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(16);
            let n = s.read_buf(&mut buf).await;
            (n.ok(), buf, s.is_fresh())
        });
        // The reader has run (and found nothing) before the bytes are sent.
        tokio::task::yield_now().await;
        c.write_all(b"late").await.expect("write");
        let (n, buf, fresh) = reader.await.expect("join");
        assert_eq!(n, Some(4));
        assert_eq!(buf, b"late");
        assert!(!fresh);
    }

    /// A write larger than the socket buffers registers and finishes once the
    /// peer reads; a shutdown then ends the peer's read.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_write_registers_and_completes() {
        let (mut s, mut c) = pair().await;
        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&sent).await?;
            s.shutdown().await?;
            Ok::<bool, std::io::Error>(s.is_fresh())
        });
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        assert!(matches!(writer.await, Ok(Ok(false))));
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }
}
