//! Where an accepted connection is given its transport — the one place the
//! relay-or-hyper choice is made: TCP frontends go to `proxy::tcp`; HTTP
//! ones get their TLS handshake here, then the relay (`proxy::h1`) when it
//! can serve the frontend ([`h1::eligible`]) and the client speaks HTTP/1.1,
//! else hyper (`proxy::http`). A relay connection that meets a request it
//! does not handle hands the connection back here, with the bytes it read,
//! and hyper serves the rest of it.
//!
//! The module graph is one way: `listener → serve → {h1, http, tcp} →
//! {decide, attempts, answer, conn, …}`; neither transport imports the other.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::conn::{ConnGuards, ConnInfo};
use super::h1::{self, ClientIo};
use super::http::{self, Proto};
use super::lazy::LazyTcp;
use crate::runtime::{FrontendRt, Runtime};

/// True when a plain (no TLS, no PROXY header) HTTP connection goes straight
/// to the relay; the accept loop then spawns it without registering the
/// socket (`proxy::lazy`).
pub(crate) fn plain_relay(fe: &FrontendRt) -> bool {
    !fe.config.accept_proxy && fe.tls.is_none() && h1::eligible(fe)
}

/// Serve a plain HTTP connection `plain_relay` chose, in its own task. The
/// task holds the boxed relay only (an idle connection is one small task).
pub(crate) fn spawn_relay(conn: ConnInfo, fe: Arc<FrontendRt>, io: LazyTcp, guards: ConnGuards) {
    tokio::spawn(relay(h1::relay(conn, fe, io, guards)));
}

/// The relay, then hyper for the rest of the connection if the relay hands
/// it over.
async fn relay<I: ClientIo>(r: Box<h1::Relay<I>>) {
    if let Some(h) = h1::run(r).await {
        let _guards = h.guards;
        // Boxed: rare, and large (the whole hyper connection).
        Box::pin(http::serve_io(h.conn, h.fe, h.io, Proto::Http1)).await;
    }
}

/// Serve one HTTP client connection until it closes, times out or the
/// process drains: TLS handshake first when the frontend terminates TLS,
/// then the relay or hyper (HTTP/1.1 or HTTP/2, by ALPN, or by the h2c
/// preface when `h2c` is on).
pub(crate) async fn http(
    conn: ConnInfo,
    fe: Arc<FrontendRt>,
    stream: TcpStream,
    guards: ConnGuards,
) {
    let relay_ok = h1::eligible(&fe);
    let Some(acceptor) = fe.tls.clone() else {
        if relay_ok {
            return relay(h1::relay(conn, fe, stream, guards)).await;
        }
        let _guards = guards;
        let proto = if fe.config.h2c {
            Proto::Auto
        } else {
            Proto::Http1
        };
        // Boxed here and below: a connection task is as big as its largest
        // path, and the relay's is a quarter of hyper's.
        return Box::pin(http::serve_io(conn, fe, stream, proto)).await;
    };
    Box::pin(tls(conn, fe, acceptor, stream, relay_ok, guards)).await
}

async fn tls(
    mut conn: ConnInfo,
    fe: Arc<FrontendRt>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    relay_ok: bool,
    guards: ConnGuards,
) {
    let client: SocketAddr = conn.client;
    conn.https = true;
    // The handshake counts against the header timeout, so a silent client
    // cannot hold a connection open by never finishing it.
    match tokio::time::timeout(fe.config.timeouts.client_header, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            fe.stats.record_tls(tls.get_ref().1.handshake_kind());
            // Sends what rustls queued while reading (a no_renegotiation alert).
            let tls = crate::tls::alert_flush::AlertFlush(tls);
            if relay_ok && !h2 {
                return relay(h1::relay(conn, fe, tls, guards)).await;
            }
            let _guards = guards;
            let proto = if h2 { Proto::Http2 } else { Proto::Http1 };
            Box::pin(http::serve_io(conn, fe, tls, proto)).await;
        }
        Ok(Err(e)) => {
            fe.stats
                .tls_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%client, error = %e, "TLS handshake failed")
        }
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}

/// Serve one TCP (L4) connection.
pub(crate) async fn tcp(
    conn: ConnInfo,
    fe: Arc<FrontendRt>,
    stream: TcpStream,
    guards: ConnGuards,
) {
    let _guards = guards;
    Box::pin(super::tcp::serve(conn, fe, stream)).await
}

/// What is needed to start a connection's serving: used by the accept loop.
pub(crate) fn conn_info(
    rt: &Arc<Runtime>,
    frontend: &Arc<str>,
    client: SocketAddr,
    local: SocketAddr,
) -> ConnInfo {
    ConnInfo {
        rt: rt.clone(),
        frontend: frontend.clone(),
        client,
        local,
        https: false,
    }
}
