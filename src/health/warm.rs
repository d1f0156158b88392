//! Cold start: a frontend accepts its first connection only once every
//! server its backends check has a first answer (bounded by the check
//! timeout), so no connection is refused or closed with "no server" because
//! checks have not run yet. Connections that arrive meanwhile wait in the
//! kernel's accept queue (the socket is bound and listening).

use std::time::{Duration, Instant};

use crate::runtime::{BackendRt, Runtime};

/// Slack over the longest first check (jitter, scheduling on a busy box).
const SLACK: Duration = Duration::from_millis(250);

/// How often the pending servers are looked at again.
const POLL: Duration = Duration::from_millis(5);

/// Longest wait for a discovery source's first list (an inventory file is read at
/// once; DNS may take a resolver timeout — past this the frontend opens anyway).
const DISCOVERY_FIRST: Duration = Duration::from_secs(2);

fn pending(rt: &Runtime, b: &BackendRt) -> usize {
    // A discovered backend is empty until its source's first list: found by
    // bench/soak.sh, a new process took over from an upgraded one and answered
    // 503 "no server" for the few hundred ms before its inventory file was read.
    if b.config.discovery.is_some() && crate::discovery::first_list_pending(rt, &b.name) {
        return 1;
    }
    if b.config.health.check.is_none() {
        return 0;
    }
    b.servers
        .iter()
        .filter(|s| s.check_counts() == (0, 0) && s.last_check().is_none())
        .count()
}

/// The longest a first check of `b` can take: the first check starts within
/// a tenth of `fast_interval` and ends within `timeout`.
fn bound(b: &BackendRt) -> Duration {
    let h = &b.config.health;
    let discovery = if b.config.discovery.is_some() {
        DISCOVERY_FIRST
    } else {
        Duration::ZERO
    };
    discovery + h.fast_interval / 10 + h.timeout + SLACK
}

/// Wait until the servers of `frontend`'s backends (default and routes)
/// have had a first check answer, or the checks' bound passed. Returns how
/// long it waited and how many servers were still unanswered.
pub async fn first_checks(rt: &Runtime, frontend: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut deadline: Option<Instant> = None;
    loop {
        let (left, limit) = {
            let snap = rt.snapshot();
            let Some(fe) = snap.frontends.get(frontend) else {
                return (start.elapsed(), 0);
            };
            let backends = fe
                .default
                .iter()
                .chain(fe.routes.iter().map(|r| &r.backend));
            let mut left = 0;
            let mut limit = Duration::ZERO;
            for b in backends {
                let n = pending(rt, b);
                if n > 0 {
                    left += n;
                    limit = limit.max(bound(b));
                }
            }
            (left, limit)
        };
        if left == 0 {
            return (start.elapsed(), 0);
        }
        let deadline = *deadline.get_or_insert(start + limit);
        if Instant::now() >= deadline {
            return (start.elapsed(), left);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`first_checks`] for every frontend at once (used before telling systemd
/// or an old process that this one is ready).
pub async fn all_first_checks(rt: &Runtime) {
    let names: Vec<String> = rt.snapshot().frontends.keys().cloned().collect();
    let waits = names.iter().map(|n| first_checks(rt, n));
    futures_util::future::join_all(waits).await;
}
