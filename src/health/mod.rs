//! Active health checks: one check execution ([`run_check`]), the sans-IO
//! rise/fall counter ([`RiseFall`]) and the per-server checker task
//! ([`spawn_checker`]) that writes health facts into the server's shared state.

pub mod check;
pub mod postgres;
pub mod redis;
pub mod state;
pub mod task;
pub mod tcpcheck;
pub mod warm;

pub use check::{check_target, run_check, CheckFailure, CheckSuccess};
pub use state::RiseFall;
pub use task::spawn_checker;
