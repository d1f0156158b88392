//! `Balancer::pick` cost per algorithm over 8 servers.
//!
//! The view is a plain `Vec` so the figure is the algorithm alone, without the
//! runtime's atomics; `benches/snapshot.rs` covers the runtime path.
//! Run: `cargo bench --bench balance`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum::balance::{hash_key, Balancer, ServerView};
use fulcrum::config::types::Algorithm;

/// One server as the benchmark sees it.
#[derive(Clone)]
struct Server {
    usable: bool,
    weight: u32,
    active: u32,
    maxconn: Option<u32>,
}

/// A `ServerView` over a plain list.
struct VecView(Vec<Server>);

impl ServerView for VecView {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn usable(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|s| s.usable)
    }
    fn weight(&self, i: usize) -> u32 {
        self.0.get(i).map_or(0, |s| s.weight)
    }
    fn active(&self, i: usize) -> u32 {
        self.0.get(i).map_or(0, |s| s.active)
    }
    fn maxconn(&self, i: usize) -> Option<u32> {
        self.0.get(i).and_then(|s| s.maxconn)
    }
}

const ALGORITHMS: [(&str, Algorithm); 6] = [
    ("roundrobin", Algorithm::RoundRobin),
    ("leastconn", Algorithm::LeastConn),
    ("random", Algorithm::Random),
    ("source", Algorithm::Source),
    ("uri", Algorithm::Uri),
    ("first", Algorithm::First),
];

/// Eight servers; `weights` sets the static and live weights, one server is
/// down so every algorithm has to skip something.
fn view(weights: &[u32; 8]) -> VecView {
    VecView(
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Server {
                usable: i != 3,
                weight: w,
                active: (i as u32 * 7) % 5,
                maxconn: None,
            })
            .collect(),
    )
}

fn bench_pick(c: &mut Criterion) {
    let cases: [(&str, [u32; 8]); 2] = [("equal", [1; 8]), ("weighted", [1, 2, 3, 4, 5, 6, 7, 8])];
    let key = hash_key(b"/static/app.js");
    for (weights_name, weights) in cases {
        let mut group = c.benchmark_group(format!("pick/8_servers_{weights_name}"));
        let v = view(&weights);
        for (name, alg) in ALGORITHMS {
            let balancer = Balancer::new(alg, &weights);
            let hash = matches!(alg, Algorithm::Source | Algorithm::Uri).then_some(key);
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| balancer.pick(black_box(&v), black_box(hash)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
