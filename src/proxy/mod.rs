//! The data path: listeners, the HTTP reverse proxy, L4 TCP proxying, the
//! upstream connection pool, forwarded headers and the access log.

pub mod attempts;
pub mod batch;
pub mod body;
pub mod edge;
pub mod h1;
pub mod headers;
pub mod http;
pub mod idle;
pub mod lazy;
pub mod listener;
pub mod log;
pub mod pool;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod strict;
pub mod tcp;
