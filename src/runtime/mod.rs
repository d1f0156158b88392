//! Live state: the snapshot read per request, per-server atomics, and `Runtime::apply`.
pub mod server;
