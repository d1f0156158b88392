//! L4 proxying: pick a server, connect (retrying other servers on failure),
//! then copy bytes both ways until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::idle::IdleTimeout;
use super::log;
use crate::balance::hash_key;
use crate::config::types::Algorithm;
use crate::runtime::{FrontendRt, Runtime};

/// Serve one TCP client connection.
pub(crate) async fn serve(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    fe: Arc<FrontendRt>,
    client_stream: TcpStream,
    client: SocketAddr,
) {
    let _open = rt.conns.track();
    let _fe_conn = super::http::ConnCount::new(&fe);
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
        server.record_success();
        let tc = tc_start.elapsed();
        let _ = upstream.set_nodelay(true);
        let mut c = IdleTimeout::new(client_stream, fe.config.timeouts.client_idle);
        let mut u = IdleTimeout::new(upstream, fe.config.timeouts.client_idle);
        let (inb, outb, end) = match tokio::io::copy_bidirectional(&mut c, &mut u).await {
            Ok((a, b)) => (a, b, "--"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => (0, 0, "idle-timeout"),
            Err(_) => (0, 0, "reset"),
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
