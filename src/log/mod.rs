//! Logging outside the request path: the access-log pipeline ([`access`]),
//! its sinks ([`sink`]) and the diagnostics subscriber ([`diag`]).
//!
//! How an access-log line travels, and why:
//! 1. The request path formats the line straight into its thread's buffer
//!    ([`access::emit`]): no allocation per line, no system call, and the
//!    only lock is the thread's own (uncontended but for the writer's sweep).
//! 2. A full thread buffer (64 KiB) is handed to the writer's queue as one
//!    batch. The queue is bounded in bytes (`[log] buffer`, 4 MiB by
//!    default): a batch that does not fit is dropped and its lines counted
//!    (`fulcrum_log_lines_dropped_total`). The request path never waits for
//!    the sink, and memory never grows past the bound.
//! 3. One writer thread wakes every 100 ms (or when a batch is queued),
//!    sweeps every thread buffer into the queue and writes the queue with
//!    vectored writes (stdout/stderr) or one datagram per line (syslog,
//!    journald). A blocked sink blocks only that thread.
//! 4. [`access::shutdown`] (the main exit path calls it) sweeps and writes
//!    whatever is left, bounded in time so a blocked sink cannot hold the
//!    process.

pub mod access;
pub mod diag;
pub mod sink;
