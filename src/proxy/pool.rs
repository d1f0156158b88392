//! Upstream connections: a bounded LIFO pool of idle HTTP/1.1 keep-alive
//! connections per server and worker, one shared multiplexed HTTP/2
//! connection per server when the backend speaks h2, and connecting with a
//! timeout.
//!
//! The pools are the proxy's, not the server state's: each worker keeps a
//! map from server identity ([`ServerState::id`], stable while the server
//! stays in the configuration) to its idle connections. A server that
//! leaves the configuration is retired by the runtime; the next pool use on
//! each worker drops the pools of retired servers, closing their idle
//! connections.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::body::ReqBody;
use crate::runtime::server::{retirements, ServerState};

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
}

/// One shared multiplexed connection to a server, used by every worker.
type H2Slot = Mutex<Option<http2::SendRequest<ReqBody>>>;

/// This worker's idle connections to one server. The relay's plain
/// connections and hyper's client connections are kept apart: each speaks
/// to its own kind.
struct WorkerPool {
    /// The server the entry is for: the entry goes when the server leaves
    /// the running configuration ([`ServerState::retire`]) or is dropped.
    server: Weak<ServerState>,
    idle: IdleList<http1::SendRequest<ReqBody>>,
    raw: IdleList<TcpStream>,
    /// The server's shared HTTP/2 slot, looked up once per worker.
    h2: Option<Arc<H2Slot>>,
}

impl WorkerPool {
    fn live(&self) -> bool {
        self.server.upgrade().is_some_and(|s| !s.is_retired())
    }
}

/// Hashes a server id (already unique) with one multiply: the pool lookup
/// is on every request, SipHash is not needed for keys no client chooses.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// One worker's pools, by server id ([`ServerState::id`]).
#[derive(Default)]
struct WorkerPools {
    /// [`retirements`] when the map was last swept.
    swept: u64,
    map: IdMap<WorkerPool>,
}

thread_local! {
    /// Connection pools belong to the proxy, one map per worker thread: a
    /// connection is registered with the event loop of the worker that
    /// opened it and reused only there — no wake-up crosses threads, no lock
    /// is shared between workers. Each worker holds at most
    /// `max_idle / workers` (rounded up) per server, so a server's total
    /// stays about `max_idle`.
    static POOLS: RefCell<WorkerPools> = RefCell::default();
}

/// Each server's shared HTTP/2 slot, with the server it is for.
type H2Slots = IdMap<(Weak<ServerState>, Arc<H2Slot>)>;

/// The shared HTTP/2 slots, by server id (the one structure the workers
/// share; each worker caches its `Arc` of a server's slot).
fn h2_slots() -> &'static Mutex<H2Slots> {
    static SLOTS: OnceLock<Mutex<H2Slots>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// Run `f` on this worker's pool for `server` (created on first use). After
/// servers left the configuration, the pools of departed servers are dropped
/// first (their idle connections close). None when the pool is in use
/// higher up this thread's stack (never on the request path).
fn with_pool<R>(server: &Arc<ServerState>, f: impl FnOnce(&mut WorkerPool) -> R) -> Option<R> {
    if server.is_retired() {
        return None;
    }
    POOLS
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let retired = retirements();
            if p.swept != retired {
                p.swept = retired;
                p.map.retain(|_, w| w.live());
                if let Ok(mut slots) = h2_slots().lock() {
                    slots.retain(|_, (s, _)| s.upgrade().is_some_and(|s| !s.is_retired()));
                }
            }
            let entry = p.map.entry(server.id()).or_insert_with(|| WorkerPool {
                server: Arc::downgrade(server),
                idle: IdleList::default(),
                raw: IdleList::default(),
                h2: None,
            });
            Some(f(entry))
        })
        .ok()
        .flatten()
}

/// `server`'s shared HTTP/2 slot.
fn h2_slot(server: &Arc<ServerState>) -> Option<Arc<H2Slot>> {
    with_pool(server, |w| {
        if w.h2.is_none() {
            let mut slots = h2_slots().lock().ok()?;
            let (_, slot) = slots
                .entry(server.id())
                .or_insert_with(|| (Arc::downgrade(server), Arc::default()));
            w.h2 = Some(slot.clone());
        }
        w.h2.clone()
    })
    .flatten()
}

/// A worker's share of the server's `max_idle`.
fn share(max_idle: usize) -> usize {
    if max_idle == 0 {
        0
    } else {
        max_idle.div_ceil(super::workers::count().max(1))
    }
}

/// Take the freshest idle connection to `server` that is still open and
/// younger than `max_idle_age` (the shared one for HTTP/2). The caller awaits
/// `ready()` on it: right after a body ends, hyper may not have flagged the
/// connection ready yet. A retired server's connections are not reused.
pub fn take(server: &Arc<ServerState>, max_idle_age: Duration, h2: bool) -> Option<Sender> {
    if server.is_retired() {
        return None;
    }
    if h2 {
        let slot = h2_slot(server)?;
        let shared = slot.lock().ok()?;
        return shared
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()
            .map(Sender::H2);
    }
    let hit = with_pool(server, |w| {
        w.idle
            .take(max_idle_age, |s| !s.is_closed())
            .map(Sender::H1)
    })
    .flatten();
    server.count_reuse(hit.is_some());
    hit
}

/// Return a connection to `server`'s pool after a complete exchange. The
/// oldest idle one is closed when the pool already holds `max_idle`, and any
/// left unused for `max_age`; a retired server's connection is closed.
pub fn put(server: &Arc<ServerState>, sender: Sender, max_idle: usize, max_age: Duration) {
    let sender = match sender {
        Sender::H1(s) => s,
        // Shared from the moment it connected; nothing to give back.
        Sender::H2(_) => return,
    };
    if sender.is_closed() || server.is_retired() {
        return;
    }
    let max_idle = share(max_idle);
    with_pool(server, |w| w.idle.put(sender, max_idle, max_age));
}

/// Take the freshest idle relay connection to `server` younger than
/// `max_idle_age`. Whether the server has closed it shows when it is used:
/// the relay then retries on a new connection (see `proxy::h1`).
pub fn take_raw(server: &Arc<ServerState>, max_idle_age: Duration) -> Option<TcpStream> {
    if server.is_retired() {
        return None;
    }
    let hit = with_pool(server, |w| w.raw.take(max_idle_age, |_| true)).flatten();
    server.count_reuse(hit.is_some());
    hit
}

/// Return a relay connection after a complete exchange (bounded like `put`).
pub fn put_raw(server: &Arc<ServerState>, stream: TcpStream, max_idle: usize, max_age: Duration) {
    if server.is_retired() {
        return;
    }
    let max_idle = share(max_idle);
    with_pool(server, |w| w.raw.put(stream, max_idle, max_age));
}

/// Share a new HTTP/2 connection to `server` with the following requests.
pub fn share_h2(server: &Arc<ServerState>, sender: &Sender) {
    let Sender::H2(s) = sender else { return };
    let Some(slot) = h2_slot(server) else { return };
    let Ok(mut shared) = slot.lock() else { return };
    if shared.as_ref().is_none_or(|old| old.is_closed()) {
        *shared = Some(s.clone());
    }
}

/// Idle connections this worker holds to `server` (for tests).
pub fn idle_here(server: &Arc<ServerState>) -> usize {
    with_pool(server, |w| w.idle.len() + w.raw.len()).unwrap_or(0)
}

/// Servers this worker holds a pool for (for tests: a departed server's
/// pool is dropped).
pub fn pools_here() -> usize {
    POOLS
        .try_with(|p| p.try_borrow().map_or(0, |p| p.map.len()))
        .unwrap_or(0)
}

/// A connection that goes back to its pool when released.
pub struct Idle {
    pub(crate) sender: Sender,
    pub(crate) pool: Arc<ServerState>,
    pub(crate) max_idle: usize,
    pub(crate) max_age: Duration,
}

impl Idle {
    /// The exchange finished cleanly: the connection can serve another request.
    pub fn release(self) {
        put(&self.pool, self.sender, self.max_idle, self.max_age);
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

/// A raw upstream connection: `pooled` when one was taken from the pool
/// (true: reused), else a new one dialed within `connect` (false).
pub(crate) async fn pooled_or_dial(
    server: &Arc<ServerState>,
    pooled: Option<TcpStream>,
    connect: Duration,
) -> Result<(TcpStream, bool), super::error::AttemptError> {
    if let Some(s) = pooled {
        return Ok((s, true));
    }
    match dial(server.address(), connect).await {
        Ok(s) => Ok((s, false)),
        Err(e) => Err(super::error::AttemptError::connect(server, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::IdleList;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::config::types::{AdminState, ServerConfig};
    use crate::runtime::ServerState;

    fn server(name: &str, port: u16) -> Arc<ServerState> {
        let cfg = ServerConfig {
            name: name.into(),
            address: ([127, 0, 0, 1], port).into(),
            weight: 1,
            backup: false,
            maxconn: None,
            admin: AdminState::Ready,
        };
        Arc::new(ServerState::new("web", &cfg, Instant::now(), true))
    }

    /// A connected loopback stream (the accepted end is dropped: only the pool's bookkeeping matters).
    async fn stream(l: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let addr = l.local_addr().expect("listener address");
        let (c, _) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        c.expect("connect to the test listener")
    }

    #[tokio::test]
    async fn pools_are_keyed_by_server_identity_and_dropped_when_it_leaves() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (a, b) = (server("a", 1), server("b", 2));
        // Same name and address, another live server (removed, then added again).
        let a_again = server("a", 1);
        super::put_raw(&a, stream(&l).await, 8, LONG);
        super::put_raw(&b, stream(&l).await, 8, LONG);
        assert_eq!(super::idle_here(&a), 1);
        assert_eq!(super::idle_here(&a_again), 0, "a new identity starts empty");
        assert!(super::take_raw(&a, LONG).is_some());
        assert_eq!(a.reused(), 1);
        super::put_raw(&a, stream(&l).await, 8, LONG);
        let before = super::pools_here();

        a.retire();
        assert!(
            super::take_raw(&a, LONG).is_none(),
            "a retired server's connections are not reused"
        );
        super::put_raw(&a, stream(&l).await, 8, LONG);
        // The next use of any pool on this worker sweeps: a's pool is gone, b's stays.
        assert_eq!(super::idle_here(&b), 1);
        assert_eq!(super::pools_here(), before - 1);
        assert_eq!(super::idle_here(&a_again), 0);
    }

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
