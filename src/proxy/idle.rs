//! An I/O wrapper that fails reads after a period without any traffic
//! (HAProxy `timeout client`), cheap enough for every connection: the timer is
//! only re-armed when it fires, not on every read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Wraps a stream; a read that has waited `idle` since the last byte moved
    /// in either direction returns `TimedOut`.
    pub struct IdleTimeout<T> {
        #[pin]
        inner: T,
        // Boxed so the wrapper stays `Unpin` for `Unpin` streams (one allocation per connection).
        sleep: Pin<Box<Sleep>>,
        last: Instant,
        idle: Duration,
    }
}

impl<T> IdleTimeout<T> {
    /// Wrap `inner` with an idle limit.
    pub fn new(inner: T, idle: Duration) -> Self {
        let now = Instant::now();
        IdleTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            last: now,
            idle,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(r) => {
                *this.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = *this.last + *this.idle;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client idle timeout",
                    )));
                }
                this.sleep.as_mut().reset(deadline);
            },
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            *this.last = Instant::now();
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            *this.last = Instant::now();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

use std::future::Future;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn times_out_without_traffic_and_not_with_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = IdleTimeout::new(a, Duration::from_secs(10));
        let mut buf = [0u8; 8];
        b.write_all(b"hi").await.unwrap();
        assert_eq!(w.read(&mut buf).await.unwrap(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        b.write_all(b"x").await.unwrap();
        assert_eq!(w.read(&mut buf).await.unwrap(), 1);
        let err = w.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
