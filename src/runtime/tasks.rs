//! The interface to what runs beside the snapshot — listeners, health
//! checkers, discovery sources. The runtime holds state only; the supervisor
//! (`crate::supervisor`) owns these tasks and implements [`Tasks`]. The
//! runtime calls it from [`super::Runtime::apply`], under the control lock,
//! so the tasks follow the snapshot in the order the changes were applied.

use std::net::SocketAddr;
use std::sync::Arc;

use super::snapshot::{BackendRt, Snapshot};
use super::{ApplyError, Runtime};

/// Starts and stops the tasks a snapshot needs.
pub trait Tasks: Send + 'static {
    /// Before `next` is published by a reload: bind every new listen
    /// address, so a port that is taken refuses the whole change instead of
    /// half-applying it. On error nothing was started and the change is
    /// refused; on success the next call is [`Tasks::published`] with `next`.
    fn prepare(&mut self, next: &Snapshot) -> Result<(), ApplyError>;

    /// After a reload published `next`: serve the listeners `prepare`
    /// bound, stop those no longer wanted, sync the checkers of the
    /// `rebuilt` backends, stop those of backends gone, and run one
    /// discovery task per backend that has a source.
    fn published(&mut self, rt: &Arc<Runtime>, next: &Arc<Snapshot>, rebuilt: &[Arc<BackendRt>]);

    /// After one backend was rebuilt (servers added or removed, weights of a
    /// hash ring): start checkers for its new servers, stop its departed ones'.
    fn backend_rebuilt(&mut self, b: &BackendRt);

    /// Addresses actually bound, by frontend.
    fn bound_addresses(&self) -> Vec<(String, SocketAddr)>;

    /// Stop everything (graceful shutdown).
    fn stop_all(&mut self);
}
