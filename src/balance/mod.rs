//! Balancing algorithms: given a view of a backend's servers, pick one.
//!
//! Everything here is sans-IO: a [`Balancer`] is built once per runtime
//! snapshot from the configured static weights, and [`Balancer::pick`] reads
//! the live facts (health, weight, in-flight count, maxconn) through a
//! [`ServerView`] that the runtime implements over its per-server atomics.
//! `pick` never allocates and is safe to call from many threads at once, so it
//! can sit on the request path without a global lock (round robin with
//! unequal weights takes one short mutex, like nginx's per-upstream lock).
//!
//! One file per algorithm: [`roundrobin`], [`leastconn`], [`random`],
//! [`hash`] (source / uri), [`first`].

pub mod first;
pub mod hash;
pub mod leastconn;
pub mod random;
pub mod roundrobin;

use crate::config::types::Algorithm;

use first::First;
use hash::HashRing;
use leastconn::LeastConn;
use random::PowerOfTwo;
use roundrobin::RoundRobin;

/// What a balancer sees of the server list; implemented by the runtime over
/// its per-server atomics.
///
/// Indices are positions in the backend's server list (config order), the same
/// order as the weights given to [`Balancer::new`].
pub trait ServerView {
    /// Number of servers in the list.
    fn len(&self) -> usize;
    /// True when the list has no servers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// May server `i` take this request right now? (health, admin state,
    /// passive ejection, backup-tier filtering and "already tried by this
    /// request" are all folded in by the caller)
    fn usable(&self, i: usize) -> bool;
    /// Current (runtime) weight of server `i`; `>= 1` normally, 0 means unusable.
    fn weight(&self, i: usize) -> u32;
    /// In-flight requests/connections on server `i`.
    fn active(&self, i: usize) -> u32;
    /// Concurrency limit of server `i`, `None` for unlimited.
    fn maxconn(&self, i: usize) -> Option<u32>;
}

/// Weight of server `i` if it may be picked at all.
///
/// Folds the bounds check in so a view shorter than the balancer's idea of the
/// list never gets asked about an index it does not have, and treats weight 0
/// as "drained" the way HAProxy does.
#[inline]
pub(crate) fn pickable_weight(view: &impl ServerView, i: usize) -> Option<u32> {
    if i >= view.len() || !view.usable(i) {
        return None;
    }
    match view.weight(i) {
        0 => None,
        w => Some(w),
    }
}

/// First pickable server in index order.
///
/// The runtime's view is live atomics, so a server can go down between two scans
/// of one pick; algorithms that scan twice use this rather than return `None`
/// while a usable server exists.
pub(crate) fn first_pickable(view: &impl ServerView) -> Option<usize> {
    (0..view.len()).find(|&i| pickable_weight(view, i).is_some())
}

/// True when server `a` is strictly less loaded than server `b`, comparing
/// `active / weight` by cross-multiplying in u64 so no floats or division are
/// needed and no overflow is possible (u32 * u32 fits u64).
#[inline]
pub(crate) fn less_loaded(active_a: u32, weight_a: u32, active_b: u32, weight_b: u32) -> bool {
    u64::from(active_a) * u64::from(weight_b) < u64::from(active_b) * u64::from(weight_a)
}

/// A backend's balancer, built once per runtime snapshot.
///
/// Enum dispatch rather than `Box<dyn>`: the set of algorithms is closed and
/// the pick is on the hot path.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    Random(PowerOfTwo),
    Hash(HashRing),
    First(First),
}

impl Balancer {
    /// Build a balancer from the server list's static weights (config order).
    ///
    /// The weights size the round-robin state and lay out the consistent-hash
    /// ring; live weight changes are read through the [`ServerView`] at pick
    /// time (the hash ring keeps its layout until the next snapshot so keys do
    /// not move on every weight tweak).
    pub fn new(algorithm: Algorithm, weights: &[u32]) -> Balancer {
        let ids: Vec<u64> = (0..weights.len() as u64).collect();
        Balancer::with_ids(algorithm, weights, &ids)
    }

    /// Like [`Balancer::new`], with a stable identity per server (a hash of its
    /// name) so consistent hashing keeps keys in place when the list changes.
    pub fn with_ids(algorithm: Algorithm, weights: &[u32], ids: &[u64]) -> Balancer {
        let inner = match algorithm {
            Algorithm::RoundRobin => Inner::RoundRobin(RoundRobin::new(weights.len())),
            Algorithm::LeastConn => Inner::LeastConn(LeastConn::new()),
            Algorithm::Random => Inner::Random(PowerOfTwo::new()),
            Algorithm::Source | Algorithm::Uri => Inner::Hash(HashRing::with_ids(weights, ids)),
            Algorithm::First => Inner::First(First),
        };
        Balancer { algorithm, inner }
    }

    /// Pick a server index, or `None` if no server is usable.
    ///
    /// `hash_key` is used by `Source`/`Uri` (`None` falls back to round robin)
    /// and ignored by the others. Does not allocate; safe to call concurrently.
    pub fn pick(&self, view: &impl ServerView, hash_key: Option<u64>) -> Option<usize> {
        match &self.inner {
            Inner::RoundRobin(rr) => rr.pick(view),
            Inner::LeastConn(lc) => lc.pick(view),
            Inner::Random(p2c) => p2c.pick(view),
            Inner::Hash(ring) => ring.pick(view, hash_key),
            Inner::First(first) => first.pick(view),
        }
    }

    /// The algorithm this balancer was built for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Stable 64-bit hash for hash keys (client IP bytes, URI path).
///
/// FNV-1a followed by a murmur3 finalizer: FNV is simple and deterministic
/// across runs and builds (unlike `RandomState`), so a key maps to the same
/// server after a restart or on a peer node; the finalizer spreads FNV's weak
/// high bits, which matter because the ring compares full 64-bit positions.
pub fn hash_key(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// The key a request is balanced on by `source` (client address) or `uri`
/// (path without the query); None for the other algorithms.
pub fn request_key(
    alg: crate::config::types::Algorithm,
    client: std::net::IpAddr,
    path: &[u8],
) -> Option<u64> {
    use crate::config::types::Algorithm;
    match alg {
        Algorithm::Source => Some(match client {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        Algorithm::Uri => Some(hash_key(path)),
        _ => None,
    }
}

/// murmur3's 64-bit finalizer: a cheap bijective mix with full avalanche.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
pub(crate) mod testing {
    //! A Vec-backed [`ServerView`] for the algorithm tests.

    use super::ServerView;

    /// One server as the tests see it.
    #[derive(Debug, Clone)]
    pub struct TestServer {
        pub usable: bool,
        pub weight: u32,
        pub active: u32,
        pub maxconn: Option<u32>,
    }

    /// Plain list of servers; mutate fields between picks to simulate the runtime.
    #[derive(Debug, Clone)]
    pub struct TestView(pub Vec<TestServer>);

    impl TestView {
        /// All usable, idle, unlimited, with these weights.
        pub fn weighted(weights: &[u32]) -> TestView {
            TestView(
                weights
                    .iter()
                    .map(|&weight| TestServer {
                        usable: true,
                        weight,
                        active: 0,
                        maxconn: None,
                    })
                    .collect(),
            )
        }

        /// `n` usable idle servers of weight 1.
        pub fn equal(n: usize) -> TestView {
            TestView::weighted(&vec![1; n])
        }
    }

    impl ServerView for TestView {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn usable(&self, i: usize) -> bool {
            self.0[i].usable
        }
        fn weight(&self, i: usize) -> u32 {
            self.0[i].weight
        }
        fn active(&self, i: usize) -> u32 {
            self.0[i].active
        }
        fn maxconn(&self, i: usize) -> Option<u32> {
            self.0[i].maxconn
        }
    }

    /// Pick counts per server over `n` picks.
    pub fn counts(n: usize, mut pick: impl FnMut() -> Option<usize>, servers: usize) -> Vec<usize> {
        let mut c = vec![0; servers];
        for _ in 0..n {
            let i = pick().expect("a usable server");
            c[i] += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestView;
    use super::*;

    const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::Source,
        Algorithm::Uri,
        Algorithm::First,
    ];

    #[test]
    fn balancer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Balancer>();
    }

    #[test]
    fn none_on_empty_list() {
        for alg in ALL {
            let b = Balancer::new(alg, &[]);
            assert_eq!(b.pick(&TestView::equal(0), Some(7)), None, "{alg:?}");
            assert_eq!(b.pick(&TestView::equal(0), None), None, "{alg:?}");
            assert_eq!(b.algorithm(), alg);
        }
    }

    #[test]
    fn none_when_nothing_usable() {
        for alg in ALL {
            let b = Balancer::new(alg, &[1, 1, 1]);
            let mut v = TestView::equal(3);
            v.0[0].usable = false;
            v.0[1].usable = false;
            v.0[2].weight = 0; // weight 0 counts as unusable
            for key in [None, Some(1), Some(u64::MAX)] {
                assert_eq!(b.pick(&v, key), None, "{alg:?}");
            }
        }
    }

    #[test]
    fn view_longer_or_shorter_than_weights_does_not_panic() {
        for alg in ALL {
            // View longer than the snapshot's weights: every server is still reachable or at
            // least a usable one is returned, never an index outside the view.
            let b = Balancer::new(alg, &[1, 1]);
            let v = TestView::equal(5);
            for k in 0..50u64 {
                let i = b.pick(&v, Some(hash_key(&k.to_le_bytes()))).expect("pick");
                assert!(i < 5, "{alg:?}");
                assert!(b.pick(&v, None).expect("pick") < 5);
            }
            // View shorter than the weights.
            let b = Balancer::new(alg, &[1, 1, 1, 1, 1]);
            let v = TestView::equal(2);
            for k in 0..50u64 {
                let i = b.pick(&v, Some(hash_key(&k.to_le_bytes()))).expect("pick");
                assert!(i < 2, "{alg:?}");
                assert!(b.pick(&v, None).expect("pick") < 2);
            }
        }
    }

    /// A view whose servers go down one by one as the balancer looks at them,
    /// like live atomics changing under a pick.
    struct DecayingView {
        weights: Vec<u32>,
        calls: std::cell::Cell<usize>,
        budget: usize,
    }

    impl ServerView for DecayingView {
        fn len(&self) -> usize {
            self.weights.len()
        }
        fn usable(&self, i: usize) -> bool {
            let c = self.calls.get() + 1;
            self.calls.set(c);
            // Server i disappears once more than budget + i questions were asked.
            c <= self.budget + i
        }
        fn weight(&self, i: usize) -> u32 {
            self.weights[i]
        }
        fn active(&self, i: usize) -> u32 {
            i as u32
        }
        fn maxconn(&self, _: usize) -> Option<u32> {
            Some(1)
        }
    }

    #[test]
    fn servers_vanishing_mid_pick_do_not_panic() {
        for alg in ALL {
            for budget in 0..20 {
                let weights = vec![3, 1, 2, 5, 1];
                let b = Balancer::new(alg, &weights);
                let v = DecayingView {
                    weights,
                    calls: std::cell::Cell::new(0),
                    budget,
                };
                for key in [None, Some(9)] {
                    if let Some(i) = b.pick(&v, key) {
                        assert!(i < 5, "{alg:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn hash_key_is_stable() {
        // Fixed expectations: a change here would remap every client on upgrade.
        assert_eq!(hash_key(b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.1"));
        assert_ne!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.2"));
        assert_ne!(hash_key(b"/a"), hash_key(b"/b"));
    }
}
