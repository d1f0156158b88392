//! Weighted round robin, nginx's "smooth" variant.
//!
//! Each pick adds every usable server's weight to its running `current`
//! value, takes the server with the highest `current`, and subtracts the total
//! weight from it. Over `sum(weights)` picks each server is chosen exactly
//! `weight` times, and heavy servers are interleaved with light ones
//! (3:1 gives `a a b a`, not `a a a b`), so a weight bump does not turn into a
//! burst on one server.
//!
//! The smooth state needs a mutex. Most backends have equal weights, where
//! smooth WRR degenerates to plain rotation, so that case takes a lock-free
//! path on a single atomic counter instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{first_pickable, pickable_weight, ServerView};

/// Smooth weighted round robin with a lock-free fast path for equal weights.
#[derive(Debug)]
pub struct RoundRobin {
    /// Per-server `current_weight`, sized once from the snapshot's server list.
    /// i64 because values swing negative by up to the total weight.
    current: Mutex<Vec<i64>>,
    /// Rotation counter for the equal-weight path and the size-mismatch fallback.
    counter: AtomicUsize,
}

/// What one scan of the view found, to choose the path without a second scan.
struct Scan {
    usable: usize,
    total: u64,
    all_equal: bool,
}

impl RoundRobin {
    /// State for a list of `servers` servers.
    pub fn new(servers: usize) -> RoundRobin {
        RoundRobin {
            current: Mutex::new(vec![0; servers]),
            counter: AtomicUsize::new(0),
        }
    }

    /// Next server in weighted rotation, or `None` when nothing is usable.
    pub fn pick(&self, view: &impl ServerView) -> Option<usize> {
        let scan = scan(view);
        if scan.usable == 0 {
            return None;
        }
        if scan.all_equal {
            // Equal weights: the k-th usable server for a rotating k. Counting over usable
            // servers only (rather than rotating a start index) keeps the split exact when
            // some servers are down instead of doubling the load on their successors.
            let k = self.counter.fetch_add(1, Ordering::Relaxed) % scan.usable;
            return nth_usable(view, k);
        }
        // A poisoned lock only means another thread panicked mid-pick; the weights in
        // it are still a valid (if slightly skewed) state, so keep using them.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.len() != view.len() {
            // The view does not match the snapshot we were built for. Resizing would
            // allocate on the hot path, so fall back to non-smooth weighted rotation.
            drop(current);
            return self.pick_counted(view, scan.total);
        }
        smooth_pick(&mut current, view, scan.total)
    }

    /// Weighted rotation from the shared counter: exact shares, but heavy servers
    /// get their picks back to back. Only used when the view's size is unexpected.
    fn pick_counted(&self, view: &impl ServerView, total: u64) -> Option<usize> {
        let c = self.counter.fetch_add(1, Ordering::Relaxed) as u64;
        let mut target = c % total;
        for i in 0..view.len() {
            if let Some(w) = pickable_weight(view, i) {
                let w = u64::from(w);
                if target < w {
                    return Some(i);
                }
                target -= w;
            }
        }
        // Weights shrank since the scan.
        first_pickable(view)
    }
}

fn scan(view: &impl ServerView) -> Scan {
    let mut s = Scan {
        usable: 0,
        total: 0,
        all_equal: true,
    };
    let mut first = None;
    for i in 0..view.len() {
        if let Some(w) = pickable_weight(view, i) {
            s.usable += 1;
            s.total += u64::from(w);
            match first {
                None => first = Some(w),
                Some(f) if f != w => s.all_equal = false,
                Some(_) => {}
            }
        }
    }
    s
}

fn nth_usable(view: &impl ServerView, k: usize) -> Option<usize> {
    (0..view.len())
        .filter(|&i| pickable_weight(view, i).is_some())
        .nth(k)
        // Fewer usable than counted: a server went down since the scan.
        .or_else(|| first_pickable(view))
}

/// One step of nginx's smooth WRR over `current` (same length as the view).
fn smooth_pick(current: &mut [i64], view: &impl ServerView, total: u64) -> Option<usize> {
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    // (index, current weight) of the best so far; ties go to the lower index.
    let mut best: Option<(usize, i64)> = None;
    for (i, cw) in current.iter_mut().enumerate() {
        match pickable_weight(view, i) {
            Some(w) => {
                *cw = cw.saturating_add(i64::from(w));
                if best.is_none_or(|(_, b)| *cw > b) {
                    best = Some((i, *cw));
                }
            }
            // Forget the credit of servers that drop out, so one coming back does not
            // get a burst for the turns it missed.
            None => *cw = 0,
        }
    }
    let (i, _) = best?;
    if let Some(cw) = current.get_mut(i) {
        *cw = cw.saturating_sub(total);
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{counts, TestView};

    fn seq(rr: &RoundRobin, v: &TestView, n: usize) -> Vec<usize> {
        (0..n).map(|_| rr.pick(v).expect("pick")).collect()
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = RoundRobin::new(2);
        let v = TestView::equal(2);
        assert_eq!(seq(&rr, &v, 6), [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn three_to_one_is_exact_and_smooth() {
        let rr = RoundRobin::new(2);
        let v = TestView::weighted(&[3, 1]);
        assert_eq!(seq(&rr, &v, 4), [0, 0, 1, 0]);
        let rr = RoundRobin::new(2);
        assert_eq!(counts(400, || rr.pick(&v), 2), [300, 100]);
    }

    #[test]
    fn smooth_interleaving_five_one_one() {
        // nginx's documented sequence for weights 5,1,1.
        let rr = RoundRobin::new(3);
        let v = TestView::weighted(&[5, 1, 1]);
        assert_eq!(seq(&rr, &v, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn runtime_weight_change_is_honoured() {
        let rr = RoundRobin::new(2);
        let mut v = TestView::equal(2);
        assert_eq!(counts(100, || rr.pick(&v), 2), [50, 50]);
        v.0[1].weight = 4;
        assert_eq!(counts(500, || rr.pick(&v), 2), [100, 400]);
        v.0[1].weight = 1;
        assert_eq!(counts(100, || rr.pick(&v), 2), [50, 50]);
    }

    #[test]
    fn unusable_servers_are_skipped() {
        let rr = RoundRobin::new(3);
        let mut v = TestView::equal(3);
        v.0[1].usable = false;
        assert_eq!(counts(100, || rr.pick(&v), 3), [50, 0, 50]);
        // Weighted path too.
        v.0[0].weight = 3;
        v.0[2].weight = 1;
        assert_eq!(counts(400, || rr.pick(&v), 3), [300, 0, 100]);
        // Weight 0 is treated as unusable.
        v.0[1].usable = true;
        v.0[1].weight = 0;
        assert_eq!(counts(400, || rr.pick(&v), 3), [300, 0, 100]);
    }

    #[test]
    fn returning_server_gets_no_burst() {
        let rr = RoundRobin::new(2);
        let mut v = TestView::weighted(&[2, 1]);
        v.0[1].usable = false;
        seq(&rr, &v, 10);
        v.0[1].usable = true;
        assert_eq!(counts(3, || rr.pick(&v), 2), [2, 1]);
    }

    #[test]
    fn size_mismatch_falls_back_to_weighted_rotation() {
        let rr = RoundRobin::new(1);
        let v = TestView::weighted(&[3, 1]);
        assert_eq!(counts(400, || rr.pick(&v), 2), [300, 100]);
    }

    #[test]
    fn concurrent_picks_keep_exact_shares() {
        let rr = RoundRobin::new(2);
        let v = TestView::weighted(&[3, 1]);
        let mut total = [0usize; 2];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| counts(100, || rr.pick(&v), 2)))
                .collect();
            for h in handles {
                let c = h.join().expect("thread");
                total[0] += c[0];
                total[1] += c[1];
            }
        });
        assert_eq!(total, [300, 100]);
    }
}
