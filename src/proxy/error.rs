//! Why one attempt at forwarding failed: where (connect, send, response
//! head, body), whose fault (client or server), and whether the request may
//! go again. Every transport reports its failures in this one form, so the
//! attempt loop (`proxy::attempts`) decides retries, passive health and the
//! client's answer the same way for all of them.

use std::fmt;

use http::StatusCode;

use super::pool::ConnectError;
use crate::runtime::ServerState;

/// Where in an attempt the failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Getting a connection to the server (TCP connect, TLS, PROXY header).
    Connect,
    /// Writing the request (head and body).
    Send,
    /// Waiting for or reading the response head.
    Head,
    /// Relaying a body (the request's, from the client).
    Body,
}

/// Whose fault the failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client: gone, or its request (body) malformed or aborted.
    Client,
    /// The server, or the path to it.
    Server,
}

/// Whether, and how, the request may go again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A reused connection the server had closed (the keep-alive race): the
    /// request cannot have been acted on; again on a fresh connection,
    /// without using up an attempt or counting against the server.
    Stale,
    /// Counted against the server; the next attempt goes to another one.
    Another,
    /// Not safe to send again (the body went out, the client has an interim
    /// answer, the server took too long): the request fails now.
    Never,
}

/// One failed attempt.
#[derive(Debug)]
pub struct AttemptError {
    pub stage: Stage,
    pub origin: Origin,
    pub retry: Retry,
    /// The answer to the client if this failure ends the request.
    pub status: StatusCode,
    pub why: String,
}

impl AttemptError {
    /// A failure on the server's side, answered 502 if it ends the request.
    pub fn server(stage: Stage, retry: Retry, why: impl fmt::Display) -> Self {
        AttemptError {
            stage,
            origin: Origin::Server,
            retry,
            status: StatusCode::BAD_GATEWAY,
            why: why.to_string(),
        }
    }

    /// A failure the client caused: never retried, never the server's; 400.
    pub fn client(stage: Stage, why: impl fmt::Display) -> Self {
        AttemptError {
            stage,
            origin: Origin::Client,
            retry: Retry::Never,
            status: StatusCode::BAD_REQUEST,
            why: why.to_string(),
        }
    }

    /// The client's request body did not all arrive within the response
    /// timeout (a trickling client): its fault, 408.
    pub fn body_timeout() -> Self {
        AttemptError {
            status: StatusCode::REQUEST_TIMEOUT,
            ..AttemptError::client(Stage::Body, "the request body did not arrive in time")
        }
    }

    /// Connecting to `server` failed (504 on a timeout, else 502); another
    /// server may be tried.
    pub fn connect(server: &ServerState, e: &ConnectError) -> Self {
        let status = match e {
            ConnectError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        AttemptError {
            stage: Stage::Connect,
            origin: Origin::Server,
            retry: Retry::Another,
            status,
            why: format!(
                "server {}/{} ({}): {e}",
                server.key.backend,
                server.name(),
                server.address()
            ),
        }
    }

    /// A stale retry refused (none left): the failure counts as `Another`.
    pub(crate) fn no_longer_stale(mut self) -> Self {
        if self.retry == Retry::Stale {
            self.retry = Retry::Another;
        }
        self
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for AttemptError {}
