//! Proxy workers (`[global] threads`): with two workers both accept
//! connections, a graceful stop finishes the requests in flight on either,
//! a SIGHUP reload reaches both, and the default (no `[global]`) serves
//! with one worker per CPU.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn config(global: &str, http: SocketAddr, admin: SocketAddr, server: SocketAddr) -> String {
    format!(
        r#"
{global}

[admin]
listen = "{admin}"

[frontends.www]
listen = ["{http}"]
backend = "web"

[backends.web]
servers = [{{ name = "s0", address = "{server}" }}]
"#
    )
}

/// Accepted connections per worker, from `fulcrum_worker_connections_total`.
fn per_worker(admin: SocketAddr) -> Vec<u64> {
    worker_metric(admin, "fulcrum_worker_connections_total")
}

/// One sample per worker of the family `name` (`name{worker="i"} n`), in worker order.
fn worker_metric(admin: SocketAddr, name: &str) -> Vec<u64> {
    let Ok(r) = get(admin, "/metrics") else {
        return Vec::new();
    };
    let prefix = format!("{name}{{worker=\"");
    let mut v: Vec<(usize, u64)> = r
        .body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix.as_str())?;
            let (i, rest) = rest.split_once("\"}")?;
            Some((i.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// `clients` threads, each `each` requests on new connections; returns the
/// answers' server names (empty string for a failed request).
fn burst(http: SocketAddr, clients: usize, each: usize) -> Vec<String> {
    let hs: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| match get(http, "/") {
                        Ok(r) if r.status == 200 => r.server(),
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    hs.into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

/// Bursts of new connections until every worker has accepted some (bounded
/// in rounds); returns the counters.
fn until_all_workers_accept(http: SocketAddr, admin: SocketAddr, workers: usize) -> Vec<u64> {
    let mut counts = Vec::new();
    for _ in 0..20 {
        let answers = burst(http, 8, 25);
        assert!(answers.iter().all(|s| !s.is_empty()), "a request failed");
        counts = per_worker(admin);
        if counts.len() == workers && counts.iter().all(|&n| n > 0) {
            break;
        }
    }
    counts
}

#[test]
fn two_workers_both_accept_connections() {
    let (_b, server) = backend("b1");
    let (http, admin) = (free_addr(), free_addr());
    let lb = Lb::start(&config("[global]\nthreads = 2", http, admin, server), http);
    let counts = until_all_workers_accept(http, admin, 2);
    assert_eq!(counts.len(), 2, "{counts:?}\n{}", lb.proc.output());
    assert!(
        counts.iter().all(|&n| n > 0),
        "one worker accepted nothing: {counts:?}"
    );
    eprintln!("accepted per worker: {counts:?}");
}

#[test]
fn graceful_stop_with_two_workers_finishes_requests_in_flight() {
    let (_b, server) = backend("b1");
    let (http, admin) = (free_addr(), free_addr());
    let mut lb = Lb::start(
        &config(
            "[global]\nthreads = 2\nhard_stop_after = \"20s\"",
            http,
            admin,
            server,
        ),
        http,
    );
    // Both workers in use before the slow requests start.
    let before = until_all_workers_accept(http, admin, 2);
    assert!(before.iter().all(|&n| n > 0), "{before:?}");
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(http, "/slow?ms=1500").map(|r| r.status)))
        .collect();
    // Stop once all eight are accepted (counted), so they are in flight.
    let total = before.iter().sum::<u64>();
    assert!(
        wait_until(Duration::from_secs(10), || per_worker(admin)
            .iter()
            .sum::<u64>()
            >= total + 8),
        "the slow requests were not accepted"
    );
    lb.proc.signal(libc::SIGTERM);
    for h in slow {
        let st = h.join().expect("client thread");
        assert_eq!(st.ok(), Some(200), "{}", lb.proc.output());
    }
    let st = lb.proc.wait_exit(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "{:?}\n{}",
        st,
        lb.proc.output()
    );
}

#[test]
fn reload_reaches_every_worker() {
    let (_b1, s1) = backend("b1");
    let (_b2, s2) = backend("b2");
    let (http, admin) = (free_addr(), free_addr());
    let lb = Lb::start(&config("[global]\nthreads = 2", http, admin, s1), http);
    assert_eq!(
        get(http, "/").map(|r| r.server()).ok().as_deref(),
        Some("b1")
    );
    lb.reload(&config("[global]\nthreads = 2", http, admin, s2));
    assert!(
        wait_until(Duration::from_secs(10), || get(http, "/")
            .is_ok_and(|r| r.server() == "b2")),
        "reload not applied: {}",
        lb.proc.output()
    );
    // From now on every worker answers from b2, and both are answering.
    let before = per_worker(admin);
    let mut after = before.clone();
    for _ in 0..20 {
        let answers = burst(http, 8, 25);
        assert!(
            answers.iter().all(|s| s == "b2"),
            "a worker still on the old config"
        );
        after = per_worker(admin);
        if after.len() == 2 && before.len() == 2 && after.iter().zip(&before).all(|(a, b)| a > b) {
            break;
        }
    }
    assert!(
        after.len() == 2 && after.iter().zip(&before).all(|(a, b)| a > b),
        "both workers should have served after the reload: {before:?} -> {after:?}"
    );
}

#[test]
fn default_runs_a_worker_per_cpu() {
    let (_b, server) = backend("b1");
    let (http, admin) = (free_addr(), free_addr());
    let lb = Lb::start(&config("", http, admin, server), http);
    let r = get(http, "/").expect("request");
    assert_eq!(r.status, 200);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        wait_until(Duration::from_secs(5), || per_worker(admin).len() == cpus),
        "expected {cpus} workers: {:?}\n{}",
        per_worker(admin),
        lb.proc.output()
    );
}

/// Connections open on each worker now, from `fulcrum_worker_connections_open`.
fn open_per_worker(admin: SocketAddr) -> Vec<u64> {
    worker_metric(admin, "fulcrum_worker_connections_open")
}

/// Keep-alive connections opened one after another (as a load generator
/// opens its pool) end up on both workers, and the gauge of open
/// connections per worker counts each of them once, and none after they
/// close. (How even the split is depends on which worker wakes first; the
/// balance itself is measured by bench/run.sh, not asserted here.)
#[test]
fn keep_alive_connections_spread_over_the_workers_and_are_counted_open() {
    use std::io::{Read, Write};
    let (_b, server) = backend("b1");
    let (http, admin) = (free_addr(), free_addr());
    let lb = Lb::start(&config("[global]\nthreads = 2", http, admin, server), http);
    let mut conns = Vec::new();
    for i in 0..40 {
        let mut s = std::net::TcpStream::connect(http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        // One answer read (head and body end together for the test backend's
        // short reply), so the connection was accepted and served.
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read");
        assert!(
            buf.get(..n).is_some_and(|b| b.starts_with(b"HTTP/1.1 200")),
            "connection {i}: {:?}",
            String::from_utf8_lossy(buf.get(..n).unwrap_or_default())
        );
        conns.push(s);
    }
    let mut open = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            open = open_per_worker(admin);
            open.iter().sum::<u64>() == 40
        }),
        "open per worker: {open:?}\n{}",
        lb.proc.output()
    );
    eprintln!("40 keep-alive connections, open per worker: {open:?}");
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(
        open.iter().all(|&n| n > 0),
        "one worker holds all: {open:?}"
    );
    drop(conns);
    assert!(
        wait_until(Duration::from_secs(10), || open_per_worker(admin)
            .iter()
            .sum::<u64>()
            == 0),
        "still counted open after closing: {:?}",
        open_per_worker(admin)
    );
}
