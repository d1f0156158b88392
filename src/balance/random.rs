//! Random with power of two choices.
//!
//! Draw two distinct usable servers at random (each draw weighted by server
//! weight) and send the request to the one with the lower `active / weight`.
//! Pure random piles up load by bad luck; a global least-conn scan makes every
//! balancer in a fleet herd onto the same idle server. Two choices keep most of
//! least-conn's benefit without either problem (Mitzenmacher), and cost O(n)
//! with no shared state beyond a thread-local RNG.

use super::{first_pickable, less_loaded, pickable_weight, ServerView};

/// Weighted power-of-two-choices.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// Fresh state; the RNG is fastrand's thread-local one, so nothing is shared.
    pub fn new() -> PowerOfTwo {
        PowerOfTwo
    }

    /// One of two weighted-random usable servers, the less loaded; `None` when
    /// nothing is usable.
    pub fn pick(&self, view: &impl ServerView) -> Option<usize> {
        pick_with(view, &mut |bound| fastrand::u64(..bound))
    }
}

/// The pick with an injectable RNG so tests can be seeded. `rand(bound)` must
/// return a value in `0..bound` (`bound` is always >= 1).
fn pick_with(view: &impl ServerView, rand: &mut impl FnMut(u64) -> u64) -> Option<usize> {
    let total: u64 = (0..view.len())
        .filter_map(|i| pickable_weight(view, i))
        .map(u64::from)
        .sum();
    if total == 0 {
        return None;
    }
    // The view is live: servers may go down or change weight between the scan above
    // and the draws below, so a draw can miss; fall back rather than fail the request.
    let Some((a, wa)) = weighted_nth(view, rand(total), None) else {
        return first_pickable(view);
    };
    let rest = total.saturating_sub(u64::from(wa));
    if rest == 0 {
        // The only usable server.
        return Some(a);
    }
    let Some((b, wb)) = weighted_nth(view, rand(rest), Some(a)) else {
        return Some(a);
    };
    // Ties keep the first draw, so with no load the share is exactly the weight share.
    if less_loaded(view.active(b), wb, view.active(a), wa) {
        Some(b)
    } else {
        Some(a)
    }
}

/// The usable server whose cumulative-weight slot contains `target`, skipping
/// `except` (the first draw) so the two choices are distinct.
fn weighted_nth(
    view: &impl ServerView,
    mut target: u64,
    except: Option<usize>,
) -> Option<(usize, u32)> {
    for i in 0..view.len() {
        if Some(i) == except {
            continue;
        }
        if let Some(w) = pickable_weight(view, i) {
            if target < u64::from(w) {
                return Some((i, w));
            }
            target -= u64::from(w);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{counts, TestView};

    fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        move |bound| rng.u64(..bound)
    }

    #[test]
    fn idle_distribution_follows_weights() {
        let v = TestView::weighted(&[1, 2, 3, 4]);
        let mut rand = seeded(42);
        let n = 100_000;
        let c = counts(n, || pick_with(&v, &mut rand), 4);
        for (i, &got) in c.iter().enumerate() {
            let want = (i + 1) as f64 / 10.0;
            let share = got as f64 / n as f64;
            assert!((share - want).abs() < 0.02, "server {i}: {share} vs {want}");
        }
    }

    #[test]
    fn unseeded_pick_also_follows_weights() {
        let v = TestView::weighted(&[1, 3]);
        let p = PowerOfTwo::new();
        let n = 100_000;
        let c = counts(n, || p.pick(&v), 2);
        let share = c[1] as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }

    #[test]
    fn avoids_the_loaded_server() {
        let mut v = TestView::equal(2);
        v.0[0].active = 100;
        let mut rand = seeded(7);
        // With two servers the two choices are always both of them.
        for _ in 0..1000 {
            assert_eq!(pick_with(&v, &mut rand), Some(1));
        }
        // With more servers the loaded one is chosen only if drawn twice, which
        // distinct draws rule out.
        let mut v = TestView::equal(5);
        v.0[3].active = 100;
        let c = counts(10_000, || pick_with(&v, &mut rand), 5);
        assert_eq!(c[3], 0, "{c:?}");
    }

    #[test]
    fn single_usable_server_is_picked() {
        let mut v = TestView::equal(3);
        v.0[0].usable = false;
        v.0[2].weight = 0;
        v.0[1].active = 1000;
        let mut rand = seeded(1);
        for _ in 0..100 {
            assert_eq!(pick_with(&v, &mut rand), Some(1));
        }
    }

    #[test]
    fn unusable_never_picked() {
        let mut v = TestView::equal(4);
        v.0[2].usable = false;
        let mut rand = seeded(3);
        let c = counts(10_000, || pick_with(&v, &mut rand), 4);
        assert_eq!(c[2], 0);
        assert!(
            c.iter().enumerate().all(|(i, &n)| i == 2 || n > 2000),
            "{c:?}"
        );
    }
}
