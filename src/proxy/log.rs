//! Access log: one line per request or TCP session, written when it ends,
//! in a HAProxy-httplog-like text form or as JSON.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::types::AccessLog;
use crate::runtime::server::ActiveGuard;
use crate::runtime::stats::{BackendStats, FrontendStats};

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
    /// Write the log line (unless logging is off) and release the server.
    pub fn finish(self, bytes: u64, complete: bool) {
        let srv = self.guard.server();
        srv.record_status(self.status);
        self.frontend_stats
            .responses
            .add(&self.backend, srv.name(), self.status);
        srv.add_bytes(0, bytes);
        let tt = self.start.elapsed();
        self.stats.duration.observe(tt);
        if self.format == AccessLog::Off {
            return;
        }
        let server = self.guard.server().name().to_string();
        let line = match self.format {
            AccessLog::Json => serde_json::json!({
                "time": rfc3339(SystemTime::now()),
                "client": self.client.to_string(),
                "frontend": &*self.frontend,
                "backend": &*self.backend,
                "server": server,
                "method": self.method.as_str(),
                "uri": self.uri.to_string(),
                "status": self.status,
                "bytes": bytes,
                "tq_ms": ms(self.tq),
                "tc_ms": ms(self.tc),
                "tr_ms": ms(self.tr),
                "tt_ms": ms(tt),
                "retries": self.retries,
                "complete": complete,
            })
            .to_string(),
            _ => format!(
                "{} [{}] {} {}/{} {}/{}/{}/{} {} {} {} \"{} {}\"",
                self.client,
                rfc3339(SystemTime::now()),
                self.frontend,
                self.backend,
                server,
                ms(self.tq),
                ms(self.tc),
                ms(self.tr),
                ms(tt),
                self.status,
                bytes,
                if complete { "--" } else { "CD" },
                self.method,
                self.uri
            ),
        };
        write_line(&line);
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
        AccessLog::Json => write_line(
            &serde_json::json!({
                "time": rfc3339(SystemTime::now()),
                "client": client.to_string(),
                "frontend": frontend,
                "backend": backend,
                "server": null,
                "method": method.as_str(),
                "uri": uri.to_string(),
                "status": status,
                "tt_ms": ms(start.elapsed()),
                "error": why,
            })
            .to_string(),
        ),
        AccessLog::Text => write_line(&format!(
            "{client} [{}] {frontend} {backend}/<NOSRV> -1/-1/-1/{} {status} 0 SC \"{method} {uri}\" {why}",
            rfc3339(SystemTime::now()),
            ms(start.elapsed())
        )),
    }
}

/// A log line for one finished TCP session.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    format: AccessLog,
    client: SocketAddr,
    frontend: &str,
    backend: &str,
    server: &str,
    tc: Duration,
    tt: Duration,
    bytes_in: u64,
    bytes_out: u64,
    end: &str,
) {
    match format {
        AccessLog::Off => {}
        AccessLog::Json => write_line(
            &serde_json::json!({
                "time": rfc3339(SystemTime::now()),
                "client": client.to_string(),
                "frontend": frontend,
                "backend": backend,
                "server": server,
                "tc_ms": ms(tc),
                "tt_ms": ms(tt),
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "end": end,
            })
            .to_string(),
        ),
        AccessLog::Text => write_line(&format!(
            "{client} [{}] {frontend} {backend}/{server} {}/{} {bytes_in}/{bytes_out} {end}",
            rfc3339(SystemTime::now()),
            ms(tc),
            ms(tt)
        )),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
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
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_795_051_513_123);
        assert_eq!(rfc3339(t), "2026-11-19T01:25:13.123Z");
    }
}
