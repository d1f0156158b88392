//! The general HTTP path, on hyper: HTTP/2, h2c, TLS, and whatever the
//! relay (`proxy::h1`) does not take. Each request is turned into facts for
//! [`decide`](super::decide::decide) and forwarded through the shared
//! attempt loop (`proxy::attempts`) over [`HyperUp`], this path's
//! [`Upstream`]; only the wire protocol is written here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::answer;
use super::attempts::{attempt, Lost, Upstream, Won};
use super::body::{ClientFault, ReqBody, RespBody, UpstreamBody};
use super::conn::{ConnInfo, ReqCtx};
use super::decide::{self, Decision, Forward, Kind, RequestFacts, RequestId};
use super::edge;
use super::error::{AttemptError, Retry, Stage};
use super::headers::{add_forwarded, strip_hop_by_hop, wants_upgrade};
use super::idle::IdleTimeout;
use super::log::Pending;
use super::pool::{self, Idle, Sender};
use super::rawup::{self, RawBody, RawUp};
use super::strict;
use super::version::{Marks, Versions};
use crate::runtime::{BackendRt, FrontendRt, Runtime, ServerState};

/// Per-connection facts every request on it needs.
struct Conn {
    info: ConnInfo,
    accepted: Instant,
    first_done: AtomicBool,
    /// HTTP/1 requests served so far, and which asked for HTTP/2 or later.
    h1_requests: AtomicU64,
    versions: Arc<Marks>,
}

/// Which HTTP version a connection speaks.
#[derive(Clone, Copy)]
pub(crate) enum Proto {
    Http1,
    Http2,
    /// HTTP/1.1, or HTTP/2 when the client opens with the h2 preface (h2c).
    Auto,
}

/// Serve a client connection with hyper, in the protocol `proto`.
pub(crate) async fn serve_io<I>(info: ConnInfo, fe: Arc<FrontendRt>, stream: I, proto: Proto)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = IdleTimeout::new(stream, fe.config.timeouts.client_idle);
    let versions = Arc::new(Marks::default());
    let stream = match proto {
        Proto::Http2 => Versions::off(stream),
        Proto::Http1 | Proto::Auto => Versions::new(
            stream,
            versions.clone(),
            fe.config.max_header_bytes,
            matches!(proto, Proto::Auto),
        ),
    };
    let io = TokioIo::new(stream);
    let (rt, client) = (info.rt.clone(), info.client);
    let conn = Arc::new(Conn {
        info,
        accepted: Instant::now(),
        first_done: AtomicBool::new(false),
        h1_requests: AtomicU64::new(0),
        versions,
    });
    let svc = service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        async move {
            let h1 = req.version() < Version::HTTP_2;
            // hyper calls this once per request head, in their order.
            let too_new = h1
                && conn
                    .versions
                    .is_bad(conn.h1_requests.fetch_add(1, Ordering::Relaxed));
            let rt = conn.info.rt.clone();
            // Boxed: hyper spawns this future as a task per HTTP/2 stream,
            // and spawning moved the whole request path's state (~10 KB)
            // several times — 68 % of the proxy's instructions (callgrind).
            let mut resp = Box::pin(handle(conn, req, too_new)).await;
            // Draining (stop or upgrade): the client sends its next request
            // on a new connection, which the next process accepts.
            if h1 && rt.is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let t = &fe.config.timeouts;
    match proto {
        Proto::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(t.client_header)
                .max_header_size(fe.config.max_header_bytes)
                .max_headers(fe.config.max_headers);
            let c = b.serve_connection(io, svc).with_upgrades();
            drive(&rt, client, false, c, |c| c.graceful_shutdown()).await;
        }
        Proto::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)));
            h2_limits!(b, fe.config);
            let c = b.serve_connection(io, svc);
            drive(&rt, client, true, c, |c| c.graceful_shutdown()).await;
        }
        Proto::Auto => {
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(t.client_header)
                // The auto builder has no header-size knob; its read buffer bounds the head.
                .max_buf_size(fe.config.max_header_bytes.max(8192))
                .max_headers(fe.config.max_headers);
            let mut h2 = b.http2();
            h2.timer(TokioTimer::new());
            h2_limits!(h2, fe.config);
            let c = b.serve_connection_with_upgrades(io, svc);
            drive(&rt, client, false, c, |c| c.graceful_shutdown()).await;
        }
    }
}

/// Apply a frontend's HTTP/2 limits to a hyper HTTP/2 server builder (the
/// plain one and the auto builder's differ in type, not in these methods).
/// Every buffer a client can make the proxy fill is bounded: request bodies
/// by the windows, response bodies by the send buffer (hyper's default,
/// 400 KiB a stream, is what let non-reading clients grow RSS to hundreds of
/// MiB), streams by the concurrency limit, rapid resets by the pending-reset cap.
macro_rules! h2_limits {
    ($b:expr, $cfg:expr) => {{
        let l = &$cfg.http2;
        $b.max_header_list_size($cfg.max_header_bytes as u32)
            .max_concurrent_streams(l.max_concurrent_streams)
            .initial_stream_window_size(l.stream_window)
            .initial_connection_window_size(l.connection_window)
            .max_send_buf_size(l.max_send_buffer)
            .max_frame_size(16_384)
            .max_pending_accept_reset_streams(l.max_pending_resets);
    }};
}
use h2_limits;

/// Run a connection to its end; when the process starts draining, ask it to
/// finish gracefully. HTTP/2 (`h2`): GOAWAY at once. HTTP/1: its answers say
/// `Connection: close` from then on; one still open after
/// [`super::DRAIN_IDLE_LINGER`] is closed once its current exchange ends.
async fn drive<C, E>(
    rt: &Runtime,
    client: SocketAddr,
    h2: bool,
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let drain_started = rt.until_draining(usize::from(client.port()));
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = drain_started => {
            let lingered = if h2 {
                None
            } else {
                tokio::time::timeout(super::DRAIN_IDLE_LINGER, conn.as_mut()).await.ok()
            };
            match lingered {
                Some(r) => r,
                None => {
                    graceful(conn.as_mut());
                    conn.await
                }
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

/// Serve one request. `too_new`: its request line named HTTP/2 or later on
/// an HTTP/1 connection (`proxy::version`), read by hyper as 1.1.
async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>, too_new: bool) -> Response<RespBody> {
    let start = Instant::now();
    let tq = if conn.first_done.swap(true, Ordering::Relaxed) {
        Duration::ZERO
    } else {
        start.duration_since(conn.accepted)
    };
    let (fe, format) = {
        let snap = conn.info.rt.snapshot();
        (
            snap.frontends.get(&*conn.info.frontend).cloned(),
            snap.config.log.access,
        )
    };
    let ctx = ReqCtx {
        format,
        start,
        tq,
        method: req.method().clone(),
        uri: req.uri().clone(),
    };
    // Strict framing first: what it refuses is answered by `decide`.
    let refused = if too_new {
        // RFC 9110 §15.6.6 (HAProxy answers the same).
        Some((
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "only HTTP/1.x is spoken on this connection",
        ))
    } else {
        strict::check(req.method(), req.uri(), req.headers()).err()
    };
    if fe.as_ref().is_some_and(|fe| fe.config.normalize_path) {
        if let Some(p) = strict::normalize_path(req.uri().path()) {
            let pq = match req.uri().query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = pq.parse().ok().or(parts.path_and_query);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    // Content-Length together with Transfer-Encoding never gets here as such:
    // hyper drops the Content-Length, decodes the chunked body and closes the
    // connection after the response (RFC 9112 §6.3), so nothing can be
    // smuggled behind it; upstream sees one unambiguous chunked request.
    let decision = {
        let h = req.headers();
        let host = strict::authority(req.uri(), h);
        let facts = RequestFacts {
            kind: Kind::Http,
            refused,
            host,
            path: req.uri().path(),
            path_and_query: req.uri().path_and_query().map_or("", |p| p.as_str()),
            content_length: h
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
            peer: conn.info.client.ip(),
            headers: h,
            now: Instant::now(),
        };
        decide::decide(fe.as_deref(), &facts)
    };
    let (fe, f) = match (fe, decision) {
        (Some(fe), Decision::Forward(f)) => (fe, f),
        (_, Decision::Answer(a)) => {
            if a.error {
                ctx.log_local(
                    &conn.info,
                    a.backend.as_deref().unwrap_or("-"),
                    a.status.as_u16(),
                    &a.why,
                );
            }
            let mut r = answer::from_decision(&a);
            if refused.is_some() && req.version() < Version::HTTP_2 {
                // What follows a refused head cannot be trusted to be the
                // next request.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
        (None, Decision::Forward(_)) => {
            return answer::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "this frontend is being removed",
            )
        }
    };
    if let RequestId::New(_) = f.request_id {
        if let Some(v) = f
            .request_id
            .new_str()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            req.headers_mut()
                .insert(HeaderName::from_static("x-request-id"), v);
        }
    }
    forward(&conn.info, &fe, f, req, ctx).await
}

/// Sends one request on pooled or new hyper connections: the hyper path's
/// [`Upstream`].
struct HyperUp<'a> {
    backend: &'a BackendRt,
    parts: &'a mut http::request::Parts,
    upstream_uri: &'a Uri,
    host: Option<&'a HeaderValue>,
    has_body: bool,
    /// The client's body until an attempt takes it (given back when unsent).
    body: Option<ReqBody>,
    /// How reading the client's body went: once it failed (aborted,
    /// malformed) or while it is unfinished at the response timeout, the
    /// failure is the client's, whatever the upstream connection says.
    fault: ClientFault,
    /// The client's body is chunked: an HTTP/1.1 server is told so again
    /// (hyper's client sends no body for a GET without it).
    chunked: bool,
    /// A connection carrying a PROXY header belongs to this client: never shared.
    proxy_header: Option<Vec<u8>>,
    /// HTTP/2 to the server (never for an upgrade: WebSocket needs HTTP/1.1).
    h2: bool,
}

impl Upstream for HyperUp<'_> {
    type Conn = Sender;
    type Answer = (Response<Incoming>, Sender);

    async fn connect(&mut self, server: &Arc<ServerState>) -> Result<(Sender, bool), AttemptError> {
        let cfg = &self.backend.config;
        while let Some(mut s) = self
            .proxy_header
            .is_none()
            .then(|| pool::take(server, cfg.timeouts.pool_idle, self.h2))
            .flatten()
        {
            if let Ok(Ok(())) = tokio::time::timeout(cfg.timeouts.connect, s.ready()).await {
                return Ok((s, true));
            }
            if self.h2 {
                break; // the shared connection is gone; a new one replaces it below
            }
        }
        let tls = self.backend.tls.as_deref();
        // Boxed: dialing, TLS and the HTTP/1 or HTTP/2 handshake are a large
        // future, and without the box every request's future (one per h2
        // stream, copied into its box) carried it, pooled connection or not.
        match Box::pin(pool::connect(
            server.address(),
            cfg.timeouts.connect,
            tls,
            self.proxy_header.as_deref(),
            self.h2,
        ))
        .await
        {
            Ok(s) => {
                pool::share_h2(server, &s);
                Ok((s, false))
            }
            Err(e) => Err(AttemptError::connect(server, &e)),
        }
    }

    async fn send(
        &mut self,
        server: &Arc<ServerState>,
        mut sender: Sender,
        reused: bool,
        again: bool,
    ) -> Result<(Response<Incoming>, Sender), AttemptError> {
        let body = if self.has_body {
            match self.body.take() {
                Some(mut b) => {
                    b.count_for(server);
                    b
                }
                // Cannot happen: a failure that consumed the body is `Never`.
                None => {
                    return Err(AttemptError::server(
                        Stage::Send,
                        Retry::Never,
                        "the body went out with an earlier attempt",
                    ))
                }
            }
        } else {
            ReqBody::Empty
        };
        // Keep the headers for another attempt only when one may happen.
        let headers = if again {
            self.parts.headers.clone()
        } else {
            std::mem::take(&mut self.parts.headers)
        };
        let mut up = Request::new(body);
        *up.method_mut() = self.parts.method.clone();
        if sender.is_h2() {
            // HTTP/2 carries scheme and authority in the request itself.
            *up.uri_mut() = h2_uri(
                self.upstream_uri,
                self.host,
                server.address(),
                self.backend.tls.is_some(),
            );
            *up.version_mut() = Version::HTTP_2;
        } else {
            *up.uri_mut() = self.upstream_uri.clone();
            *up.version_mut() = Version::HTTP_11;
        }
        *up.headers_mut() = headers;
        if self.chunked && !sender.is_h2() {
            up.headers_mut().insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let head = head_len(&up);
        match sender.try_send_request(up).await {
            Ok(r) => {
                server.add_bytes(head, 0);
                Ok((r, sender))
            }
            Err(mut e) => {
                if let Some(unsent) = e.take_message() {
                    // Never written: the pooled connection had been closed by
                    // the server. Again on a fresh connection, body intact.
                    if self.has_body {
                        self.body = Some(unsent.into_body());
                    }
                    let retry = if reused { Retry::Stale } else { Retry::Another };
                    return Err(AttemptError::server(Stage::Send, retry, e.into_error()));
                }
                server.add_bytes(head, 0);
                let err = e.into_error();
                if self.has_body && self.fault.failed() {
                    return Err(AttemptError::client(
                        Stage::Body,
                        format!("the request body was malformed or cut short: {err}"),
                    ));
                }
                let retry = match (reused, self.has_body) {
                    // Sent on a reused connection that the server was closing:
                    // the keep-alive race, not a sign the server is unhealthy.
                    (true, false) => Retry::Stale,
                    (false, false) => Retry::Another,
                    // Part of the body may have been sent: not safe to replay.
                    (_, true) => Retry::Never,
                };
                Err(AttemptError::server(Stage::Head, retry, err))
            }
        }
    }

    fn client_timeout(&self) -> Option<AttemptError> {
        (self.has_body && self.fault.unfinished()).then(AttemptError::body_timeout)
    }
}

async fn forward(
    conn: &ConnInfo,
    fe: &FrontendRt,
    f: Forward,
    mut req: Request<Incoming>,
    ctx: ReqCtx,
) -> Response<RespBody> {
    let backend = f.backend.clone();
    let cfg = &backend.config;
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let fault = ClientFault::default();
    let body = has_body.then(|| ReqBody::Stream(body, None, fault.clone()));

    let host =
        strict::authority(&parts.uri, &parts.headers).and_then(|a| HeaderValue::from_str(a).ok());
    // `strict::check` let through only a single `chunked`; hyper's client
    // would send no body at all for a GET without it (RFC 9110 §9.3.1 lets
    // a GET have one: forwarded like HAProxy does).
    let chunked = has_body && parts.headers.contains_key(header::TRANSFER_ENCODING);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(
        &mut parts.headers,
        conn.client.ip(),
        conn.proto(),
        host.as_ref(),
    );
    if let Some(h) = &host {
        // The target's authority wins over Host (RFC 9112 §3.2.2, RFC 9113
        // §8.3.1): the server sees the one the request was routed on.
        parts.headers.insert(header::HOST, h.clone());
    }
    let upstream_uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let request_id = match &f.request_id {
        RequestId::Off => String::new(),
        RequestId::New(_) => f.request_id.new_str().unwrap_or("").to_string(),
        RequestId::Given => parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    };
    let fe_cfg = &fe.config;
    if !fe_cfg.request_headers.is_empty() {
        let vars = edge::Vars {
            client_ip: f.client_ip,
            request_id: &request_id,
            frontend: &conn.frontend,
            backend: &cfg.name,
            server: "",
        };
        edge::apply_rules(&mut parts.headers, &fe_cfg.request_headers, &vars);
    }
    // Sticky sessions: `decide` found the cookie's server; the cookie itself
    // never reaches the servers (`indirect`).
    if let Some(st) = &cfg.sticky {
        edge::strip_cookie(&mut parts.headers, &st.cookie);
    }
    let proxy_header = cfg
        .proxy_protocol
        .map(|v| pool::proxy_header(v, conn.client, conn.local));
    let pooled = proxy_header.is_none();
    // Without a body, to a plain HTTP/1.1 server: written and read in this
    // task (`proxy::rawup`), not through hyper's client.
    let raw =
        !has_body && !upgrade && pooled && !cfg.http2 && backend.tls.is_none() && rawup::enabled();
    let won = if raw {
        let mut up = RawUp {
            backend: &backend,
            head: rawup::encode_head(
                &parts.method,
                &upstream_uri,
                &parts.headers,
                parts.version >= Version::HTTP_2,
            ),
            head_request: parts.method == http::Method::HEAD,
        };
        let won = attempt(
            &backend,
            &fe.stats,
            (f.hash, f.sticky),
            Some(cfg.timeouts.response),
            &mut up,
        )
        .await;
        won.map(|w| with_answer(w, Got::Raw))
    } else {
        let mut up = HyperUp {
            backend: &backend,
            parts: &mut parts,
            upstream_uri: &upstream_uri,
            host: host.as_ref(),
            has_body,
            body,
            fault,
            chunked,
            proxy_header,
            h2: cfg.http2 && !upgrade,
        };
        // Boxed, so that its state (hyper's client, bodies) is not part of
        // every request's future: the raw upstream above is the common case.
        let won = Box::pin(attempt(
            &backend,
            &fe.stats,
            (f.hash, f.sticky),
            Some(cfg.timeouts.response),
            &mut up,
        ))
        .await;
        won.map(|w| with_answer(w, |(r, s)| Got::Hyper(r, s)))
    };
    let Won {
        answer,
        server,
        idx,
        guard,
        tc,
        tr,
        retries,
    } = match won {
        Ok(w) => w,
        Err(lost) => {
            let (status, why) = match &lost {
                Lost::Server(f) => (f.status, f.why.as_str()),
                Lost::Client(e) => (e.status, e.why.as_str()),
            };
            ctx.log_local(conn, &cfg.name, status.as_u16(), why);
            let mut r = answer::response(status, why);
            if matches!(lost, Lost::Client(_)) && parts.version < Version::HTTP_2 {
                // The rest of the body is unread: the connection cannot
                // carry another request.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
    };
    let mut pending = Pending {
        format: ctx.format,
        client: conn.client,
        frontend: conn.frontend.clone(),
        backend: backend.name.clone(),
        stats: backend.stats.clone(),
        frontend_stats: fe.stats.clone(),
        guard,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        status: answer.status().as_u16(),
        tq: ctx.tq,
        start: ctx.start,
        tc,
        tr,
        retries,
    };
    let (mut rparts, got) = match answer {
        Got::Hyper(resp, sender) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    let open = conn.rt.conns.track();
                    return relay_upgrade(resp, client_upgrade, sender, pending, open);
                }
            }
            let (rparts, rbody) = resp.into_parts();
            (rparts, Got::Hyper(rbody, sender))
        }
        Got::Raw(mut a) => {
            let mut r = Response::new(());
            *r.status_mut() = a.status;
            *r.headers_mut() = std::mem::take(&mut a.headers);
            (r.into_parts().0, Got::Raw(a))
        }
    };
    strip_hop_by_hop(&mut rparts.headers, false);
    if let Some(st) = &cfg.sticky {
        if f.sticky != Some(idx) {
            set_sticky_cookie(&mut rparts.headers, &st.cookie, backend.sticky_ids.get(idx));
        }
    }
    if !fe_cfg.response_headers.is_empty() {
        let vars = edge::Vars {
            client_ip: f.client_ip,
            request_id: &request_id,
            frontend: &conn.frontend,
            backend: &cfg.name,
            server: server.name(),
        };
        edge::apply_rules(&mut rparts.headers, &fe_cfg.response_headers, &vars);
    }
    pending.status = rparts.status.as_u16();
    let max_idle = if pooled { cfg.pool_max_idle } else { 0 };
    let body = match got {
        Got::Hyper(rbody, sender) => {
            let body = UpstreamBody {
                inner: rbody,
                conn: Some(Idle {
                    sender,
                    pool: server.clone(),
                    max_idle,
                    max_age: cfg.timeouts.pool_idle,
                }),
                log: Some(pending),
                bytes: 0,
            };
            if body.inner.is_end_stream() {
                // No body (HEAD, 204, 304): finish now so the connection is reusable at once.
                drop_finished(body)
            } else {
                RespBody::Upstream(Box::new(body))
            }
        }
        Got::Raw(a) => {
            let mut body = RawBody::new(a, server, max_idle, cfg.timeouts.pool_idle, pending);
            if body.is_empty() {
                body.finish(crate::runtime::stats::ResponseEnd::Clean);
                RespBody::empty()
            } else {
                RespBody::Raw(Box::new(body))
            }
        }
    };
    Response::from_parts(rparts, body)
}

/// The length of a request's head as HTTP/1.1 writes it (request line,
/// fields, blank line): what `fulcrum_server_bytes_in_total` counts for a
/// head on the hyper path, as the relay counts the head it writes. An
/// HTTP/2 server gets the same head HPACK-coded; it is counted alike.
fn head_len<B>(r: &Request<B>) -> u64 {
    let target = r.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize = r
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (r.method().as_str().len() + 1 + target + b" HTTP/1.1\r\n".len() + fields + 2) as u64
}

/// A server's answer on either upstream (`H`: hyper's response, or its body
/// once the head is taken).
enum Got<H> {
    Hyper(H, Sender),
    Raw(rawup::Answer),
}

impl Got<Response<Incoming>> {
    fn status(&self) -> StatusCode {
        match self {
            Got::Hyper(r, _) => r.status(),
            Got::Raw(a) => a.status,
        }
    }
}

/// `w` with its answer mapped.
fn with_answer<A, B>(w: Won<A>, f: impl FnOnce(A) -> B) -> Won<B> {
    Won {
        answer: f(w.answer),
        server: w.server,
        idx: w.idx,
        guard: w.guard,
        tc: w.tc,
        tr: w.tr,
        retries: w.retries,
    }
}

/// The absolute URI an HTTP/2 upstream request needs (authority from the
/// client's Host, else the server's address).
fn h2_uri(path: &Uri, host: Option<&HeaderValue>, server: SocketAddr, tls: bool) -> Uri {
    let authority = host
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| server.to_string());
    let pq = path.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let scheme = if tls { "https" } else { "http" };
    Uri::try_from(format!("{scheme}://{authority}{pq}")).unwrap_or_else(|_| path.clone())
}

/// HAProxy `cookie NAME insert indirect nocache`: name the server in a cookie
/// and keep shared caches from storing this response.
fn set_sticky_cookie(h: &mut http::HeaderMap, name: &str, id: Option<&String>) {
    let Some(id) = id else { return };
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly")) {
        h.append(header::SET_COOKIE, v);
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

fn drop_finished(mut body: UpstreamBody) -> RespBody {
    if let Some(c) = body.conn.take() {
        c.release();
    }
    if let Some(l) = body.log.take() {
        l.finish(0, true);
    }
    RespBody::empty()
}

/// Answer 101 to the client and splice the two upgraded connections together.
///
/// `open` counts the tunnel as an open client connection: hyper's connection
/// future ends at the upgrade, so without it a draining process (an upgraded-away
/// or stopping one) saw no connection left and exited under a live WebSocket
/// (found by bench/soak.sh). With it, the tunnel runs to its end or to
/// `hard_stop_after`, like a TCP session.
fn relay_upgrade(
    mut resp: Response<Incoming>,
    client: hyper::upgrade::OnUpgrade,
    sender: Sender,
    pending: Pending,
    open: crate::runtime::conns::ConnGuard,
) -> Response<RespBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let _keep = (sender, open);
        let (mut bytes_in, mut bytes_out) = (0, 0);
        let mut ok = false;
        if let (Ok(c), Ok(u)) = tokio::join!(client, upstream) {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                (bytes_in, bytes_out) = (a, b);
                ok = true;
            }
        }
        pending.guard.server().add_bytes(bytes_in, 0);
        pending.finish(bytes_out, ok);
    });
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    Response::from_parts(parts, RespBody::empty())
}
