//! Prometheus `/metrics`: a real runtime and real demo backends in-process on
//! loopback, a few requests through the proxy, then the rendered text is read
//! back with a strict, grammar-based parser of the exposition format.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::admin::metrics::{escape_label_value, render, CONTENT_TYPE};
use fulcrum::demo::backend::{start_backend, BackendHandle, BackendOptions};
use fulcrum::runtime::Runtime;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricFamily, MetricsExposition, PrometheusType, PrometheusValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;
type Family = MetricFamily<PrometheusType, PrometheusValue>;

/// A free loopback address (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

async fn backend(name: &str) -> BackendHandle {
    start_backend(BackendOptions {
        name: name.to_string(),
        listen: "127.0.0.1:0".parse().expect("addr"),
    })
    .await
    .expect("start demo backend")
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code.
async fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Poll `cond` until it holds (bounded): a readiness wait, not a timing assertion.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn family<'a>(e: &'a Exposition, name: &str) -> &'a Family {
    e.families
        .get(name)
        .unwrap_or_else(|| panic!("family {name} missing"))
}

/// Every sample of a gauge or counter family as (labels, value).
fn simple_samples(f: &Family) -> Vec<(HashMap<String, String>, f64)> {
    f.iter_samples()
        .map(|s| {
            let labels = s
                .get_labelset()
                .expect("labelset")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let v = match &s.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                other => panic!("{} is not a simple value: {other:?}", f.family_name),
            };
            (labels, v)
        })
        .collect()
}

fn has(labels: &HashMap<String, String>, k: &str, v: &str) -> bool {
    labels.get(k).map(String::as_str) == Some(v)
}

struct Setup {
    rt: Arc<Runtime>,
    listen: SocketAddr,
    _backends: Vec<BackendHandle>,
}

/// Backend `api.v1` (two health-checked servers with dots in their names) is the
/// frontend's default; `/static` goes to `static` (one server, no checks).
async fn setup() -> Setup {
    let web1 = backend("web.1").await;
    let web2 = backend("web.2").await;
    let st = backend("static-1").await;
    let listen = free_addr();
    let toml = format!(
        r#"
[log]
access = "off"

[frontends.www]
listen = ["{listen}"]
backend = "api.v1"
routes = [{{ path_prefix = "/static", backend = "static" }}]

[backends."api.v1"]
balance = "roundrobin"
health = {{ kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 1, fall = 2 }}
servers = [
  {{ name = "web.1", address = "{a1}" }},
  {{ name = "web.2", address = "{a2}", weight = 3 }},
]

[backends.static]
servers = [{{ name = "static-1", address = "{a3}" }}]
"#,
        a1 = web1.local_addr(),
        a2 = web2.local_addr(),
        a3 = st.local_addr(),
    );
    let config = fulcrum::config::parse_str(&toml, "t.toml").expect("valid config");
    let rt = fulcrum::supervisor::start(config)
        .await
        .expect("runtime starts");
    let probe = rt.clone();
    wait_for("every server usable", move || {
        probe
            .snapshot()
            .backends
            .values()
            .all(|b| b.usable_count() == b.servers.len())
    })
    .await;
    Setup {
        rt,
        listen,
        _backends: vec![web1, web2, st],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_requests() {
    let s = setup().await;
    const API: u64 = 6;
    const STATIC: u64 = 2;
    for _ in 0..API {
        assert_eq!(get(s.listen, "/hello").await, 200);
    }
    for _ in 0..STATIC {
        assert_eq!(get(s.listen, "/static/x").await, 200);
    }
    // Responses are counted when the proxy finishes them, which may be just after
    // the client saw the end of the body.
    let probe = s.rt.clone();
    wait_for("all responses counted", move || {
        let snap = probe.snapshot();
        snap.backends
            .values()
            .map(|b| b.stats.duration.count())
            .sum::<u64>()
            == API + STATIC
    })
    .await;

    let text = render(&s.rt);
    assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    let parsed =
        parse_prometheus(&text).unwrap_or_else(|e| panic!("metrics do not parse: {e:?}\n{text}"));

    // Parsed completely: every sample line of the text landed in some family.
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let parsed_lines: usize = parsed
        .families
        .values()
        .map(|f| {
            f.iter_samples()
                .map(|s| match &s.value {
                    // +1 for _sum, +1 for _count.
                    PrometheusValue::Histogram(h) => h.buckets.len() + 2,
                    _ => 1,
                })
                .sum::<usize>()
        })
        .sum();
    assert_eq!(parsed_lines, lines, "some lines were not parsed:\n{text}");

    // Each family's HELP and TYPE appear exactly once.
    for kw in ["# HELP ", "# TYPE "] {
        let mut seen = HashSet::new();
        for l in text.lines().filter(|l| l.starts_with(kw)) {
            let name = l[kw.len()..].split(' ').next().unwrap_or_default();
            assert!(seen.insert(name.to_string()), "{kw}{name} twice");
        }
        assert_eq!(seen.len(), parsed.families.len());
    }

    // Build info, generation.
    let info = simple_samples(family(&parsed, "fulcrum_build_info"));
    assert_eq!(info.len(), 1);
    assert!(has(&info[0].0, "version", env!("CARGO_PKG_VERSION")));
    assert_eq!(info[0].1, 1.0);
    let generation = simple_samples(family(&parsed, "fulcrum_config_generation"));
    assert_eq!(generation[0].1, s.rt.snapshot().generation as f64);

    // Requests by class: 2xx sums to what was sent, per backend too.
    let requests = family(&parsed, "fulcrum_requests_total");
    assert_eq!(requests.family_type, PrometheusType::Counter);
    let requests = simple_samples(requests);
    let sum_2xx = |backend: Option<&str>| -> f64 {
        requests
            .iter()
            .filter(|(l, _)| has(l, "code", "2xx"))
            .filter(|(l, _)| backend.is_none_or(|b| has(l, "backend", b)))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum_2xx(None), (API + STATIC) as f64, "{text}");
    // The dotted backend name round-trips through the parser unchanged.
    assert_eq!(sum_2xx(Some("api.v1")), API as f64, "{text}");
    assert_eq!(sum_2xx(Some("static")), STATIC as f64, "{text}");
    for (l, _) in &requests {
        assert!(has(l, "frontend", "www"), "{l:?}");
        for key in ["backend", "server", "code"] {
            assert!(l.contains_key(key), "{l:?} lacks {key}");
        }
    }
    for server in ["web.1", "web.2"] {
        assert!(
            requests
                .iter()
                .any(|(l, v)| has(l, "server", server) && has(l, "code", "2xx") && *v > 0.0),
            "round robin should have sent requests to {server}: {text}"
        );
    }

    // The duration histogram: cumulative buckets, +Inf equal to _count.
    let hist = family(&parsed, "fulcrum_request_duration_seconds");
    assert_eq!(hist.family_type, PrometheusType::Histogram);
    let mut counts = HashMap::new();
    for sample in hist.iter_samples() {
        let backend = sample
            .get_labelset()
            .expect("labelset")
            .get_label_value("backend")
            .expect("backend label")
            .to_string();
        let PrometheusValue::Histogram(h) = &sample.value else {
            panic!("not a histogram: {sample:?}");
        };
        let mut last = 0.0;
        let mut bound = f64::NEG_INFINITY;
        for b in &h.buckets {
            assert!(b.upper_bound > bound, "bucket bounds increase");
            assert!(b.count.as_f64() >= last, "buckets are cumulative");
            bound = b.upper_bound;
            last = b.count.as_f64();
        }
        assert_eq!(bound, f64::INFINITY, "last bucket is +Inf");
        assert_eq!(Some(last as u64), h.count, "+Inf equals _count");
        assert!(h.sum.is_some_and(|s| s.as_f64() >= 0.0));
        counts.insert(backend, last as u64);
    }
    assert_eq!(counts.get("api.v1"), Some(&API));
    assert_eq!(counts.get("static"), Some(&STATIC));

    // Server state.
    let up = simple_samples(family(&parsed, "fulcrum_server_up"));
    assert_eq!(up.len(), 3);
    assert!(up.iter().all(|(_, v)| *v == 1.0), "{text}");
    let usable = simple_samples(family(&parsed, "fulcrum_backend_servers_usable"));
    assert!(usable
        .iter()
        .any(|(l, v)| has(l, "backend", "api.v1") && *v == 2.0));
    let admin = simple_samples(family(&parsed, "fulcrum_server_admin_state"));
    assert_eq!(admin.len(), 9);
    for (l, v) in &admin {
        let want = if has(l, "state", "ready") { 1.0 } else { 0.0 };
        assert_eq!(*v, want, "{l:?}");
    }
    let weight = simple_samples(family(&parsed, "fulcrum_server_weight"));
    assert!(weight
        .iter()
        .any(|(l, v)| has(l, "server", "web.2") && *v == 3.0));
    let total: f64 = simple_samples(family(&parsed, "fulcrum_server_connections_total"))
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, (API + STATIC) as f64);
    let bytes_out: f64 = simple_samples(family(&parsed, "fulcrum_server_bytes_out_total"))
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(bytes_out > 0.0);
    let frontend = simple_samples(family(&parsed, "fulcrum_frontend_requests_total"));
    assert_eq!(frontend.len(), 1);
    assert!(has(&frontend[0].0, "frontend", "www"));
    assert_eq!(frontend[0].1, (API + STATIC) as f64);

    // Health checks ran (and passed) on the checked servers only; the check
    // latency is reported only where a check ran.
    let checks = simple_samples(family(&parsed, "fulcrum_health_checks_total"));
    for server in ["web.1", "web.2"] {
        let ok = checks
            .iter()
            .find(|(l, _)| has(l, "server", server) && has(l, "result", "ok"))
            .map(|(_, v)| *v);
        assert!(ok.is_some_and(|v| v >= 1.0), "{server}: {text}");
    }
    assert!(
        !checks.iter().any(|(l, _)| has(l, "server", "static-1")),
        "a server without active checks has no check counters"
    );
    let latency = simple_samples(family(&parsed, "fulcrum_server_check_duration_seconds"));
    let servers: HashSet<&str> = latency
        .iter()
        .filter_map(|(l, _)| l.get("server").map(String::as_str))
        .collect();
    assert_eq!(servers, HashSet::from(["web.1", "web.2"]));

    // Stable output: samples sorted by server name within a family.
    let up_order: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fulcrum_server_up{"))
        .collect();
    assert_eq!(
        up_order,
        [
            "fulcrum_server_up{backend=\"api.v1\",server=\"web.1\"} 1",
            "fulcrum_server_up{backend=\"api.v1\",server=\"web.2\"} 1",
            "fulcrum_server_up{backend=\"static\",server=\"static-1\"} 1",
        ]
    );

    s.rt.shutdown(Duration::from_secs(1)).await;
}

/// Names in the config cannot hold a quote, backslash or newline, so the escaping
/// is proven here: what `escape_label_value` writes, the real parser reads back.
#[test]
fn label_escaping_round_trips_through_the_parser() {
    for value in [
        "api.v1",
        "quote \" inside",
        "back\\slash",
        "new\nline",
        "all \\\"\n\\n at once",
        "",
    ] {
        let text = format!(
            "# HELP t_total Test.\n# TYPE t_total counter\nt_total{{backend=\"{}\"}} 1\n",
            escape_label_value(value)
        );
        let parsed = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}: {text}"));
        let samples = simple_samples(family(&parsed, "t_total"));
        assert_eq!(samples.len(), 1);
        assert_eq!(
            samples[0].0.get("backend").map(String::as_str),
            Some(value),
            "{text}"
        );
    }
    // The parser is strict: an unescaped quote is an error, not a skipped line.
    let bad = "# TYPE t_total counter\nt_total{backend=\"a\"b\"} 1\n";
    assert!(parse_prometheus(bad).is_err(), "{bad}");
}

/// Every family fulcrum documents (README "Metrics"), in both formats: the
/// strict 0.0.4 parser and the strict OpenMetrics parser both accept the text,
/// and `promtool check metrics` (when installed) finds nothing to lint.
const FAMILIES: &[&str] = &[
    "fulcrum_build_info",
    "fulcrum_uptime_seconds",
    "fulcrum_config_generation",
    "fulcrum_admin_auth_failures_total",
    "fulcrum_log_lines_dropped_total",
    "fulcrum_worker_connections_total",
    "fulcrum_server_retries_total",
    "fulcrum_server_redispatches_total",
    "fulcrum_frontend_requests_total",
    "fulcrum_frontend_connections",
    "fulcrum_frontend_local_errors_total",
    "fulcrum_frontend_denied_total",
    "fulcrum_frontend_request_errors_total",
    "fulcrum_frontend_client_errors_total",
    "fulcrum_frontend_tls_handshakes_total",
    "fulcrum_frontend_tls_resumptions_total",
    "fulcrum_frontend_tls_handshake_failures_total",
    "fulcrum_requests_total",
    "fulcrum_request_duration_seconds",
    "fulcrum_backend_connect_time_seconds",
    "fulcrum_backend_response_time_seconds",
    "fulcrum_backend_queue_time_seconds",
    "fulcrum_backend_servers_usable",
    "fulcrum_backend_queue_current",
    "fulcrum_backend_queue_max",
    "fulcrum_backend_queue_limit",
    "fulcrum_backend_no_server_total",
    "fulcrum_backend_retries_total",
    "fulcrum_backend_redispatches_total",
    "fulcrum_backend_connection_errors_total",
    "fulcrum_backend_response_errors_total",
    "fulcrum_backend_client_aborts_total",
    "fulcrum_backend_server_aborts_total",
    "fulcrum_server_up",
    "fulcrum_server_usable",
    "fulcrum_server_ejected",
    "fulcrum_server_admin_state",
    "fulcrum_server_weight",
    "fulcrum_server_active_connections",
    "fulcrum_server_active_connections_max",
    "fulcrum_server_maxconn",
    "fulcrum_server_request_rate",
    "fulcrum_server_request_rate_max",
    "fulcrum_server_connections_total",
    "fulcrum_server_failures_total",
    "fulcrum_server_connection_errors_total",
    "fulcrum_server_response_errors_total",
    "fulcrum_server_client_aborts_total",
    "fulcrum_server_server_aborts_total",
    "fulcrum_server_connection_reuses_total",
    "fulcrum_server_bytes_in_total",
    "fulcrum_server_bytes_out_total",
    "fulcrum_server_check_down_transitions_total",
    "fulcrum_server_check_up_transitions_total",
    "fulcrum_server_last_change_seconds",
    "fulcrum_server_downtime_seconds_total",
    "fulcrum_server_check_duration_seconds",
    "fulcrum_health_checks_total",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_exists_in_both_formats_and_lints_clean() {
    let s = setup().await;
    for _ in 0..3 {
        assert_eq!(get(s.listen, "/hello").await, 200);
    }
    let probe = s.rt.clone();
    wait_for("responses counted", move || {
        probe
            .snapshot()
            .backends
            .values()
            .map(|b| b.stats.duration.count())
            .sum::<u64>()
            == 3
    })
    .await;
    let text = render(&s.rt);
    let parsed = parse_prometheus(&text).unwrap_or_else(|e| panic!("0.0.4: {e:?}\n{text}"));
    for name in FAMILIES {
        family(&parsed, name);
    }
    let documented: HashSet<&str> = FAMILIES.iter().copied().collect();
    for name in parsed.families.keys() {
        assert!(
            documented.contains(name.as_str()),
            "family {name} is not in the documented list"
        );
    }
    // GETs have no body: the request heads alone are counted in now.
    let bytes_in: f64 = simple_samples(family(&parsed, "fulcrum_server_bytes_in_total"))
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(
        bytes_in >= 3.0 * 20.0,
        "request heads not counted: {bytes_in}"
    );

    let om = fulcrum::admin::metrics::render_openmetrics(&s.rt, None);
    assert!(om.ends_with("# EOF\n"), "{om}");
    let parsed_om = openmetrics_parser::openmetrics::parse_openmetrics(&om)
        .unwrap_or_else(|e| panic!("OpenMetrics: {e:?}\n{om}"));
    for name in FAMILIES {
        // OpenMetrics names counter families without `_total`.
        let base = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            parsed_om.families.contains_key(base),
            "OpenMetrics family {base} missing"
        );
    }

    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok()
    {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool output");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}"
        );
    } else {
        println!("promtool not installed: lint skipped");
    }
    s.rt.shutdown(Duration::from_secs(1)).await;
}

/// An upstream that misbehaves as the request path says (one connection per
/// request): `/cut` sends a Content-Length body cut short and closes (a
/// server abort); `/bad-chunk` sends a chunk-size line that is not hex and
/// waits (a malformed body: the framing, not a close, ends it); `/endless`
/// sends a body until the proxy stops taking it (for a client that hangs
/// up); anything else is a clean empty 404. Bounded: 20 s and 1 GiB a connection.
async fn misbehaving_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(20), misbehave(&mut s)).await;
            });
        }
    });
    addr
}

async fn misbehave(s: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    match text.split(' ').nth(1).unwrap_or_default() {
        "/cut" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")
                .await?;
        }
        "/bad-chunk" => {
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            )
            .await?;
            let _ = s.read(&mut buf).await;
        }
        "/endless" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                .await?;
            let chunk = vec![b'x'; 16 * 1024];
            for _ in 0..65536 {
                s.write_all(&chunk).await?;
            }
        }
        _ => {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?
        }
    }
    Ok(())
}

/// Send `GET path`; read what comes until the proxy closes (errors included:
/// a broken response may end in a reset).
async fn get_raw(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    buf
}

/// Send `GET /endless`, read until the response head is in, then hang up.
async fn hang_up_mid_body(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("send request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read the head");
        assert!(n > 0 && got.len() < 65536, "no response head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    // Unread bytes in the receive buffer: the close is a reset.
    drop(s);
}

/// The error counts of `backend`/`server`: [connection, response, client aborts, server aborts].
fn errors_of(rt: &Runtime, backend: &str, server: &str) -> [u64; 4] {
    let snap = rt.snapshot();
    let b = snap.backends.get(backend).expect("backend");
    let s = b
        .servers
        .iter()
        .find(|s| s.name() == server)
        .expect("server");
    s.errors.get()
}

/// Each error kind provoked on the relay (a plain HTTP/1.1 frontend) and on
/// the hyper path (`h2c = true` sends HTTP/1.1 through hyper too): the server
/// and backend counters move by exactly what was done, a clean response moves
/// none, and the request head is counted in bytes_in on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_and_response_errors_are_counted_on_both_paths() {
    for (path, h2c) in [("relay", false), ("hyper", true)] {
        let odd = misbehaving_server().await;
        let dead = free_addr();
        let listen = free_addr();
        let toml = format!(
            r#"
[log]
access = "off"

[frontends.www]
listen = ["{listen}"]
h2c = {h2c}
backend = "odd"
routes = [{{ path_prefix = "/dead", backend = "dead" }}]

[backends.odd]
servers = [{{ name = "o1", address = "{odd}" }}]

[backends.dead]
servers = [{{ name = "d1", address = "{dead}" }}]
"#
        );
        let config = fulcrum::config::parse_str(&toml, "t.toml").expect("valid config");
        let rt = fulcrum::supervisor::start(config)
            .await
            .expect("runtime starts");
        let wait = |what: String, want: [u64; 4], backend: &'static str, server: &'static str| {
            let probe = rt.clone();
            async move {
                wait_for(&what, move || errors_of(&probe, backend, server) == want).await;
            }
        };

        // Clean: nothing counted, and the head of a GET is in bytes_in.
        let r = get_raw(listen, "/fine").await;
        assert!(r.starts_with(b"HTTP/1.1 404"), "{path}: {r:?}");
        let probe = rt.clone();
        wait_for(&format!("{path}: the clean response finished"), move || {
            probe.snapshot().backends["odd"].stats.duration.count() == 1
        })
        .await;
        assert_eq!(errors_of(&rt, "odd", "o1"), [0; 4], "{path}");
        let (bytes_in, _) = rt.snapshot().backends["odd"].servers[0].bytes();
        assert!(
            bytes_in >= "GET /fine HTTP/1.1\r\nhost: test\r\n\r\n".len() as u64,
            "{path}: the request head is not in bytes_in ({bytes_in})"
        );

        // No connection: a connection error (econ).
        let r = get_raw(listen, "/dead").await;
        assert!(r.starts_with(b"HTTP/1.1 502"), "{path}: {r:?}");
        wait(
            format!("{path}: connection error"),
            [1, 0, 0, 0],
            "dead",
            "d1",
        )
        .await;

        // A body cut short: a server abort, which is also a response error.
        // (What the client gets is not checked: hyper may drop the head it
        // had not flushed yet when the body fails.)
        get_raw(listen, "/cut").await;
        wait(format!("{path}: server abort"), [0, 1, 0, 1], "odd", "o1").await;

        // A malformed chunked body: a response error only. On the relay the
        // bad bytes came with the head, so nothing had gone out: a 502.
        let r = get_raw(listen, "/bad-chunk").await;
        if path == "relay" {
            assert!(r.starts_with(b"HTTP/1.1 502"), "{path}: {r:?}");
        }
        wait(format!("{path}: malformed body"), [0, 2, 0, 1], "odd", "o1").await;

        // The client hangs up mid-body: a client abort only.
        hang_up_mid_body(listen).await;
        wait(format!("{path}: client abort"), [0, 2, 1, 1], "odd", "o1").await;

        // The backends keep the same sums.
        let snap = rt.snapshot();
        assert_eq!(
            snap.backends["odd"].stats.errors.get(),
            [0, 2, 1, 1],
            "{path}"
        );
        assert_eq!(
            snap.backends["dead"].stats.errors.get(),
            [1, 0, 0, 0],
            "{path}"
        );

        // And /metrics says so, per server and per backend.
        let text = render(&rt);
        let parsed = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        for (family_name, backend, want) in [
            ("fulcrum_server_connection_errors_total", "dead", 1.0),
            ("fulcrum_server_response_errors_total", "odd", 2.0),
            ("fulcrum_server_client_aborts_total", "odd", 1.0),
            ("fulcrum_server_server_aborts_total", "odd", 1.0),
            ("fulcrum_backend_connection_errors_total", "dead", 1.0),
            ("fulcrum_backend_response_errors_total", "odd", 2.0),
            ("fulcrum_backend_client_aborts_total", "odd", 1.0),
            ("fulcrum_backend_server_aborts_total", "odd", 1.0),
        ] {
            let samples = simple_samples(family(&parsed, family_name));
            let got: Vec<f64> = samples
                .iter()
                .filter(|(l, _)| has(l, "backend", backend))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(got, [want], "{path}: {family_name}\n{text}");
        }
        let csv = fulcrum::admin::csv::render(&rt);
        let header: Vec<&str> = csv
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let row = csv
            .lines()
            .find(|l| l.starts_with("odd,o1,"))
            .unwrap_or_else(|| panic!("no odd/o1 row: {csv}"));
        let cols: Vec<&str> = row.split(',').collect();
        let col = |name: &str| {
            let i = header.iter().position(|h| *h == name).expect("column");
            cols.get(i).copied().unwrap_or_default().to_string()
        };
        assert_eq!(
            [col("eresp"), col("cli_abrt"), col("srv_abrt")],
            ["2", "1", "1"],
            "{path}: {csv}"
        );
        rt.shutdown(Duration::from_secs(1)).await;
    }
}
