//! The same request table through the relay, the hyper path (forced with
//! `FULCRUM_RELAY=off`) and, where it applies, TCP: the statuses, the bytes
//! the upstream receives (normalised: header order and case, generated
//! request ids) and the frontend counters must be the same. Policy lives
//! once (`proxy::decide`, `proxy::attempts`); this keeps it that way.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::upstream::{Reply, Upstream};
use common::*;

/// An upstream that records each request (head and body) and answers 200,
/// closing when the request asks to.
fn upstream() -> Upstream {
    Upstream::start(|req| {
        let answer: &[u8] = if req.method() == "HEAD" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 1\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 1\r\n\r\nok"
        };
        if req
            .head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close")
        {
            Reply::SendClose(answer.to_vec())
        } else {
            Reply::Send(answer.to_vec())
        }
    })
}

fn config(
    (listen, alt, tcp, admin): (SocketAddr, SocketAddr, SocketAddr, SocketAddr),
    up: SocketAddr,
    dead: SocketAddr,
) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[log]
access = "off"

[frontends.www]
listen = ["{listen}"]
max_body_bytes = 100
routes = [
  {{ host = "app.test", backend = "up" }},
  {{ host = "*.wild.test", backend = "up" }},
  {{ host = "rl.test", backend = "up", rate_limit = {{ rate = 1, per = "1h", burst = 1 }} }},
  {{ host = "down.test", backend = "down" }},
  {{ path_prefix = "/static/", backend = "up" }},
]

[frontends.alt]
listen = ["{alt}"]
backend = "up"

[frontends.tcp]
mode = "tcp"
listen = ["{tcp}"]
backend = "up"

[backends.up]
servers = [{{ name = "u", address = "{up}" }}]

[backends.down]
retries = 0
servers = [{{ name = "d", address = "{dead}" }}]
"#
    )
}

/// One fulcrum with its own upstream; `relay`: false forces the hyper path.
struct Node {
    listen: SocketAddr,
    alt: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    up: Upstream,
    _lb: Lb,
}

fn node(relay: bool, dead: SocketAddr) -> Node {
    let up = upstream();
    let (listen, alt, tcp, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let env = relay_env(relay);
    let lb = Lb::start_env(
        &config((listen, alt, tcp, admin), up.addr, dead),
        listen,
        env,
    );
    wait_listening(tcp);
    wait_listening(admin);
    Node {
        listen,
        alt,
        tcp,
        admin,
        up,
        _lb: lb,
    }
}

/// A request of the table: method, path, headers, body.
type Row = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    String,
);

fn table() -> Vec<Row> {
    let h = |v: &[(&'static str, &'static str)]| v.to_vec();
    vec![
        ("GET", "/a?x=1", h(&[("Host", "app.test")]), String::new()),
        (
            "GET",
            "/static/x",
            h(&[("Host", "other.test")]),
            String::new(),
        ),
        ("POST", "/p", h(&[("Host", "APP.test:80")]), "hello".into()),
        (
            "GET",
            "/x",
            h(&[("Host", "a.wild.test"), ("X-Request-Id", "given-1")]),
            String::new(),
        ),
        (
            "GET",
            "/x",
            h(&[("Host", "app.test"), ("X-Forwarded-For", "1.2.3.4")]),
            String::new(),
        ),
        (
            "GET",
            "/x",
            h(&[
                ("Host", "app.test"),
                ("Keep-Alive", "timeout=5"),
                ("X-Forwarded-Proto", "ftp"),
            ]),
            String::new(),
        ),
        ("HEAD", "/h", h(&[("Host", "app.test")]), String::new()),
        ("GET", "/", h(&[("Host", "none.test")]), String::new()),
        ("POST", "/big", h(&[("Host", "app.test")]), "x".repeat(101)),
        ("GET", "/r", h(&[("Host", "rl.test")]), String::new()),
        ("GET", "/r", h(&[("Host", "rl.test")]), String::new()),
        ("GET", "/d", h(&[("Host", "down.test")]), String::new()),
    ]
}

/// The upstream's view of a request, comparable across paths: request line,
/// fields lower-cased and sorted, a generated request id as `<id>`, body.
fn normalise(head: &str, body: &[u8]) -> String {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let mut fields: Vec<String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            let v =
                if k == "x-request-id" && v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    "<id>"
                } else {
                    v
                };
            format!("{k}: {v}")
        })
        .collect();
    fields.sort();
    format!(
        "{first}\n{}\n\n{}",
        fields.join("\n"),
        String::from_utf8_lossy(body)
    )
}

/// Status, answer body, and what reached the upstream, for each row.
fn run_table(n: &Node) -> Vec<(u16, String, Vec<String>)> {
    table()
        .into_iter()
        .map(|(method, path, headers, body)| {
            let r = send(n.listen, method, path, &headers, &body).expect("request");
            let seen =
                n.up.take()
                    .into_iter()
                    .map(|s| normalise(&s.head, &s.body))
                    .collect();
            (r.status, r.body, seen)
        })
        .collect()
}

fn counters(n: &Node) -> BTreeMap<String, serde_json::Value> {
    let st = get(n.admin, "/api/v1/status").expect("status").json();
    let mut out = BTreeMap::new();
    for f in st["frontends"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or("").to_string();
        out.insert(format!("{name}.requests"), f["requests_total"].clone());
        out.insert(
            format!("{name}.local_errors"),
            f["local_errors_total"].clone(),
        );
    }
    out
}

#[test]
fn relay_hyper_and_tcp_agree() {
    // A port nothing listens on (bound then released), the same for both.
    let dead = free_addr();
    let relay = node(true, dead);
    let hyper = node(false, dead);
    let a = run_table(&relay);
    let b = run_table(&hyper);
    for (i, (ra, rb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(ra, rb, "row {i} of the table: relay vs hyper");
    }
    // What the table means, so both agreeing on nonsense fails too.
    let statuses: Vec<u16> = a.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 503, 413, 200, 429, 502]
    );
    assert!(a[2].2[0].ends_with("\n\nhello"), "{:?}", a[2].2);
    assert!(a[3].2[0].contains("x-request-id: given-1"), "{:?}", a[3].2);
    assert!(
        a[4].2[0].contains("x-forwarded-for: 1.2.3.4, 127.0.0.1"),
        "{:?}",
        a[4].2
    );
    assert!(
        a[5].2[0].contains("x-forwarded-proto: http\n") && !a[5].2[0].contains("keep-alive"),
        "{:?}",
        a[5].2
    );
    // Counted the same way.
    let wait = |n: &Node| {
        // Responses are counted when their body ends; poll until stable.
        let mut last = counters(n);
        wait_until(Duration::from_secs(5), || {
            let now = counters(n);
            let same = now == last;
            last = now;
            same
        });
        last
    };
    assert_eq!(wait(&relay), wait(&hyper));
    let c = wait(&relay);
    assert_eq!(c["www.requests"], 12);
    assert_eq!(c["www.local_errors"], 4, "503, 413, 429, 502");

    // TCP, where it applies: the same first request reaches the upstream as
    // the client sent it, and the answer is the upstream's.
    for n in [&relay, &hyper] {
        let r = send(n.tcp, "GET", "/a?x=1", &[("Host", "app.test")], "").expect("tcp request");
        assert_eq!(r.status, a[0].0);
        let seen = n.up.take();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].head.starts_with("GET /a?x=1 HTTP/1.1\r\n"),
            "{seen:?}"
        );
    }
}

/// `fulcrum_requests_total{frontend=…}` is the frontend the requests came
/// in on, also when two frontends share a backend, on both paths.
#[test]
fn requests_are_labelled_with_their_frontend() {
    let dead = free_addr();
    for relay in [true, false] {
        let n = node(relay, dead);
        for _ in 0..3 {
            assert_eq!(get(n.alt, "/").expect("alt").status, 200);
        }
        for _ in 0..2 {
            let r = request(n.listen, "GET", "/", &[("Host", "app.test")]).expect("www");
            assert_eq!(r.status, 200);
        }
        let sample = |frontend: &str| -> Option<f64> {
            let text = get(n.admin, "/metrics").ok()?.body;
            text.lines()
                .filter(|l| l.starts_with("fulcrum_requests_total{"))
                .filter(|l| {
                    [
                        format!("frontend=\"{frontend}\""),
                        "backend=\"up\"".to_string(),
                        "server=\"u\"".to_string(),
                        "code=\"2xx\"".to_string(),
                    ]
                    .iter()
                    .all(|want| l.contains(want.as_str()))
                })
                .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        };
        // Counted when each body ends: poll.
        let ok = wait_until(Duration::from_secs(5), || {
            sample("alt") == Some(3.0) && sample("www") == Some(2.0)
        });
        assert!(
            ok,
            "relay {relay}: alt {:?}, www {:?}",
            sample("alt"),
            sample("www")
        );
    }
}
