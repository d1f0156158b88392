//! Sends what rustls queued while *reading*: alerts.
//!
//! tokio-rustls writes TLS records only from `poll_write`/`poll_flush`. When
//! a TLS 1.2 client asks for renegotiation, rustls answers with a
//! `no_renegotiation` warning alert, queued during a read; a server waiting for
//! the client's next request never writes, so the alert stayed queued and the
//! client hung waiting for the server's answer. This wrapper flushes after a
//! read whenever rustls has records to send.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A server-side TLS stream that sends queued alerts after reads.
#[derive(Debug)]
pub struct AlertFlush(pub TlsStream<TcpStream>);

impl AsyncRead for AlertFlush {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if self.0.get_ref().1.wants_write() {
            // Pending: the socket's write readiness wakes this task again, and
            // the next read retries the flush. An error shows on the next write.
            let _ = Pin::new(&mut self.0).poll_flush(cx);
        }
        r
    }
}

impl AsyncWrite for AlertFlush {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
