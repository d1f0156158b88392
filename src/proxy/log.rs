//! Access log: one line per request or TCP session, written when it ends,
//! in a HAProxy-httplog-like text form or as JSON.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::types::AccessLog;
use crate::log::access::emit;
use crate::runtime::server::ActiveGuard;
use crate::runtime::stats::{BackendStats, FrontendStats, ResponseEnd};

/// An in-flight request whose log line is written when it finishes. It also
/// holds the server's active-connection guard, so "active" covers the whole
/// exchange including the streamed body.
pub struct Pending {
    pub format: AccessLog,
    pub client: SocketAddr,
    pub frontend: Arc<str>,
    pub backend: Arc<str>,
    /// The backend's counters (request duration histogram).
    pub stats: Arc<BackendStats>,
    /// The counters of the frontend the request came in on (responses by server).
    pub frontend_stats: Arc<FrontendStats>,
    pub guard: ActiveGuard,
    pub method: http::Method,
    pub uri: http::Uri,
    pub status: u16,
    /// Accept (first request) or request start → request head received.
    pub tq: Duration,
    pub start: Instant,
    /// Time to get an upstream connection (0 when reused from the pool).
    pub tc: Duration,
    /// Request sent → response head received.
    pub tr: Duration,
    pub retries: u32,
}

impl Pending {
    /// Count how the response ended (aborts, response errors) on the server
    /// and its backend, then [`Pending::finish`].
    pub fn end(self, bytes: u64, end: ResponseEnd) {
        self.guard.server().errors.record_end(end);
        self.stats.errors.record_end(end);
        self.write(bytes, end);
    }

    /// Write the log line (unless logging is off) and release the server,
    /// counting no abort: an incomplete exchange is logged as a client abort
    /// (`CD`), as before the termination states were split.
    pub fn finish(self, bytes: u64, complete: bool) {
        let end = if complete {
            ResponseEnd::Clean
        } else {
            ResponseEnd::ClientAbort
        };
        self.write(bytes, end);
    }

    fn write(self, bytes: u64, end: ResponseEnd) {
        let complete = end == ResponseEnd::Clean;
        let flags = termination(end);
        let srv = self.guard.server();
        srv.record_status(self.status);
        self.frontend_stats.record_response(srv, self.status);
        srv.add_bytes(0, bytes);
        let tt = self.start.elapsed();
        self.stats.duration.observe(tt);
        self.stats.connect.observe(self.tc);
        self.stats.response.observe(self.tr);
        let server = srv.name();
        match self.format {
            AccessLog::Off => {}
            AccessLog::Json => emit(|b| {
                b.extend_from_slice(b"{\"time\":\"");
                put_time(b);
                b.extend_from_slice(b"\",\"client\":\"");
                put_addr(b, self.client);
                b.extend_from_slice(b"\",\"frontend\":");
                put_json_str(b, &self.frontend);
                b.extend_from_slice(b",\"backend\":");
                put_json_str(b, &self.backend);
                b.extend_from_slice(b",\"server\":");
                put_json_str(b, server);
                b.extend_from_slice(b",\"method\":");
                put_json_str(b, self.method.as_str());
                b.extend_from_slice(b",\"uri\":");
                put_json_uri(b, &self.uri);
                put_field(b, "status", self.status as u64);
                put_field(b, "bytes", bytes);
                put_field(b, "tq_ms", ms(self.tq));
                put_field(b, "tc_ms", ms(self.tc));
                put_field(b, "tr_ms", ms(self.tr));
                put_field(b, "tt_ms", ms(tt));
                put_field(b, "retries", self.retries as u64);
                b.extend_from_slice(b",\"termination\":\"");
                b.extend_from_slice(flags.as_bytes());
                b.extend_from_slice(if complete {
                    b"\",\"complete\":true}"
                } else {
                    b"\",\"complete\":false}"
                });
            }),
            AccessLog::Text => emit(|b| {
                // client [time] frontend backend/server tq/tc/tr/tt status bytes flags "method uri"
                put_addr(b, self.client);
                b.extend_from_slice(b" [");
                put_time(b);
                b.extend_from_slice(b"] ");
                b.extend_from_slice(self.frontend.as_bytes());
                b.push(b' ');
                b.extend_from_slice(self.backend.as_bytes());
                b.push(b'/');
                b.extend_from_slice(server.as_bytes());
                b.push(b' ');
                put_u64(b, ms(self.tq));
                b.push(b'/');
                put_u64(b, ms(self.tc));
                b.push(b'/');
                put_u64(b, ms(self.tr));
                b.push(b'/');
                put_u64(b, ms(tt));
                b.push(b' ');
                put_u64(b, self.status as u64);
                b.push(b' ');
                put_u64(b, bytes);
                b.push(b' ');
                b.extend_from_slice(flags.as_bytes());
                b.extend_from_slice(b" \"");
                b.extend_from_slice(self.method.as_str().as_bytes());
                b.push(b' ');
                put_uri(b, &self.uri);
                b.push(b'"');
            }),
        }
    }
}

/// HAProxy's two-letter termination state of a proxied exchange: who ended
/// it (`C` client, `S` server, `P` the proxy) and in which phase (`D`: data,
/// after the response head); `--` for a clean end.
pub fn termination(end: ResponseEnd) -> &'static str {
    match end {
        ResponseEnd::Clean => "--",
        ResponseEnd::ClientAbort => "CD",
        ResponseEnd::ServerAbort => "SD",
        ResponseEnd::Malformed => "PD",
    }
}

/// A log line for a request answered locally (no server: 503, routing miss…).
#[allow(clippy::too_many_arguments)]
pub fn local(
    format: AccessLog,
    client: SocketAddr,
    frontend: &str,
    backend: &str,
    method: &http::Method,
    uri: &http::Uri,
    status: u16,
    start: Instant,
    why: &str,
) {
    match format {
        AccessLog::Off => {}
        AccessLog::Json => emit(|b| {
            b.extend_from_slice(b"{\"time\":\"");
            put_time(b);
            b.extend_from_slice(b"\",\"client\":\"");
            put_addr(b, client);
            b.extend_from_slice(b"\",\"frontend\":");
            put_json_str(b, frontend);
            b.extend_from_slice(b",\"backend\":");
            put_json_str(b, backend);
            b.extend_from_slice(b",\"server\":null,\"method\":");
            put_json_str(b, method.as_str());
            b.extend_from_slice(b",\"uri\":");
            put_json_uri(b, uri);
            put_field(b, "status", status as u64);
            put_field(b, "tt_ms", ms(start.elapsed()));
            b.extend_from_slice(b",\"error\":");
            put_json_str(b, why);
            b.push(b'}');
        }),
        AccessLog::Text => emit(|b| {
            put_addr(b, client);
            b.extend_from_slice(b" [");
            put_time(b);
            b.extend_from_slice(b"] ");
            b.extend_from_slice(frontend.as_bytes());
            b.push(b' ');
            b.extend_from_slice(backend.as_bytes());
            b.extend_from_slice(b"/<NOSRV> -1/-1/-1/");
            put_u64(b, ms(start.elapsed()));
            b.push(b' ');
            put_u64(b, status as u64);
            b.extend_from_slice(b" 0 SC \"");
            b.extend_from_slice(method.as_str().as_bytes());
            b.push(b' ');
            put_uri(b, uri);
            b.extend_from_slice(b"\" ");
            put_text(b, why);
        }),
    }
}

/// One finished TCP session, as its log line tells it.
pub struct TcpSession<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// Frontend name.
    pub frontend: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Server name (`<NOSRV>` when none was reached).
    pub server: &'a str,
    /// Time to connect to the server.
    pub tc: Duration,
    /// Whole session time.
    pub tt: Duration,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// How it ended (`--`, `reset`, `idle-timeout`, `no-server`, `role-change`).
    pub end: &'a str,
}

/// A log line for one finished TCP session.
pub fn tcp(format: AccessLog, s: &TcpSession<'_>) {
    if format != AccessLog::Off {
        emit(|b| tcp_line(b, format, s));
    }
}

/// The TCP session line (nothing for `Off`) appended to `b`.
fn tcp_line(b: &mut Vec<u8>, format: AccessLog, s: &TcpSession<'_>) {
    let TcpSession {
        client,
        frontend,
        backend,
        server,
        tc,
        tt,
        bytes_in,
        bytes_out,
        end,
    } = *s;
    match format {
        AccessLog::Off => {}
        AccessLog::Json => {
            b.extend_from_slice(b"{\"time\":\"");
            put_time(b);
            b.extend_from_slice(b"\",\"client\":\"");
            put_addr(b, client);
            b.extend_from_slice(b"\",\"frontend\":");
            put_json_str(b, frontend);
            b.extend_from_slice(b",\"backend\":");
            put_json_str(b, backend);
            b.extend_from_slice(b",\"server\":");
            put_json_str(b, server);
            put_field(b, "tc_ms", ms(tc));
            put_field(b, "tt_ms", ms(tt));
            put_field(b, "bytes_in", bytes_in);
            put_field(b, "bytes_out", bytes_out);
            b.extend_from_slice(b",\"end\":");
            put_json_str(b, end);
            b.push(b'}');
        }
        AccessLog::Text => {
            put_addr(b, client);
            b.extend_from_slice(b" [");
            put_time(b);
            b.extend_from_slice(b"] ");
            b.extend_from_slice(frontend.as_bytes());
            b.push(b' ');
            b.extend_from_slice(backend.as_bytes());
            b.push(b'/');
            b.extend_from_slice(server.as_bytes());
            b.push(b' ');
            put_u64(b, ms(tc));
            b.push(b'/');
            put_u64(b, ms(tt));
            b.push(b' ');
            put_u64(b, bytes_in);
            b.push(b'/');
            put_u64(b, bytes_out);
            b.push(b' ');
            put_text(b, end);
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn put_u64(b: &mut Vec<u8>, n: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `,"key":n`
fn put_field(b: &mut Vec<u8>, key: &str, n: u64) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"\":");
    put_u64(b, n);
}

fn put_addr(b: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let mut ip = [0u8; 64];
            b.extend_from_slice(crate::proxy::headers::fmt_ip(IpAddr::V4(*v4.ip()), &mut ip));
            b.push(b':');
            put_u64(b, v4.port() as u64);
        }
        v6 => {
            let _ = write!(b, "{v6}");
        }
    }
}

fn put_uri(b: &mut Vec<u8>, u: &http::Uri) {
    // `Display` writes into the buffer: no `String` in between.
    let _ = write!(b, "{u}");
}

fn put_json_uri(b: &mut Vec<u8>, u: &http::Uri) {
    // A parsed URI holds no '"', '\\' or control characters, but say so
    // through the escaper rather than trust it.
    let start = b.len();
    put_uri(b, u);
    if b[start..]
        .iter()
        .any(|&c| c == b'"' || c == b'\\' || c < 0x20)
    {
        let raw = String::from_utf8_lossy(&b[start..]).into_owned();
        b.truncate(start);
        put_json_str(b, &raw);
    } else {
        b.insert(start, b'"');
        b.push(b'"');
    }
}

fn put_json_str(b: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *b, s);
}

/// Free text at the end of a text line: a newline would split the line.
fn put_text(b: &mut Vec<u8>, s: &str) {
    b.extend(s.bytes().map(|c| if c < 0x20 { b' ' } else { c }));
}

/// The current time as `2026-11-22T01:25:13.123Z`; the part up to the
/// seconds is formatted once per second per thread.
fn put_time(b: &mut Vec<u8>) {
    thread_local! {
        static CACHE: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (cached, mut text) = CACHE.get();
    if cached != secs {
        let s = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        if let Some(p) = s.as_bytes().get(..19) {
            text.copy_from_slice(p);
        }
        CACHE.set((secs, text));
    }
    b.extend_from_slice(&text);
    let m = d.subsec_millis();
    b.extend_from_slice(&[
        b'.',
        b'0' + (m / 100) as u8,
        b'0' + (m / 10 % 10) as u8,
        b'0' + (m % 10) as u8,
        b'Z',
    ]);
}

/// `2026-11-22T01:25:13.123Z` without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_lines() {
        let client: SocketAddr = "10.1.2.3:40000".parse().unwrap_or(([0, 0, 0, 0], 0).into());
        let ms = Duration::from_millis;
        let mut b = Vec::new();
        let mut sess = TcpSession {
            client,
            frontend: "fe",
            backend: "be",
            server: "s1",
            tc: ms(3),
            tt: ms(1500),
            bytes_in: 10,
            bytes_out: 20,
            end: "eof",
        };
        tcp_line(&mut b, AccessLog::Json, &sess);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        assert_eq!(
            v["client"],
            "10.1.2.3:40000",
            "{}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(v["tc_ms"], 3);
        assert_eq!(v["tt_ms"], 1500);
        assert_eq!(v["bytes_out"], 20);
        assert_eq!(v["end"], "eof");
        assert_eq!(v["time"].as_str().map(str::len), Some(24));
        b.clear();
        sess.end = "a\nb";
        tcp_line(&mut b, AccessLog::Text, &sess);
        let text = String::from_utf8_lossy(&b);
        let (head, rest) = text.split_once(" [").unwrap_or_default();
        assert_eq!(head, "10.1.2.3:40000");
        assert_eq!(&rest[24..], "] fe be/s1 3/1500 10/20 a b", "{text}");
        b.clear();
        tcp_line(&mut b, AccessLog::Off, &sess);
        assert!(b.is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_795_051_513_123);
        assert_eq!(rfc3339(t), "2026-11-19T01:25:13.123Z");
    }
}
