//! Active health checks: one check execution ([`run_check`]), the sans-IO
//! rise/fall counter ([`RiseFall`]) and the per-server checker task
//! ([`spawn_checker`]) that writes health facts into the server's shared state.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod check;
pub mod postgres;
pub mod redis;
pub mod state;
pub mod task;
pub mod tcpcheck;
pub mod warm;

pub use check::{check_target, run_check, CheckFailure, CheckSuccess};
pub use state::RiseFall;
pub use task::{checker, spawn_checker};
