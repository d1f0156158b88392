//! Bearer-token checks of the admin API: parsing `Authorization`, comparing
//! in constant time, and logging refusals without flooding the log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` all work.
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compare without an early exit, so response timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// At most this many refusal lines per window; the rest are counted and the
/// count is logged with the next line, so a client looping on a wrong token
/// cannot fill the disk.
const LINES_PER_WINDOW: u64 = 10;
const WINDOW: Duration = Duration::from_secs(10);

static WINDOW_START: Mutex<Option<Instant>> = Mutex::new(None);
static LOGGED: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
/// Every refused authentication since start (exported as a metric).
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Log a refused authentication: client address, method, path and whether a
/// credential was sent at all. Never the credential itself.
pub(crate) fn log_refused<B>(
    peer: SocketAddr,
    method: &hyper::Method,
    path: &str,
    req: &hyper::Request<B>,
) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    if let Ok(mut start) = WINDOW_START.lock() {
        if start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            *start = Some(now);
            LOGGED.store(0, Ordering::Relaxed);
        }
    }
    if LOGGED.fetch_add(1, Ordering::Relaxed) >= LINES_PER_WINDOW {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let header = req.headers().get(hyper::header::AUTHORIZATION);
    let credential = match header {
        None => "none",
        Some(v) if bearer(v.as_bytes()).is_some() => "wrong bearer token",
        Some(_) => "not a bearer token",
    };
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        client = %peer,
        %method,
        path,
        credential,
        suppressed_since_last = suppressed,
        "admin API authentication failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "  bEaReR   abc  "] {
            assert_eq!(bearer(v.as_bytes()), Some(&b"abc"[..]), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer(v.as_bytes()), None, "{v}");
        }
    }
}
