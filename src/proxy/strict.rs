//! Strict HTTP framing: the checks a request passes before it is routed, and
//! the opt-in path normalisation (`normalize_path`).
//!
//! Where HTTP leaves a request ambiguous — two `Host` fields, a
//! `Transfer-Encoding` that is not exactly `chunked`, a target that is not
//! in a form a reverse proxy serves — the proxy and the server behind it may
//! read it two ways, which is how requests get smuggled. Such a request is
//! refused here with the status HAProxy or nginx give in their strict modes
//! (README, Hardening, lists each rule with its RFC section).
//!
//! Only the hyper path (`proxy::http`) calls these, before deciding: a
//! refusal goes to `decide` as `RequestFacts::refused`, which answers it
//! (counted and logged like any local answer). The relay hands every
//! request that is not plain origin-form HTTP/1.1 with one `Host` and no
//! `Transfer-Encoding` to it (see `proxy::h1::head`), so both paths answer
//! alike.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// Why a request is refused: its status and the reason told to the client.
pub(crate) type Refusal = (StatusCode, &'static str);

/// Check a request's target and framing fields; `Err` is the answer.
pub(crate) fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
    if *method == Method::CONNECT {
        // A reverse proxy is no tunnel (nginx answers 405 too).
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served by this proxy",
        ));
    }
    check_target(method, uri)?;
    let mut hosts = headers.get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        // RFC 9112 §3.2: more than one Host field → 400.
        return Err((StatusCode::BAD_REQUEST, "more than one Host field"));
    }
    check_transfer_encoding(headers)
}

/// RFC 9112 §3.2: origin-form (`/…`), absolute-form (`http://…`), or `*`
/// for OPTIONS; authority-form is only for CONNECT. hyper parses `GET a` as
/// authority-form, which is how it used to reach servers as `GET /`.
fn check_target(method: &Method, uri: &Uri) -> Result<(), Refusal> {
    let bad = (StatusCode::BAD_REQUEST, "the request target is not a path");
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    if !pq.is_ascii() {
        // RFC 3986 §2: a URI is ASCII; other bytes must be percent-encoded.
        return Err((StatusCode::BAD_REQUEST, "the request target is not ASCII"));
    }
    if uri.scheme().is_some() {
        return match uri.scheme_str() {
            Some("http") | Some("https") if uri.authority().is_some() => Ok(()),
            _ => Err(bad),
        };
    }
    if uri.authority().is_some() {
        return Err(bad);
    }
    match uri.path() {
        "*" if *method == Method::OPTIONS => Ok(()),
        p if p.starts_with('/') => Ok(()),
        _ => Err(bad),
    }
}

/// RFC 9112 §6.1 / §6.3: a request body is chunked only when `chunked` is
/// the last and only-once coding; the proxy implements no other coding, so
/// anything but exactly one `chunked` is refused: another coding with 501
/// (RFC 9112 §6.1: a coding it does not understand), a repeated or
/// misplaced `chunked` with 400 (§6.3: the body's length cannot be known).
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut fields = headers.get_all(header::TRANSFER_ENCODING).iter();
    if fields.next().is_none() {
        return Ok(());
    }
    let repeated = fields.next().is_some();
    let mut codings = 0usize;
    let mut chunked = 0usize;
    let mut other = false;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let t = token.trim_ascii();
            if t.is_empty() {
                continue;
            }
            codings += 1;
            if t.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else {
                other = true;
            }
        }
    }
    if other {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "transfer codings other than chunked are not implemented",
        ));
    }
    if repeated || codings != 1 || chunked != 1 {
        return Err((
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding must be exactly one `chunked`",
        ));
    }
    Ok(())
}

/// The authority a request is for: the target's (absolute-form over HTTP/1.1,
/// RFC 9112 §3.2.2; `:authority` over HTTP/2, RFC 9113 §8.3.1) wins over
/// `Host`.
pub(crate) fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// `normalize_path`: the path with `%XX` of unreserved characters decoded
/// (RFC 3986 §6.2.2.2), empty segments (`//`) merged and `.`/`..` segments
/// resolved (§5.2.4; `..` never climbs above the root), or None when it is
/// already normal. Other `%XX` stay encoded (decoding `%2F` would change
/// which segments there are).
pub(crate) fn normalize_path(path: &str) -> Option<String> {
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments = decoded.split('/').skip(1);
    let mut trailing = false;
    for seg in segments {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut n = String::with_capacity(decoded.len());
    for s in &out {
        n.push('/');
        n.push_str(s);
    }
    if trailing || out.is_empty() {
        n.push('/');
    }
    (n != path).then_some(n)
}

fn decode_unreserved(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3);
        let c = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        match c {
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c as char);
                rest = &rest[at + 3..];
            }
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn transfer_encoding_is_exactly_one_chunked() {
        let te = |vals: &[&str]| {
            let f: Vec<_> = vals.iter().map(|v| ("transfer-encoding", *v)).collect();
            check(&Method::POST, &Uri::from_static("/"), &head(&f)).map_err(|e| e.0.as_u16())
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert_eq!(te(&["gzip, chunked"]), Err(501));
        assert_eq!(te(&["identity, chunked"]), Err(501));
        assert_eq!(te(&["chunked, gzip"]), Err(501));
        assert_eq!(te(&["chunked, chunked"]), Err(400));
        assert_eq!(te(&["chunked", "chunked"]), Err(400));
        assert_eq!(te(&[","]), Err(400));
    }

    #[test]
    fn targets_and_hosts() {
        let c = |m: Method, u: &str, f: &[(&str, &str)]| {
            check(&m, &u.parse().unwrap(), &head(f)).map_err(|e| e.0.as_u16())
        };
        assert_eq!(c(Method::GET, "/x", &[("host", "a")]), Ok(()));
        assert_eq!(c(Method::GET, "a", &[("host", "a")]), Err(400));
        assert_eq!(c(Method::GET, "*", &[("host", "a")]), Err(400));
        assert_eq!(c(Method::OPTIONS, "*", &[("host", "a")]), Ok(()));
        assert_eq!(c(Method::GET, "http://b/x", &[("host", "a")]), Ok(()));
        assert_eq!(c(Method::CONNECT, "a:443", &[("host", "a")]), Err(405));
        assert_eq!(
            c(Method::GET, "/", &[("host", "a"), ("host", "b")]),
            Err(400)
        );
        let uri: Uri = "http://b/x".parse().unwrap();
        let h = head(&[("host", "a")]);
        assert_eq!(authority(&uri, &h), Some("b"));
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(authority(&uri, &h), Some("a"));
    }

    #[test]
    fn paths_normalise() {
        let n = |p: &str| normalize_path(p).unwrap_or_else(|| p.to_string());
        assert_eq!(n("/x/../admin/"), "/admin/");
        assert_eq!(n("//admin/"), "/admin/");
        assert_eq!(n("/%61dmin/"), "/admin/");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/%2F/b"), "/a/%2F/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/%7euser"), "/~user");
        assert_eq!(n("/%"), "/%");
        assert_eq!(n("/%4"), "/%4");
        assert_eq!(normalize_path("/plain/path"), None);
    }
}
