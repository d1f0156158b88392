//! One active health check execution: TCP connect, HTTP status probe, or the
//! L4 checks of sibling modules (send/expect, PostgreSQL, Redis).
//!
//! Everything read from the network is untrusted: the HTTP status line is read
//! with a bounded buffer and parsed without panicking.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::types::{CheckKind, HealthConfig, StatusRange};
use crate::runtime::server::Role;

/// Largest response head we read while looking for the status line. The
/// status line is all we need; anything longer than this is not HTTP.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A passed check, with what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSuccess {
    /// The TCP connection was established.
    TcpConnect,
    /// The HTTP status was in the expected range.
    HttpStatus(u16),
    /// The expected bytes arrived (or the bytes were sent when nothing is expected).
    TcpExpect,
    /// A database answered and reported its role.
    Role {
        /// "postgres" or "redis".
        db: &'static str,
        role: Role,
    },
}

impl CheckSuccess {
    /// The role a role-aware check observed.
    pub fn role(&self) -> Option<Role> {
        match self {
            CheckSuccess::Role { role, .. } => Some(*role),
            _ => None,
        }
    }
}

impl fmt::Display for CheckSuccess {
    /// The short detail shown on status pages: "TCP connect ok", "HTTP 200".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckSuccess::TcpConnect => f.write_str("TCP connect ok"),
            CheckSuccess::HttpStatus(status) => write!(f, "HTTP {status}"),
            CheckSuccess::TcpExpect => f.write_str("tcp-check ok"),
            CheckSuccess::Role { db, role } => write!(f, "{db} {role}"),
        }
    }
}

/// A failed check; its `Display` is the short human reason shown on status pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// Nothing listens on the target port.
    #[error("connection refused")]
    Refused,
    /// Connecting failed for another reason (unreachable network, reset, …).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The whole check did not finish within the configured timeout.
    #[error("timeout after {}", fmt_duration(*.0))]
    Timeout(Duration),
    /// Writing the request or reading the response failed after connecting.
    #[error("I/O error: {0}")]
    Io(String),
    /// The server closed the connection without sending a status line.
    #[error("connection closed without response")]
    Closed,
    /// The bytes received do not start with a valid HTTP/1.x status line.
    #[error("invalid HTTP response")]
    InvalidResponse,
    /// A valid HTTP status outside the expected range.
    #[error("HTTP {status} (expected {}-{})", expect.min, expect.max)]
    Status {
        /// Status the server answered with.
        status: u16,
        /// Range the check accepts.
        expect: StatusRange,
    },
    /// The reply did not contain what a send/expect check expects.
    #[error("unexpected reply {got} (expected {expected})")]
    Expect {
        /// What arrived, escaped and shortened.
        got: String,
        /// What was expected, escaped.
        expected: String,
    },
    /// The peer does not speak the expected protocol ("not a PostgreSQL
    /// server: …", "garbage reply from redis: …").
    #[error("{0}")]
    Protocol(String),
    /// The server speaks the protocol but refused the check (bad password,
    /// unknown database, starting up, …), with its own words.
    #[error("{0}")]
    Rejected(String),
}

/// The address a server's checks go to: the server's address with HAProxy's
/// `addr` (`cfg.address`) and `port` (`cfg.port`) overrides applied.
pub fn check_target(server_addr: SocketAddr, cfg: &HealthConfig) -> SocketAddr {
    let ip = cfg.address.unwrap_or(server_addr.ip());
    let port = cfg.port.unwrap_or(server_addr.port());
    SocketAddr::new(ip, port)
}

/// Run one check of `kind` against `target`, bounded as a whole by `timeout`.
pub async fn run_check(
    target: SocketAddr,
    kind: &CheckKind,
    timeout: Duration,
) -> Result<CheckSuccess, CheckFailure> {
    match tokio::time::timeout(timeout, run_unbounded(target, kind)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(CheckFailure::Timeout(timeout)),
    }
}

async fn run_unbounded(target: SocketAddr, kind: &CheckKind) -> Result<CheckSuccess, CheckFailure> {
    let stream = TcpStream::connect(target).await.map_err(connect_failure)?;
    match kind {
        CheckKind::Tcp => Ok(CheckSuccess::TcpConnect),
        CheckKind::TcpExpect { send, expect } => {
            super::tcpcheck::send_expect(stream, send.as_deref(), expect.as_deref()).await
        }
        // Boxed: these clients' futures are kilobytes; unboxed, every check in
        // flight — HTTP and TCP ones too — would be that large.
        CheckKind::Postgres(pg) => Box::pin(super::postgres::check(stream, target, pg)).await,
        CheckKind::Redis(r) => Box::pin(super::redis::check(stream, r)).await,
        CheckKind::Http {
            method,
            path,
            host,
            expect,
        } => {
            let host = match host {
                Some(h) => h.clone(),
                None => target.to_string(),
            };
            let status = http_status(stream, method, path, &host).await?;
            if expect.contains(status) {
                Ok(CheckSuccess::HttpStatus(status))
            } else {
                Err(CheckFailure::Status {
                    status,
                    expect: *expect,
                })
            }
        }
    }
}

/// Send the check request and return the status code of the response.
async fn http_status(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    host: &str,
) -> Result<u16, CheckFailure> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_failure)?;

    // Only the status line is read: start small and grow to the bound, so
    // thousands of checks in flight hold little memory.
    let mut buf = vec![0u8; 512];
    let mut filled = 0;
    loop {
        let head = buf.get(..filled).unwrap_or_default();
        if let Some(line) = status_line(head) {
            return parse_status_line(line).ok_or(CheckFailure::InvalidResponse);
        }
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD_BYTES {
                // No line end within the bound: not an HTTP server we can talk to.
                return Err(CheckFailure::InvalidResponse);
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
        }
        let n = match stream.read(buf.get_mut(filled..).unwrap_or_default()).await {
            Ok(n) => n,
            // A reset after the server sent its line is handled above; a reset
            // before is a failure of the server, not garbage.
            Err(e) => return Err(io_failure(e)),
        };
        if n == 0 {
            return if filled == 0 {
                Err(CheckFailure::Closed)
            } else {
                // Accept a status line that ends at EOF without a newline.
                parse_status_line(buf.get(..filled).unwrap_or_default())
                    .ok_or(CheckFailure::InvalidResponse)
            };
        }
        filled += n;
    }
}

/// The first line of `head` without its line ending, once a `\n` arrived.
fn status_line(head: &[u8]) -> Option<&[u8]> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = head.get(..end)?;
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Parse `HTTP/1.x SSS[ reason]` and return the status; None for anything else.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let (version, rest) = split_once_space(rest)?;
    if !matches!(version, b"1.0" | b"1.1") {
        return None;
    }
    let code = match split_once_space(rest) {
        Some((code, _reason)) => code,
        None => rest,
    };
    let [a, b, c] = code else {
        return None;
    };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) || *a == b'0' {
        return None;
    }
    Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
}

fn split_once_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

fn connect_failure(e: io::Error) -> CheckFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => CheckFailure::Refused,
        _ => CheckFailure::Connect(short_io(&e)),
    }
}

pub(crate) fn io_failure(e: io::Error) -> CheckFailure {
    CheckFailure::Io(short_io(&e))
}

/// The OS message without the " (os error N)" suffix, to keep reasons short.
pub(crate) fn short_io(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s.get(..i).unwrap_or(&s).to_string(),
        None => s,
    }
}

/// Bytes as a short printable string for reasons: `"+PONG\r\n"`, with
/// non-printable bytes as `\xNN` and at most `max` input bytes shown.
pub(crate) fn escape_bytes(b: &[u8], max: usize) -> String {
    let mut out = String::from("\"");
    for &c in b.iter().take(max) {
        match c {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    if b.len() > max {
        out.push('…');
    }
    out
}

/// "1s", "250ms", "1500ms": whole seconds when exact, milliseconds otherwise.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    fn http(expect_min: u16, expect_max: u16) -> CheckKind {
        CheckKind::Http {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            expect: StatusRange {
                min: expect_min,
                max: expect_max,
            },
        }
    }

    fn health(port: Option<u16>, address: Option<IpAddr>) -> HealthConfig {
        HealthConfig {
            check: Some(CheckKind::Tcp),
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            port,
            address,
        }
    }

    /// A port on 127.0.0.1 with nothing listening.
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// Serves `response` verbatim to every connection after reading the request
    /// head; records each request head in the returned log.
    async fn canned(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let log = log2.clone();
                tokio::spawn(async move {
                    let head = read_head(&mut s).await;
                    log.lock().unwrap().push(head);
                    let _ = s.write_all(response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, log)
    }

    async fn read_head(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn tcp_connect_ok() {
        let (addr, _) = canned(b"").await;
        assert_eq!(
            run_check(addr, &CheckKind::Tcp, T).await,
            Ok(CheckSuccess::TcpConnect)
        );
        assert_eq!(CheckSuccess::TcpConnect.to_string(), "TCP connect ok");
    }

    #[tokio::test]
    async fn tcp_refused() {
        let addr = closed_port().await;
        let err = run_check(addr, &CheckKind::Tcp, T).await.unwrap_err();
        assert_eq!(err, CheckFailure::Refused);
        assert_eq!(err.to_string(), "connection refused");
    }

    #[tokio::test]
    async fn http_refused() {
        let addr = closed_port().await;
        let err = run_check(addr, &http(200, 200), T).await.unwrap_err();
        assert_eq!(err, CheckFailure::Refused);
    }

    #[tokio::test]
    async fn http_200_ok_and_request_is_well_formed() {
        let (addr, log) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let ok = run_check(addr, &http(200, 200), T).await.unwrap();
        assert_eq!(ok, CheckSuccess::HttpStatus(200));
        assert_eq!(ok.to_string(), "HTTP 200");
        let head = log.lock().unwrap()[0].clone();
        assert_eq!(
            head,
            format!(
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn http_uses_configured_method_path_and_host() {
        let (addr, log) = canned(b"HTTP/1.0 204 No Content\r\n\r\n").await;
        let kind = CheckKind::Http {
            method: "HEAD".into(),
            path: "/ping?x=1".into(),
            host: Some("app.example.com".into()),
            expect: StatusRange { min: 200, max: 299 },
        };
        assert_eq!(
            run_check(addr, &kind, T).await,
            Ok(CheckSuccess::HttpStatus(204))
        );
        let head = log.lock().unwrap()[0].clone();
        assert!(head.starts_with("HEAD /ping?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nHost: app.example.com\r\n"), "{head}");
    }

    #[tokio::test]
    async fn http_500_fails_with_reason() {
        let (addr, _) = canned(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
        let err = run_check(addr, &http(200, 200), T).await.unwrap_err();
        assert_eq!(
            err,
            CheckFailure::Status {
                status: 500,
                expect: StatusRange { min: 200, max: 200 }
            }
        );
        assert_eq!(err.to_string(), "HTTP 500 (expected 200-200)");
    }

    #[tokio::test]
    async fn http_range_accepts_302() {
        let (addr, _) = canned(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n").await;
        assert_eq!(
            run_check(addr, &http(200, 399), T).await,
            Ok(CheckSuccess::HttpStatus(302))
        );
        let err = run_check(addr, &http(200, 299), T).await.unwrap_err();
        assert_eq!(err.to_string(), "HTTP 302 (expected 200-299)");
    }

    #[tokio::test]
    async fn http_garbage_is_invalid_response() {
        for garbage in [
            &b"hello there\r\n"[..],
            b"\x00\xff\xfe binary\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.6",
        ] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                if let Ok((mut s, _)) = l.accept().await {
                    let _ = read_head(&mut s).await;
                    let _ = s.write_all(garbage).await;
                }
            });
            let err = run_check(addr, &http(200, 200), T).await.unwrap_err();
            assert_eq!(err, CheckFailure::InvalidResponse, "{garbage:?}");
            assert_eq!(err.to_string(), "invalid HTTP response");
        }
    }

    #[tokio::test]
    async fn http_endless_head_without_newline_is_invalid() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = read_head(&mut s).await;
                let junk = vec![b'x'; 4096];
                // Keep writing until the checker hangs up.
                while s.write_all(&junk).await.is_ok() {}
            }
        });
        let err = run_check(addr, &http(200, 200), T).await.unwrap_err();
        assert_eq!(err, CheckFailure::InvalidResponse);
    }

    #[tokio::test]
    async fn http_close_without_response() {
        let (addr, _) = canned(b"").await;
        let err = run_check(addr, &http(200, 200), T).await.unwrap_err();
        assert_eq!(err, CheckFailure::Closed);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (hold_tx, mut hold_rx) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            // Accept and hold the connection open without answering.
            let conn = l.accept().await;
            let _ = hold_rx.recv().await;
            drop(conn);
        });
        let timeout = Duration::from_millis(200);
        let err = run_check(addr, &http(200, 200), timeout).await.unwrap_err();
        assert_eq!(err, CheckFailure::Timeout(timeout));
        assert_eq!(err.to_string(), "timeout after 200ms");
        drop(hold_tx);
    }

    #[tokio::test]
    async fn port_override_is_used() {
        let (open, _) = canned(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let closed = closed_port().await;
        let cfg = health(Some(open.port()), None);
        let target = check_target(closed, &cfg);
        assert_eq!(target, open);
        assert_eq!(
            run_check(target, &http(200, 200), T).await,
            Ok(CheckSuccess::HttpStatus(200))
        );
        // Without the override the same server is refused.
        let plain = check_target(closed, &health(None, None));
        assert_eq!(
            run_check(plain, &CheckKind::Tcp, T).await,
            Err(CheckFailure::Refused)
        );
    }

    #[test]
    fn check_target_overrides() {
        let server: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(check_target(server, &health(None, None)), server);
        assert_eq!(
            check_target(server, &health(Some(9000), None)),
            "192.0.2.10:9000".parse().unwrap()
        );
        assert_eq!(
            check_target(server, &health(None, Some(other))),
            "10.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            check_target(server, &health(Some(81), Some(other))),
            "10.0.0.1:81".parse().unwrap()
        );
    }

    #[test]
    fn status_line_parsing() {
        let ok: &[(&[u8], u16)] = &[
            (b"HTTP/1.1 200 OK", 200),
            (b"HTTP/1.0 503 Service Unavailable", 503),
            (b"HTTP/1.1 404", 404),
            (b"HTTP/1.1 204 ", 204),
            (b"HTTP/1.1 999 weird but three digits", 999),
        ];
        for (line, code) in ok {
            assert_eq!(parse_status_line(line), Some(*code), "{line:?}");
        }
        let bad: &[&[u8]] = &[
            b"",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 099 OK",
            b"HTTP/1.1 -20 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/3.0 200 OK",
            b"http/1.1 200 OK",
            b"ICY 200 OK",
            b"\xff\xfe\xfd",
        ];
        for line in bad {
            assert_eq!(parse_status_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn status_line_extraction() {
        assert_eq!(
            status_line(b"HTTP/1.1 200 OK\r\nX: y\r\n"),
            Some(&b"HTTP/1.1 200 OK"[..])
        );
        assert_eq!(
            status_line(b"HTTP/1.1 200 OK\n"),
            Some(&b"HTTP/1.1 200 OK"[..])
        );
        assert_eq!(status_line(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_line(b"\r\n"), Some(&b""[..]));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            CheckFailure::Timeout(Duration::from_secs(1)).to_string(),
            "timeout after 1s"
        );
    }
}
