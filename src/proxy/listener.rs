//! Binding listen sockets and the accept loop of each frontend address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::types::Mode;
use crate::runtime::Runtime;

/// Bind a listening socket (SO_REUSEADDR, backlog 1024), non-blocking.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Run the accept loop for one listening address until `stop` turns true.
pub fn spawn(
    rt: Arc<Runtime>,
    frontend: String,
    mode: Mode,
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%frontend, error = %e, "cannot use listening socket");
                return;
            }
        };
        let frontend: Arc<str> = Arc::from(frontend);
        if let Ok(a) = listener.local_addr() {
            tracing::info!(frontend = %frontend, addr = %a, ?mode, "listening");
        }
        loop {
            // At the frontend's maxconn, stop accepting (HAProxy does the same):
            // new connections wait in the kernel's queue until one closes.
            let at_limit = {
                let snap = rt.snapshot();
                snap.frontends.get(&*frontend).and_then(|f| {
                    let max = f.config.maxconn?;
                    let open = f
                        .stats
                        .connections
                        .load(std::sync::atomic::Ordering::Relaxed);
                    (open >= u64::from(max)).then(|| f.stats.clone())
                })
            };
            if let Some(stats) = at_limit {
                let closed = stats.closed.notified();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = closed => {}
                    // Re-check now and then: a reload may raise the limit.
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    let fe_cfg = {
                        let snap = rt.snapshot();
                        snap.frontends.get(&*frontend).cloned()
                    };
                    let Some(fe) = fe_cfg else { continue };
                    // Counted here, before the task runs, so maxconn is exact.
                    let count = super::http::ConnCount::new(&fe);
                    let rt = rt.clone();
                    let name = frontend.clone();
                    tokio::spawn(async move {
                        let _count = count;
                        match mode {
                            Mode::Http => super::http::serve(rt, name, fe, stream, client).await,
                            Mode::Tcp => super::tcp::serve(rt, name, fe, stream, client).await,
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(frontend = %frontend, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tracing::info!(frontend = %frontend, "listener closed");
    });
}
