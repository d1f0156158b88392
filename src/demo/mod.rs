//! Demo helpers: a stand-in application server that tests and drills can injure.
//!
//! `backend` is what `fulcrum backend --listen ADDR --name NAME` runs; `ws_accept`
//! holds the tiny SHA-1/base64 needed for its WebSocket handshake.

pub mod backend;
pub mod ws_accept;

pub use backend::{run_backend, start_backend, BackendHandle, BackendOptions};
pub mod run;
pub use run::{run_demo, DemoOptions};
