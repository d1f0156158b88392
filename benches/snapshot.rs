//! Cost of reading the live configuration on the request path.
//!
//! Every request does `Runtime::snapshot()` (one `ArcSwap` load) and then routes
//! and picks a server from that snapshot. This measures the load alone, the
//! load while another thread keeps publishing snapshots (reload under traffic),
//! and the whole "load → frontend → route → pick" path a request takes.
//! Run: `cargo bench --bench snapshot`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use fulcrum::config::parse_str;
use fulcrum::runtime::{Change, Runtime};

/// One HTTP frontend on an ephemeral loopback port, eight servers that are
/// never contacted (no health checks, so they start up), no access log.
fn config_text() -> String {
    let mut servers = String::new();
    for i in 0..8 {
        servers.push_str(&format!(
            "  {{ name = \"web{i}\", address = \"127.0.0.1:{}\" }},\n",
            40000 + i
        ));
    }
    format!(
        r#"
[log]
access = "off"

[frontends.www]
listen = ["127.0.0.1:0"]
backend = "web"
routes = [
  {{ host = "api.example.com", backend = "web" }},
  {{ path_prefix = "/static/", backend = "web" }},
]

[backends.web]
balance = "roundrobin"
servers = [
{servers}]
"#
    )
}

fn bench_snapshot(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = match parse_str(&config_text(), "bench.toml") {
        Ok(c) => c,
        Err(e) => panic!("benchmark config is invalid: {e}"),
    };
    let runtime: Arc<Runtime> = tokio_rt
        .block_on(fulcrum::supervisor::start(config))
        .expect("runtime starts");

    c.bench_function("snapshot/load", |b| {
        b.iter(|| black_box(runtime.snapshot().generation))
    });

    c.bench_function("snapshot/load_route_pick", |b| {
        b.iter(|| {
            let snap = runtime.snapshot();
            let fe = snap.frontends.get(black_box("www")).expect("frontend");
            let be = fe
                .route(black_box(Some("www.example.com")), black_box("/index.html"))
                .expect("backend");
            black_box(be.0.pick(None, &[]).map(|s| s.address()))
        })
    });

    // Readers while a writer republishes (a weight edit every ~1 ms): arc-swap's readers stay wait-free,
    // but they pay for the cache line the writer dirties.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let runtime = Arc::clone(&runtime);
        let stop = Arc::clone(&stop);
        let handle = tokio_rt.handle().clone();
        std::thread::spawn(move || {
            let mut weight = 1;
            while !stop.load(Ordering::Relaxed) {
                weight = 3 - weight;
                let change = Change::SetWeight {
                    backend: "web".into(),
                    server: "web0".into(),
                    weight,
                };
                let _ = handle.block_on(runtime.apply(change));
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    c.bench_function("snapshot/load_during_reloads", |b| {
        b.iter(|| black_box(runtime.snapshot().generation))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();

    tokio_rt.block_on(runtime.shutdown(std::time::Duration::from_millis(10)));
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
