//! Proxy workers: N threads, each a current-thread tokio runtime with its own
//! accept loop on every listening address (HAProxy's threads, nginx's worker
//! processes). A connection lives on the worker that accepted it: its relay,
//! its buffers, its timers and the tasks it spawns never migrate, so there is
//! no work-stealing and no cross-core wake on the request path.
//!
//! With one thread (`[global] threads = 1`) there are no workers: the proxy
//! runs on the main runtime, as it always did. With more, the main runtime
//! (current-thread) keeps the control plane — health checks, discovery, the
//! admin API, VRRP, signals — and the workers only accept and proxy.
//!
//! Accept distribution: the workers share one listening socket per address
//! (each registers its own duplicate descriptor with its own epoll). A new
//! connection wakes the idle workers and whichever gets there first takes it,
//! so a busy worker takes fewer. The alternative, one `SO_REUSEPORT` socket
//! per worker, removes the wake-up of the losers but spreads by a hash of the
//! 4-tuple regardless of load, and makes an upgrade to a different worker
//! count hand over N sockets of which a closed one resets its queue; one
//! shared socket keeps the upgrade hand-over one socket per address.
//! See README "Per core" for the measurement.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;
use tokio::runtime::Handle;

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();
static ACCEPTED: OnceLock<Box<[AtomicU64]>> = OnceLock::new();
/// Client connections open on each worker now (see [`Open`]).
static OPEN: OnceLock<Box<[CachePadded<AtomicU64>]>> = OnceLock::new();

thread_local! {
    /// This thread's worker index (0 on the main runtime with one thread).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The number of workers `[global] threads` asks for: the value, or the
/// CPUs this process may use (affinity mask and cgroup quota), at least 1.
pub fn resolve(threads: Option<usize>) -> usize {
    threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Start `n` worker threads (n ≥ 2; one thread means no workers). With
/// `pin`, worker i runs only on the i-th CPU of the process's affinity mask
/// (wrapping around when there are more workers than CPUs).
pub fn start(n: usize, pin: bool) -> std::io::Result<()> {
    // Before any listener (the counters are sized once).
    let _ = ACCEPTED.set((0..n).map(|_| AtomicU64::new(0)).collect());
    let _ = OPEN.set(
        (0..n)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let cpus = if pin { allowed_cpus() } else { Vec::new() };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        std::thread::Builder::new()
            .name(format!("fulcrum-w{i}"))
            .spawn(move || {
                INDEX.with(|c| c.set(i));
                if let Some(cpu) = cpu {
                    if let Err(e) = pin_to(cpu) {
                        tracing::warn!(worker = i, cpu, error = %e, "cannot pin worker to its CPU");
                    }
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                // Runs the worker's tasks until the process exits.
                rt.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("worker thread exited at start"))??;
        handles.push(handle);
    }
    WORKERS
        .set(handles)
        .map_err(|_| std::io::Error::other("proxy workers started twice"))
}

/// The workers' runtimes; None with one thread (the proxy then runs on the
/// main runtime).
pub fn handles() -> Option<&'static [Handle]> {
    WORKERS.get().map(Vec::as_slice)
}

/// The counters: one per worker, or one (worker 0) when the proxy runs on
/// the main runtime (one thread, or the library used without `start`).
fn counters() -> &'static [AtomicU64] {
    ACCEPTED.get_or_init(|| vec![AtomicU64::new(0)].into_boxed_slice())
}

/// Count a connection accepted by the worker this runs on.
pub fn count_accept() {
    let i = INDEX.with(Cell::get);
    if let Some(c) = counters().get(i) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client connection open on the worker that accepted it (held for the
/// connection's life; see [`hand_off`]).
pub struct Open(usize);

impl Open {
    /// Count a connection accepted on the worker this runs on.
    pub fn new() -> Open {
        let i = index();
        if let Some(c) = OPEN.get().and_then(|o| o.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Open(i)
    }
}

impl Default for Open {
    fn default() -> Self {
        Open::new()
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(c) = OPEN.get().and_then(|o| o.get(self.0)) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Connections open on each worker now (empty without workers).
pub fn open() -> Vec<u64> {
    OPEN.get()
        .map(|o| o.iter().map(|c| c.load(Ordering::Relaxed)).collect())
        .unwrap_or_default()
}

/// Where a connection just accepted by the worker this runs on should be
/// served instead: the least loaded other worker, when this one holds
/// clearly more client connections than it (the slack, 2 or 1/8 of this
/// worker's count, keeps a balanced pair from trading connections back and
/// forth). None — serve it here — in the common, balanced case.
///
/// Every worker is woken for a new connection on the listening socket they
/// share and whichever calls `accept` first gets it, so a burst of
/// keep-alive connections (a load generator opening its pool) can land
/// mostly on one worker and stay there for its life. HAProxy hands
/// accepted connections to the least loaded thread's queue for the same
/// reason. The hand-over costs one cross-thread wake-up; the connection is
/// registered with the other worker's event loop when it first waits.
pub fn hand_off() -> Option<&'static Handle> {
    let open = OPEN.get().filter(|o| o.len() > 1)?;
    let me = index();
    let mine = open.get(me)?.load(Ordering::Relaxed);
    let (least, n) = open
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != me)
        .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
        .min_by_key(|&(_, n)| n)?;
    if mine <= n + (mine / 8).max(2) {
        return None;
    }
    handles()?.get(least)
}

/// How many workers serve connections (1 without `start`).
pub fn count() -> usize {
    counters().len()
}

/// The worker this runs on (0 off the workers).
#[inline]
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// The accept distribution to measure against the default (benchmarks
/// only, not a supported setting): with `FULCRUM_ACCEPT=reuseport` in the
/// environment and workers running, every listening address gets one
/// `SO_REUSEPORT` socket per worker instead of one socket they share (the
/// extra sockets are not handed over in an upgrade). Read once.
pub fn reuseport() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        WORKERS.get().is_some_and(|w| w.len() > 1)
            && std::env::var_os("FULCRUM_ACCEPT").is_some_and(|v| v == "reuseport")
    })
}

/// How many shards a per-worker counter needs (`runtime::stats::PerWorker`):
/// the workers started, or 1 without workers. Counters made before `start`
/// get one shard, which the workers then share (correct, only contended).
pub fn shards() -> usize {
    WORKERS.get().map_or(1, Vec::len)
}

/// Connections accepted so far by each worker.
pub fn accepted() -> Vec<u64> {
    counters()
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect()
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the buffer is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i < CPU_SETSIZE, within the set.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; cpu < CPU_SETSIZE (it came from the allowed set).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_is_at_least_one() {
        assert!(super::resolve(None) >= 1);
        assert_eq!(super::resolve(Some(3)), 3);
    }
}
