//! The access-log pipeline: per-thread line buffers, a bounded queue of
//! batches and the writer thread (see the module doc of [`crate::log`]).
//!
//! Bound on memory: `buffer` bytes queued or being written, plus one
//! thread buffer (64 KiB) per thread that logs. Lines are dropped whole,
//! a batch at a time, and counted in [`dropped`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::sink::Sink;
use crate::config::types::LogTarget;

/// A thread buffer is handed to the writer once it holds this much.
const BATCH: usize = 64 * 1024;
/// The writer writes what the threads hold at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// At most one "lines dropped" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Default `[log] buffer`.
pub const DEFAULT_BUFFER: usize = 4 * 1024 * 1024;

/// Lines formatted by one thread, not yet handed to the writer.
#[derive(Default)]
struct Local {
    buf: Vec<u8>,
    lines: u64,
}

struct Batch {
    buf: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    /// Bytes queued or being written (what `cap` bounds).
    bytes: usize,
    /// Written buffers kept for reuse, so a handoff does not allocate.
    spare: Vec<Vec<u8>>,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Every thread's buffer, for the writer's timed sweep.
    locals: Mutex<Vec<Arc<Mutex<Local>>>>,
    dropped: AtomicU64,
    cap: usize,
    /// Set once the writer has written everything after a stop.
    done: (Mutex<bool>, Condvar),
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
static STARTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOCAL: RefCell<Option<Arc<Mutex<Local>>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock leaves only log bytes behind: go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start the writer thread for `target` with a queue of `buffer` bytes.
/// Called once, by `fulcrum run` before the listeners open; a second call
/// (or a line logged before any call, e.g. by a library user) keeps the
/// first settings (stdout, default buffer).
pub fn start(target: &LogTarget, buffer: usize) -> std::io::Result<()> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let sink = Sink::open(target)?;
    let shared = SHARED.get_or_init(|| new_shared(buffer)).clone();
    std::thread::Builder::new()
        .name("fulcrum-log".into())
        .spawn(move || writer(shared, sink))?;
    Ok(())
}

fn new_shared(cap: usize) -> Arc<Shared> {
    Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        locals: Mutex::new(Vec::new()),
        dropped: AtomicU64::new(0),
        cap,
        done: (Mutex::new(false), Condvar::new()),
    })
}

fn shared() -> &'static Arc<Shared> {
    let s = SHARED.get_or_init(|| new_shared(DEFAULT_BUFFER));
    if !STARTED.load(Ordering::Relaxed) {
        let _ = start(&LogTarget::Stdout, DEFAULT_BUFFER);
    }
    s
}

/// Lines dropped because the sink was too slow (or failed) so far.
pub fn dropped() -> u64 {
    SHARED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Append one line: `f` writes it (without the newline) into this thread's
/// buffer. Never blocks on the sink.
pub fn emit(f: impl FnOnce(&mut Vec<u8>)) {
    let shared = shared();
    LOCAL.with(|slot| {
        let mut slot = slot.borrow_mut();
        let local = slot.get_or_insert_with(|| {
            let l = Arc::new(Mutex::new(Local {
                buf: Vec::with_capacity(BATCH + 1024),
                lines: 0,
            }));
            lock(&shared.locals).push(l.clone());
            l
        });
        let mut l = lock(local);
        f(&mut l.buf);
        l.buf.push(b'\n');
        l.lines += 1;
        if l.buf.len() >= BATCH {
            hand_off(shared, &mut l, true);
        }
    });
}

/// Move a thread's lines to the queue (or drop them when it is full).
/// Called with the thread's lock held, so one thread's lines stay in order.
fn hand_off(shared: &Shared, l: &mut Local, notify: bool) {
    if l.buf.is_empty() {
        return;
    }
    let mut q = lock(&shared.queue);
    let fresh = q
        .spare
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(BATCH + 1024));
    let buf = std::mem::replace(&mut l.buf, fresh);
    let lines = std::mem::take(&mut l.lines);
    if q.bytes + buf.len() > shared.cap {
        shared.dropped.fetch_add(lines, Ordering::Relaxed);
        recycle(&mut q, buf);
        return;
    }
    q.bytes += buf.len();
    q.batches.push_back(Batch { buf });
    drop(q);
    if notify {
        shared.wake.notify_one();
    }
}

fn recycle(q: &mut Queue, mut buf: Vec<u8>) {
    // Keep a few buffers of the usual size; a huge one goes back to the heap.
    if q.spare.len() < 8 && buf.capacity() <= 2 * BATCH {
        buf.clear();
        q.spare.push(buf);
    }
}

/// Every thread's lines into the queue.
fn sweep(shared: &Shared) {
    let locals = lock(&shared.locals);
    for l in locals.iter() {
        hand_off(shared, &mut lock(l), false);
    }
    drop(locals);
    // Threads that ended left an empty buffer behind: forget them.
    lock(&shared.locals).retain(|l| Arc::strong_count(l) > 1 || !lock(l).buf.is_empty());
}

fn writer(shared: Arc<Shared>, mut sink: Sink) {
    let mut last_warn: Option<Instant> = None;
    let mut warned_at = 0u64;
    let mut out: Vec<Batch> = Vec::new();
    loop {
        let stop = {
            let q = lock(&shared.queue);
            let (q, _) = shared
                .wake
                .wait_timeout_while(q, FLUSH_INTERVAL, |q| q.batches.is_empty() && !q.stop)
                .unwrap_or_else(|p| p.into_inner());
            q.stop
        };
        sweep(&shared);
        out.extend(lock(&shared.queue).batches.drain(..));
        if !out.is_empty() {
            let slices: Vec<&[u8]> = out.iter().map(|b| &b.buf[..]).collect();
            let (lost, err) = sink.write(&slices);
            if lost > 0 {
                shared.dropped.fetch_add(lost, Ordering::Relaxed);
                if let Some(e) = err {
                    if last_warn.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                        tracing::warn!("access log: cannot write {lost} line(s): {e}");
                    }
                }
            }
            let mut q = lock(&shared.queue);
            for b in out.drain(..) {
                q.bytes = q.bytes.saturating_sub(b.buf.len());
                recycle(&mut q, b.buf);
            }
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > warned_at && last_warn.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
            tracing::warn!(
                dropped = dropped - warned_at,
                total = dropped,
                "access log: lines dropped, the log sink is too slow or blocked (the queue holds {} bytes; [log] buffer)",
                shared.cap
            );
            warned_at = dropped;
            last_warn = Some(Instant::now());
        }
        if stop && lock(&shared.queue).batches.is_empty() {
            let (m, cv) = &shared.done;
            *lock(m) = true;
            cv.notify_all();
            return;
        }
    }
}

/// Write every line logged so far and stop the writer; waits at most
/// `limit` (a blocked sink must not keep the process from exiting).
/// Returns false when lines may be left unwritten.
pub fn shutdown(limit: Duration) -> bool {
    let Some(shared) = SHARED.get() else {
        return true;
    };
    if !STARTED.load(Ordering::Relaxed) {
        return true;
    }
    lock(&shared.queue).stop = true;
    shared.wake.notify_one();
    let (m, cv) = &shared.done;
    let done = lock(m);
    let (done, _) = cv
        .wait_timeout_while(done, limit, |d| !*d)
        .unwrap_or_else(|p| p.into_inner());
    let total = shared.dropped.load(Ordering::Relaxed);
    if total > 0 {
        tracing::warn!(total, "access log: lines dropped since start");
    }
    *done
}
