//! The thread the active health checks run on.
//!
//! At scale the checks are the busiest thing the control plane does (10 000
//! servers checked every second are 10 000 connects, requests and answers a
//! second). On the control thread they queued in front of every admin API
//! request and every applied change: one `PUT …/state` waited behind
//! hundreds of check tasks. So the checkers get their own thread with its own
//! current-thread runtime; a checker only writes its server's atomics and
//! logs, so nothing it does needs the control thread.
//!
//! One thread per process, started on first use and kept for the life of the
//! process (checkers come and go with reloads; the thread stays).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

static CHECKS: OnceLock<Option<Handle>> = OnceLock::new();

/// The checks runtime, started on first call; `None` when its thread could
/// not be started (then checks run on the caller's runtime, as before).
fn handle() -> Option<&'static Handle> {
    CHECKS
        .get_or_init(|| match start() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(
                    "cannot start the health-check thread: {e}; checks run on the control thread"
                );
                None
            }
        })
        .as_ref()
}

fn start() -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("fulcrum-checks".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Spawn `task` (a checker) on the checks thread.
pub fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match handle() {
        Some(h) => h.spawn(task),
        None => tokio::spawn(task),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn checks_run_on_their_own_thread() {
        let here = std::thread::current().id();
        let (name, id) = super::spawn(async {
            let t = std::thread::current();
            (t.name().map(str::to_string), t.id())
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("fulcrum-checks"));
        assert_ne!(id, here);
    }
}
