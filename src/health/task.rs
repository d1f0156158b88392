//! The per-server checker loop: runs checks on a timer, feeds rise/fall, and
//! writes the resulting health facts into the server's shared state.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::{check_target, run_check};
use super::state::RiseFall;
use crate::config::types::HealthConfig;
use crate::runtime::server::{CheckReport, Role, ServerState};

/// Spawns a task that checks `server` until `stop` fires. Writes health facts into ServerState
/// (set_up on flips, set_last_check every time) and logs each state change with tracing::info/warn
/// ("server web/web1 is DOWN: connection refused (3/3 failed)").
///
/// `stop` fires when its value becomes `true` or when its sender is dropped, so
/// a checker never outlives whoever owns the channel. It is watched during the
/// check and during the wait between checks. When `cfg.check` is None the task
/// returns immediately without touching the server.
///
/// The initial state comes from `server.is_up()`. Like HAProxy, the first
/// successful check marks a server up at once; after that `rise`/`fall` apply.
pub fn spawn_checker(
    server: Arc<ServerState>,
    cfg: HealthConfig,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(checker_loop(server, cfg, stop))
}

/// The checker [`spawn_checker`] spawns, as a future, for a caller that runs
/// it on a runtime of its choosing (the supervisor's checks thread).
pub fn checker(
    server: Arc<ServerState>,
    cfg: HealthConfig,
    stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    checker_loop(server, cfg, stop)
}

async fn checker_loop(
    server: Arc<ServerState>,
    cfg: HealthConfig,
    mut stop: watch::Receiver<bool>,
) {
    let Some(kind) = cfg.check.clone() else {
        return;
    };
    let target = check_target(server.address(), &cfg);
    let mut rf = RiseFall::new(cfg.rise, cfg.fall, server.is_up());
    let mut jitter = Jitter::for_server(&server);
    // A server seeded with its previous process's result (an upgrade) is
    // past its first check: rise/fall apply from the start.
    let mut checked_once = server.last_check().is_some();

    // Spread the first checks of many servers instead of firing them together.
    let first_delay = jitter.up_to_tenth_of(cfg.fast_interval);
    if sleep_or_stop(first_delay, &mut stop).await {
        return;
    }

    loop {
        let started = Instant::now();
        let result = tokio::select! {
            // Boxed: the check's future (the postgres client's above all) is
            // kilobytes, and without the box every checker task would hold
            // that much between checks too (5.6 KiB each, ~56 MB at 10 000
            // servers, found with massif).
            r = Box::pin(run_check(target, &kind, cfg.timeout)) => r,
            _ = stopped(&mut stop) => return,
        };
        let latency = started.elapsed();

        let (ok, detail) = match &result {
            Ok(success) => (true, success.to_string()),
            Err(failure) => (false, failure.to_string()),
        };
        server.set_last_check(CheckReport {
            ok,
            detail: detail.clone(),
            latency,
            at: server.since_epoch(),
        });

        // A role change takes effect at once (not after rise/fall): a demoted
        // primary must stop taking writes on the first check that sees it.
        // A failed check keeps the last role; `fall` decides about health.
        if let Some(role) = result.as_ref().ok().and_then(|s| s.role()) {
            let was = server.set_role(role);
            if was != role {
                log_role(&server, was, role);
            }
        }

        let flip = if !checked_once && ok {
            // HAProxy: a never-checked server is up after its first success.
            rf.force(true).map(|up| (up, "first check".to_string()))
        } else {
            rf.observe(ok).map(|up| {
                let why = if up {
                    format!("{}/{} succeeded", rf.rise(), rf.rise())
                } else {
                    format!("{}/{} failed", rf.fall(), rf.fall())
                };
                (up, why)
            })
        };
        checked_once = true;
        if let Some((up, why)) = flip {
            server.set_up(up);
            log_flip(&server, up, &detail, &why);
        } else {
            tracing::debug!(
                backend = %server.key.backend,
                server = %server.key.name,
                ok,
                streak = rf.streak(),
                "health check: {detail}"
            );
        }

        let base = if rf.in_transition() {
            cfg.fast_interval
        } else {
            cfg.interval
        };
        let delay = base + jitter.up_to_tenth_of(base);
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

fn log_flip(server: &ServerState, up: bool, detail: &str, why: &str) {
    let (backend, name) = (&server.key.backend, &server.key.name);
    if up {
        tracing::info!(
            backend = %backend,
            server = %name,
            "server {backend}/{name} is UP: {detail} ({why})"
        );
    } else {
        tracing::warn!(
            backend = %backend,
            server = %name,
            "server {backend}/{name} is DOWN: {detail} ({why})"
        );
    }
}

fn log_role(server: &ServerState, was: Role, now: Role) {
    let (backend, name) = (&server.key.backend, &server.key.name);
    if was == Role::Unknown {
        tracing::info!(backend = %backend, server = %name, "server {backend}/{name} is {now}");
    } else {
        tracing::warn!(
            backend = %backend,
            server = %name,
            "server {backend}/{name} role changed: {was} -> {now}"
        );
    }
}

/// Waits `delay`; returns true when `stop` fired first.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped(stop) => true,
    }
}

/// Resolves once the stop value is true or the sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Tiny xorshift64 generator for check jitter: not cryptographic, just enough
/// to keep the checks of many servers from aligning.
struct Jitter(u64);

impl Jitter {
    /// Seeded from the server's identity and a per-process random hasher key.
    fn for_server(server: &ServerState) -> Self {
        // xorshift must not start at zero.
        Jitter(RandomState::new().hash_one(&server.key) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random duration in `0..=base/10`.
    fn up_to_tenth_of(&mut self, base: Duration) -> Duration {
        let max_us = u64::try_from(base.as_micros() / 10).unwrap_or(u64::MAX);
        if max_us == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.next() % (max_us + 1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{AdminState, CheckKind, ServerConfig, StatusRange};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Bound for every wait in these tests; generous so slow CI never flakes.
    const WAIT: Duration = Duration::from_secs(10);

    /// An HTTP server whose answer is switchable: 200 while `healthy`, else 500.
    /// Counts the answers of each kind.
    struct Switchable {
        addr: SocketAddr,
        healthy: Arc<AtomicBool>,
        oks: Arc<AtomicU32>,
        errors: Arc<AtomicU32>,
    }

    async fn switchable(initially_healthy: bool) -> Switchable {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(initially_healthy));
        let oks = Arc::new(AtomicU32::new(0));
        let errors = Arc::new(AtomicU32::new(0));
        let (h, o, e) = (healthy.clone(), oks.clone(), errors.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (h, o, e) = (h.clone(), o.clone(), e.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 512];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let resp: &[u8] = if h.load(Ordering::SeqCst) {
                        o.fetch_add(1, Ordering::SeqCst);
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        e.fetch_add(1, Ordering::SeqCst);
                        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(resp).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Switchable {
            addr,
            healthy,
            oks,
            errors,
        }
    }

    fn server(addr: SocketAddr, up: bool) -> Arc<ServerState> {
        let cfg = ServerConfig {
            name: "web1".into(),
            address: addr,
            weight: 1,
            backup: false,
            maxconn: None,
            admin: AdminState::Ready,
        };
        Arc::new(ServerState::new("web", &cfg, Instant::now(), up))
    }

    fn fast_http(rise: u32, fall: u32) -> HealthConfig {
        HealthConfig {
            check: Some(CheckKind::Http {
                method: "GET".into(),
                path: "/health".into(),
                host: None,
                expect: StatusRange { min: 200, max: 200 },
            }),
            interval: Duration::from_millis(20),
            fast_interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            rise,
            fall,
            port: None,
            address: None,
        }
    }

    /// Polls `cond` until it holds or `WAIT` passes; returns whether it held.
    async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn flips_down_after_fall_and_up_after_rise() {
        let backend = switchable(true).await;
        let srv = server(backend.addr, false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = spawn_checker(srv.clone(), fast_http(3, 2), stop_rx);

        // Never checked + first success: up at once (HAProxy), not after `rise`.
        assert!(
            wait_for(|| srv.is_up()).await,
            "first success marks the server up"
        );
        let report = srv.last_check().expect("a check report is stored");
        assert!(report.ok);
        assert_eq!(report.detail, "HTTP 200");

        // Unhealthy: down only after `fall` failures.
        backend.errors.store(0, Ordering::SeqCst);
        backend.healthy.store(false, Ordering::SeqCst);
        assert!(wait_for(|| !srv.is_up()).await, "server goes down");
        assert!(
            backend.errors.load(Ordering::SeqCst) >= 2,
            "needed fall=2 failures"
        );
        let report = srv.last_check().expect("a check report is stored");
        assert!(!report.ok);
        assert_eq!(report.detail, "HTTP 500 (expected 200-200)");

        // Healthy again: up only after `rise` successes (no first-check shortcut now).
        backend.oks.store(0, Ordering::SeqCst);
        backend.healthy.store(true, Ordering::SeqCst);
        assert!(wait_for(|| srv.is_up()).await, "server comes back up");
        assert!(
            backend.oks.load(Ordering::SeqCst) >= 3,
            "needed rise=3 successes"
        );

        stop_tx.send(true).unwrap();
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("checker stops when told")
            .unwrap();
    }

    #[tokio::test]
    async fn starts_down_and_stays_down_while_failing() {
        let backend = switchable(false).await;
        let srv = server(backend.addr, false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = spawn_checker(srv.clone(), fast_http(2, 2), stop_rx);
        // Wait for several failed checks; the server must never have come up.
        assert!(wait_for(|| backend.errors.load(Ordering::SeqCst) >= 3).await);
        assert!(!srv.is_up());
        assert!(srv.last_check().is_some_and(|r| !r.ok));
        // Already checked once, so coming up now takes `rise` successes.
        backend.oks.store(0, Ordering::SeqCst);
        backend.healthy.store(true, Ordering::SeqCst);
        assert!(wait_for(|| srv.is_up()).await);
        assert!(
            backend.oks.load(Ordering::SeqCst) >= 2,
            "already checked: rise applies"
        );
        drop(stop_tx);
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("dropping the sender stops the checker")
            .unwrap();
    }

    #[tokio::test]
    async fn initially_up_server_goes_down_on_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let srv = server(addr, true);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut cfg = fast_http(2, 3);
        cfg.check = Some(CheckKind::Tcp);
        let handle = spawn_checker(srv.clone(), cfg, stop_rx);
        assert!(wait_for(|| !srv.is_up()).await);
        let report = srv.last_check().expect("a check report is stored");
        assert_eq!(report.detail, "connection refused");
        handle.abort();
    }

    #[tokio::test]
    async fn stop_interrupts_a_hanging_check() {
        // A server that accepts and never answers, with a long check timeout:
        // only the stop signal can end the check.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicBool::new(false));
        let acc = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                acc.store(true, Ordering::SeqCst);
                held.push(s);
            }
        });
        let srv = server(addr, false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut cfg = fast_http(2, 2);
        cfg.timeout = Duration::from_secs(3600);
        let handle = spawn_checker(srv.clone(), cfg, stop_rx);
        assert!(wait_for(|| accepted.load(Ordering::SeqCst)).await);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("stop ends the loop during a check")
            .unwrap();
        assert!(
            srv.last_check().is_none(),
            "the interrupted check is not reported"
        );
    }

    /// Paused time: a server that accepts and never answers fails each check at its
    /// timeout, and after `fall` of them it is down. Two one-hour timeouts pass in
    /// virtual time, so the test takes no real hour and has no timing to race.
    #[tokio::test(start_paused = true)]
    async fn a_silent_server_goes_down_by_timeouts_in_virtual_time() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let srv = server(addr, true);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut cfg = fast_http(2, 2);
        cfg.timeout = Duration::from_secs(3600);
        let started = tokio::time::Instant::now();
        let handle = spawn_checker(srv.clone(), cfg.clone(), stop_rx);
        // Bounded: 10 000 virtual minutes, far past the two timeouts needed.
        let mut polls = 0;
        while srv.is_up() && polls < 10_000 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            polls += 1;
        }
        assert!(
            !srv.is_up(),
            "the silent server is down after {polls} polls"
        );
        let report = srv.last_check().expect("a check report is stored");
        assert!(!report.ok);
        assert_eq!(
            report.detail,
            crate::health::CheckFailure::Timeout(cfg.timeout).to_string()
        );
        assert!(
            started.elapsed() >= cfg.timeout * 2,
            "down only after fall = 2 whole timeouts (virtual {:?})",
            started.elapsed()
        );
        handle.abort();
    }

    #[tokio::test]
    async fn no_check_configured_returns_immediately() {
        let srv = server("127.0.0.1:9".parse().unwrap(), true);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut cfg = fast_http(2, 2);
        cfg.check = None;
        tokio::time::timeout(WAIT, spawn_checker(srv.clone(), cfg, stop_rx))
            .await
            .expect("returns without a stop signal")
            .unwrap();
        assert!(srv.is_up());
        assert!(srv.last_check().is_none());
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let mut j = Jitter(0x9E37_79B9_7F4A_7C15);
        let base = Duration::from_millis(2000);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = j.up_to_tenth_of(base);
            assert!(d <= base / 10);
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter actually varies");
        assert_eq!(j.up_to_tenth_of(Duration::ZERO), Duration::ZERO);
        assert_eq!(j.up_to_tenth_of(Duration::from_micros(5)), Duration::ZERO);
    }
}
