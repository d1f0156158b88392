//! The HTTP/1.1 reverse proxy: serve a client connection, route each request,
//! pick a server, forward with retries onto other servers, stream the answer.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::attempts::Attempts;
use super::body::{ReqBody, RespBody, UpstreamBody};
use super::edge;
use super::headers::{add_forwarded, strip_hop_by_hop, wants_upgrade};
use super::idle::IdleTimeout;
use super::log::{self, Pending};
use super::pool::{self, Idle, Sender};
use crate::balance::request_key;
use crate::config::types::AccessLog;
use crate::runtime::{BackendRt, FrontendRt, Runtime};

/// Per-connection facts every request on it needs.
struct Conn {
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    client: SocketAddr,
    /// The address the client connected to (for PROXY headers to servers).
    local: SocketAddr,
    accepted: Instant,
    first_done: AtomicBool,
    /// `X-Forwarded-Proto`: "http" or "https".
    proto: &'static str,
}

/// Serve one client connection until it closes, times out or the process
/// drains: TLS handshake first when the frontend terminates TLS, then HTTP/1.1
/// or HTTP/2 (by ALPN, or by the h2c preface when `h2c` is on).
pub(crate) async fn serve(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    count: ConnCount,
) {
    let guards = super::h1::ConnGuards::new(&rt, count);
    let relay = super::h1::frontend_eligible(&fe);
    let Some(acceptor) = fe.tls.clone() else {
        if relay {
            return super::h1::serve(rt, frontend, fe, stream, (client, local), false, guards)
                .await;
        }
        let _guards = guards;
        let proto = if fe.config.h2c {
            Proto::Auto
        } else {
            Proto::Http1
        };
        // Boxed here and below: a connection task is as big as its largest
        // path, and the relay's is a quarter of hyper's.
        return Box::pin(serve_io(
            rt,
            frontend,
            fe,
            stream,
            (client, local),
            false,
            proto,
        ))
        .await;
    };
    Box::pin(serve_tls(
        rt,
        frontend,
        fe,
        (acceptor, stream),
        (client, local),
        relay,
        guards,
    ))
    .await
}

async fn serve_tls(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    (acceptor, stream): (tokio_rustls::TlsAcceptor, TcpStream),
    (client, local): (SocketAddr, SocketAddr),
    relay: bool,
    guards: super::h1::ConnGuards,
) {
    // The handshake counts against the header timeout, so a silent client
    // cannot hold a connection open by never finishing it.
    match tokio::time::timeout(fe.config.timeouts.client_header, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            fe.stats.record_tls(tls.get_ref().1.handshake_kind());
            let tls = crate::tls::alert_flush::AlertFlush(tls);
            if relay && !h2 {
                return super::h1::serve(rt, frontend, fe, tls, (client, local), true, guards)
                    .await;
            }
            let _guards = guards;
            let proto = if h2 { Proto::Http2 } else { Proto::Http1 };
            Box::pin(serve_io(
                rt,
                frontend,
                fe,
                tls,
                (client, local),
                true,
                proto,
            ))
            .await;
        }
        Ok(Err(e)) => {
            fe.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%client, error = %e, "TLS handshake failed")
        }
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}

/// Which HTTP version a connection speaks.
#[derive(Clone, Copy)]
pub(crate) enum Proto {
    Http1,
    Http2,
    /// HTTP/1.1, or HTTP/2 when the client opens with the h2 preface (h2c).
    Auto,
}

pub(crate) async fn serve_io<I>(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    stream: I,
    (client, local): (SocketAddr, SocketAddr),
    https: bool,
    proto: Proto,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(IdleTimeout::new(stream, fe.config.timeouts.client_idle));
    let conn = Arc::new(Conn {
        rt: rt.clone(),
        frontend,
        client,
        local,
        accepted: Instant::now(),
        first_done: AtomicBool::new(false),
        proto: if https { "https" } else { "http" },
    });
    let svc = service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        async move {
            let h1 = req.version() < Version::HTTP_2;
            let rt = conn.rt.clone();
            let mut resp = handle(conn, req).await;
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
                .max_header_list_size(fe.config.max_header_bytes as u32)
                .keep_alive_interval(Some(Duration::from_secs(30)));
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
            b.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(fe.config.max_header_bytes as u32);
            let c = b.serve_connection_with_upgrades(io, svc);
            drive(&rt, client, false, c, |c| c.graceful_shutdown()).await;
        }
    }
}

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

/// Counts one open client connection on a frontend while alive.
pub(crate) struct ConnCount(Arc<crate::runtime::stats::FrontendStats>);

impl ConnCount {
    pub(crate) fn new(fe: &FrontendRt) -> Self {
        fe.stats.connections.fetch_add(1, Ordering::Relaxed);
        ConnCount(fe.stats.clone())
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.closed.notify_one();
    }
}

/// The body of a local answer: `503 Service Unavailable: why`.
pub(crate) fn local_body(status: StatusCode, why: &str) -> String {
    format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// A short local answer that says why.
pub(crate) fn local_response(status: StatusCode, why: &str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(local_body(status, why)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Facts about one request that forwarding and logging need.
struct ReqCtx {
    start: Instant,
    tq: Duration,
    format: AccessLog,
    /// The client's address (behind trusted proxies, the forwarded one).
    client_ip: IpAddr,
    request_id: String,
    fe: Arc<FrontendRt>,
}

fn local(
    conn: &Conn,
    ctx: &ReqCtx,
    req: &Request<Incoming>,
    backend: &str,
    status: StatusCode,
    why: &str,
) -> Response<RespBody> {
    ctx.fe.stats.local_errors.fetch_add(1, Ordering::Relaxed);
    log::local(
        ctx.format,
        conn.client,
        &conn.frontend,
        backend,
        req.method(),
        req.uri(),
        status.as_u16(),
        ctx.start,
        why,
    );
    local_response(status, why)
}

async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<RespBody> {
    let start = Instant::now();
    let tq = if conn.first_done.swap(true, Ordering::Relaxed) {
        Duration::ZERO
    } else {
        start.duration_since(conn.accepted)
    };
    let (fe, format) = {
        let snap = conn.rt.snapshot();
        (
            snap.frontends.get(&*conn.frontend).cloned(),
            snap.config.log.access,
        )
    };
    let Some(fe) = fe else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "this frontend is being removed",
        );
    };
    fe.stats.requests.fetch_add(1, Ordering::Relaxed);
    let client_ip = edge::client_ip(conn.client.ip(), req.headers(), &fe.config.trusted_proxies);
    let mut ctx = ReqCtx {
        start,
        tq,
        format,
        client_ip,
        request_id: String::new(),
        fe: fe.clone(),
    };
    let h = req.headers();
    // Content-Length together with Transfer-Encoding never gets here as such:
    // hyper drops the Content-Length, decodes the chunked body and closes the
    // connection after the response (RFC 9112 §6.3), so nothing can be
    // smuggled behind it; upstream sees one unambiguous chunked request.
    if let Some(max) = fe.config.max_body_bytes {
        let declared = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return local(
                &conn,
                &ctx,
                &req,
                "-",
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            );
        }
    }
    let host = h
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(r) = fe.config.redirect_https {
        return redirect_https(host, req.uri(), r.port);
    }
    let Some((backend, route_limiter)) = fe.route(host, req.uri().path()) else {
        return local(
            &conn,
            &ctx,
            &req,
            "-",
            StatusCode::SERVICE_UNAVAILABLE,
            "no backend is configured for this host and path",
        );
    };
    let (backend, route_limiter) = (backend.clone(), route_limiter.cloned());
    for limiter in [fe.limiter.as_ref(), route_limiter.as_ref()]
        .into_iter()
        .flatten()
    {
        let key = edge::rate_key(&limiter.config.key, client_ip, |name| {
            req.headers().get(name).map(|v| v.as_bytes())
        });
        if let Err(wait) = limiter.check(&key, Instant::now()) {
            ctx.fe.stats.denied.fetch_add(1, Ordering::Relaxed);
            let mut r = local(
                &conn,
                &ctx,
                &req,
                &backend.config.name,
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; slow down",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    }
    if fe.config.request_id {
        let name = HeaderName::from_static("x-request-id");
        match req.headers().get(&name).and_then(|v| v.to_str().ok()) {
            Some(id) => ctx.request_id = id.to_string(),
            None => {
                ctx.request_id = edge::new_request_id();
                if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
                    req.headers_mut().insert(name, v);
                }
            }
        }
    }
    forward(&conn, backend, req, ctx).await
}

/// 301 to the same host and path over https (HAProxy `redirect scheme https`).
fn redirect_https(host: Option<&str>, uri: &http::Uri, port: Option<u16>) -> Response<RespBody> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return local_response(
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
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = match port {
        Some(p) => format!("https://{bare}:{p}{pq}"),
        None => format!("https://{bare}{pq}"),
    };
    let mut r = local_response(
        StatusCode::MOVED_PERMANENTLY,
        &format!("moved to {location}"),
    );
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => local_response(
            StatusCode::BAD_REQUEST,
            "the Host header cannot form an https URL",
        ),
    }
}

async fn forward(
    conn: &Conn,
    backend: Arc<BackendRt>,
    mut req: Request<Incoming>,
    ctx: ReqCtx,
) -> Response<RespBody> {
    let ReqCtx {
        start, tq, format, ..
    } = ctx;
    let cfg = &backend.config;
    let hash = request_key(cfg.balance, ctx.client_ip, req.uri().path().as_bytes());
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let mut body_slot = has_body.then_some(ReqBody::Stream(body, None));

    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(
        &mut parts.headers,
        conn.client.ip(),
        conn.proto,
        host.as_ref(),
    );
    if let Some(h) = &host {
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, h.clone());
        }
    }
    let upstream_uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let fe_cfg = &ctx.fe.config;
    if !fe_cfg.request_headers.is_empty() {
        let vars = edge::Vars {
            client_ip: ctx.client_ip,
            request_id: &ctx.request_id,
            frontend: &conn.frontend,
            backend: &cfg.name,
            server: "",
        };
        edge::apply_rules(&mut parts.headers, &fe_cfg.request_headers, &vars);
    }
    // Sticky sessions: the cookie's server keeps the session while it is up
    // (even drained); the cookie itself never reaches the servers (`indirect`).
    let sticky_to = cfg.sticky.as_ref().and_then(|st| {
        let to =
            edge::find_cookie(&parts.headers, &st.cookie).and_then(|v| backend.sticky_server(v));
        edge::strip_cookie(&mut parts.headers, &st.cookie);
        to
    });

    let mut att = Attempts::new(&backend, hash, sticky_to);
    while let Some((server, idx)) = att.next_server().await {
        let guard = server.begin_in(&backend.stats);
        let tc_start = Instant::now();

        // An upstream connection: a pooled one if it is still good, else a new one.
        let mut reused = false;
        let mut sender: Option<Sender> = None;
        // A connection that carries a PROXY header belongs to this client: never shared.
        let proxy_header = cfg
            .proxy_protocol
            .map(|v| pool::proxy_header(v, conn.client, conn.local));
        // WebSocket upgrades need HTTP/1.1 even towards an h2 backend.
        let h2 = cfg.http2 && !upgrade;
        while let Some(mut s) = proxy_header
            .is_none()
            .then(|| server.pool.take(cfg.timeouts.pool_idle, h2))
            .flatten()
        {
            if let Ok(Ok(())) = tokio::time::timeout(cfg.timeouts.connect, s.ready()).await {
                sender = Some(s);
                reused = true;
                break;
            }
            if h2 {
                break; // the shared connection is gone; a new one replaces it below
            }
        }
        let mut sender = match sender {
            Some(s) => s,
            None => match pool::connect(
                server.address(),
                cfg.timeouts.connect,
                backend.tls.as_deref(),
                proxy_header.as_deref(),
                h2,
            )
            .await
            {
                Ok(s) => {
                    server.pool.share_h2(&s);
                    s
                }
                Err(e) => {
                    att.connect_failed(&server, idx, &e);
                    continue;
                }
            },
        };
        let tc = tc_start.elapsed();

        let body = if has_body {
            match body_slot.take() {
                Some(mut b) => {
                    b.count_for(&server);
                    b
                }
                None => break, // the body went out with an earlier attempt
            }
        } else {
            ReqBody::Empty
        };
        // Keep the headers for another attempt only when one may happen.
        let headers = if att.may_follow(reused) {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        if sender.is_h2() {
            // HTTP/2 carries scheme and authority in the request itself.
            *up.uri_mut() = h2_uri(
                &upstream_uri,
                host.as_ref(),
                server.address(),
                backend.tls.is_some(),
            );
            *up.version_mut() = Version::HTTP_2;
        } else {
            *up.uri_mut() = upstream_uri.clone();
            *up.version_mut() = Version::HTTP_11;
        }
        *up.headers_mut() = headers;

        let tr_start = Instant::now();
        let result = tokio::time::timeout(cfg.timeouts.response, sender.try_send_request(up)).await;
        let resp = match result {
            Err(_) => {
                server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout);
                server.record_status(504);
                let why = format!(
                    "server {}/{} did not answer within {:?}",
                    cfg.name,
                    server.name(),
                    cfg.timeouts.response
                );
                log::local(
                    format,
                    conn.client,
                    &conn.frontend,
                    &cfg.name,
                    &parts.method,
                    &parts.uri,
                    504,
                    start,
                    "response timeout",
                );
                return local_response(StatusCode::GATEWAY_TIMEOUT, &why);
            }
            Ok(Err(mut e)) => {
                if let Some(unsent) = e.take_message() {
                    // Never written: the pooled connection had been closed by the
                    // server. Try again on a fresh connection, body intact.
                    if has_body {
                        body_slot = Some(unsent.into_body());
                    }
                    if reused && att.retry_stale() {
                        continue;
                    }
                }
                let err = e.into_error();
                if reused && !has_body && att.retry_stale() {
                    // Sent on a reused connection that the server was closing:
                    // the keep-alive race, not a sign the server is unhealthy.
                    continue;
                }
                att.send_failed(&server, idx, err);
                if has_body && body_slot.is_none() {
                    break; // part of the body may have been sent: not safe to replay
                }
                continue;
            }
            Ok(Ok(r)) => r,
        };
        server.record_success();
        let tr = tr_start.elapsed();
        let mut pending = Pending {
            format,
            client: conn.client,
            frontend: conn.frontend.clone(),
            backend: backend.name.clone(),
            stats: backend.stats.clone(),
            guard,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            status: resp.status().as_u16(),
            tq,
            start,
            tc: if reused { Duration::ZERO } else { tc },
            tr,
            retries: att.retries(),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let open = conn.rt.conns.track();
                return relay_upgrade(resp, client_upgrade, sender, pending, open);
            }
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers, false);
        if let Some(st) = &cfg.sticky {
            if sticky_to != Some(idx) {
                set_sticky_cookie(&mut rparts.headers, &st.cookie, backend.sticky_ids.get(idx));
            }
        }
        if !fe_cfg.response_headers.is_empty() {
            let vars = edge::Vars {
                client_ip: ctx.client_ip,
                request_id: &ctx.request_id,
                frontend: &conn.frontend,
                backend: &cfg.name,
                server: server.name(),
            };
            edge::apply_rules(&mut rparts.headers, &fe_cfg.response_headers, &vars);
        }
        pending.status = rparts.status.as_u16();
        let body = UpstreamBody {
            inner: rbody,
            conn: Some(Idle {
                sender,
                pool: server.clone(),
                max_idle: if proxy_header.is_some() {
                    0
                } else {
                    cfg.pool_max_idle
                },
                max_age: cfg.timeouts.pool_idle,
            }),
            log: Some(pending),
            bytes: 0,
        };
        let body = if body.inner.is_end_stream() {
            // No body (HEAD, 204, 304): finish now so the connection is reusable at once.
            drop_finished(body)
        } else {
            RespBody::Upstream(Box::new(body))
        };
        return Response::from_parts(rparts, body);
    }
    let f = att.give_up();
    log::local(
        format,
        conn.client,
        &conn.frontend,
        &cfg.name,
        &parts.method,
        &parts.uri,
        f.status.as_u16(),
        start,
        &f.why,
    );
    local_response(f.status, &f.why)
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
        let _ = bytes_in;
        pending.finish(bytes_out, ok);
    });
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    Response::from_parts(parts, RespBody::empty())
}
