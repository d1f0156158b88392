//! `redis` check: optional `AUTH`, `PING` → `+PONG`, then `ROLE` (or
//! `INFO replication` where `ROLE` is unavailable) to classify the node as
//! primary (master) or standby (replica).
//!
//! Replies are parsed by a small sans-IO RESP2 parser over a bounded buffer:
//! whatever the peer sends, the check ends with a reason and never panics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::check::{escape_bytes, io_failure, short_io, CheckFailure, CheckSuccess};
use crate::config::types::RedisCheck;
use crate::runtime::server::Role;

/// Largest reply buffered for one command (`INFO replication` is < 1 KiB,
/// `ROLE` on a master lists its replicas).
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Nesting allowed in arrays (`ROLE` uses two levels).
const MAX_DEPTH: u8 = 4;
/// Elements allowed in one array.
const MAX_ARRAY: i64 = 4096;
/// Bytes of a bad reply quoted in a failure reason.
const QUOTE_BYTES: usize = 48;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$3\r\nabc` (None for `$-1`)
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n…` (None for `*-1`)
    Array(Option<Vec<Reply>>),
}

/// Result of parsing the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply and the bytes it used.
    Done(Reply, usize),
    /// More bytes are needed.
    Incomplete,
    /// Not RESP; the reason.
    Invalid(&'static str),
}

/// Parse one RESP2 reply from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: u8) -> Parsed {
    let Some(&tag) = buf.first() else {
        return Parsed::Incomplete;
    };
    if !matches!(tag, b'+' | b'-' | b':' | b'$' | b'*') {
        return Parsed::Invalid("not a RESP reply");
    }
    let rest = buf.get(1..).unwrap_or_default();
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        return if rest.len() > MAX_REPLY_BYTES {
            Parsed::Invalid("line too long")
        } else {
            Parsed::Incomplete
        };
    };
    let line = rest.get(..end).unwrap_or_default();
    let after = 1 + end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    match tag {
        b'+' => Parsed::Done(Reply::Simple(text()), after),
        b'-' => Parsed::Done(Reply::Error(text()), after),
        b':' => match int() {
            Some(n) => Parsed::Done(Reply::Integer(n), after),
            None => Parsed::Invalid("bad integer"),
        },
        b'$' => match int() {
            Some(-1) => Parsed::Done(Reply::Bulk(None), after),
            Some(n) if (0..=MAX_REPLY_BYTES as i64).contains(&n) => {
                let n = n as usize;
                let Some(data) = buf.get(after..after + n + 2) else {
                    return Parsed::Incomplete;
                };
                if data.get(n..) != Some(b"\r\n") {
                    return Parsed::Invalid("bulk string without CRLF");
                }
                let body = data.get(..n).unwrap_or_default().to_vec();
                Parsed::Done(Reply::Bulk(Some(body)), after + n + 2)
            }
            _ => Parsed::Invalid("bad bulk length"),
        },
        _ => match int() {
            Some(-1) => Parsed::Done(Reply::Array(None), after),
            Some(n) if (0..=MAX_ARRAY).contains(&n) => {
                if depth >= MAX_DEPTH {
                    return Parsed::Invalid("arrays nested too deep");
                }
                let mut items = Vec::new();
                let mut at = after;
                for _ in 0..n {
                    match parse_at(buf.get(at..).unwrap_or_default(), depth + 1) {
                        Parsed::Done(item, used) => {
                            items.push(item);
                            at += used;
                        }
                        other => return other,
                    }
                }
                Parsed::Done(Reply::Array(Some(items)), at)
            }
            _ => Parsed::Invalid("bad array length"),
        },
    }
}

/// Encode a command as a RESP array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection that sends commands and reads one reply each.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn call(&mut self, args: &[&str]) -> Result<Reply, CheckFailure> {
        self.stream
            .write_all(&command(args))
            .await
            .map_err(io_failure)?;
        let mut chunk = [0u8; 4096];
        loop {
            match parse(&self.buf) {
                Parsed::Done(reply, used) => {
                    self.buf.drain(..used.min(self.buf.len()));
                    return Ok(reply);
                }
                Parsed::Invalid(why) => return Err(garbage(why, &self.buf)),
                Parsed::Incomplete if self.buf.len() >= MAX_REPLY_BYTES => {
                    return Err(garbage("reply too long", &self.buf));
                }
                Parsed::Incomplete => {}
            }
            let n = self.stream.read(&mut chunk).await.map_err(io_failure)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    CheckFailure::Closed
                } else {
                    garbage("truncated reply", &self.buf)
                });
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

fn garbage(why: &str, got: &[u8]) -> CheckFailure {
    CheckFailure::Protocol(format!(
        "garbage reply from redis: {why}: {}",
        escape_bytes(got, QUOTE_BYTES)
    ))
}

fn unexpected(cmd: &str, reply: &Reply) -> CheckFailure {
    let shown = format!("{reply:?}");
    let shown = escape_bytes(shown.as_bytes(), QUOTE_BYTES);
    CheckFailure::Protocol(format!(
        "garbage reply from redis: unexpected answer to {cmd}: {shown}"
    ))
}

/// Run the check on a connected stream.
pub async fn check(stream: TcpStream, cfg: &RedisCheck) -> Result<CheckSuccess, CheckFailure> {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    if let Some(secret) = &cfg.password {
        let password = secret.reveal().map_err(|e| {
            CheckFailure::Rejected(format!("cannot read password file: {}", short_io(&e)))
        })?;
        let reply = match &cfg.user {
            Some(user) => conn.call(&["AUTH", user, &password]).await?,
            None => conn.call(&["AUTH", &password]).await?,
        };
        match reply {
            Reply::Simple(s) if s == "OK" => {}
            Reply::Error(e) => {
                return Err(CheckFailure::Rejected(format!("redis AUTH failed: {e}")));
            }
            other => return Err(unexpected("AUTH", &other)),
        }
    }
    match conn.call(&["PING"]).await? {
        Reply::Simple(s) if s == "PONG" => {}
        Reply::Error(e) if e.starts_with("NOAUTH") => {
            return Err(CheckFailure::Rejected(format!(
                "redis needs a password: {e}"
            )));
        }
        Reply::Error(e) => return Err(CheckFailure::Rejected(format!("redis PING: {e}"))),
        other => return Err(unexpected("PING", &other)),
    }
    let role = match conn.call(&["ROLE"]).await? {
        Reply::Array(Some(items)) => match items.first() {
            Some(Reply::Bulk(Some(name))) => role_name(name)?,
            Some(Reply::Simple(name)) => role_name(name.as_bytes())?,
            _ => return Err(unexpected("ROLE", &Reply::Array(Some(items)))),
        },
        // ROLE renamed or disabled: INFO replication says the same.
        Reply::Error(_) => match conn.call(&["INFO", "replication"]).await? {
            Reply::Bulk(Some(text)) => info_role(&text)?,
            Reply::Error(e) => {
                return Err(CheckFailure::Rejected(format!(
                    "redis ROLE and INFO refused: {e}"
                )));
            }
            other => return Err(unexpected("INFO", &other)),
        },
        other => return Err(unexpected("ROLE", &other)),
    };
    Ok(CheckSuccess::Role { db: "redis", role })
}

fn role_name(name: &[u8]) -> Result<Role, CheckFailure> {
    match name {
        b"master" => Ok(Role::Primary),
        b"slave" | b"replica" => Ok(Role::Standby),
        b"sentinel" => Err(CheckFailure::Rejected(
            "redis sentinel, not a data node".into(),
        )),
        other => Err(garbage("unknown role", other)),
    }
}

/// `role:master` / `role:slave` in `INFO replication` output.
fn info_role(text: &[u8]) -> Result<Role, CheckFailure> {
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(name) = line.strip_prefix(b"role:") {
            return role_name(name);
        }
    }
    Err(garbage("no role in INFO replication", text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{CheckKind, Secret};
    use crate::health::run_check;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn parses_resp() {
        assert_eq!(
            parse(b"+PONG\r\n"),
            Parsed::Done(Reply::Simple("PONG".into()), 7)
        );
        assert_eq!(parse(b"+PON"), Parsed::Incomplete);
        assert_eq!(
            parse(b"$5\r\nhello\r\n+x"),
            Parsed::Done(Reply::Bulk(Some(b"hello".to_vec())), 11)
        );
        assert_eq!(parse(b"$5\r\nhel"), Parsed::Incomplete);
        assert_eq!(parse(b"$-1\r\n"), Parsed::Done(Reply::Bulk(None), 5));
        let role =
            b"*3\r\n$6\r\nmaster\r\n:0\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n$1\r\n0\r\n";
        match parse(role) {
            Parsed::Done(Reply::Array(Some(items)), used) => {
                assert_eq!(used, role.len());
                assert_eq!(items.len(), 3);
                assert_eq!(items[0], Reply::Bulk(Some(b"master".to_vec())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"$abc\r\n",
            b"$-5\r\n",
            b"$3\r\nabcXY",
            b"*-7\r\n",
            b":12x\r\n",
            b"*99999999999\r\n",
            b"\x00\xff",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        // Deep nesting is bounded.
        let deep = b"*1\r\n".repeat(64);
        assert!(matches!(parse(&deep), Parsed::Invalid(_)));
        // Every prefix of a valid reply is incomplete, never a panic.
        let role = b"*3\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n";
        for i in 0..role.len() {
            assert_eq!(parse(&role[..i]), Parsed::Incomplete, "prefix {i}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
        let alphabet = b"+-:$*\r\n0123456789-abc";
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.bool() {
                        alphabet[rng.usize(..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect();
            if let Parsed::Done(_, used) = parse(&buf) {
                assert!(used <= buf.len());
            }
        }
    }

    #[test]
    fn info_replication_roles() {
        assert_eq!(
            info_role(b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
            Ok(Role::Primary)
        );
        assert_eq!(info_role(b"role:slave\r\n"), Ok(Role::Standby));
        assert!(info_role(b"nothing here").is_err());
    }

    /// A fake server answering each command in turn with the next canned reply.
    async fn fake(replies: Vec<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                for r in replies {
                    let mut b = [0u8; 256];
                    if matches!(s.read(&mut b).await, Ok(0) | Err(_)) {
                        return;
                    }
                    let _ = s.write_all(r).await;
                }
            }
        });
        addr
    }

    fn redis(password: Option<&str>) -> CheckKind {
        CheckKind::Redis(RedisCheck {
            user: None,
            password: password.map(|p| Secret::Inline(p.into())),
        })
    }

    #[tokio::test]
    async fn fake_master_and_replica() {
        let addr = fake(vec![b"+PONG\r\n", b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"]).await;
        let ok = run_check(addr, &redis(None), T).await.unwrap();
        assert_eq!(ok.role(), Some(Role::Primary));
        assert_eq!(ok.to_string(), "redis primary");

        // ROLE unknown: falls back to INFO replication.
        let addr = fake(vec![
            b"+OK\r\n",
            b"+PONG\r\n",
            b"-ERR unknown command 'ROLE'\r\n",
            b"$25\r\n# Replication\r\nrole:slave\r\n",
        ])
        .await;
        let ok = run_check(addr, &redis(Some("pw")), T).await.unwrap();
        assert_eq!(ok.role(), Some(Role::Standby));
    }

    #[tokio::test]
    async fn failures_say_why() {
        let addr = fake(vec![b"-WRONGPASS invalid username-password pair\r\n"]).await;
        let err = run_check(addr, &redis(Some("bad")), T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis AUTH failed: WRONGPASS invalid username-password pair"
        );

        let addr = fake(vec![b"-NOAUTH Authentication required.\r\n"]).await;
        let err = run_check(addr, &redis(None), T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis needs a password: NOAUTH Authentication required."
        );

        let k = CheckKind::Redis(RedisCheck {
            user: Some("app".into()),
            password: Some(Secret::File("/nonexistent/fulcrum-redis.pass".into())),
        });
        let addr = fake(vec![]).await;
        let err = run_check(addr, &k, T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read password file: No such file or directory"
        );

        let addr = fake(vec![b"SSH-2.0-OpenSSH_9.6\r\n"]).await;
        let err = run_check(addr, &redis(None), T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"garbage reply from redis: not a RESP reply: "SSH-2.0-OpenSSH_9.6\r\n""#
        );

        let addr = fake(vec![b"+PONG\r\n", b"+hello\r\n"]).await;
        let err = run_check(addr, &redis(None), T).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("garbage reply from redis: unexpected answer to ROLE"),
            "{err}"
        );
    }
}
