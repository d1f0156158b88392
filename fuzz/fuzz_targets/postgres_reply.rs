//! Fuzz the `postgres` health check against arbitrary server bytes: the
//! check runs tokio-postgres over an in-memory stream that answers with the
//! fuzz input (in pieces whose sizes the input's first byte picks) and then
//! closes. Nothing may panic or hang; only real PostgreSQL answers to
//! `SELECT pg_is_in_recovery()` may report a role.

#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use fulcrum::config::types::PostgresCheck;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Answers reads from `data` in pieces of at most `piece` bytes, then EOF;
/// swallows writes.
struct Scripted {
    data: Vec<u8>,
    at: usize,
    piece: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let end = (self.at + self.piece).min(self.data.len());
        let n = (end - self.at).min(buf.remaining());
        let start = self.at;
        buf.put_slice(&self.data[start..start + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let stream = Scripted {
        data: rest.to_vec(),
        at: 0,
        piece: usize::from(first % 64) + 1,
    };
    let cfg = PostgresCheck {
        user: "fulcrum".into(),
        password: Some(fulcrum::config::types::Secret::Inline("pw".into())),
        database: "postgres".into(),
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
    // The stream ends with EOF, so the check ends; the timeout only guards
    // against a hang, which would be a bug worth a crash report.
    let r = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            fulcrum::health::postgres::check(stream, target, &cfg),
        )
        .await
    });
    assert!(r.is_ok(), "the postgres check hung on a closed stream");
});
