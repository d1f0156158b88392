//! `tcp` check with `send` / `expect` (HAProxy `tcp-check send` and
//! `tcp-check expect string`): write some bytes, then read a bounded amount
//! until the expected bytes appear.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::check::{escape_bytes, io_failure, CheckFailure, CheckSuccess};

/// Most bytes read while looking for `expect`; a banner or a short reply is
/// all a check needs, and a server streaming data must not keep us reading.
pub const MAX_READ_BYTES: usize = 16 * 1024;

/// Bytes of the reply quoted in a failure reason.
const QUOTE_BYTES: usize = 48;

/// Send `send` (if any), then, if `expect` is set, read until it appears as
/// a substring of what arrived, the peer closes, or `MAX_READ_BYTES` are read.
/// The caller bounds the whole exchange with the check timeout.
pub async fn send_expect(
    mut stream: TcpStream,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
) -> Result<CheckSuccess, CheckFailure> {
    if let Some(bytes) = send {
        stream.write_all(bytes).await.map_err(io_failure)?;
    }
    let Some(expect) = expect else {
        return Ok(CheckSuccess::TcpExpect);
    };
    let mut buf = vec![0u8; MAX_READ_BYTES];
    let mut filled = 0;
    loop {
        let got = buf.get(..filled).unwrap_or_default();
        if contains(got, expect) {
            return Ok(CheckSuccess::TcpExpect);
        }
        if filled >= buf.len() {
            return Err(unexpected(got, expect));
        }
        let room = buf.get_mut(filled..).unwrap_or_default();
        let n = match stream.read(room).await {
            Ok(n) => n,
            Err(e) if filled == 0 => return Err(io_failure(e)),
            // Something arrived before the reset: report what it was.
            Err(_) => return Err(unexpected(buf.get(..filled).unwrap_or_default(), expect)),
        };
        if n == 0 {
            return Err(if filled == 0 {
                CheckFailure::Closed
            } else {
                unexpected(buf.get(..filled).unwrap_or_default(), expect)
            });
        }
        filled += n;
    }
}

fn unexpected(got: &[u8], expect: &[u8]) -> CheckFailure {
    CheckFailure::Expect {
        got: escape_bytes(got, QUOTE_BYTES),
        expected: escape_bytes(expect, QUOTE_BYTES),
    }
}

/// Substring search; `needle` is short (at most 1 KiB, checked by config).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::CheckKind;
    use crate::health::run_check;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    /// A server that reads one chunk, then answers `reply` and closes.
    async fn replying(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b).await;
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    fn kind(send: &str, expect: &str) -> CheckKind {
        CheckKind::TcpExpect {
            send: Some(send.as_bytes().to_vec()),
            expect: Some(expect.as_bytes().to_vec()),
        }
    }

    #[tokio::test]
    async fn pong_passes() {
        let addr = replying(b"+PONG\r\n").await;
        let ok = run_check(addr, &kind("PING\r\n", "+PONG"), T)
            .await
            .unwrap();
        assert_eq!(ok, CheckSuccess::TcpExpect);
        assert_eq!(ok.to_string(), "tcp-check ok");
    }

    #[tokio::test]
    async fn garbage_fails_with_quoted_reply() {
        let addr = replying(b"\x00\xffHELLO garbage\r\n").await;
        let err = run_check(addr, &kind("PING\r\n", "+PONG"), T)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unexpected reply "\x00\xffHELLO garbage\r\n" (expected "+PONG")"#
        );
    }

    #[tokio::test]
    async fn silent_close_and_endless_stream_fail() {
        let addr = replying(b"").await;
        let err = run_check(addr, &kind("PING\r\n", "+PONG"), T)
            .await
            .unwrap_err();
        assert_eq!(err, CheckFailure::Closed);

        // A server that streams forever: the read bound ends the check.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let chunk = [b'x'; 4096];
                while s.write_all(&chunk).await.is_ok() {}
            }
        });
        let err = run_check(addr, &kind("PING\r\n", "+PONG"), T)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("unexpected reply \"xxx"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn send_only_and_banner_expect() {
        let addr = replying(b"").await;
        let k = CheckKind::TcpExpect {
            send: Some(b"QUIT\r\n".to_vec()),
            expect: None,
        };
        assert_eq!(run_check(addr, &k, T).await, Ok(CheckSuccess::TcpExpect));

        // Banner protocols (SMTP, SSH): expect without send.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"220 mail ESMTP\r\n").await;
                let mut b = [0u8; 8];
                let _ = s.read(&mut b).await;
            }
        });
        let k = CheckKind::TcpExpect {
            send: None,
            expect: Some(b"220 ".to_vec()),
        };
        assert_eq!(run_check(addr, &k, T).await, Ok(CheckSuccess::TcpExpect));
    }

    #[test]
    fn substring() {
        assert!(contains(b"abc+PONG\r\n", b"+PONG"));
        assert!(!contains(b"+PON", b"+PONG"));
        assert!(contains(b"", b""));
    }
}
