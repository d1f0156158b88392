//! Hostile clients cannot take a server out of rotation: a malformed,
//! truncated or trickled request body is the client's fault (4xx or a close),
//! never a passive-health failure of the server nor a retry. Each form is sent
//! more times than `max_fails`, then a good client must still get 200 from
//! the only server.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// More than the `max_fails` below: enough to eject the server were these
/// counted against it.
const N: usize = 4;

fn start_lb(up: SocketAddr) -> (Lb, SocketAddr) {
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
[backends.web]
retries = 2
response_timeout = "600ms"
passive = {{ max_fails = 2, fail_timeout = "30s" }}
servers = [{{ name = "only", address = "{up}" }}]
"#
    );
    (Lb::start(&toml, listen), listen)
}

/// Send `bytes`, half-close when `shut`, and read what comes back (bounded).
fn exchange(addr: SocketAddr, bytes: &[u8], shut: bool, hold: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    if shut {
        let _ = s.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + hold;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the proxy closes (or the bound passes).
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

fn status_of(resp: &str) -> Option<u16> {
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// A good client still gets the server's own answer.
fn assert_in_rotation(listen: SocketAddr, after: &str) {
    let r = get(listen, "/after").expect("good request");
    assert_eq!(r.status, 200, "after {after}: {r:?}");
    assert_eq!(r.server(), "only", "after {after}: {r:?}");
}

const CHUNKED_HEAD: &str = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

/// The malformed chunked bodies of issue 13 (name, body after the head).
const MALFORMED: &[(&str, &str)] = &[
    ("leading space in size", " 5\r\nhello\r\n0\r\n\r\n"),
    ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
    ("size overflow", "ffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    ("bare CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"),
    ("bare LF in extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
    ("more data than the size", "5\r\nhelloXXXX\r\n0\r\n\r\n"),
    ("no CRLF after the chunk data", "5\r\nhello0\r\n\r\n"),
    ("bare-LF chunk lines", "5\nhello\n0\n\n"),
    ("not hex", "zz\r\nhello\r\n0\r\n\r\n"),
];

#[test]
fn malformed_chunked_bodies_are_400_and_never_eject_the_server() {
    let (_up, up) = backend("only");
    let (lb, listen) = start_lb(up);
    for (name, body) in MALFORMED {
        for i in 0..N {
            let req = format!("{CHUNKED_HEAD}{body}");
            let resp = exchange(listen, req.as_bytes(), false, Duration::from_secs(5));
            assert_eq!(
                status_of(&resp),
                Some(400),
                "{name} #{i}: {resp:?}\n{}",
                lb.proc.output()
            );
            assert!(
                !resp.contains("server"),
                "{name}: blamed the server: {resp}"
            );
        }
        assert_in_rotation(listen, name);
    }
    assert!(
        !lb.proc.output().contains("ejected"),
        "{}",
        lb.proc.output()
    );
}

#[test]
fn a_chunked_body_without_its_last_chunk_is_the_clients_fault() {
    let (_up, up) = backend("only");
    let (lb, listen) = start_lb(up);
    for (name, body) in [
        ("no CRLF after the last chunk", "5\r\nhello\r\n0\r\n"),
        ("cut inside a chunk", "5\r\nhel"),
        ("cut after a chunk", "5\r\nhello\r\n"),
    ] {
        for i in 0..N {
            let req = format!("{CHUNKED_HEAD}{body}");
            // Half-closed: the proxy sees the end of the body stream.
            let resp = exchange(listen, req.as_bytes(), true, Duration::from_secs(5));
            assert!(
                resp.is_empty() || status_of(&resp) == Some(400),
                "{name} #{i}: {resp:?}"
            );
        }
        assert_in_rotation(listen, name);
    }
    assert!(!lb.proc.output().contains("ejected"));
}

#[test]
fn a_trickled_body_times_out_as_the_clients_fault() {
    let (_up, up) = backend("only");
    let (lb, listen) = start_lb(up);
    // Content-Length bodies take the relay; chunked ones the hyper path.
    let forms = [
        (
            "content-length",
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".to_string(),
        ),
        ("chunked", format!("{CHUNKED_HEAD}5\r\nhello\r\n")),
    ];
    for (name, req) in &forms {
        for i in 0..N {
            // Keep the connection open, sending nothing more: the response
            // timeout (600 ms) passes while the body is unfinished.
            let resp = exchange(listen, req.as_bytes(), false, Duration::from_secs(8));
            assert_eq!(status_of(&resp), Some(408), "{name} #{i}: {resp:?}");
        }
        assert_in_rotation(listen, name);
    }
    assert!(!lb.proc.output().contains("ejected"));
}

#[test]
fn a_content_length_body_cut_short_is_the_clients_fault() {
    let (_up, up) = backend("only");
    let (lb, listen) = start_lb(up);
    let req = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc";
    for i in 0..N {
        let resp = exchange(listen, req.as_bytes(), true, Duration::from_secs(5));
        assert!(
            resp.is_empty() || status_of(&resp) == Some(400),
            "#{i}: {resp:?}"
        );
    }
    assert_in_rotation(listen, "cut-short content-length body");
    assert!(!lb.proc.output().contains("ejected"));
}
