//! The admin listener: dashboard at `/`, JSON API under `/api/v1`, Prometheus `/metrics`.
//!
//! Off loopback `[admin] token_file` is required. When a token is configured
//! (loopback or not), every state-changing call needs `Authorization: Bearer
//! <token>` (scheme case-insensitive), and so do reads unless `public_read =
//! true`. Without a token (loopback only) no authentication is asked.

pub mod api;
mod auth;
pub mod csv;
pub mod metrics;
mod metrics_server;
pub mod process;
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
    /// Required bearer token: set whenever `[admin] token_file` is, loopback or not.
    pub token: Option<String>,
    /// Reads allowed without a token.
    pub public_read: bool,
    pub vrrp: VrrpSlot,
}

/// Read the admin token file (first line, trimmed, at least 16 characters):
/// the same rule `fulcrum check` applies ([`crate::config::rules::read_token_file`]).
pub fn read_token(cfg: &AdminConfig) -> anyhow::Result<Option<String>> {
    let Some(path) = &cfg.token_file else {
        return Ok(None);
    };
    crate::config::rules::read_token_file(path)
        .map(Some)
        .map_err(anyhow::Error::msg)
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
    // Through the proxy's `bind`: an upgraded process takes the old one's socket.
    let listener = crate::proxy::listener::bind(addr)
        .and_then(TcpListener::from_std)
        .with_context(|| format!("cannot listen on {addr} for the admin API"))?;
    let local = listener.local_addr().unwrap_or(addr);
    let state = Arc::new(AdminState {
        rt,
        // A configured token is required everywhere, loopback included: the
        // operator asked for one, and other local users must not drain servers.
        token,
        public_read: cfg.public_read,
        vrrp,
    });
    tracing::info!(addr = %local, "admin listener (dashboard, API, metrics)");
    tokio::spawn(async move {
        loop {
            // Draining (stop or upgrade): the admin socket is the next process's.
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = state.rt.until_draining(0) => break,
            };
            let (stream, peer) = match accepted {
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
                    async move { Ok::<_, Infallible>(api::handle(&state, peer, req).await) }
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
