//! Binding listen sockets and the accept loop of each frontend address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::conn::{ConnCount, ConnGuards};
use super::lazy::LazyTcp;
use super::serve;
use crate::config::types::Mode;
use crate::runtime::Runtime;

/// Bind a listening socket (SO_REUSEADDR, backlog 1024), non-blocking —
/// or take the one the previous process passed for `addr` in an upgrade.
/// Either way the socket is recorded for the next upgrade.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = match crate::upgrade::fds::take_inherited(addr) {
        Some(l) => {
            l.set_nonblocking(true)?;
            l
        }
        None => bind_new(addr)?,
    };
    crate::upgrade::fds::register(addr, &listener);
    Ok(listener)
}

fn bind_new(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if super::workers::reuseport() {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Run the accept loop for one listening address until `stop` turns true:
/// one loop on each proxy worker (each with its own duplicate of the
/// descriptor, registered with its own event loop), or one on the current
/// runtime when there are no workers (`threads = 1`).
pub fn spawn(
    rt: Arc<Runtime>,
    frontend: String,
    mode: Mode,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
) {
    let Some(workers) = super::workers::handles() else {
        tokio::spawn(accept_loop(rt, frontend, mode, listener, stop));
        return;
    };
    // Duplicates first, so worker 0 gets the registered descriptor itself.
    let mut dups = Vec::with_capacity(workers.len());
    let own = super::workers::reuseport() && own_sockets(&listener, workers.len(), &mut dups);
    if !own {
        dups.clear();
        for _ in 1..workers.len() {
            match listener.try_clone() {
                Ok(d) => dups.push(d),
                Err(e) => {
                    tracing::warn!(%frontend, error = %e, "cannot share a listening socket with every worker");
                    break;
                }
            }
        }
    }
    let mut sockets = std::iter::once(listener).chain(dups);
    for h in workers {
        let Some(l) = sockets.next() else { break };
        h.spawn(accept_loop(
            rt.clone(),
            frontend.clone(),
            mode,
            l,
            stop.clone(),
        ));
    }
}

/// The benchmark's alternative accept distribution (`FULCRUM_ACCEPT=reuseport`,
/// see `workers::reuseport`): a socket of its own for each worker after the
/// first, bound with `SO_REUSEPORT` to the address `listener` has, so the
/// kernel spreads new connections over the workers by a hash of the
/// 4-tuple. False (the caller shares `listener`) when `listener` is not a
/// `SO_REUSEPORT` socket (one inherited in an upgrade) or a bind fails. The
/// extra sockets are not handed over in an upgrade.
fn own_sockets(
    listener: &std::net::TcpListener,
    workers: usize,
    out: &mut Vec<std::net::TcpListener>,
) -> bool {
    let sock = socket2::SockRef::from(listener);
    if !sock.reuse_port().unwrap_or(false) {
        return false;
    }
    let Ok(addr) = listener.local_addr() else {
        return false;
    };
    for _ in 1..workers {
        match bind_new(addr) {
            Ok(l) => out.push(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "SO_REUSEPORT socket per worker failed; sharing one");
                return false;
            }
        }
    }
    tracing::info!(%addr, workers, "one SO_REUSEPORT socket per worker (FULCRUM_ACCEPT=reuseport)");
    true
}

async fn accept_loop(
    rt: Arc<Runtime>,
    frontend: String,
    mode: Mode,
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    {
        // Through mio and `AsyncFd`, not tokio's `TcpListener`: accepted
        // sockets are not registered with the event loop until they must
        // wait (see `lazy`).
        let raw_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        // Cold start: accept once the first health checks have answered;
        // connections wait in the accept queue until then.
        let warm = async {
            let (waited, left) = crate::health::warm::first_checks(&rt, &frontend).await;
            if left > 0 {
                tracing::warn!(%frontend, left, "accepting before every first health check answered (check timeout passed)");
            } else if waited > Duration::from_millis(20) {
                tracing::info!(%frontend, waited_ms = waited.as_millis() as u64, "first health checks answered");
            }
        };
        tokio::select! {
            () = warm => {}
            _ = stop.wait_for(|s| *s) => {
                crate::upgrade::fds::unregister(raw_fd);
                return;
            }
        }
        let listener = mio::net::TcpListener::from_std(listener);
        // SAFETY: the mio listener owns its descriptor, which stays open and
        // the same for as long as the `AsyncFd` owns the listener.
        let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
        let listener = match registered {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%frontend, error = %e, "cannot use listening socket");
                return;
            }
        };
        let frontend: Arc<str> = Arc::from(frontend);
        let bound = listener.get_ref().local_addr().ok();
        if let Some(a) = bound {
            tracing::info!(frontend = %frontend, addr = %a, ?mode, "listening");
        }
        // A listener on one address: every connection reached that address,
        // no getsockname per connection. A wildcard one must ask.
        let fixed_local = bound.filter(|a| !a.ip().is_unspecified());
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
            // Accept first: under load a connection is waiting, and the stop
            // signal is then not even polled (no waiter registered per accept).
            let accepted = tokio::select! {
                biased;
                r = accept(&listener) => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok((stream, client)) => {
                    // A worker holding clearly more connections than another
                    // hands this one over (HAProxy's per-thread accept queues):
                    // keep-alive connections opened in a burst would otherwise
                    // stay on whichever worker woke first, for their life.
                    let serve = serve_accepted(
                        rt.clone(),
                        frontend.clone(),
                        mode,
                        fixed_local,
                        stream,
                        client,
                        stop.clone(),
                    );
                    match super::workers::hand_off() {
                        Some(to) => drop(to.spawn(serve)),
                        None => serve.await,
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(frontend = %frontend, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        crate::upgrade::fds::unregister(raw_fd);
        tracing::info!(frontend = %frontend, "listener closed");
    }
}

/// Serve a connection just accepted, on the worker this runs on: count it,
/// take a `maxconn` slot (waiting for one, as it would in the kernel's
/// queue) and spawn its task.
async fn serve_accepted(
    rt: Arc<Runtime>,
    frontend: Arc<str>,
    mode: Mode,
    fixed_local: Option<SocketAddr>,
    stream: std::net::TcpStream,
    client: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    super::workers::count_accept();
    let _ = stream.set_nodelay(true);
    let fe_cfg = {
        let snap = rt.snapshot();
        snap.frontends.get(&*frontend).cloned()
    };
    let Some(fe) = fe_cfg else { return };
    // Counted here, before the task runs, so maxconn is exact:
    // another worker may have taken the last slot since the
    // check above; then this connection waits for one (as it
    // would have in the kernel's queue), and so does this
    // accept loop.
    let count = loop {
        if let Some(c) = ConnCount::reserve(&fe) {
            break c;
        }
        let closed = fe.stats.closed.notified();
        tokio::select! {
            // Stopping or handing over: serve it rather than drop it.
            _ = stop.wait_for(|s| *s) => break ConnCount::new(&fe),
            _ = closed => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    let guards = ConnGuards::new(&rt, count);
    let local = match fixed_local {
        Some(a) => a,
        None => stream.local_addr().unwrap_or(client),
    };
    if mode == Mode::Http && serve::plain_relay(&fe) {
        // The common case straight to the relay: one small task.
        let conn = serve::conn_info(&rt, &frontend, client, local);
        serve::spawn_relay(conn, fe, LazyTcp::new(stream), guards);
        return;
    }
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(frontend = %frontend, error = %e, "cannot register connection");
            return;
        }
    };
    let rt = rt.clone();
    let name = frontend.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        // Rare paths boxed: a task is as large as its largest path,
        // and every idle HTTP connection is one task.
        let (client, local) = if fe.config.accept_proxy {
            match Box::pin(read_proxy_header(&fe, &mut stream, client)).await {
                Some(addrs) => addrs,
                None => return drop(guards),
            }
        } else {
            (client, local)
        };
        let conn = serve::conn_info(&rt, &name, client, local);
        match mode {
            Mode::Http => serve::http(conn, fe, stream, guards).await,
            Mode::Tcp => serve::tcp(conn, fe, stream, guards).await,
        }
    });
}

/// Accept one connection, non-blocking and not registered with the event
/// loop.
async fn accept(
    listener: &AsyncFd<mio::net::TcpListener>,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        match ready.try_io(|l| l.get_ref().accept()) {
            Ok(Ok((stream, addr))) => return Ok((stream.into(), addr)),
            Ok(Err(e)) => return Err(e),
            // Nothing to accept after all (readiness cleared): wait again.
            Err(_would_block) => continue,
        }
    }
}

/// Read the PROXY header a load balancer in front sends; returns the real
/// (client, destination), or None to drop the connection (untrusted peer,
/// bad or missing header).
async fn read_proxy_header(
    fe: &crate::runtime::FrontendRt,
    stream: &mut tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    use super::proxy_protocol::{read_header, ProxyAddrs};
    let trusted = &fe.config.trusted_proxies;
    if !trusted.is_empty() && !trusted.iter().any(|c| c.contains(peer.ip())) {
        tracing::warn!(%peer, frontend = %fe.config.name, "PROXY header from an untrusted peer refused");
        return None;
    }
    match read_header(stream, fe.config.timeouts.client_header).await {
        Ok(h) => match h.addrs {
            ProxyAddrs::Tcp { src, dst } => Some((src, dst)),
            // LOCAL (health checks of the LB in front) or an unknown family: the peer itself.
            ProxyAddrs::Unknown => Some((peer, stream.local_addr().unwrap_or(peer))),
        },
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad or missing PROXY header");
            None
        }
    }
}
