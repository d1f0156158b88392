//! Least connections, weighted: the usable server with the lowest
//! `active / weight`.
//!
//! Ties are common (every server idle at low load, or equal counts under
//! steady load), and always breaking them toward the lowest index would pile
//! short requests onto the first server. So each pick starts its scan at a
//! rotating offset and keeps the first minimum it meets: equal servers take
//! turns, as HAProxy's leastconn does.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{less_loaded, pickable_weight, ServerView};

/// Weighted least-connections with rotating tie-breaks.
#[derive(Debug, Default)]
pub struct LeastConn {
    /// Where the next scan starts; only its value modulo the list length matters.
    offset: AtomicUsize,
}

impl LeastConn {
    /// Fresh state; nothing depends on the server list.
    pub fn new() -> LeastConn {
        LeastConn::default()
    }

    /// The least loaded usable server, or `None` when nothing is usable.
    pub fn pick(&self, view: &impl ServerView) -> Option<usize> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        let start = self.offset.fetch_add(1, Ordering::Relaxed) % n;
        // (index, active, weight) of the least loaded so far.
        let mut best: Option<(usize, u32, u32)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            let Some(w) = pickable_weight(view, i) else {
                continue;
            };
            let a = view.active(i);
            if best.is_none_or(|(_, ba, bw)| less_loaded(a, w, ba, bw)) {
                best = Some((i, a, w));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{counts, TestView};

    #[test]
    fn prefers_fewer_active() {
        let lc = LeastConn::new();
        let mut v = TestView::equal(3);
        v.0[0].active = 5;
        v.0[1].active = 2;
        v.0[2].active = 7;
        for _ in 0..10 {
            assert_eq!(lc.pick(&v), Some(1));
        }
    }

    #[test]
    fn ties_rotate() {
        let lc = LeastConn::new();
        let v = TestView::equal(2);
        let picks: Vec<_> = (0..6).map(|_| lc.pick(&v).expect("pick")).collect();
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");
        let v = TestView::equal(4);
        assert_eq!(counts(400, || lc.pick(&v), 4), [100; 4]);
    }

    #[test]
    fn weighted_compares_active_per_weight() {
        let lc = LeastConn::new();
        let mut v = TestView::weighted(&[3, 1]);
        // 5/3 < 2/1: the heavy server is relatively less loaded.
        v.0[0].active = 5;
        v.0[1].active = 2;
        assert_eq!(lc.pick(&v), Some(0));
        // 7/3 > 2/1.
        v.0[0].active = 7;
        assert_eq!(lc.pick(&v), Some(1));
    }

    #[test]
    fn simulated_load_follows_weights() {
        // Each pick adds a connection that never finishes: with weights 3:1 the
        // in-flight counts must stay at about 3:1.
        let lc = LeastConn::new();
        let mut v = TestView::weighted(&[3, 1]);
        for _ in 0..400 {
            let i = lc.pick(&v).expect("pick");
            v.0[i].active += 1;
        }
        assert_eq!((v.0[0].active, v.0[1].active), (300, 100));
    }

    #[test]
    fn unusable_skipped() {
        let lc = LeastConn::new();
        let mut v = TestView::equal(3);
        v.0[0].usable = false;
        v.0[1].active = 10;
        v.0[2].weight = 0;
        for _ in 0..5 {
            assert_eq!(lc.pick(&v), Some(1));
        }
    }
}
