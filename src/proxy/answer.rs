//! Local answers (no server): the same status line, headers and body on
//! every transport, from a [`decide::Answer`](super::decide::Answer) or a
//! failed attempt.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::RespBody;
use super::decide::Answer;

/// The body of a local answer: `503 Service Unavailable: why`.
pub(crate) fn body(status: StatusCode, why: &str) -> String {
    format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// A short local answer that says why, for the hyper path.
pub(crate) fn response(status: StatusCode, why: &str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(body(status, why)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A decided answer for the hyper path (with `Retry-After`, `Location`).
pub(crate) fn from_decision(a: &Answer) -> Response<RespBody> {
    let mut r = response(a.status, &a.why);
    if let Some(secs) = a.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(v) = a
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The same answer as bytes, for the relay (`close`: the connection ends
/// after it).
pub(crate) fn write(out: &mut Vec<u8>, a: &Answer, close: bool) {
    use std::io::Write;
    let reason = a.status.canonical_reason().unwrap_or("");
    let body = body(a.status, &a.why);
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\n",
        a.status.as_u16(),
        body.len()
    );
    if let Some(s) = a.retry_after {
        let _ = write!(out, "retry-after: {s}\r\n");
    }
    if let Some(l) = &a.location {
        let _ = write!(out, "location: {l}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}
