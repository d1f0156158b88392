//! `postgres` check: log in with the configured credentials (tokio-postgres,
//! no TLS) and run `SELECT pg_is_in_recovery()`: `f` is a primary, `t` a
//! standby.
//!
//! The first bytes the server sends are recorded so that a peer that is not
//! PostgreSQL gets a reason that shows what it said, and is rejected at its
//! first byte instead of waiting for the timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::check::{escape_bytes, short_io, CheckFailure, CheckSuccess};
use crate::config::types::PostgresCheck;
use crate::runtime::server::Role;

/// Bytes of the server's first answer kept for failure reasons.
const SEEN_BYTES: usize = 48;

/// The query that tells a primary (false) from a standby in recovery (true).
pub const ROLE_QUERY: &str = "SELECT pg_is_in_recovery()";

/// Run the check on a connected stream to `target` (a `TcpStream` in the
/// checker; any byte stream in the fuzz target `postgres_reply`).
pub async fn check<S>(
    stream: S,
    target: SocketAddr,
    cfg: &PostgresCheck,
) -> Result<CheckSuccess, CheckFailure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut pg = tokio_postgres::Config::new();
    pg.user(&cfg.user)
        .dbname(&cfg.database)
        .application_name("fulcrum-health")
        .host(target.ip().to_string())
        .port(target.port())
        .ssl_mode(SslMode::Disable);
    if let Some(secret) = &cfg.password {
        let password = secret.reveal().map_err(|e| {
            CheckFailure::Rejected(format!("cannot read password file: {}", short_io(&e)))
        })?;
        pg.password(password);
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = Recording {
        inner: stream,
        seen: seen.clone(),
    };
    let (client, connection) = pg
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| classify(&e, &seen))?;
    let query = client.simple_query(ROLE_QUERY);
    // The connection future drives the socket; it only ends on error or close.
    let messages = tokio::select! {
        r = query => r.map_err(|e| classify(&e, &seen))?,
        r = connection => {
            return Err(match r {
                Err(e) => classify(&e, &seen),
                Ok(()) => CheckFailure::Closed,
            })
        }
    };
    let value = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.try_get(0).ok().flatten()),
        _ => None,
    });
    let role = match value.flatten() {
        Some("f") => Role::Primary,
        Some("t") => Role::Standby,
        other => {
            return Err(CheckFailure::Protocol(format!(
                "unexpected answer to {ROLE_QUERY}: {other:?}"
            )))
        }
    };
    Ok(CheckSuccess::Role {
        db: "postgres",
        role,
    })
}

/// A failure reason from a tokio-postgres error and what the server sent.
fn classify(e: &tokio_postgres::Error, seen: &Mutex<Vec<u8>>) -> CheckFailure {
    if let Some(db) = e.as_db_error() {
        // The server's own words: "password authentication failed for user
        // \"app\"", "database \"x\" does not exist", "the database system is
        // starting up", …
        return CheckFailure::Rejected(db.message().to_string());
    }
    let seen = seen.lock().map(|g| g.clone()).unwrap_or_default();
    let io_err = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>());
    match io_err {
        Some(io)
            if matches!(
                io.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            ) =>
        {
            not_postgres(&seen)
        }
        Some(_) if seen.is_empty() && e.is_closed() => CheckFailure::Closed,
        Some(io) => CheckFailure::Io(short_io(io)),
        None if e.is_closed() && seen.is_empty() => CheckFailure::Closed,
        None if e.is_closed() => CheckFailure::Io("server closed the connection".into()),
        // Raised by the client itself: "password missing" when the server
        // asks for one we do not have, unsupported authentication, …
        None => match std::error::Error::source(e) {
            Some(why) if why.to_string() == "password missing" => CheckFailure::Rejected(
                "the server asks for a password and none is configured (password missing)".into(),
            ),
            Some(why) => CheckFailure::Rejected(format!("postgres: {e}: {why}")),
            None => CheckFailure::Rejected(format!("postgres: {e}")),
        },
    }
}

fn not_postgres(seen: &[u8]) -> CheckFailure {
    CheckFailure::Protocol(format!(
        "not a PostgreSQL server: it answered {}",
        escape_bytes(seen, SEEN_BYTES)
    ))
}

/// Message types a PostgreSQL server may send first after a startup packet:
/// authentication request, error, notice, protocol version negotiation.
fn plausible_first_byte(b: u8) -> bool {
    matches!(b, b'R' | b'E' | b'N' | b'v')
}

/// Keeps the first bytes read and fails the read at once when the very first
/// byte cannot start a PostgreSQL answer.
struct Recording<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled().get(before..).unwrap_or_default();
            if let Ok(mut seen) = self.seen.lock() {
                let first = seen.is_empty();
                let room = SEEN_BYTES.saturating_sub(seen.len());
                seen.extend(new.iter().take(room));
                if first && new.first().is_some_and(|&b| !plausible_first_byte(b)) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not a PostgreSQL server",
                    )));
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{CheckKind, Secret};
    use crate::health::run_check;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    fn kind() -> CheckKind {
        CheckKind::Postgres(PostgresCheck {
            user: "fulcrum".into(),
            password: Some(Secret::Inline("pw".into())),
            database: "postgres".into(),
        })
    }

    /// A server that reads the startup packet, answers `reply`, then waits.
    async fn fake(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(reply).await;
                let _ = s.read(&mut b).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_server_is_not_postgres() {
        let addr = fake(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let err = run_check(addr, &kind(), T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"not a PostgreSQL server: it answered "HTTP/1.1 400 Bad Request\r\n\r\n""#
        );
    }

    #[tokio::test]
    async fn error_response_is_reported_verbatim() {
        // ErrorResponse: severity, code 28P01, message.
        let mut msg = Vec::new();
        for (t, v) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"fulcrum\""),
        ] {
            msg.push(t);
            msg.extend_from_slice(v.as_bytes());
            msg.push(0);
        }
        msg.push(0);
        let mut packet = vec![b'E'];
        packet.extend_from_slice(&((msg.len() + 4) as u32).to_be_bytes());
        packet.extend_from_slice(&msg);
        let packet: &'static [u8] = Box::leak(packet.into_boxed_slice());
        let addr = fake(packet).await;
        let err = run_check(addr, &kind(), T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "password authentication failed for user \"fulcrum\""
        );
    }

    #[tokio::test]
    async fn garbage_after_plausible_byte_fails_without_panic() {
        // 'R' with a bogus length, then close: a reason, not a panic.
        let addr = fake(b"R\x00\x00\x00\x02zz").await;
        let err = run_check(addr, &kind(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(!err.to_string().is_empty());
        let addr = fake(b"").await;
        let err = run_check(addr, &kind(), T).await.unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}
