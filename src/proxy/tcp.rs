//! L4 proxying: pick a server, connect (retrying other servers on failure),
//! then copy bytes both ways until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::idle::IdleTimeout;
use super::log;
use crate::balance::hash_key;
use crate::config::types::{Algorithm, OnRoleChange, RoleFilter};
use crate::runtime::server::{Role, ServerState};
use crate::runtime::{FrontendRt, Runtime};

/// Serve one TCP client connection.
pub(crate) async fn serve(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    client_stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
) {
    let _open = rt.conns.track();
    fe.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let format = rt.snapshot().config.log.access;
    let backend = fe.default.clone();
    let Some(backend) = backend else { return };
    let cfg = &backend.config;
    let hash = match cfg.balance {
        Algorithm::Source | Algorithm::Uri => Some(match client.ip() {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        _ => None,
    };
    let mut tried = Vec::new();
    for _ in 0..=cfg.retries {
        let Some(server) = backend.pick(hash, &tried).cloned() else {
            break;
        };
        let idx = backend.index_of(&server).unwrap_or(usize::MAX);
        let guard = server.begin();
        let tc_start = Instant::now();
        let upstream =
            match tokio::time::timeout(cfg.timeouts.connect, TcpStream::connect(server.address()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(server = %server.name(), error = %e, "tcp connect failed");
                    server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout);
                    tried.push(idx);
                    continue;
                }
                Err(_) => {
                    server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout);
                    tried.push(idx);
                    continue;
                }
            };
        let mut upstream = upstream;
        if let Some(v) = cfg.proxy_protocol {
            use tokio::io::AsyncWriteExt;
            let header = super::pool::proxy_header(v, client, local);
            if let Err(e) = upstream.write_all(&header).await {
                tracing::debug!(server = %server.name(), error = %e, "sending the PROXY header failed");
                server.record_failure(cfg.passive.max_fails, cfg.passive.fail_timeout);
                tried.push(idx);
                continue;
            }
        }
        server.record_success();
        let tc = tc_start.elapsed();
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
                    client = %client,
                    "closing connection: server is now {} (was {role_at_connect}) or down",
                    server.role()
                );
                (c.read, u.read, "role-change")
            }
        };
        server.add_bytes(inb, outb);
        log::tcp(
            format,
            client,
            &frontend,
            &cfg.name,
            guard.server().name(),
            tc,
            start.elapsed(),
            inb,
            outb,
            end,
        );
        return;
    }
    log::tcp(
        format,
        client,
        &frontend,
        &cfg.name,
        "<NOSRV>",
        Duration::ZERO,
        start.elapsed(),
        0,
        0,
        "no-server",
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
