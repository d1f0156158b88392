//! Fuzz the HTTP/1.1 request path as a whole: a client stream of requests
//! and an upstream's answers go through a real fulcrum (relay, and hyper for
//! what the relay hands over) on loopback, in front of a recording origin.
//!
//! The input is decoded into a script: requests (method, marker path, header
//! forms — some of them ambiguous on purpose —, a body framed by
//! Content-Length or chunked, possibly with a request hidden in the body),
//! then raw bytes, and the origin's answer forms. Invariants, beyond no panic
//! and no hang:
//! - what reaches the origin is well-framed HTTP/1.1 (one Content-Length or
//!   `chunked` only, valid chunk syntax), possibly cut short by a close;
//! - never more requests upstream than the client sent: each marker `/rN`
//!   arrives at most once, and `/smuggled` (hidden in a body) never does;
//! - the body of every unambiguous request that arrives is byte-exact.
//!
//! One fulcrum and one origin serve every input (started on first use, on
//! one current-thread runtime); inputs run one after another.

#![no_main]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::Bytes;

/// Longer than every timeout in the proxy's configuration below: an input
/// that takes longer is a hang.
const HANG: Duration = Duration::from_secs(10);

struct Harness {
    rt: tokio::runtime::Runtime,
    front: SocketAddr,
    script: Arc<Mutex<Script>>,
    _proxy: Arc<fulcrum::runtime::Runtime>,
}

/// What the origin answers this input with, and what it saw.
#[derive(Default)]
struct Script {
    /// One answer per request, used in turn (the last one repeats).
    answers: Vec<Vec<u8>>,
    next: usize,
    /// Requests that arrived: (target, decoded body).
    seen: Vec<(String, Vec<u8>)>,
    /// A framing violation the origin found.
    bad: Option<String>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        common::abort_on_panic();
        let rt = common::runtime();
        let script = Arc::new(Mutex::new(Script::default()));
        let (front, proxy) = rt.block_on(async {
            let origin = TcpListener::bind("127.0.0.1:0").await.expect("origin");
            let oaddr = origin.local_addr().expect("origin addr");
            tokio::spawn(serve_origin(origin, script.clone()));
            let front = common::free_addr().expect("free port");
            let text = format!(
                r#"
[global]
threads = 1
[log]
access = "off"
[frontends.f]
listen = ["{front}"]
backend = "b"
client_header_timeout = "2s"
client_idle_timeout = "2s"
[backends.b]
retries = 0
connect_timeout = "1s"
response_timeout = "2s"
passive = {{ max_fails = 0 }}
servers = [ {{ name = "o", address = "{oaddr}" }} ]
"#
            );
            let cfg = fulcrum::config::parse_str(&text, "fuzz.toml").expect("config");
            let proxy = fulcrum::supervisor::start(cfg).await.expect("start");
            (front, proxy)
        });
        Harness {
            rt,
            front,
            script,
            _proxy: proxy,
        }
    })
}

async fn serve_origin(l: TcpListener, script: Arc<Mutex<Script>>) {
    while let Ok((s, _)) = l.accept().await {
        tokio::spawn(origin_conn(s, script.clone()));
    }
}

/// Read requests strictly, record them, answer each from the script.
async fn origin_conn(mut s: TcpStream, script: Arc<Mutex<Script>>) {
    let mut buf = Vec::new();
    loop {
        let (target, body, used) = loop {
            match parse_request(&buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    let mut sc = script.lock().unwrap_or_else(|p| p.into_inner());
                    sc.bad.get_or_insert(format!("{e}: {:?}", String::from_utf8_lossy(&buf)));
                    return;
                }
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return, // cut short by a close: allowed
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        let answer = {
            let mut sc = script.lock().unwrap_or_else(|p| p.into_inner());
            sc.seen.push((target, body));
            let a = sc
                .answers
                .get(sc.next)
                .or(sc.answers.last())
                .cloned()
                .unwrap_or_else(|| b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec());
            sc.next += 1;
            a
        };
        let close = answer.windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close"));
        if s.write_all(&answer).await.is_err() || close {
            return;
        }
    }
}

/// A strict reading of one request at the start of `buf`: `Ok(None)` when
/// more bytes are needed, `Err` when the bytes are not well-framed HTTP/1.1.
fn parse_request(buf: &[u8]) -> Result<Option<(String, Vec<u8>, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("head: {e}")),
    };
    let v11 = req.version == Some(1);
    let target = req.path.unwrap_or_default().to_string();
    let mut cl: Option<u64> = None;
    let mut te = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "CL not text")?;
            let n: u64 = v
                .parse()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(format!("bad Content-Length {v:?}"))?;
            if cl.is_some() {
                return Err("two Content-Length fields".into());
            }
            cl = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te || !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err(format!(
                    "Transfer-Encoding other than one `chunked`: {:?}",
                    String::from_utf8_lossy(h.value)
                ));
            }
            te = true;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    if hosts != 1 {
        return Err(format!("{hosts} Host fields"));
    }
    if te && cl.is_some() {
        return Err("Content-Length with chunked".into());
    }
    if te && !v11 {
        return Err("chunked in an HTTP/1.0 request".into());
    }
    let rest = &buf[head..];
    if te {
        return Ok(dechunk(rest)?.map(|(body, n)| (target, body, head + n)));
    }
    let n = cl.unwrap_or(0) as usize;
    if rest.len() < n {
        return Ok(None);
    }
    Ok(Some((target, rest[..n].to_vec(), head + n)))
}

/// A chunked body, strictly (RFC 9112 §7.1): sizes in hex, optional
/// extensions, CRLF line ends, trailers. `Ok(None)`: incomplete.
fn dechunk(mut b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = b.len();
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            if b.iter().any(|&c| c == b'\n') {
                return Err("bare LF in a chunk line".into());
            }
            return Ok(None);
        };
        let line = &b[..eol];
        let size_part = line.split(|&c| c == b';').next().unwrap_or_default();
        if size_part.is_empty() || !size_part.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("bad chunk size {:?}", String::from_utf8_lossy(line)));
        }
        if line.iter().any(|&c| c == b'\r' || c == b'\n') {
            return Err("CR or LF inside a chunk line".into());
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_part).unwrap_or("x"), 16)
            .map_err(|_| "chunk size too large")?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let t = &b[..eol];
                b = &b[eol + 2..];
                if t.is_empty() {
                    return Ok(Some((out, total - b.len())));
                }
                if !t.contains(&b':') {
                    return Err("bad trailer line".into());
                }
            }
        }
        let Some(end) = size.checked_add(2) else {
            return Err("chunk size too large".into());
        };
        if b.len() < end {
            return Ok(None);
        }
        out.extend_from_slice(&b[..size]);
        if &b[size..end] != b"\r\n" {
            return Err("no CRLF after chunk data".into());
        }
        b = &b[end..];
    }
}

/// Client bytes that cannot name a marker path (`/r…`, `/smuggled`).
fn tame(mut v: Vec<u8>) -> Vec<u8> {
    for b in &mut v {
        if *b == b'/' {
            *b = b'_';
        }
    }
    v
}

/// Header forms, the first few plain, the rest ambiguous or hostile.
const EXTRA: &[&[u8]] = &[
    b"Accept: */*\r\n",
    b"X-A: 1\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: close\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Host: other.example\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\n",
    b"X-Bad\x00: v\r\n",
    b"X-LF: v\n",
    b"Te: trailers\r\n",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"];

/// Decode the input: the client's bytes, which markers carry an
/// unambiguous body (and that body), and the origin's answers.
fn script(data: &[u8]) -> (Vec<u8>, HashMap<String, Vec<u8>>, Vec<Vec<u8>>) {
    let mut d = Bytes(data);
    let mut client = Vec::new();
    let mut exact = HashMap::new();
    let n = d.byte() % 4 + 1;
    for i in 0..n {
        let method = METHODS[d.byte() as usize % METHODS.len()];
        let marker = format!("/r{i}");
        let version: &[u8] = match d.byte() % 8 {
            0 => b"HTTP/1.0",
            1 => b"HTTP/1.2",
            _ => b"HTTP/1.1",
        };
        let mut head = format!("{method} {marker}?q={} ", d.byte()).into_bytes();
        head.extend_from_slice(version);
        head.extend_from_slice(b"\r\nHost: fuzz.example\r\n");
        let mut ambiguous = false;
        for _ in 0..d.byte() % 4 {
            let k = d.byte() as usize % EXTRA.len();
            ambiguous |= k >= 3;
            head.extend_from_slice(EXTRA[k]);
        }
        if d.byte() % 8 == 0 {
            // A header of fuzz bytes.
            let len = d.byte() as usize % 16;
            head.extend_from_slice(b"X-Raw: ");
            head.extend_from_slice(&tame(d.take(len)));
            head.extend_from_slice(b"\r\n");
            ambiguous = true;
        }
        let len = d.byte() as usize % 64;
        let mut body = tame(d.take(len));
        if d.byte() % 8 == 0 {
            body.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: fuzz.example\r\n\r\n");
        }
        match d.byte() % 4 {
            0 if body.is_empty() => {}
            0 | 1 => head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes()),
            2 => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                let mut chunked = Vec::new();
                for piece in body.chunks(1 + d.byte() as usize % 16) {
                    chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    chunked.extend_from_slice(piece);
                    chunked.extend_from_slice(b"\r\n");
                }
                chunked.extend_from_slice(b"0\r\n\r\n");
                head.extend_from_slice(b"\r\n");
                client.extend_from_slice(&head);
                client.extend_from_slice(&chunked);
                if !ambiguous && version == b"HTTP/1.1" {
                    exact.insert(marker, body);
                }
                continue;
            }
            _ => {
                // A raw chunked body from fuzz bytes: not checked for exactness.
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                ambiguous = true;
            }
        }
        head.extend_from_slice(b"\r\n");
        client.extend_from_slice(&head);
        client.extend_from_slice(&body);
        if !ambiguous && version == b"HTTP/1.1" && !method.eq_ignore_ascii_case("HEAD") {
            exact.insert(marker, body);
        }
    }
    let answers_n = d.byte() % 3 + 1;
    let mut answers = Vec::new();
    for _ in 0..answers_n {
        let status = [200u16, 204, 304, 404, 500, 302][d.byte() as usize % 6];
        let len = d.byte() as usize % 32;
        let body = d.take(len);
        let mut a = format!("HTTP/1.1 {status} X\r\n").into_bytes();
        match d.byte() % 4 {
            0 => {
                a.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                if !body.is_empty() {
                    a.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    a.extend_from_slice(&body);
                    a.extend_from_slice(b"\r\n");
                }
                a.extend_from_slice(b"0\r\n\r\n");
            }
            1 => {
                a.extend_from_slice(b"connection: close\r\ncontent-length: ");
                a.extend_from_slice(body.len().to_string().as_bytes());
                a.extend_from_slice(b"\r\n\r\n");
                a.extend_from_slice(&body);
            }
            _ => {
                a.extend_from_slice(b"content-length: ");
                a.extend_from_slice(body.len().to_string().as_bytes());
                a.extend_from_slice(b"\r\n\r\n");
                a.extend_from_slice(&body);
            }
        }
        answers.push(a);
    }
    // What is left goes raw after the requests.
    client.extend_from_slice(&tame(d.rest().to_vec()));
    (client, exact, answers)
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (client, exact, answers) = script(data);
    {
        let mut sc = h.script.lock().unwrap_or_else(|p| p.into_inner());
        *sc = Script {
            answers,
            ..Script::default()
        };
    }
    let front = h.front;
    let done = h.rt.block_on(async { tokio::time::timeout(HANG, async move {
        let Ok(mut c) = TcpStream::connect(front).await else {
            return;
        };
        let _ = c.write_all(&client).await;
        let _ = c.shutdown().await;
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink).await;
        // Let the origin finish reading what the proxy sent before the close.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }).await });
    assert!(done.is_ok(), "hang: no answer and no close within {HANG:?}");
    let sc = h.script.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bad) = &sc.bad {
        panic!("the origin got badly framed bytes: {bad}");
    }
    let mut markers = std::collections::HashSet::new();
    for (target, body) in &sc.seen {
        let path = target.split('?').next().unwrap_or_default();
        assert!(path != "/smuggled", "a request hidden in a body reached the origin");
        if path.starts_with("/r") {
            assert!(markers.insert(path.to_string()), "{path} arrived twice");
            if let Some(want) = exact.get(path) {
                assert_eq!(body, want, "body of {path} changed on the way");
            }
        }
    }
});
