//! Upstream connections: a bounded LIFO pool of idle HTTP/1.1 keep-alive
//! connections per server, one shared multiplexed HTTP/2 connection per server
//! when the backend speaks h2, and connecting with a timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::body::ReqBody;

/// Sending half of one upstream connection.
pub enum Sender {
    /// One request at a time; pooled between exchanges.
    H1(http1::SendRequest<ReqBody>),
    /// Multiplexed; one connection per server is shared by all requests.
    H2(http2::SendRequest<ReqBody>),
}

impl Sender {
    /// True when the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// True for HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// Wait until the connection can take a request.
    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    /// Send; an error that still holds the request means it was never written.
    pub async fn try_send_request(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ReqBody>>> {
        match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    }
}

/// Idle connections of one kind, oldest first. The freshest is taken, so the
/// connections the load needs stay in use and the rest age at the front,
/// where they are closed once idle for the pool's idle timeout (as HAProxy
/// purges surplus idle connections), or when `max_idle` are held.
struct IdleList<T> {
    list: VecDeque<(T, Instant)>,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        IdleList {
            list: VecDeque::new(),
        }
    }
}

impl<T> IdleList<T> {
    /// The freshest connection idle for less than `max_age` that is `usable`.
    fn take(&mut self, max_age: Duration, usable: impl Fn(&T) -> bool) -> Option<T> {
        while let Some((t, since)) = self.list.pop_back() {
            if since.elapsed() < max_age && usable(&t) {
                return Some(t);
            }
        }
        None
    }

    fn put(&mut self, t: T, max_idle: usize, max_age: Duration) {
        let now = Instant::now();
        while self
            .list
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= max_age)
        {
            self.list.pop_front();
        }
        if max_idle == 0 {
            return;
        }
        if self.list.len() >= max_idle {
            // The oldest: the likeliest to have been closed by the server.
            self.list.pop_front();
        }
        self.list.push_back((t, now));
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn clear(&mut self) {
        self.list.clear();
    }
}

/// Idle connections to one server. Most recently used first, so a quiet period
/// lets the oldest connections age out. The relay's plain connections and
/// hyper's client connections are kept apart: each speaks to its own kind.
pub struct Pool {
    /// One idle list per proxy worker (`proxy::workers`): a connection is
    /// registered with the event loop of the worker that opened it, and
    /// reused only there — no wake-up crosses threads, no lock is shared
    /// between workers. Each list holds at most `max_idle / workers`
    /// (rounded up), so the server's total stays about `max_idle`.
    idle: Box<[Mutex<IdleList<http1::SendRequest<ReqBody>>>]>,
    raw: Box<[Mutex<IdleList<TcpStream>>]>,
    /// Multiplexed: one connection per server, shared by every worker.
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
    /// Idle connections handed out again (HAProxy `reuse`), for `/metrics`.
    pub reused: std::sync::atomic::AtomicU64,
}

impl Default for Pool {
    fn default() -> Self {
        let n = super::workers::count();
        Pool {
            idle: (0..n).map(|_| Mutex::default()).collect(),
            raw: (0..n).map(|_| Mutex::default()).collect(),
            h2: Mutex::default(),
            reused: Default::default(),
        }
    }
}

/// This worker's list of `lists` (never empty: sized by the worker count).
fn mine<T>(lists: &[Mutex<T>]) -> Option<&Mutex<T>> {
    let n = lists.len().max(1);
    lists.get(super::workers::index() % n)
}

/// A worker's share of the server's `max_idle`.
fn share(max_idle: usize, lists: usize) -> usize {
    if max_idle == 0 {
        0
    } else {
        max_idle.div_ceil(lists.max(1))
    }
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
    pub fn take(&self, max_idle_age: Duration, h2: bool) -> Option<Sender> {
        if h2 {
            let shared = self.h2.lock().ok()?;
            return shared
                .as_ref()
                .filter(|s| !s.is_closed())
                .cloned()
                .map(Sender::H2);
        }
        let mut idle = mine(&self.idle)?.lock().ok()?;
        let hit = idle.take(max_idle_age, |s| !s.is_closed()).map(Sender::H1);
        self.count_reuse(hit.is_some());
        hit
    }

    /// Return a connection after a complete exchange. The oldest idle one is
    /// closed when the pool already holds `max_idle`, and any left unused for
    /// `max_age`.
    pub fn put(&self, sender: Sender, max_idle: usize, max_age: Duration) {
        let sender = match sender {
            Sender::H1(s) => s,
            // Shared from the moment it connected; nothing to give back.
            Sender::H2(_) => return,
        };
        if sender.is_closed() {
            return;
        }
        let max_idle = share(max_idle, self.idle.len());
        if let Some(Ok(mut idle)) = mine(&self.idle).map(Mutex::lock) {
            idle.put(sender, max_idle, max_age);
        }
    }

    /// Take the freshest idle relay connection younger than `max_idle_age`.
    /// Whether the server has closed it shows when it is used: the relay
    /// then retries on a new connection (see `proxy::h1`).
    pub fn take_raw(&self, max_idle_age: Duration) -> Option<TcpStream> {
        let hit = mine(&self.raw)?.lock().ok()?.take(max_idle_age, |_| true);
        self.count_reuse(hit.is_some());
        hit
    }

    fn count_reuse(&self, hit: bool) {
        if hit {
            self.reused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Return a relay connection after a complete exchange (bounded like `put`).
    pub fn put_raw(&self, stream: TcpStream, max_idle: usize, max_age: Duration) {
        let max_idle = share(max_idle, self.raw.len());
        if let Some(Ok(mut idle)) = mine(&self.raw).map(Mutex::lock) {
            idle.put(stream, max_idle, max_age);
        }
    }

    /// Share a new HTTP/2 connection with the following requests.
    pub fn share_h2(&self, sender: &Sender) {
        if let (Sender::H2(s), Ok(mut slot)) = (sender, self.h2.lock()) {
            if slot.as_ref().is_none_or(|old| old.is_closed()) {
                *slot = Some(s.clone());
            }
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|m| m.lock().map(|g| g.len()).unwrap_or(0))
            .sum::<usize>()
            + self
                .raw
                .iter()
                .map(|m| m.lock().map(|g| g.len()).unwrap_or(0))
                .sum::<usize>()
    }

    /// Close every idle connection (server removed or address changed).
    pub fn clear(&self) {
        for m in self.idle.iter() {
            if let Ok(mut idle) = m.lock() {
                idle.clear();
            }
        }
        for m in self.raw.iter() {
            if let Ok(mut raw) = m.lock() {
                raw.clear();
            }
        }
    }
}

/// A connection that goes back to its pool when released.
pub struct Idle {
    pub(crate) sender: Sender,
    pub(crate) pool: Arc<crate::runtime::ServerState>,
    pub(crate) max_idle: usize,
    pub(crate) max_age: Duration,
}

impl Idle {
    /// The exchange finished cleanly: the connection can serve another request.
    pub fn release(self) {
        self.pool.pool.put(self.sender, self.max_idle, self.max_age);
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
    h2: bool,
) -> Result<Sender, ConnectError> {
    let mut stream = dial(addr, timeout).await?;
    if let Some(h) = proxy_header {
        use tokio::io::AsyncWriteExt;
        stream.write_all(h).await.map_err(ConnectError::Io)?;
    }
    match tls {
        None => handshake(addr, stream, h2).await,
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
            handshake(addr, tls, h2).await
        }
    }
}

/// Open a TCP connection to `addr` within `timeout` (Nagle off).
pub async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused)
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Largest read buffer of an HTTP/1.1 connection to a server, and send
/// buffer of an HTTP/2 one.
pub(crate) const UPSTREAM_READ_BUF: usize = 64 * 1024;
/// Receive windows of an HTTP/2 connection to a server (per stream, per connection).
const UPSTREAM_H2_STREAM_WINDOW: u32 = 256 * 1024;
const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

async fn handshake<I>(addr: SocketAddr, io: I, h2: bool) -> Result<Sender, ConnectError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        // Bounded like the client side (see `proxy::http`'s `h2_limits!`):
        // a server may send this much ahead of a client that does not read,
        // not hyper's 2 MiB a stream / 5 MiB a connection.
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW)
            .max_send_buf_size(UPSTREAM_READ_BUF)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream h2 connection ended with an error");
            }
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = http1::Builder::new()
        // The most of a response read ahead of the client (hyper's default,
        // ~400 KiB, is per connection, so per stream of an HTTP/2 client).
        .max_buf_size(UPSTREAM_READ_BUF)
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Sender::H1(sender))
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

#[cfg(test)]
mod tests {
    use super::IdleList;
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(3600);

    fn held(l: &IdleList<u32>) -> Vec<u32> {
        l.list.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn the_freshest_is_taken_and_the_oldest_dropped_when_full() {
        let mut l = IdleList::default();
        for i in 0..4 {
            l.put(i, 3, LONG);
        }
        assert_eq!(held(&l), [1, 2, 3], "the oldest (0) was closed");
        assert_eq!(l.take(LONG, |_| true), Some(3));
        assert_eq!(
            l.take(LONG, |&t| t != 2),
            Some(1),
            "unusable ones are dropped"
        );
        assert_eq!(l.len(), 0);
        assert_eq!(l.take(LONG, |_| true), None);
    }

    #[test]
    fn connections_idle_past_the_age_are_closed_on_the_next_put() {
        let mut l = IdleList::default();
        l.put(1, 100, LONG);
        l.put(2, 100, LONG);
        // Everything already held is "older" than a zero age.
        l.put(3, 100, Duration::ZERO);
        assert_eq!(held(&l), [3]);
        assert_eq!(l.take(Duration::ZERO, |_| true), None, "too old to use");
    }

    #[test]
    fn max_idle_zero_keeps_nothing() {
        let mut l = IdleList::default();
        l.put(1, 0, LONG);
        assert_eq!(l.len(), 0);
    }
}
