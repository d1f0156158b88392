//! The demo app server behind `fulcrum backend --listen ADDR --name NAME`.
//!
//! A stand-in application for the demo, the network-namespace lab, failover drills
//! and integration tests. Every answer names the server, so a test can see where the
//! balancer sent a request, and the server can be injured on purpose: failing
//! health, slow answers, or connections closed right after accept. The injuries are
//! switched through [`BackendHandle`] in-process, or over HTTP with
//! `POST /_control/...` from another process.
//!
//! Routes:
//! - `GET /health`: 200 `{"status":"ok","server":NAME}`, or 503 when unhealthy.
//! - `/slow?ms=N`: waits N ms (at most 60 s), then answers like any other path.
//! - `GET /ws` with `Upgrade: websocket`: 101 with a correct `Sec-WebSocket-Accept`,
//!   then echoes raw bytes (no frame parsing: it proves a proxy passes upgrades).
//! - `POST /_control/health/{fail,ok}`, `POST /_control/delay?ms=N`,
//!   `POST /_control/close/{on,off}`: the injury switches. Never delayed or counted.
//! - anything else: 200 JSON describing the request, with a per-backend counter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ws_accept::accept_key;

/// Longest wait `/slow?ms=N` and the delay switch will honour.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Response header naming the backend that answered, for tests that do not parse JSON.
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// What a demo backend is called and where it listens.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Name reported in every answer (`"server"` in the JSON).
    pub name: String,
    /// Address to bind; port 0 picks a free port (see [`BackendHandle::local_addr`]).
    pub listen: SocketAddr,
}

/// State shared by the accept loop, every connection and the handle.
#[derive(Debug)]
struct Shared {
    name: String,
    healthy: AtomicBool,
    delay_ms: AtomicU64,
    close: AtomicBool,
    requests: AtomicU64,
    /// Flips to `true` once to stop the listener, connections and upgraded streams.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    fn set_delay(&self, d: Duration) {
        let ms = d.min(MAX_DELAY).as_millis();
        self.delay_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Resolves once the backend is told to stop.
    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // An error means the sender is gone, which also means "stop".
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Handle to a running backend: its bound address and its injury switches.
///
/// Dropping the handle stops the backend too, so a test that panics tears it down.
#[derive(Debug)]
pub struct BackendHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl BackendHandle {
    /// The address actually bound (differs from the options when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The name this backend reports.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Makes `/health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, ok: bool) {
        self.shared.healthy.store(ok, Ordering::Relaxed);
    }

    /// Whether `/health` currently answers 200.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Delays every non-control response by `d` (capped at [`MAX_DELAY`]); zero turns it off.
    pub fn set_delay(&self, d: Duration) {
        self.shared.set_delay(d);
    }

    /// When on, new connections are accepted and closed at once (a broken app), and
    /// responses on connections already open carry `Connection: close`.
    pub fn set_close(&self, on: bool) {
        self.shared.close.store(on, Ordering::Relaxed);
    }

    /// How many application requests (not health or control) this backend has answered.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Signals the backend to stop without waiting: the listener closes and open
    /// connections are dropped shortly after.
    pub fn shutdown(self) {
        // Drop does the signalling.
    }

    /// Stops the backend and waits until the listener is closed, so a new connection
    /// to [`Self::local_addr`] is refused once this returns.
    pub async fn stop(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// Binds `opts.listen`, spawns the accept loop and returns its handle.
pub async fn start_backend(opts: BackendOptions) -> std::io::Result<BackendHandle> {
    let listener = TcpListener::bind(opts.listen).await?;
    let local_addr = listener.local_addr()?;
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        name: opts.name,
        healthy: AtomicBool::new(true),
        delay_ms: AtomicU64::new(0),
        close: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        stop,
    });
    let task = tokio::spawn(accept_loop(listener, shared.clone()));
    Ok(BackendHandle {
        shared,
        local_addr,
        task: Some(task),
    })
}

/// Runs a backend for the CLI until Ctrl-C or SIGTERM.
pub async fn run_backend(opts: BackendOptions) -> anyhow::Result<()> {
    let listen = opts.listen;
    let handle = start_backend(opts)
        .await
        .map_err(|e| anyhow::anyhow!("backend cannot listen on {listen}: {e}"))?;
    tracing::info!(
        "backend {} listening on {}",
        handle.name(),
        handle.local_addr()
    );
    wait_for_termination().await?;
    tracing::info!("backend {} stopping", handle.name());
    handle.stop().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_termination() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shared.stopped() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                if shared.close.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "close mode: dropping connection");
                    drop(stream);
                    continue;
                }
                tokio::spawn(serve_connection(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Usually fd exhaustion; back off instead of spinning.
                tracing::warn!("backend {}: accept failed: {e}", shared.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("backend {} stopped accepting", shared.name);
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle_request(shared, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(%peer, "backend {}: connection ended: {e}", shared.name);
            }
        }
        () = shared.stopped() => {}
    }
}

async fn handle_request(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let http1 = req.version() < Version::HTTP_2;
    let mut resp = route(&shared, req).await;
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut()
            .insert(HeaderName::from_static(SERVED_BY_HEADER), v);
    }
    // Close mode also ends keep-alive connections that were open before it was switched on.
    if http1
        && shared.close.load(Ordering::Relaxed)
        && resp.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(action) = path.strip_prefix("/_control/") {
        if req.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "control endpoints need POST",
            );
        }
        let action = action.to_owned();
        return control(shared, &action, req.uri().query());
    }

    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    match path {
        "/health" => health(shared),
        "/ws" if is_websocket_upgrade(&req) => websocket(shared, req),
        "/slow" => match query_ms(req.uri().query()) {
            Some(ms) => {
                tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
                echo(shared, req).await
            }
            None => error(StatusCode::BAD_REQUEST, "/slow needs ?ms=N"),
        },
        _ => echo(shared, req).await,
    }
}

fn control(shared: &Shared, action: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    match action {
        "health/fail" => shared.healthy.store(false, Ordering::Relaxed),
        "health/ok" => shared.healthy.store(true, Ordering::Relaxed),
        "close/on" => shared.close.store(true, Ordering::Relaxed),
        "close/off" => shared.close.store(false, Ordering::Relaxed),
        "delay" => match query_ms(query) {
            Some(ms) => shared.set_delay(Duration::from_millis(ms)),
            None => return error(StatusCode::BAD_REQUEST, "delay needs ?ms=N"),
        },
        _ => return error(StatusCode::NOT_FOUND, "unknown control endpoint"),
    }
    json_response(
        StatusCode::OK,
        &json!({
            "server": shared.name,
            "healthy": shared.healthy.load(Ordering::Relaxed),
            "delay_ms": shared.delay_ms.load(Ordering::Relaxed),
            "close": shared.close.load(Ordering::Relaxed),
        }),
    )
}

fn health(shared: &Shared) -> Response<Full<Bytes>> {
    if shared.healthy.load(Ordering::Relaxed) {
        json_response(
            StatusCode::OK,
            &json!({"status": "ok", "server": shared.name}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unhealthy", "server": shared.name}),
        )
    }
}

/// The default answer: what the backend saw, so tests can check what a proxy forwarded.
async fn echo(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    // Count bytes frame by frame instead of buffering: uploads may be large.
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, &format!("reading body: {e}"));
            }
        }
    }

    let n = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let text = |name: HeaderName| -> Value {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map_or(Value::Null, |s| Value::String(s.to_owned()))
    };
    // HTTP/2 carries the host in :authority rather than a Host header.
    let host = match text(header::HOST) {
        Value::Null => parts
            .uri
            .authority()
            .map_or(Value::Null, |a| Value::String(a.to_string())),
        host => host,
    };
    json_response(
        StatusCode::OK,
        &json!({
            "server": shared.name,
            "path": parts.uri.path(),
            "method": parts.method.as_str(),
            "version": format!("{:?}", parts.version),
            "host": host,
            "x_forwarded_for": text(HeaderName::from_static("x-forwarded-for")),
            "x_forwarded_proto": text(HeaderName::from_static("x-forwarded-proto")),
            "x_forwarded_host": text(HeaderName::from_static("x-forwarded-host")),
            "request": n,
            "body_bytes": body_bytes,
        }),
    )
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake, then echoes raw bytes on the upgraded stream until either
/// side closes or the backend stops.
fn websocket(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let Ok(accept) = HeaderValue::from_str(&accept_key(key)) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "bad accept value");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("backend {}: websocket upgrade failed: {e}", shared.name);
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        tokio::select! {
            _ = tokio::io::copy(&mut rd, &mut wr) => {}
            () = shared.stopped() => {}
        }
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// The `ms` query parameter, if present and a valid integer.
fn query_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests;
