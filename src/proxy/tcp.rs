//! L4 proxying: `decide` picks the backend and balancing key, the shared
//! attempt loop (`proxy::attempts`: queue at maxconn, retries on other
//! servers, passive health) gets a connection through [`TcpUp`], then bytes
//! are copied both ways until both sides are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::attempts::{attempt, Upstream, Won};
use super::conn::ConnInfo;
use super::decide::{self, Decision, Kind, NoHeaders, RequestFacts};
use super::error::{AttemptError, Retry, Stage};
use super::idle::IdleTimeout;
use super::log;
use super::pool::ConnectError;
use crate::config::types::{OnRoleChange, ProxyVersion, RoleFilter};
use crate::runtime::server::{Role, ServerState};
use crate::runtime::FrontendRt;

/// TCP's side of the attempts: a new connection per session, with the PROXY
/// header first when the backend asks for one.
struct TcpUp<'a> {
    conn: &'a ConnInfo,
    connect: Duration,
    proxy_protocol: Option<ProxyVersion>,
}

impl Upstream for TcpUp<'_> {
    type Conn = TcpStream;
    type Answer = TcpStream;

    async fn connect(
        &mut self,
        server: &Arc<ServerState>,
    ) -> Result<(TcpStream, bool), AttemptError> {
        let r = tokio::time::timeout(self.connect, TcpStream::connect(server.address())).await;
        match r {
            Ok(Ok(s)) => Ok((s, false)),
            Ok(Err(e)) => {
                tracing::debug!(server = %server.name(), error = %e, "tcp connect failed");
                Err(AttemptError::connect(server, &ConnectError::Io(e)))
            }
            Err(_) => Err(AttemptError::connect(
                server,
                &ConnectError::Timeout(self.connect),
            )),
        }
    }

    async fn send(
        &mut self,
        server: &Arc<ServerState>,
        mut up: TcpStream,
        _: bool,
        _: bool,
    ) -> Result<TcpStream, AttemptError> {
        if let Some(v) = self.proxy_protocol {
            let header = super::pool::proxy_header(v, self.conn.client, self.conn.local);
            if let Err(e) = up.write_all(&header).await {
                tracing::debug!(server = %server.name(), error = %e, "sending the PROXY header failed");
                return Err(AttemptError::server(Stage::Send, Retry::Another, e));
            }
        }
        Ok(up)
    }
}

/// Serve one TCP client connection.
pub(crate) async fn serve(conn: ConnInfo, fe: Arc<FrontendRt>, client_stream: TcpStream) {
    let start = Instant::now();
    let format = conn.rt.snapshot().config.log.access;
    let facts = RequestFacts {
        kind: Kind::Tcp,
        refused: None,
        host: None,
        path: "",
        path_and_query: "",
        content_length: None,
        peer: conn.client.ip(),
        headers: &NoHeaders,
        now: start,
    };
    let f = match decide::decide(Some(&fe), &facts) {
        Decision::Forward(f) => f,
        Decision::Answer(_) => return,
    };
    let backend = f.backend.clone();
    let cfg = &backend.config;
    let mut up = TcpUp {
        conn: &conn,
        connect: cfg.timeouts.connect,
        proxy_protocol: cfg.proxy_protocol,
    };
    let won = attempt(&backend, &fe.stats, (f.hash, None), None, &mut up).await;
    let Ok(Won {
        answer: upstream,
        server,
        guard,
        tc,
        ..
    }) = won
    else {
        log::tcp(
            format,
            &log::TcpSession {
                client: conn.client,
                frontend: &conn.frontend,
                backend: &cfg.name,
                server: "<NOSRV>",
                tc: Duration::ZERO,
                tt: start.elapsed(),
                bytes_in: 0,
                bytes_out: 0,
                end: "no-server",
            },
        );
        return;
    };
    let _ = upstream.set_nodelay(true);
    // Subscribed before the role is read, so no change is missed.
    let mut changes = server.watch_changes();
    let role_at_connect = server.role();
    let close_on_change =
        cfg.role.want != RoleFilter::Any && cfg.role.on_change == OnRoleChange::Close;
    let mut c = Counted::new(IdleTimeout::new(
        client_stream,
        fe.config.timeouts.client_idle,
    ));
    let mut u = Counted::new(IdleTimeout::new(upstream, fe.config.timeouts.client_idle));
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => Some(r),
        _ = role_lost(&server, role_at_connect, &mut changes), if close_on_change => None,
    };
    let (inb, outb, end) = match copied {
        Some(Ok((a, b))) => (a, b, "--"),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            (c.read, u.read, "idle-timeout")
        }
        Some(Err(_)) => (c.read, u.read, "reset"),
        None => {
            tracing::info!(
                backend = %cfg.name,
                server = %server.name(),
                client = %conn.client,
                "closing connection: server is now {} (was {role_at_connect}) or down",
                server.role()
            );
            (c.read, u.read, "role-change")
        }
    };
    server.add_bytes(inb, outb);
    log::tcp(
        format,
        &log::TcpSession {
            client: conn.client,
            frontend: &conn.frontend,
            backend: &cfg.name,
            server: guard.server().name(),
            tc,
            tt: start.elapsed(),
            bytes_in: inb,
            bytes_out: outb,
            end,
        },
    );
}

/// Resolves when `server` no longer reports `role` or is marked down: the
/// connection was made to a node that is not what it was (`on_role_change`).
async fn role_lost(server: &ServerState, role: Role, changes: &mut watch::Receiver<u64>) {
    loop {
        if server.role() != role || !server.is_up() {
            return;
        }
        if changes.changed().await.is_err() {
            // The server state is gone (never while we hold it): never resolve.
            std::future::pending::<()>().await;
        }
    }
}

/// Counts the bytes read through a stream, so a connection closed from
/// outside the copy still reports its traffic.
struct Counted<T> {
    inner: T,
    read: u64,
}

impl<T> Counted<T> {
    fn new(inner: T) -> Self {
        Counted { inner, read: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
