//! The HTTP/1.1 relay (`proxy::h1`) through the real binary: a scripted
//! upstream that answers with exact bytes (chunked, close-delimited, 1xx,
//! malformed, silent…), raw client sockets, and the demo backend for the
//! requests the relay hands to the general (hyper) path.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::upstream::*;
use common::*;

// ---------------------------------------------------------------------------
// Configs.

/// One frontend, one backend with one server and no health check (so the
/// scripted upstream sees only proxied requests).
fn config(listen: SocketAddr, server: SocketAddr, extra_be: &str) -> String {
    config_servers(listen, &[server], extra_be)
}

/// As `config`, with these servers, named s1, s2, … in this order.
fn config_servers(listen: SocketAddr, servers: &[SocketAddr], extra_be: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ name = \"s{}\", address = \"{a}\" }}", i + 1))
        .collect();
    let servers = servers.join(", ");
    format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"

[backends.web]
{extra_be}
servers = [{servers}]
"#
    )
}

fn start(up: &Upstream, extra_be: &str) -> (Lb, SocketAddr) {
    start_servers(&[up], extra_be)
}

/// As `start`, with these upstreams as the backend's servers s1, s2, ….
fn start_servers(ups: &[&Upstream], extra_be: &str) -> (Lb, SocketAddr) {
    let listen = free_addr();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let lb = Lb::start(&config_servers(listen, &addrs, extra_be), listen);
    (lb, listen)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Tests.

const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

#[test]
fn chunked_response_passes_through_and_the_connection_stays_usable() {
    let up = Upstream::start(|_| Reply::Send(CHUNKED.to_vec()));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    for i in 0..2 {
        let r = c.get("/chunked");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(
            r.header("transfer-encoding").as_deref(),
            Some("chunked"),
            "request {i}: the chunked framing is passed on: {r:?}"
        );
        assert_eq!(r.text(), "hello world", "request {i}: decoded body");
        assert_eq!(
            r.wire_body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            "request {i}: chunks relayed unchanged"
        );
        assert!(r.header("content-length").is_none(), "{r:?}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        up.conns(),
        1,
        "the end of the chunked body was found: the upstream connection was reused"
    );
}

#[test]
fn chunked_response_with_extensions_and_trailers_split_in_small_writes() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
        4;name=value\r\nwiki\r\n5 ; q=\"a;b\"\r\npedia\r\nA\r\n in chunks\r\n0;last\r\nX-Sum: 42\r\nX-Other: yes\r\n\r\n"
        .to_vec();
    let expected_wire = b"4;name=value\r\nwiki\r\n5 ; q=\"a;b\"\r\npedia\r\nA\r\n in chunks\r\n0;last\r\nX-Sum: 42\r\nX-Other: yes\r\n\r\n";
    let up = Upstream::start(move |_| Reply::Trickle(resp.clone(), 3));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    for i in 0..2 {
        let r = c.get("/trickle");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.text(), "wikipedia in chunks", "request {i}: {r:?}");
        assert_eq!(
            r.trailers,
            vec![
                ("x-sum".to_string(), "42".to_string()),
                ("x-other".to_string(), "yes".to_string())
            ],
            "request {i}: trailers passed on"
        );
        assert_eq!(
            r.wire_body, expected_wire,
            "request {i}: extensions and trailers relayed unchanged"
        );
    }
    assert_eq!(
        up.conns(),
        1,
        "upstream connection reused after the trailers"
    );
}

#[test]
fn close_delimited_response_ends_the_client_connection() {
    let body = "no length here, the end of the stream ends me\n".repeat(100);
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").into_bytes();
    let up = Upstream::start(move |_| Reply::SendClose(resp.clone()));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    // A keep-alive request: the close comes from the response framing.
    c.send(b"GET /eof HTTP/1.1\r\nHost: test.local\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), body, "whole close-delimited body");
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "the client is told the connection ends: {}",
        r.head
    );
    assert!(r.header("content-length").is_none(), "{}", r.head);
    assert!(r.header("transfer-encoding").is_none(), "{}", r.head);
    assert!(c.closed(), "client connection closed after the body");
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let up = Upstream::start(|req| Reply::Send(ok(&format!("answer for {}", req.path()))));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    c.send(
        b"GET /one HTTP/1.1\r\nHost: test.local\r\n\r\nGET /two HTTP/1.1\r\nHost: test.local\r\n\r\n",
    );
    let a = c.response(false);
    let b = c.response(false);
    assert_eq!(
        (a.status, a.text().as_str()),
        (200, "answer for /one"),
        "{a:?}"
    );
    assert_eq!(
        (b.status, b.text().as_str()),
        (200, "answer for /two"),
        "{b:?}"
    );
    let paths: Vec<String> = up.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(paths, ["/one", "/two"]);
    // And the connection is still good for a third.
    let r = c.get("/three");
    assert_eq!(r.text(), "answer for /three", "{r:?}");
}

#[test]
fn large_request_body_reaches_the_server_intact() {
    let up = Upstream::start(|req| Reply::Send(ok(&format!("got {} bytes", req.body.len()))));
    let (_lb, listen) = start(&up, "");
    let body: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut c = Client::connect(listen);
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), format!("got {} bytes", body.len()));
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "one request upstream");
    assert_eq!(seen[0].body.len(), body.len(), "body length upstream");
    assert!(seen[0].body == body, "body bytes differ upstream");
    // The connection carries on after a streamed body.
    let r = c.get("/after");
    assert_eq!((r.status, r.text().as_str()), (200, "got 0 bytes"), "{r:?}");
}

#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    // Every response is keep-alive by its head, but the server closes the
    // connection right after it: the pooled connection is dead when reused.
    let up = Upstream::start(|req| Reply::SendClose(ok(&format!("conn {}", req.conn))));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    let a = c.get("/first");
    assert_eq!((a.status, a.text().as_str()), (200, "conn 0"), "{a:?}");
    assert!(
        wait_until(Duration::from_secs(5), || up.closed.load(Ordering::SeqCst)
            == 1),
        "upstream did not close its first connection"
    );
    let b = c.get("/second");
    assert_eq!(
        b.status, 200,
        "the retry on a new connection answers: {b:?}"
    );
    assert_eq!(b.text(), "conn 1");
    assert_eq!(up.conns(), 2, "the upstream saw two connections");
    let paths: Vec<String> = up.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(
        paths,
        ["/first", "/second"],
        "each request reached the server once"
    );
}

#[test]
fn early_hints_are_forwarded_before_the_response() {
    let up = Upstream::start(|req| {
        let mut b = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".to_vec();
        b.extend_from_slice(&ok("page"));
        if req.path() == "/split" {
            Reply::Trickle(b, 7)
        } else {
            Reply::Send(b)
        }
    });
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    // Both heads in one write, then in pieces of 7 bytes.
    for (i, path) in ["/together", "/split"].into_iter().enumerate() {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
        let (interim, r) = c.final_response(false);
        assert_eq!(
            interim.len(),
            1,
            "request {i}: one interim head: {interim:?}"
        );
        assert_eq!(interim[0].status, 103, "{interim:?}");
        assert_eq!(
            interim[0].header("link").as_deref(),
            Some("</s.css>; rel=preload"),
            "{}",
            interim[0].head
        );
        assert_eq!((r.status, r.text().as_str()), (200, "page"), "{r:?}");
    }
}

#[test]
fn no_retry_on_another_server_after_an_interim_answer_went_to_the_client() {
    // s1 sends 103 Early Hints, then closes without a final answer; s2 would
    // answer 200. Retries are allowed and `first` picks s1 first, so only the
    // 103 already relayed stops a retry. Once the client has a 1xx the relay
    // gives up: a local 502 follows the 103, and s2 never gets the request.
    let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    let a = Upstream::start(|_| Reply::SendClose(hints.to_vec()));
    let b = Upstream::start(|_| Reply::Send(ok("from s2")));
    let (_lb, listen) = start_servers(&[&a, &b], "balance = \"first\"\nretries = 3");
    let mut c = Client::connect(listen);
    let r = c.get("/hinted");
    assert_eq!(r.status, 103, "the early hints come first: {r:?}");
    assert_eq!(
        r.header("link").as_deref(),
        Some("</s.css>; rel=preload"),
        "{}",
        r.head
    );
    let (interim, r) = c.final_response(false);
    assert!(interim.is_empty(), "one interim answer only: {interim:?}");
    assert_eq!(
        r.status, 502,
        "a local 502 after the 103, not a retried answer: {r:?}"
    );
    assert!(
        r.text().contains("s1") && r.text().contains("failed before responding"),
        "the 502 names s1 and says why: {:?}",
        r.text()
    );
    assert!(
        r.header("connection").is_none(),
        "a GET's 502 keeps the client connection: {}",
        r.head
    );
    let at_a: Vec<String> = a.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(at_a, ["/hinted"], "s1 got the request once");
    assert_eq!(
        b.seen().len(),
        0,
        "the request was retried on s2 after the 103: {:?}",
        b.seen()
    );
    assert_eq!(b.conns(), 0, "nothing connected to s2");
}

#[test]
fn hop_by_hop_fields_are_dropped_and_forwarded_fields_set() {
    let up = Upstream::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nX-Public: fine\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    c.send(
        b"GET /h HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: evil\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r:?}");

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(
        s.all("connection").is_empty(),
        "Connection reached the server: {}",
        s.head
    );
    assert!(s.all("keep-alive").is_empty(), "{}", s.head);
    assert_eq!(
        s.all("x-forwarded-for"),
        ["10.0.0.1, 127.0.0.1"],
        "{}",
        s.head
    );
    assert_eq!(s.all("x-forwarded-proto"), ["http"], "{}", s.head);
    assert_eq!(s.all("x-forwarded-host"), ["shop.example"], "{}", s.head);
    assert_eq!(s.all("host"), ["shop.example"], "{}", s.head);
    let ids = s.all("x-request-id");
    assert_eq!(ids.len(), 1, "one request id: {}", s.head);
    assert!(
        ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "request id is 32 hex digits: {:?}",
        ids[0]
    );
    assert_eq!(s.request_line(), "GET /h HTTP/1.1");

    assert!(
        r.header("x-private").is_none(),
        "field named in Connection reached the client: {}",
        r.head
    );
    assert!(r.header("keep-alive").is_none(), "{}", r.head);
    assert!(
        r.header("connection").is_none(),
        "the server's Connection field reached the client: {}",
        r.head
    );
    assert_eq!(r.header("x-public").as_deref(), Some("fine"), "{}", r.head);
    // Still keep-alive towards the client.
    let r = c.get("/again");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn head_response_has_no_body_and_the_connection_carries_on() {
    let up = Upstream::start(|req| {
        if req.method() == "HEAD" {
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec())
        } else {
            Reply::Send(ok("after head"))
        }
    });
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    c.send(b"HEAD /big HTTP/1.1\r\nHost: test.local\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-length").as_deref(),
        Some("1000"),
        "HEAD keeps the length of the body it would have had: {}",
        r.head
    );
    let r = c.get("/next");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "after head"),
        "no stray bytes after the HEAD response: {r:?}"
    );
    assert_eq!(up.conns(), 1, "upstream connection reused after HEAD");
}

#[test]
fn requests_the_relay_does_not_handle_fall_back_to_the_general_path() {
    let (_b, a) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(&config(listen, a, ""), listen);

    // HTTP/1.0.
    let mut c = Client::connect(listen);
    c.send(b"GET /ten HTTP/1.0\r\nHost: test.local\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "HTTP/1.0: {r:?}");
    let j = r.json();
    assert_eq!(
        (j["server"].as_str(), j["path"].as_str()),
        (Some("web1"), Some("/ten")),
        "{j}"
    );

    // Expect: 100-continue (the body follows without waiting).
    let mut c = Client::connect(listen);
    c.send(b"POST /expect HTTP/1.1\r\nHost: test.local\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    let (interim, r) = c.final_response(false);
    assert!(interim.iter().all(|i| i.status == 100), "{interim:?}");
    assert_eq!(r.status, 200, "Expect: {r:?}");
    let j = r.json();
    assert_eq!(j["path"], "/expect", "{j}");
    assert_eq!(j["method"], "POST", "{j}");
    assert_eq!(j["body_bytes"], 5, "{j}");

    // A chunked request body, then another request on the same connection.
    let mut c = Client::connect(listen);
    c.send(b"POST /chunked-up HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "chunked request: {r:?}");
    let j = r.json();
    assert_eq!(
        (j["path"].as_str(), j["body_bytes"].as_u64()),
        (Some("/chunked-up"), Some(11)),
        "{j}"
    );
    let r = c.get("/after-chunked");
    assert_eq!(r.json()["path"], "/after-chunked", "{r:?}");

    // Relay first, then a request that falls back, on one keep-alive connection.
    let mut c = Client::connect(listen);
    let r = c.get("/relayed");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/relayed", "{r:?}");
    c.send(b"GET /fallback HTTP/1.0\r\nHost: test.local\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/fallback", "{r:?}");
    assert_eq!(r.json()["server"], "web1", "{r:?}");
}

#[test]
fn malformed_or_conflicting_response_heads_get_502() {
    let up = Upstream::start(|req| match req.path() {
        "/garbage" => Reply::SendClose(b"garbage\r\n\r\n".to_vec()),
        "/two-lengths" => Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        ),
        _ => Reply::Send(ok("fine")),
    });
    // No passive ejection: each case gets the upstream's own answer.
    let (_lb, listen) = start(&up, "passive = { max_fails = 0 }");
    for path in ["/garbage", "/two-lengths"] {
        let mut c = Client::connect(listen);
        let r = c.get(path);
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert!(
            r.text().contains("s1"),
            "{path}: the 502 names the server: {:?}",
            r.text()
        );
    }
    let mut c = Client::connect(listen);
    let r = c.get("/fine");
    assert_eq!((r.status, r.text().as_str()), (200, "fine"), "{r:?}");
}

#[test]
fn silent_server_gets_504_after_response_timeout() {
    let up = Upstream::start(|_| Reply::Hang);
    let (_lb, listen) = start(&up, "response_timeout = \"300ms\"");
    let mut c = Client::connect(listen);
    let r = c.get("/never");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.text().contains("did not answer"),
        "504 says why: {:?}",
        r.text()
    );
    assert_eq!(up.seen().len(), 1, "the request reached the server once");
}

#[test]
fn pipelined_request_with_body_then_get() {
    let up = Upstream::start(|req| {
        Reply::Send(ok(&format!(
            "{} {} {}",
            req.method(),
            req.path(),
            String::from_utf8_lossy(&req.body)
        )))
    });
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    c.send(b"POST /p HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhelloGET /g HTTP/1.1\r\nHost: test.local\r\n\r\n");
    let a = c.response(false);
    let b = c.response(false);
    assert_eq!(a.text(), "POST /p hello", "{a:?}");
    assert_eq!(b.text(), "GET /g ", "{b:?}");
}

#[test]
fn client_connection_close_is_honoured() {
    let up = Upstream::start(|_| Reply::Send(ok("bye")));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    c.send(b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "bye"), "{r:?}");
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(c.closed(), "client connection closed after the response");
}

/// The upstream answers GETs (keep-alive) and closes, without answering, a
/// connection that carries a POST: the POST was written and may have been
/// acted on, so it must not be sent again.
fn post_eating_upstream() -> Upstream {
    Upstream::start(|req| {
        if req.method() == "POST" {
            Reply::SendClose(Vec::new())
        } else {
            Reply::Send(ok("warm"))
        }
    })
}

/// Warm the pool with a GET, then POST a small body on the same client
/// connection (so on the reused upstream connection); returns the answer
/// and how many times the upstream received the POST.
fn post_on_reused_connection(up: &Upstream, listen: SocketAddr) -> (Response, usize) {
    let mut c = Client::connect(listen);
    let r = c.get("/warm");
    assert_eq!(r.status, 200, "{r:?}");
    c.send(b"POST /pay HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.response(false);
    let posts = up.seen().iter().filter(|s| s.method() == "POST").count();
    (r, posts)
}

#[test]
fn relay_does_not_replay_a_post_the_server_may_have_acted_on() {
    let up = post_eating_upstream();
    let (_lb, listen) = start(&up, "passive = { max_fails = 0 }");
    let (r, posts) = post_on_reused_connection(&up, listen);
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        posts,
        1,
        "the POST reached the server {posts} times (on {} connections)",
        up.conns()
    );
}

#[test]
fn general_path_does_not_replay_a_post_the_server_may_have_acted_on() {
    // The same exchange as above on the hyper path (a header rule makes the
    // frontend ineligible for the relay): the reference behaviour.
    let up = post_eating_upstream();
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
request_headers = {{ set = {{ "X-Via-Hyper" = "1" }} }}

[backends.web]
passive = {{ max_fails = 0 }}
servers = [{{ name = "s1", address = "{}" }}]
"#,
        up.addr
    );
    let _lb = Lb::start(&toml, listen);
    let (r, posts) = post_on_reused_connection(&up, listen);
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(posts, 1, "the POST reached the server {posts} times");
    assert!(
        up.seen().iter().all(|s| s.all("x-via-hyper") == ["1"]),
        "served by the general path"
    );
}

#[test]
fn post_on_a_pooled_connection_the_server_closed_goes_on_a_fresh_one() {
    // The server closes each connection right after its answer. Once that
    // close has happened, a POST must not be written to the dead pooled
    // connection (it could not be replayed): the relay sees the close first.
    let up = Upstream::start(|req| Reply::SendClose(ok(&format!("conn {}", req.conn))));
    let (_lb, listen) = start(&up, "");
    let mut c = Client::connect(listen);
    let a = c.get("/first");
    assert_eq!((a.status, a.text().as_str()), (200, "conn 0"), "{a:?}");
    assert!(
        wait_until(Duration::from_secs(5), || up.closed.load(Ordering::SeqCst)
            == 1),
        "upstream did not close its first connection"
    );
    c.send(b"POST /pay HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello");
    let (_, b) = c.final_response(false);
    assert_eq!((b.status, b.text().as_str()), (200, "conn 1"), "{b:?}");
    let paths: Vec<String> = up.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(
        paths,
        ["/first", "/pay"],
        "each request reached the server once"
    );
}

#[test]
fn a_connection_quiet_past_the_park_delay_still_serves_and_then_times_out() {
    // After a second without a request the relay parks the connection in a
    // small task; the next request must be served as before, and a parked
    // connection must still close at its idle limit.
    let up = Upstream::start(|req| Reply::Send(ok(&format!("conn {}", req.conn))));
    let listen = free_addr();
    let toml = config(listen, up.addr, "").replace(
        "backend = \"web\"\n",
        "backend = \"web\"\nclient_header_timeout = \"3s\"\n",
    );
    let _lb = Lb::start(&toml, listen);
    let mut c = Client::connect(listen);
    assert_eq!(c.get("/a").status, 200);
    // The quiet spell is the scenario: past the relay's one-second park delay.
    std::thread::sleep(Duration::from_millis(1600));
    let b = c.get("/b");
    assert_eq!((b.status, b.text().as_str()), (200, "conn 0"), "{b:?}");
    // Parked again; the keep-alive limit (3 s) closes it: end of stream.
    let started = std::time::Instant::now();
    assert_eq!(c.fill(), 0, "the idle connection was closed by fulcrum");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed at its idle limit, not at once"
    );
}

#[test]
fn one_thread_runtime_serves_the_relay_and_the_general_path() {
    // `[global] threads = 1` runs fulcrum on a current-thread runtime.
    let up = Upstream::start(|req| Reply::Send(ok(&format!("conn {}", req.conn))));
    let listen = free_addr();
    let toml = format!("[global]\nthreads = 1\n{}", config(listen, up.addr, ""));
    let _lb = Lb::start(&toml, listen);
    let mut c = Client::connect(listen);
    assert_eq!(c.get("/relay").status, 200);
    // HTTP/1.0 goes to the hyper path on the same runtime.
    let got = raw(listen, b"GET /general HTTP/1.0\r\nHost: test.local\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.0 200") || got.starts_with("HTTP/1.1 200"),
        "{got}"
    );
}

#[test]
fn a_reload_reaches_open_keep_alive_connections() {
    // The relay looks the frontend up in the current snapshot, so a client
    // that keeps its connection open across a reload is balanced over the
    // new server list, not the one it connected under.
    let old = Upstream::start(|_| Reply::Send(ok("old")));
    let new = Upstream::start(|_| Reply::Send(ok("new")));
    let listen = free_addr();
    let lb = Lb::start(&config(listen, old.addr, ""), listen);
    let mut c = Client::connect(listen);
    assert_eq!(c.get("/before").text(), "old");
    lb.reload(&config(listen, new.addr, ""));
    let moved = wait_until(Duration::from_secs(10), || c.get("/after").text() == "new");
    assert!(
        moved,
        "the open connection still went to the removed server"
    );
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let up = Upstream::start(|_| Reply::Send(ok("hi")));
    let (mut lb, listen) = start_long_idle(&up);
    let mut idle = Client::connect(listen);
    assert_eq!(idle.get("/").status, 200);
    let mut fresh = Client::connect(listen);
    lb.proc.signal(libc::SIGTERM);
    assert!(idle.closed(), "the idle keep-alive connection was closed");
    assert!(
        fresh.closed(),
        "the connection with no request yet was closed"
    );
    exits_cleanly(&mut lb);
}

#[test]
fn a_request_in_flight_when_draining_starts_ends_its_connection() {
    // /slow is held by the upstream until the test lets it go, after the
    // drain has started (the listener refuses new connections by then).
    let release = Arc::new(AtomicBool::new(false));
    let gate = release.clone();
    let up = Upstream::start(move |req| {
        if req.path() == "/slow" {
            wait_until(Duration::from_secs(20), || gate.load(Ordering::SeqCst));
        }
        Reply::Send(ok("done"))
    });
    let (mut lb, listen) = start_long_idle(&up);
    let mut c = Client::connect(listen);
    assert_eq!(c.get("/warm").status, 200);
    c.send(b"GET /slow HTTP/1.1\r\nHost: test.local\r\n\r\n");
    assert!(
        wait_until(Duration::from_secs(10), || up
            .seen()
            .iter()
            .any(|s| s.path() == "/slow")),
        "the upstream never got /slow"
    );
    lb.proc.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_err()
        }),
        "the listener kept accepting"
    );
    release.store(true, Ordering::SeqCst);
    let r = c.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "done"), "{r:?}");
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "the last answer of a draining process says so: {}",
        r.head
    );
    assert!(c.closed(), "the connection ended after the answer");
    exits_cleanly(&mut lb);
}

/// As `start`, with client idle and header limits far beyond the client's
/// read limit and the default 30 s grace: only a drain closes an idle
/// connection in time.
fn start_long_idle(up: &Upstream) -> (Lb, SocketAddr) {
    let listen = free_addr();
    let toml = config(listen, up.addr, "").replace(
        "backend = \"web\"",
        "backend = \"web\"\nclient_idle_timeout = \"10m\"\nclient_header_timeout = \"10m\"",
    );
    (Lb::start(&toml, listen), listen)
}

/// The process exits, successfully, once its connections are closed.
fn exits_cleanly(lb: &mut Lb) {
    let st = lb
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("exited after its connections closed");
    assert!(st.success(), "{st:?}");
}
