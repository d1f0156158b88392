//! Edge features and hardening through the real binary: rate limits, sticky
//! sessions, maxconn queueing, header rules, request ids, body limits, and a
//! table of request-smuggling attempts written as raw bytes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn one_backend(
    listen: SocketAddr,
    extra_fe: &str,
    extra_be: &str,
    servers: &[(&str, SocketAddr)],
) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", address = \"{a}\" }}"))
        .collect();
    format!(
        "[frontends.www]\nlisten = [\"{listen}\"]\nbackend = \"web\"\n{extra_fe}\n[backends.web]\n{extra_be}\nservers = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn rate_limit_answers_429_with_retry_after_and_spares_other_clients() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    // Clients are told apart by X-Forwarded-For because the test's loopback peer is a trusted proxy.
    let fe = r#"trusted_proxies = ["127.0.0.0/8"]
rate_limit = { rate = 1, per = "10s", burst = 3 }"#;
    let _lb = Lb::start(&one_backend(listen, fe, "", &[("web1", a)]), listen);
    let as_client =
        |ip: &str| request(listen, "GET", "/", &[("X-Forwarded-For", ip)]).expect("request");
    for _ in 0..3 {
        assert_eq!(as_client("198.51.100.7").status, 200);
    }
    let limited = as_client("198.51.100.7");
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // Another client is unaffected.
    assert_eq!(as_client("203.0.113.9").status, 200);
}

#[test]
fn route_rate_limit_by_api_key_header() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
routes = [{{ path_prefix = "/api/", backend = "web", rate_limit = {{ rate = 1, per = "1m", burst = 2, key = "header:X-Api-Key" }} }}]
[backends.web]
servers = [{{ name = "web1", address = "{a}" }}]
"#
    );
    let _lb = Lb::start(&toml, listen);
    let call = |key: &str, path: &str| {
        request(listen, "GET", path, &[("X-Api-Key", key)])
            .expect("req")
            .status
    };
    assert_eq!(call("k1", "/api/a"), 200);
    assert_eq!(call("k1", "/api/a"), 200);
    assert_eq!(call("k1", "/api/a"), 429);
    assert_eq!(call("k2", "/api/a"), 200, "another key has its own bucket");
    assert_eq!(
        call("k1", "/other"),
        200,
        "the limit applies to its route only"
    );
}

#[test]
fn sticky_cookie_keeps_a_session_on_one_server_until_it_goes_down() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let listen = free_addr();
    let be = r#"sticky = { cookie = "SRV" }
health = { kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 1, fall = 1 }"#;
    let _lb = Lb::start(
        &one_backend(listen, "", be, &[("web1", a1), ("web2", a2)]),
        listen,
    );
    assert!(wait_until(Duration::from_secs(10), || {
        (0..4)
            .filter_map(|_| get(listen, "/").ok())
            .map(|r| r.server())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 2
    }));
    let first = get(listen, "/").expect("first");
    let set = first
        .header("set-cookie")
        .expect("Set-Cookie on the first response")
        .to_string();
    assert!(set.starts_with("SRV=") && set.contains("HttpOnly"), "{set}");
    assert!(
        !set.contains("127.0.0.1"),
        "the cookie must not reveal the address: {set}"
    );
    assert_eq!(first.header("cache-control"), Some("private"));
    let cookie = set.split(';').next().expect("value").to_string();
    let home = first.server();
    for _ in 0..20 {
        let r = request(listen, "GET", "/", &[("Cookie", &format!("a=1; {cookie}"))]).expect("req");
        assert_eq!(r.server(), home, "sticky session moved");
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }
    // The server never sees the persistence cookie (indirect).
    let r = request(listen, "GET", "/", &[("Cookie", &cookie)]).expect("req");
    assert!(
        r.json()["cookie"].is_null() || !r.body.contains("SRV="),
        "{}",
        r.body
    );
    // Its server goes down: the session is re-balanced and gets a new cookie.
    let home_addr = if home == "web1" { a1 } else { a2 };
    control(home_addr, "/_control/health/fail");
    assert!(wait_until(Duration::from_secs(10), || {
        request(listen, "GET", "/", &[("Cookie", &cookie)])
            .map(|r| r.server() != home && r.header("set-cookie").is_some())
            .unwrap_or(false)
    }));
}

#[test]
fn maxconn_queues_then_503_after_queue_timeout() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
[backends.web]
queue_timeout = "500ms"
servers = [{{ name = "web1", address = "{a}", maxconn = 1 }}]
"#
    );
    let (toml, admin) = with_admin(&toml);
    let _lb = Lb::start(&toml, listen);
    // A short request behind a slow one waits in the queue and then succeeds.
    let slow = std::thread::spawn(move || get(listen, "/slow?ms=300"));
    wait_backend_active(admin, "web", 1);
    let queued = get(listen, "/").expect("queued request");
    assert_eq!(queued.status, 200, "{queued:?}");
    assert_eq!(slow.join().expect("join").expect("slow").status, 200);
    // Behind a request longer than queue_timeout, the queued one gets 503.
    let slow = std::thread::spawn(move || get(listen, "/slow?ms=2500"));
    wait_backend_active(admin, "web", 1);
    let r = get(listen, "/").expect("queued request");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("maxconn"), "{}", r.body);
    assert_eq!(slow.join().expect("join").expect("slow").status, 200);
}

#[test]
fn header_rules_request_ids_and_body_limit() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let fe = r#"max_body_bytes = 1000
request_headers = { set = { "X-Forwarded-Proto" = "https", "X-Client" = "{client_ip}" }, remove = ["X-Debug"] }
response_headers = { add = { "X-Served-By-Lb" = "{frontend}/{server}" }, remove = ["X-Served-By"] }"#;
    let _lb = Lb::start(&one_backend(listen, fe, "", &[("web1", a)]), listen);
    let r = request(listen, "GET", "/", &[("X-Debug", "1")]).expect("req");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["x_forwarded_proto"], "https", "set replaces");
    assert_eq!(r.header("x-served-by-lb"), Some("www/web1"));
    assert!(
        r.header("x-served-by").is_none(),
        "removed from the response"
    );
    // X-Request-Id: generated when absent, kept when present.
    let r = request(listen, "GET", "/", &[("X-Request-Id", "abc-123")]).expect("req");
    assert_eq!(r.status, 200);
    let small = send(listen, "POST", "/", &[], &"x".repeat(1000)).expect("post");
    assert_eq!(small.status, 200);
    let big = send(listen, "POST", "/", &[], &"x".repeat(1001)).expect("post");
    assert_eq!(big.status, 413, "{big:?}");
}

#[test]
fn smuggling_and_abuse_table() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(
        &one_backend(listen, "client_header_timeout = \"2s\"", "", &[("web1", a)]),
        listen,
    );
    let served = || {
        get(a, "/count").expect("direct").json()["request"]
            .as_u64()
            .unwrap_or(0)
    };
    // (name, raw request, expected status prefix or "closed")
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("CL and TE together", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "one-response-then-close"),
        ("two different Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", "HTTP/1.1 400"),
        ("Content-Length not a number", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3a\r\n\r\nabc", "HTTP/1.1 400"),
        ("TE other than chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "HTTP/1.1 400"),
        ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", "HTTP/1.1 400"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "HTTP/1.1 400"),
        ("NUL in a header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", "HTTP/1.1 400"),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "closed-or-4xx-5xx"),
        ("garbage request line", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (name, bytes, want) in cases {
        let before = served();
        let got = raw(listen, bytes);
        match want {
            // RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped and the
            // connection closes after the response, so the trailing request is never read.
            "one-response-then-close" => {
                assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{name}: {got:?}");
                assert!(
                    got.to_ascii_lowercase().contains("connection: close"),
                    "{name}: {got:?}"
                );
            }
            "closed-or-4xx-5xx" => assert!(
                got.is_empty() || got.starts_with("HTTP/1.1 4") || got.starts_with("HTTP/1.1 5"),
                "{name}: {got:?}"
            ),
            prefix => assert!(
                got.starts_with(prefix),
                "{name}: expected {prefix}, got {got:?}"
            ),
        }
        assert!(
            !got.contains("\"/smuggled\""),
            "{name}: a smuggled request was answered: {got}"
        );
        let after = served();
        // Only our own direct /count request may have reached the backend, never a smuggled one.
        assert!(
            after <= before + 2,
            "{name}: the backend saw extra requests ({before} → {after})"
        );
    }
    // Too many header fields: 431.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let got = raw(listen, many.as_bytes());
    assert!(got.starts_with("HTTP/1.1 431"), "150 headers: {got:?}");
    // Connection: X-Forwarded-For cannot strip the forwarded headers.
    let r = request(
        listen,
        "GET",
        "/",
        &[(
            "Connection",
            "keep-alive, X-Forwarded-For, X-Forwarded-Proto",
        )],
    )
    .expect("req");
    assert_eq!(r.json()["x_forwarded_for"], "127.0.0.1");
    assert_eq!(r.json()["x_forwarded_proto"], "http");
    assert_eq!(get(listen, "/").expect("still serving").status, 200);
}

#[test]
fn frontend_maxconn_holds_extra_connections_until_one_closes() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let (toml, admin) = with_admin(&one_backend(listen, "maxconn = 1", "", &[("web1", a)]));
    let _lb = Lb::start(&toml, listen);
    // One connection holds the only slot with a slow request…
    let slow = std::thread::spawn(move || {
        let r = get(listen, "/slow?ms=1500");
        (r, std::time::Instant::now())
    });
    wait_backend_active(admin, "web", 1);
    // …so a second client is accepted by the kernel but only served after it ends.
    let r = get(listen, "/").expect("second request");
    let second_done = std::time::Instant::now();
    assert_eq!(r.status, 200);
    let (first, first_done) = slow.join().expect("join");
    assert_eq!(first.expect("slow").status, 200);
    assert!(
        second_done >= first_done,
        "the second connection was served while the only slot was taken"
    );
}

#[test]
fn a_drained_server_keeps_its_sticky_sessions() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[admin]\nlisten = \"{admin}\"\n{}",
        one_backend(
            listen,
            "",
            "sticky = { cookie = \"SRV\" }",
            &[("web1", a1), ("web2", a2)]
        )
    );
    let _lb = Lb::start(&toml, listen);
    wait_listening(admin);
    let first = get(listen, "/").expect("first");
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_string();
    let home = first.server();
    let r = send(
        admin,
        "PUT",
        &format!("/api/v1/backends/web/servers/{home}/state"),
        &[],
        r#"{"state":"drain"}"#,
    )
    .expect("drain");
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..10 {
        let r = request(listen, "GET", "/", &[("Cookie", &cookie)]).expect("req");
        assert_eq!(r.server(), home, "a drained server keeps its sessions");
        assert_ne!(
            get(listen, "/").expect("new").server(),
            home,
            "but takes no new ones"
        );
    }
    let r = send(
        admin,
        "PUT",
        &format!("/api/v1/backends/web/servers/{home}/state"),
        &[],
        r#"{"state":"maint"}"#,
    )
    .expect("maint");
    assert_eq!(r.status, 200);
    let r = request(listen, "GET", "/", &[("Cookie", &cookie)]).expect("req");
    assert_ne!(r.server(), home, "maint ends the sessions");
}
