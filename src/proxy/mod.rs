//! The data path: listeners, the HTTP reverse proxy, L4 TCP proxying, the
//! upstream connection pool, forwarded headers and the access log.

pub mod answer;
pub mod attempts;
pub mod batch;
pub mod body;
pub mod conn;
pub mod decide;
pub mod edge;
pub mod error;
pub mod h1;
pub mod headers;
pub mod http;
pub mod idle;
pub mod lazy;
pub mod listener;
pub mod log;
pub mod pool;
pub mod proxy_protocol;
pub mod rawup;
/// Moved to [`crate::routing`] (shared with the runtime); kept here by path.
pub use crate::routing::{ratelimit, route};
pub mod serve;
pub mod strict;
pub mod tcp;
pub mod version;
pub mod workers;

/// While draining (stop or upgrade), how long an idle keep-alive connection
/// may still bring its next request (answered with `Connection: close`)
/// before it is closed. Closing it at once would race a request already on
/// its way: the client would see its request fail on a reused connection.
pub const DRAIN_IDLE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);
