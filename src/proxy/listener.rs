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
                    let rt = rt.clone();
                    let name = frontend.clone();
                    tokio::spawn(async move {
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
