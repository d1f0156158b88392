//! End-to-end tests of the HTTP proxy: the real binary, real demo backends,
//! ephemeral loopback ports.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn servers_toml(list: &[(&str, SocketAddr, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(n, a, w)| format!("{{ name = \"{n}\", address = \"{a}\", weight = {w} }}"))
        .collect();
    format!("[{}]", items.join(", "))
}

fn simple(listen: SocketAddr, balance: &str, extra: &str, servers: &str) -> String {
    format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"

[backends.web]
balance = "{balance}"
{extra}
servers = {servers}
"#
    )
}

fn count(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let r = get(addr, "/").expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        *m.entry(r.server()).or_default() += 1;
    }
    m
}

#[test]
fn round_robin_alternates() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (_b3, a3) = backend("web3");
    let listen = free_addr();
    let _lb = Lb::start(
        &simple(
            listen,
            "roundrobin",
            "",
            &servers_toml(&[("web1", a1, 1), ("web2", a2, 1), ("web3", a3, 1)]),
        ),
        listen,
    );
    let seq: Vec<String> = (0..9)
        .map(|_| get(listen, "/").expect("get").server())
        .collect();
    for i in 3..9 {
        assert_eq!(seq[i], seq[i - 3], "not a rotation: {seq:?}");
    }
    let first3: std::collections::HashSet<_> = seq[..3].iter().collect();
    assert_eq!(first3.len(), 3, "{seq:?}");
}

#[test]
fn weights_three_to_one() {
    let (_b1, a1) = backend("heavy");
    let (_b2, a2) = backend("light");
    let listen = free_addr();
    let _lb = Lb::start(
        &simple(
            listen,
            "roundrobin",
            "",
            &servers_toml(&[("heavy", a1, 3), ("light", a2, 1)]),
        ),
        listen,
    );
    let m = count(listen, 400);
    let heavy = *m.get("heavy").unwrap_or(&0) as f64 / 400.0;
    assert!((0.70..=0.80).contains(&heavy), "heavy share {heavy}: {m:?}");
}

#[test]
fn forwarded_headers_reach_the_backend() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(
        &simple(listen, "roundrobin", "", &servers_toml(&[("web1", a1, 1)])),
        listen,
    );
    let r = request(
        listen,
        "GET",
        "/hello?x=1",
        &[
            ("Host", "shop.example.com"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    )
    .expect("get");
    let j = r.json();
    assert_eq!(j["x_forwarded_for"], "203.0.113.7, 127.0.0.1", "{j}");
    assert_eq!(j["x_forwarded_proto"], "http");
    assert_eq!(j["x_forwarded_host"], "shop.example.com");
    assert_eq!(
        j["host"], "shop.example.com",
        "Host is passed through unchanged"
    );
    assert_eq!(j["path"], "/hello");
    assert!(r.header("via").is_none());
}

#[test]
fn host_and_path_routing() {
    let (_w, aw) = backend("web1");
    let (_a, aa) = backend("api1");
    let (_s, as_) = backend("static1");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
routes = [
  {{ host = "api.example.com", backend = "api" }},
  {{ host = "*.api.example.com", backend = "api" }},
  {{ path_prefix = "/static/", backend = "static" }},
]
[backends.web]
servers = [{{ name = "web1", address = "{aw}" }}]
[backends.api]
servers = [{{ name = "api1", address = "{aa}" }}]
[backends.static]
servers = [{{ name = "static1", address = "{as_}" }}]
"#
    );
    let _lb = Lb::start(&toml, listen);
    let via = |host: &str, path: &str| {
        request(listen, "GET", path, &[("Host", host)])
            .expect("get")
            .server()
    };
    assert_eq!(via("api.example.com", "/"), "api1");
    assert_eq!(via("API.example.com:8080", "/"), "api1");
    assert_eq!(via("eu.api.example.com", "/x"), "api1");
    assert_eq!(via("www.example.com", "/static/logo.png"), "static1");
    assert_eq!(via("www.example.com", "/"), "web1");
}

#[test]
fn leastconn_prefers_idle_server() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let listen = free_addr();
    let (toml, admin) = with_admin(&simple(
        listen,
        "leastconn",
        "",
        &servers_toml(&[("web1", a1, 1), ("web2", a2, 1)]),
    ));
    let _lb = Lb::start(&toml, listen);
    // Hold 3 slow requests; whichever servers they land on, the fast requests must
    // go to the server with fewer in flight.
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(listen, "/slow?ms=4000").map(|r| r.server())))
        .collect();
    wait_backend_active(admin, "web", 3);
    let m = count(listen, 10);
    let busy: Vec<String> = slow
        .into_iter()
        .filter_map(|h| h.join().ok()?.ok())
        .collect();
    let mut held: HashMap<String, usize> = HashMap::new();
    for b in &busy {
        *held.entry(b.clone()).or_default() += 1;
    }
    // 3 slow requests split 2/1: the server holding 2 must get no more fast requests than the other.
    let (more, _) = held
        .iter()
        .max_by_key(|(_, v)| **v)
        .expect("slow requests answered");
    let other = if more == "web1" { "web2" } else { "web1" };
    assert!(
        m.get(other).copied().unwrap_or(0) >= m.get(more).copied().unwrap_or(0),
        "fast {m:?} while holding {held:?}"
    );
}

#[test]
fn health_check_removes_and_restores_server() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let listen = free_addr();
    let extra = r#"health = { kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 2, fall = 2, timeout = "500ms" }"#;
    let _lb = Lb::start(
        &simple(
            listen,
            "roundrobin",
            extra,
            &servers_toml(&[("web1", a1, 1), ("web2", a2, 1)]),
        ),
        listen,
    );
    assert!(
        wait_until(Duration::from_secs(10), || count(listen, 4).len() == 2),
        "both servers never came up"
    );
    control(a2, "/_control/health/fail");
    assert!(
        wait_until(Duration::from_secs(10), || count(listen, 6)
            .keys()
            .all(|k| k == "web1")),
        "web2 still receives traffic after its health check failed"
    );
    control(a2, "/_control/health/ok");
    assert!(
        wait_until(Duration::from_secs(10), || count(listen, 4)
            .contains_key("web2")),
        "web2 never came back"
    );
}

#[test]
fn killing_a_backend_under_load_loses_no_request() {
    let (_b1, a1) = backend("web1");
    let (b2, a2) = backend("web2");
    let listen = free_addr();
    let extra = r#"retries = 2
health = { kind = "tcp", interval = "200ms", rise = 2, fall = 2 }"#;
    let _lb = Lb::start(
        &simple(
            listen,
            "roundrobin",
            extra,
            &servers_toml(&[("web1", a1, 1), ("web2", a2, 1)]),
        ),
        listen,
    );
    assert!(wait_until(Duration::from_secs(10), || count(listen, 4)
        .len()
        == 2));
    let load = Load::start(listen, 8, 2000);
    load.wait_more(200);
    b2.signal(libc::SIGKILL);
    load.wait_more(500);
    let (ok, failed) = load.finish();
    println!("requests ok: {ok}, failed: {failed}");
    assert_eq!(failed, 0);
}

#[test]
fn status_codes_when_upstream_fails() {
    let listen = free_addr();
    let dead = free_addr(); // nothing listens here
    let (_slow, aslow) = backend("slow1");
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "dead"
routes = [
  {{ path_prefix = "/slow", backend = "slow" }},
  {{ path_prefix = "/empty", backend = "empty" }},
]
[backends.dead]
retries = 0
passive = {{ max_fails = 0 }}
servers = [{{ name = "gone", address = "{dead}" }}]
[backends.slow]
response_timeout = "300ms"
servers = [{{ name = "slow1", address = "{aslow}" }}]
[backends.empty]
servers = []
"#
    );
    let _lb = Lb::start(&toml, listen);
    let r = get(listen, "/").expect("get");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("connection refused"), "{}", r.body);
    let r = get(listen, "/slow?ms=3000").expect("get");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.body.contains("did not answer"), "{}", r.body);
    let r = get(listen, "/empty").expect("get");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no server is available"), "{}", r.body);
}

#[test]
fn backup_used_only_when_primaries_are_down() {
    let (_p, ap) = backend("primary");
    let (_b, ab) = backend("backup");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
[backends.web]
health = {{ kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 1, fall = 1 }}
servers = [
  {{ name = "primary", address = "{ap}" }},
  {{ name = "backup", address = "{ab}", backup = true }},
]
"#
    );
    let _lb = Lb::start(&toml, listen);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.status == 200)
        .unwrap_or(false)));
    assert!(count(listen, 6).keys().all(|k| k == "primary"));
    control(ap, "/_control/health/fail");
    assert!(wait_until(Duration::from_secs(10), || count(listen, 3)
        .keys()
        .all(|k| k == "backup")));
}

#[test]
fn sighup_reload_changes_weights_without_dropping_requests() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let listen = free_addr();
    let v1 = simple(
        listen,
        "roundrobin",
        "",
        &servers_toml(&[("web1", a1, 1), ("web2", a2, 1)]),
    );
    let lb = Lb::start(&v1, listen);
    let load = Load::start(listen, 4, 5000);
    load.wait_more(100);
    // A bad file first: refused, the old config stays.
    lb.reload("this is = not [valid toml");
    assert!(wait_until(Duration::from_secs(10), || lb
        .proc
        .output()
        .contains("reload refused")));
    let v2 = simple(
        listen,
        "roundrobin",
        "",
        &servers_toml(&[("web1", a1, 1), ("web2", a2, 9)]),
    );
    lb.reload(&v2);
    assert!(wait_until(Duration::from_secs(10), || lb
        .proc
        .output()
        .contains("reloaded")));
    load.wait_more(100);
    let (_, failed) = load.finish();
    assert_eq!(failed, 0, "requests failed across reloads");
    let m = count(listen, 100);
    let heavy = *m.get("web2").unwrap_or(&0);
    assert!((85..=95).contains(&heavy), "weight 9:1 not applied: {m:?}");
}

#[test]
fn bad_requests_get_proper_status() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
client_header_timeout = "500ms"
max_header_bytes = 8192
[backends.web]
servers = [{{ name = "web1", address = "{a1}" }}]
"#
    );
    let lb = Lb::start(&toml, listen);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(listen, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let r = raw(listen, b"\x16\x03\x01 garbage garbage\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // A client that never finishes its headers is cut off after the header timeout.
    let mut s = TcpStream::connect(listen).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf);
    assert!(
        n.is_ok(),
        "connection should be closed by the proxy, got {n:?}"
    );
    // Still serving, no panic.
    assert_eq!(get(listen, "/").expect("get").status, 200);
    assert!(!lb.proc.output().contains("panicked"));
}

#[test]
fn websocket_upgrade_passes_through() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(
        &simple(listen, "roundrobin", "", &servers_toml(&[("web1", a1, 1)])),
        listen,
    );
    let mut s = TcpStream::connect(listen).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read head"),
            1,
            "closed early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    s.write_all(b"ping through the proxy").expect("write");
    let mut echo = [0u8; 22];
    s.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping through the proxy");
}

#[test]
fn quick_mode_like_balance() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    for mode in ["http", "tcp"] {
        let listen = free_addr();
        let child = std::process::Command::new(bin())
            .args([
                "run",
                "--mode",
                mode,
                "--listen",
                &listen.to_string(),
                "--server",
                &a1.to_string(),
                "--server",
                &a2.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let _p = Proc {
            child,
            name: "quick".into(),
            log: std::env::temp_dir().join("fulcrum-unused.log"),
        };
        wait_listening(listen);
        let m = count(listen, 6);
        assert_eq!(m.len(), 2, "mode {mode}: {m:?}");
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    let (toml, admin) = with_admin(&simple(
        listen,
        "roundrobin",
        "",
        &servers_toml(&[("web1", a1, 1)]),
    ));
    let mut lb = Lb::start(&toml, listen);
    let inflight = std::thread::spawn(move || get(listen, "/slow?ms=1000"));
    wait_backend_active(admin, "web", 1);
    lb.proc.signal(libc::SIGTERM);
    let r = inflight
        .join()
        .expect("join")
        .expect("in-flight request cut by SIGTERM");
    assert_eq!(r.status, 200);
    let st = lb
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit");
    assert!(st.success(), "{st:?}");
}

#[test]
fn http2_to_servers_when_configured() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(
        &simple(
            listen,
            "roundrobin",
            "http2 = true",
            &servers_toml(&[("web1", a1, 1)]),
        ),
        listen,
    );
    for _ in 0..3 {
        let r = get(listen, "/h2").expect("get");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["version"], "HTTP/2.0", "{}", r.body);
        assert_eq!(r.json()["path"], "/h2");
    }
    // Upgrades still go over HTTP/1.1.
    let mut s = TcpStream::connect(listen).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .expect("write");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("read");
    assert_eq!(&head, b"HTTP/1.1 101");
}
