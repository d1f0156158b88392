//! Upstream HTTP/1.1 connections: a bounded LIFO pool of idle keep-alive
//! connections per server, and connecting with a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::ReqBody;

/// Sending half of one upstream HTTP/1.1 connection.
pub type Sender = SendRequest<ReqBody>;

struct Entry {
    sender: Sender,
    since: Instant,
}

/// Idle connections to one server. Most recently used first, so a quiet period
/// lets the oldest connections age out.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    /// Take the freshest idle connection that is still open and younger than
    /// `max_idle_age`. The caller awaits `ready()` on it: right after a body
    /// ends, hyper may not have flagged the connection ready yet.
    pub fn take(&self, max_idle_age: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(e) = idle.pop() {
            if !e.sender.is_closed() && e.since.elapsed() < max_idle_age {
                return Some(e.sender);
            }
        }
        None
    }

    /// Return a connection after a complete exchange; dropped (closed) when the
    /// pool already holds `max_idle` connections.
    pub fn put(&self, sender: Sender, max_idle: usize) {
        if sender.is_closed() || max_idle == 0 {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= max_idle {
                // Drop the oldest: it is the likeliest to have been closed by the server.
                idle.remove(0);
            }
            idle.push(Entry {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Close every idle connection (server removed or address changed).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// A connection that goes back to its pool when released.
pub struct Idle {
    pub(crate) sender: Sender,
    pub(crate) pool: Arc<crate::runtime::ServerState>,
    pub(crate) max_idle: usize,
}

impl Idle {
    /// The exchange finished cleanly: the connection can serve another request.
    pub fn release(self) {
        self.pool.pool.put(self.sender, self.max_idle);
    }
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connect timeout after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// Open a new HTTP/1.1 connection to `addr` within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&crate::tls::UpstreamTlsRt>,
    proxy_header: Option<&[u8]>,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused)
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    let mut stream = stream;
    let _ = stream.set_nodelay(true);
    if let Some(h) = proxy_header {
        use tokio::io::AsyncWriteExt;
        stream.write_all(h).await.map_err(ConnectError::Io)?;
    }
    match tls {
        None => handshake(addr, stream).await,
        Some(t) => {
            let name = t
                .sni
                .clone()
                .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
            let tls = match tokio::time::timeout(timeout, t.connector.connect(name, stream)).await {
                Err(_) => return Err(ConnectError::Timeout(timeout)),
                Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                Ok(Ok(s)) => s,
            };
            handshake(addr, tls).await
        }
    }
}

async fn handshake<I>(addr: SocketAddr, io: I) -> Result<Sender, ConnectError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The PROXY protocol header naming `client` (and the address it reached) for a server.
pub fn proxy_header(
    version: crate::config::types::ProxyVersion,
    client: SocketAddr,
    local: SocketAddr,
) -> Vec<u8> {
    match version {
        crate::config::types::ProxyVersion::V1 => super::proxy_protocol::encode_v1(client, local),
        crate::config::types::ProxyVersion::V2 => super::proxy_protocol::encode_v2(client, local),
    }
}
