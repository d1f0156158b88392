//! Counting open client connections so a graceful stop can wait for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Counts open client connections.
#[derive(Debug, Default, Clone)]
pub struct ConnTracker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: AtomicUsize,
    idle: Notify,
}

/// One open connection; dropping it closes the count.
#[derive(Debug)]
pub struct ConnGuard {
    inner: Arc<Inner>,
}

impl ConnTracker {
    /// Register an open connection.
    pub fn track(&self) -> ConnGuard {
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        ConnGuard {
            inner: self.inner.clone(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Wait until no connection is open, or `limit` passes. Returns true when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
