//! The hyper path's own HTTP/1.1 upstream for requests without a body
//! (`proxy::rawup`): every way an HTTP/1.1 answer can be framed reaches an
//! HTTP/2 client (and an HTTP/1.1 client of the hyper path) as it would
//! through hyper's client — Content-Length, chunked with trailers,
//! close-delimited, HEAD, 204, interim 103 — a malformed or cut answer is a
//! 502 or a reset stream, a pooled connection the server closed is retried
//! on a new one, and connections are reused.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the scripted origin saw: connections accepted, request heads.
#[derive(Default)]
struct Seen {
    accepted: usize,
    heads: Vec<String>,
}

/// The scripted answer to a request for `path`, and whether the
/// connection closes after it.
fn answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Origin: 1\r\n\r\nlength",
            false,
        ),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: done\r\n\r\n",
            false,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            true,
        ),
        "/early" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false),
        "/nocontent" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        // Answered, then closed without saying so: the pooled connection is stale.
        "/stale" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", true),
        "/bad" => (b"NOT HTTP AT ALL\r\n\r\n", true),
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    }
}

/// A raw HTTP/1.1 origin on loopback answering [`answer`]'s scripts.
fn origin() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(200) {
            let Ok(conn) = conn else { continue };
            s2.lock().unwrap().accepted += 1;
            let seen = s2.clone();
            std::thread::spawn(move || serve(conn, seen));
        }
    });
    (addr, seen)
}

fn serve(mut c: TcpStream, seen: Arc<Mutex<Seen>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    for _ in 0..1000 {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            match c.read(&mut b) {
                Ok(n) if n > 0 => buf.extend_from_slice(&b[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        seen.lock().unwrap().heads.push(head);
        let (bytes, close) = answer(&path);
        if c.write_all(bytes).is_err() || close {
            return;
        }
    }
}

fn config(listen: SocketAddr, origin: SocketAddr) -> String {
    format!(
        r#"
[frontends.h2c]
listen = ["{listen}"]
backend = "o"
h2c = true
[backends.o]
servers = [{{ name = "o1", address = "{origin}" }}]
"#
    )
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2(addr: SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Status, headers, body (or the body's error) and trailers of one request.
async fn fetch(
    s: &mut Sender,
    method: &str,
    path: &str,
) -> (
    u16,
    http::HeaderMap,
    Result<Bytes, String>,
    Option<http::HeaderMap>,
) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://origin.test{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (
                parts.status.as_u16(),
                parts.headers,
                Ok(c.to_bytes()),
                trailers,
            )
        }
        Err(e) => (
            parts.status.as_u16(),
            parts.headers,
            Err(e.to_string()),
            None,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_reaches_an_h2_client() {
    let (o, seen) = origin();
    let listen = free_addr();
    let toml = config(listen, o);
    let _lb = tokio::task::spawn_blocking(move || Lb::start(&toml, listen))
        .await
        .unwrap();
    let mut s = h2(listen).await;

    let (st, h, body, _) = fetch(&mut s, "GET", "/length").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b"length"[..])));
    assert_eq!(h.get("x-origin").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(
        h.get("content-length").map(|v| v.as_bytes()),
        Some(&b"6"[..])
    );

    let (st, h, body, trailers) = fetch(&mut s, "GET", "/chunked").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b"hello world"[..])));
    assert!(h.get("transfer-encoding").is_none(), "{h:?}");
    let t = trailers.expect("trailers forwarded");
    assert_eq!(t.get("x-t").map(|v| v.as_bytes()), Some(&b"done"[..]));

    let (st, _, body, _) = fetch(&mut s, "GET", "/close").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b"until the end"[..])));

    let (st, h, body, _) = fetch(&mut s, "GET", "/early").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b"ok"[..])));
    assert!(
        h.get("link").is_none(),
        "interim fields stay interim: {h:?}"
    );

    let (st, h, body, _) = fetch(&mut s, "HEAD", "/head").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b""[..])));
    assert_eq!(
        h.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..])
    );

    let (st, _, body, _) = fetch(&mut s, "GET", "/nocontent").await;
    assert_eq!((st, body.as_deref()), (204, Ok(&b""[..])));

    // Answered, then the origin closed the pooled connection: the next
    // request finds it closed and goes again on a new one.
    let (st, _, body, _) = fetch(&mut s, "GET", "/stale").await;
    assert_eq!((st, body.as_deref()), (200, Ok(&b"stale"[..])));
    let (st, _, body, _) = fetch(&mut s, "GET", "/length").await;
    assert_eq!(
        (st, body.as_deref()),
        (200, Ok(&b"length"[..])),
        "after a stale connection"
    );

    let (st, _, _, _) = fetch(&mut s, "GET", "/bad").await;
    assert_eq!(st, 502);

    // Cut inside its body: the stream ends in an error (a reset, before or
    // after the head reached the client), never a short success.
    let req = http::Request::get("http://origin.test/short")
        .body(Empty::new())
        .unwrap();
    match s.send_request(req).await {
        Err(_) => {}
        Ok(resp) => assert!(resp.into_body().collect().await.is_err()),
    }

    // One connection carries sequential requests: no more connections than
    // the answers that closed theirs, plus one.
    let before = seen.lock().unwrap().accepted;
    for _ in 0..20 {
        let (st, _, body, _) = fetch(&mut s, "GET", "/length").await;
        assert_eq!((st, body.as_deref()), (200, Ok(&b"length"[..])));
    }
    let after = seen.lock().unwrap().accepted;
    assert!(
        after <= before + 1,
        "{before} → {after} connections for 20 requests"
    );

    // HTTP/2 cookie fields reach HTTP/1.1 as one (RFC 9113 §8.2.3).
    let req = http::Request::get("http://origin.test/length")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::new())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let heads = seen.lock().unwrap().heads.clone();
    let last = heads.last().expect("the cookie request");
    assert!(last.contains("\r\ncookie: a=1; b=2\r\n"), "{last}");

    // What the origin got: an HTTP/1.1 head with the authority as Host and
    // the forwarded fields.
    let heads = seen.lock().unwrap().heads.clone();
    let first = heads.first().expect("a request reached the origin");
    assert!(first.starts_with("GET /length HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("host: origin.test\r\n"), "{first}");
    assert!(first.contains("x-forwarded-for: 127.0.0.1\r\n"), "{first}");
    assert!(first.contains("x-forwarded-proto: http\r\n"), "{first}");
    let head = heads.iter().find(|h| h.starts_with("HEAD ")).expect("HEAD");
    assert!(head.starts_with("HEAD /head HTTP/1.1\r\n"), "{head}");
}

/// An HTTP/1.1 client of the hyper path gets the same answers.
#[test]
fn an_http1_client_of_the_hyper_path_gets_the_same() {
    let (o, _) = origin();
    let listen = free_addr();
    let _lb = Lb::start(&config(listen, o), listen);
    let r = raw(
        listen,
        b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    assert!(r.contains("hello"), "{r}");
    assert!(r.contains(" world"), "{r}");
    assert!(r.ends_with("length"), "{r}");
    let r = raw(
        listen,
        b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("until the end"), "{r}");
    let r = raw(
        listen,
        b"GET /bad HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
}
