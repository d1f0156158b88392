//! The per-request policy, once for every transport: [`decide`] takes plain
//! data about a request (its frontend, host, path, the few headers policy
//! reads, the client's address) and says what to do with it — answer locally
//! (status and why), redirect, or forward to a backend with the client's
//! address, balancing key, request id and sticky server.
//!
//! Sans-IO: no socket, no task, no clock read — the caller passes `now`.
//! It does touch in-memory state that *is* the policy: the frontend's
//! request and local-error counters and the rate limiters' buckets, so that
//! every transport counts the same way (they used to drift: a removed
//! frontend counted a local error on one path and not on the other).
//!
//! The relay (`proxy::h1`), the hyper path (`proxy::http`) and TCP
//! (`proxy::tcp`) each turn their request into a [`RequestFacts`] and carry
//! out the [`Decision`]; what differs between them is wire protocol only.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::edge;
use crate::config::types::Algorithm;
use crate::runtime::{BackendRt, FrontendRt};

/// Read access to the request headers policy needs, whatever holds them
/// (hyper's `HeaderMap`, the relay's parsed head, nothing for TCP).
pub trait Headers {
    /// The first value of header `name` (any case).
    fn get(&self, name: &str) -> Option<&[u8]>;
    /// Every `X-Forwarded-For` value, in arrival order.
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]>;
    /// True when the request carries an `X-Request-Id`.
    fn has_request_id(&self) -> bool {
        self.get("x-request-id").is_some()
    }
    /// The value of cookie `name`, if any `Cookie` header has it.
    fn cookie(&self, name: &str) -> Option<&str>;
}

/// No headers at all (TCP).
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        std::iter::empty()
    }
    fn cookie(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&[u8]> {
        http::HeaderMap::get(self, name).map(|v| v.as_bytes())
    }
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.get_all("x-forwarded-for").iter().map(|v| v.as_bytes())
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        edge::find_cookie(self, name)
    }
}

/// What kind of traffic a request is: HTTP has a host and a path, a TCP
/// session has neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Tcp,
}

/// Plain data about one request, as every transport can give it.
pub struct RequestFacts<'a, H: Headers> {
    pub kind: Kind,
    /// The request's framing or target was refused before deciding
    /// (`proxy::strict::check`): answered with this, before anything else.
    pub refused: Option<(StatusCode, &'static str)>,
    /// `Host` (or the request target's authority), port included.
    pub host: Option<&'a str>,
    /// The path of the target, without the query.
    pub path: &'a str,
    /// The path and query, for a redirect's `Location`.
    pub path_and_query: &'a str,
    /// The declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// The peer's address (after a PROXY header from a load balancer in front).
    pub peer: IpAddr,
    pub headers: &'a H,
    pub now: Instant,
}

/// A request id: the one the client sent (kept as it is), a new one to add,
/// or none (the frontend does not ask for ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    Off,
    /// The request has an `X-Request-Id` already; it goes on unchanged.
    Given,
    /// A new id, to add as `X-Request-Id`.
    New([u8; 32]),
}

impl RequestId {
    /// The new id as text (None unless `New`).
    pub fn new_str(&self) -> Option<&str> {
        match self {
            RequestId::New(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// An answer given without a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// Why, for the body and the log.
    pub why: Cow<'static, str>,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
    /// `Location` (redirects).
    pub location: Option<String>,
    /// The backend the request was for, if routing got that far (for the log).
    pub backend: Option<Arc<str>>,
    /// Counted as the frontend's local error and logged (a redirect is not
    /// an error; a removed frontend has no counters left to count on).
    pub error: bool,
}

impl Answer {
    fn error(status: StatusCode, why: impl Into<Cow<'static, str>>) -> Self {
        Answer {
            status,
            why: why.into(),
            retry_after: None,
            location: None,
            backend: None,
            error: true,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Forward {
    pub backend: Arc<BackendRt>,
    /// The client's address (behind trusted proxies, the forwarded one).
    pub client_ip: IpAddr,
    /// The balancing key (`balance = "source"` / `"uri"`).
    pub hash: Option<u64>,
    pub request_id: RequestId,
    /// The server a sticky cookie names, while it may take the session.
    pub sticky: Option<usize>,
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Decision {
    Answer(Answer),
    Forward(Forward),
}

/// Decide what to do with a request that came in on `fe` (None: the
/// frontend was removed by a reload while the connection was open).
pub fn decide<H: Headers>(fe: Option<&FrontendRt>, req: &RequestFacts<'_, H>) -> Decision {
    let Some(fe) = fe else {
        return Decision::Answer(Answer {
            error: false,
            ..Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this frontend is being removed",
            )
        });
    };
    fe.stats.requests.fetch_add(1, Ordering::Relaxed);
    let d = decide_on(fe, req);
    if let Decision::Answer(a) = &d {
        if a.error {
            fe.stats.local_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    d
}

fn decide_on<H: Headers>(fe: &FrontendRt, req: &RequestFacts<'_, H>) -> Decision {
    let cfg = &fe.config;
    if let Some((status, why)) = req.refused {
        return Decision::Answer(Answer::error(status, why));
    }
    if req.kind == Kind::Http {
        if let Some(max) = cfg.max_body_bytes {
            if req.content_length.is_some_and(|n| n > max) {
                return Decision::Answer(Answer::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {max} bytes"),
                ));
            }
        }
        if let Some(r) = cfg.redirect_https {
            return Decision::Answer(redirect_https(req.host, req.path_and_query, r.port));
        }
    }
    let routed = match req.kind {
        Kind::Http => fe.route(req.host, req.path),
        Kind::Tcp => fe.default.as_ref().map(|b| (b, None)),
    };
    let Some((backend, route_limiter)) = routed else {
        return Decision::Answer(Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no backend is configured for this host and path",
        ));
    };
    let client_ip = if cfg.trusted_proxies.is_empty() {
        req.peer
    } else {
        edge::client_ip_from(req.peer, req.headers.forwarded_for(), &cfg.trusted_proxies)
    };
    for limiter in [fe.limiter.as_ref(), route_limiter].into_iter().flatten() {
        let key = edge::rate_key(&limiter.config.key, client_ip, |name| req.headers.get(name));
        if let Err(wait) = limiter.check(&key, req.now) {
            // Also a local error; counted apart for the stats page and metrics.
            fe.stats.denied.fetch_add(1, Ordering::Relaxed);
            return Decision::Answer(Answer {
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                backend: Some(backend.name.clone()),
                ..Answer::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate limit exceeded; slow down",
                )
            });
        }
    }
    let request_id = if req.kind == Kind::Tcp || !cfg.request_id {
        RequestId::Off
    } else if req.headers.has_request_id() {
        RequestId::Given
    } else {
        let mut id = [0u8; 32];
        edge::write_request_id(&mut id);
        RequestId::New(id)
    };
    let sticky = backend
        .config
        .sticky
        .as_ref()
        .and_then(|st| req.headers.cookie(&st.cookie))
        .and_then(|v| backend.sticky_server(v));
    Decision::Forward(Forward {
        hash: hash_key(backend.config.balance, client_ip, req.kind, req.path),
        backend: backend.clone(),
        client_ip,
        request_id,
        sticky,
    })
}

/// The balancing key: the client's address (`source`) or the path (`uri`);
/// a TCP session has no path, so `uri` hashes the address there too.
pub fn hash_key(alg: Algorithm, client_ip: IpAddr, kind: Kind, path: &str) -> Option<u64> {
    let alg = match (alg, kind) {
        (Algorithm::Uri, Kind::Tcp) => Algorithm::Source,
        (a, _) => a,
    };
    crate::balance::request_key(alg, client_ip, path.as_bytes())
}

/// 301 to the same host and path over https (HAProxy `redirect scheme https`).
fn redirect_https(host: Option<&str>, path_and_query: &str, port: Option<u16>) -> Answer {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "a request without Host cannot be redirected to https",
        );
    };
    let bare = match host.rsplit_once(':') {
        Some((h, p))
            if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') =>
        {
            h
        }
        Some((h, p)) if h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let pq = if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    };
    let location = match port {
        Some(p) => format!("https://{bare}:{p}{pq}"),
        None => format!("https://{bare}{pq}"),
    };
    if http::HeaderValue::from_str(&location).is_err() {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "the Host header cannot form an https URL",
        );
    }
    Answer {
        why: format!("moved to {location}").into(),
        location: Some(location),
        error: false,
        ..Answer::error(StatusCode::MOVED_PERMANENTLY, "")
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
