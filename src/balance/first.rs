//! First available: fill servers in config order.
//!
//! Each request goes to the first usable server that is below its `maxconn`,
//! so low-index servers are packed and high-index ones stay idle and can be
//! powered down or scaled in (HAProxy's `balance first`). Without a maxconn a
//! server is never "full", so it takes everything.

use super::{pickable_weight, ServerView};

/// Fill-in-order balancer; stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct First;

impl First {
    /// The first usable server with room; if all are full, the usable one with
    /// the fewest active (so overload spreads instead of piling onto server 0);
    /// `None` when nothing is usable.
    pub fn pick(&self, view: &impl ServerView) -> Option<usize> {
        // (index, active) of the least busy usable server, for the all-full case.
        let mut least: Option<(usize, u32)> = None;
        for i in 0..view.len() {
            if pickable_weight(view, i).is_none() {
                continue;
            }
            let active = view.active(i);
            match view.maxconn(i) {
                Some(max) if active >= max => {}
                _ => return Some(i),
            }
            if least.is_none_or(|(_, a)| active < a) {
                least = Some((i, active));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::TestView;

    #[test]
    fn fills_in_order_with_maxconn() {
        let mut v = TestView::equal(3);
        for s in &mut v.0 {
            s.maxconn = Some(2);
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let i = First.pick(&v).expect("pick");
            v.0[i].active += 1;
            order.push(i);
        }
        assert_eq!(order, [0, 0, 1, 1, 2, 2]);
        // A connection finishing on server 0 makes it first again.
        v.0[0].active -= 1;
        assert_eq!(First.pick(&v), Some(0));
    }

    #[test]
    fn without_maxconn_first_takes_all() {
        let mut v = TestView::equal(3);
        v.0[0].active = 1_000;
        assert_eq!(First.pick(&v), Some(0));
    }

    #[test]
    fn all_full_picks_least_active() {
        let mut v = TestView::equal(3);
        for (s, a) in v.0.iter_mut().zip([5, 3, 4]) {
            s.maxconn = Some(3);
            s.active = a;
        }
        assert_eq!(First.pick(&v), Some(1));
    }

    #[test]
    fn skips_unusable() {
        let mut v = TestView::equal(3);
        v.0[0].usable = false;
        v.0[1].weight = 0;
        assert_eq!(First.pick(&v), Some(2));
    }
}
