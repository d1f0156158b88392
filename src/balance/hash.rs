//! Consistent hashing for `source` (client IP) and `uri` (path) balancing.
//!
//! A ketama-style ring: each server gets `POINTS_PER_WEIGHT * weight` pseudo
//! random points on a 64-bit circle, and a key goes to the owner of the first
//! point at or after the key's position. When a server is down its points are
//! simply skipped during the walk, so only the keys it owned move (to the next
//! servers clockwise, spread by its scattered points), about 1/N of them; every
//! other key stays where it was. Plain `key % n` would reshuffle nearly all.
//!
//! The ring is laid out once per snapshot from the static weights, so a runtime
//! weight tweak does not move keys. Requests without a key (no client address,
//! say) fall back to round robin.

use super::roundrobin::RoundRobin;
use super::{mix64, pickable_weight, ServerView};

/// Virtual points per unit of weight: enough that a server's share of the ring
/// stays within a few percent of its weight share.
const POINTS_PER_WEIGHT: u64 = 160;

/// Upper bound on ring points (16 bytes each): 4 MiB per hashed backend at most,
/// so huge weights or server counts scale down instead of exhausting memory.
const MAX_POINTS: u64 = 1 << 18;

/// A consistent-hash ring plus the round robin used for keyless requests.
#[derive(Debug)]
pub struct HashRing {
    /// `(position, server index)`, sorted by position.
    points: Vec<(u64, u32)>,
    /// Number of servers the ring was built for, to detect a mismatched view.
    servers: usize,
    fallback: RoundRobin,
}

impl HashRing {
    /// Lay out the ring for servers with these static weights, identified by
    /// their position in the list (tests; prefer [`HashRing::with_ids`]).
    pub fn new(weights: &[u32]) -> HashRing {
        let ids: Vec<u64> = (0..weights.len() as u64).collect();
        HashRing::with_ids(weights, &ids)
    }

    /// Lay out the ring with each server's points placed by a stable identity
    /// (a hash of its name), so adding or removing one server from the list
    /// does not move the points — and the keys — of the others.
    pub fn with_ids(weights: &[u32], ids: &[u64]) -> HashRing {
        let total_weight: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
        let wanted = total_weight.saturating_mul(POINTS_PER_WEIGHT);
        let mut points = Vec::new();
        for (server, &w) in weights.iter().enumerate() {
            // Servers past u32::MAX cannot be stored; nobody configures that many.
            let Ok(idx) = u32::try_from(server) else {
                break;
            };
            // A server drained (weight 0) at build time still gets weight-1 points: it is
            // skipped while its live weight is 0, and reachable if an operator raises it.
            let w = u64::from(w.max(1));
            let n = if wanted > MAX_POINTS {
                // Scale proportionally, but keep at least one point so the server is reachable.
                (w.saturating_mul(MAX_POINTS) / total_weight.max(1)).max(1)
            } else {
                w * POINTS_PER_WEIGHT
            };
            for replica in 0..n {
                let id = ids.get(server).copied().unwrap_or(server as u64);
                points.push((point_position(id, replica), idx));
            }
        }
        // Ties between positions are astronomically rare; ordering them by server keeps
        // the layout deterministic anyway.
        points.sort_unstable();
        HashRing {
            points,
            servers: weights.len(),
            fallback: RoundRobin::new(weights.len()),
        }
    }

    /// The server owning `key`, skipping unusable ones; round robin when `key` is
    /// `None`; `None` when nothing is usable.
    pub fn pick(&self, view: &impl ServerView, key: Option<u64>) -> Option<usize> {
        let Some(key) = key else {
            return self.fallback.pick(view);
        };
        // Mix again: callers may pass raw small integers, which would all land in the
        // first sliver of the circle.
        let pos = mix64(key);
        if view.len() != self.servers {
            // The view is not the list this ring was built for; rebuilding would allocate,
            // so use rendezvous hashing, which is consistent too, only O(n) per pick.
            return rendezvous(view, pos);
        }
        // Without this, a backend with everything down would walk the whole ring
        // (up to MAX_POINTS steps) on every request, just when it is under stress.
        if !(0..view.len()).any(|i| pickable_weight(view, i).is_some()) {
            return None;
        }
        let start = self.points.partition_point(|&(p, _)| p < pos);
        let len = self.points.len();
        (0..len)
            .map(|step| (start + step) % len)
            .filter_map(|j| self.points.get(j))
            .map(|&(_, server)| server as usize)
            .find(|&i| pickable_weight(view, i).is_some())
            // Only reachable if the usable servers went down mid-walk; stay consistent.
            .or_else(|| rendezvous(view, pos))
    }
}

/// Position of one virtual point: a hash of (server identity, replica), so the
/// layout depends only on server names and weights and is identical on every node.
fn point_position(server: u64, replica: u64) -> u64 {
    mix64(mix64(server.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ replica)
}

/// Weighted rendezvous (highest random weight) hashing over the whole view.
///
/// Each usable server scores `-weight / ln(u)` with `u` a uniform draw seeded by
/// (key, server); the highest score wins. Removing a server only moves the keys
/// it won, like the ring.
fn rendezvous(view: &impl ServerView, pos: u64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for i in 0..view.len() {
        let Some(w) = pickable_weight(view, i) else {
            continue;
        };
        let h = mix64(pos ^ mix64(i as u64));
        // Uniform in (0, 1): 53 high bits, offset by half a step to avoid ln(0).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(w) / u.ln();
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash_key;
    use crate::balance::testing::TestView;

    const KEYS: u64 = 10_000;

    fn key(k: u64) -> Option<u64> {
        Some(hash_key(&k.to_le_bytes()))
    }

    fn owners(ring: &HashRing, v: &TestView) -> Vec<usize> {
        (0..KEYS)
            .map(|k| ring.pick(v, key(k)).expect("pick"))
            .collect()
    }

    #[test]
    fn same_key_same_server() {
        let ring = HashRing::new(&[1, 1, 1, 1]);
        let v = TestView::equal(4);
        for k in 0..100 {
            let first = ring.pick(&v, key(k));
            for _ in 0..5 {
                assert_eq!(ring.pick(&v, key(k)), first);
            }
            // A ring rebuilt from the same weights agrees: the layout is deterministic.
            assert_eq!(HashRing::new(&[1, 1, 1, 1]).pick(&v, key(k)), first);
        }
    }

    #[test]
    fn removing_one_of_five_moves_only_its_keys() {
        let ring = HashRing::new(&[1; 5]);
        let mut v = TestView::equal(5);
        let before = owners(&ring, &v);
        v.0[2].usable = false;
        let after = owners(&ring, &v);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                moved += 1;
                assert_eq!(*b, 2, "a key of a remaining server moved");
            }
            assert_ne!(*a, 2);
        }
        let frac = moved as f64 / KEYS as f64;
        assert!((0.10..=0.30).contains(&frac), "moved {frac}");
        // Bringing it back restores the original mapping exactly.
        v.0[2].usable = true;
        assert_eq!(owners(&ring, &v), before);
    }

    #[test]
    fn weights_two_to_one_share() {
        let ring = HashRing::new(&[2, 1]);
        let v = TestView::equal(2);
        let heavy = owners(&ring, &v).iter().filter(|&&s| s == 0).count();
        let share = heavy as f64 / KEYS as f64;
        assert!((share - 2.0 / 3.0).abs() < 0.05, "share {share}");
    }

    #[test]
    fn equal_weights_spread_evenly() {
        let ring = HashRing::new(&[1; 4]);
        let v = TestView::equal(4);
        let o = owners(&ring, &v);
        for s in 0..4 {
            let share = o.iter().filter(|&&x| x == s).count() as f64 / KEYS as f64;
            assert!((share - 0.25).abs() < 0.06, "server {s}: {share}");
        }
    }

    #[test]
    fn no_key_falls_back_to_round_robin() {
        let ring = HashRing::new(&[1, 1, 1]);
        let v = TestView::equal(3);
        let picks: Vec<_> = (0..6).map(|_| ring.pick(&v, None).expect("pick")).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn server_drained_at_build_is_reachable_when_weight_raised() {
        let ring = HashRing::new(&[1, 0]);
        let mut v = TestView::weighted(&[1, 0]);
        assert!(owners(&ring, &v).iter().all(|&s| s == 0));
        v.0[1].weight = 1;
        assert!(owners(&ring, &v).contains(&1));
    }

    #[test]
    fn huge_weights_are_capped() {
        let ring = HashRing::new(&[u32::MAX, 1, u32::MAX]);
        assert!(ring.points.len() as u64 <= MAX_POINTS + 3);
        let v = TestView::weighted(&[u32::MAX, 1, u32::MAX]);
        assert!(ring.pick(&v, key(1)).is_some());
    }

    #[test]
    fn mismatched_view_is_still_consistent() {
        let ring = HashRing::new(&[1, 1]);
        let mut v = TestView::equal(5);
        let before = owners(&ring, &v);
        v.0[4].usable = false;
        let after = owners(&ring, &v);
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*b, 4);
            }
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::balance::hash_key;

    struct V(Vec<u32>);
    impl ServerView for V {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn usable(&self, _: usize) -> bool {
            true
        }
        fn weight(&self, i: usize) -> u32 {
            self.0.get(i).copied().unwrap_or(0)
        }
        fn active(&self, _: usize) -> u32 {
            0
        }
        fn maxconn(&self, _: usize) -> Option<u32> {
            None
        }
    }

    #[test]
    fn removing_a_server_from_the_list_keeps_other_keys() {
        let names = ["a", "b", "c", "d", "e"];
        let ids: Vec<u64> = names.iter().map(|n| hash_key(n.as_bytes())).collect();
        let full = HashRing::with_ids(&[1; 5], &ids);
        // "c" removed from the list: indexes after it shift, identities do not.
        let ids4: Vec<u64> = [0usize, 1, 3, 4].iter().map(|&i| ids[i]).collect();
        let less = HashRing::with_ids(&[1; 4], &ids4);
        let (v5, v4) = (V(vec![1; 5]), V(vec![1; 4]));
        let mut moved = 0;
        for k in 0..10_000u64 {
            let before = names[full.pick(&v5, Some(k)).expect("pick")];
            let after = ["a", "b", "d", "e"][less.pick(&v4, Some(k)).expect("pick")];
            if before != "c" && before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys of remaining servers moved");
    }
}
