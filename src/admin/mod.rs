//! The admin listener: dashboard at `/`, JSON API under `/api/v1`, Prometheus `/metrics`.
//!
//! On loopback no token is needed. Anywhere else every state-changing call needs
//! `Authorization: Bearer <token>` (token read from `[admin] token_file`), and
//! so do reads unless `public_read = true`.

pub mod api;
pub mod metrics;
pub mod status;
pub mod status_query;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::types::AdminConfig;
use crate::runtime::Runtime;

/// The node's VRRP instances, set once they run (they start after the
/// listeners and the admin API); empty when VRRP is not configured.
pub type VrrpSlot = Arc<std::sync::OnceLock<crate::vrrp::VrrpStatus>>;

/// What every admin request handler needs.
pub struct AdminState {
    pub rt: Arc<Runtime>,
    /// Required bearer token, when the listener is not on loopback.
    pub token: Option<String>,
    /// Reads allowed without a token.
    pub public_read: bool,
    pub vrrp: VrrpSlot,
}

/// Read the admin token file (first line, trimmed).
pub fn read_token(cfg: &AdminConfig) -> anyhow::Result<Option<String>> {
    let Some(path) = &cfg.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read admin token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        anyhow::bail!(
            "admin token in {} is too short (at least 16 characters)",
            path.display()
        );
    }
    Ok(Some(token))
}

impl AdminState {
    /// VRRP instances as JSON for the status API.
    pub fn vrrp_json(&self) -> Vec<serde_json::Value> {
        self.vrrp.get().map(|v| v.json()).unwrap_or_default()
    }
}

/// The address of the admin client that sent a request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Bind the admin listener and serve it in the background. Returns the bound address.
pub async fn start(
    rt: Arc<Runtime>,
    cfg: &AdminConfig,
    vrrp: VrrpSlot,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = cfg.listen else {
        return Ok(None);
    };
    let token = read_token(cfg)?;
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!("admin listener on {addr} needs [admin] token_file");
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the admin API"))?;
    let local = listener.local_addr().unwrap_or(addr);
    let state = Arc::new(AdminState {
        rt,
        // On loopback the token is not enforced (anyone on the box can signal the process anyway).
        token: if addr.ip().is_loopback() { None } else { token },
        public_read: cfg.public_read,
        vrrp,
    });
    tracing::info!(addr = %local, "admin listener (dashboard, API, metrics)");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(api::handle(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Some(local))
}

/// A response with a fixed body.
pub(crate) fn respond(
    status: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}
