//! A recording origin for differential tests: it keeps the exact bytes each connection
//! carried, answers one fixed response once it holds a whole request, and closes; plus
//! the normalisation that makes two proxies' forwarded requests comparable and the
//! client-visible verdict (statuses, or a close) of raw bytes sent to a proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum::proxy::h1::ChunkScanner;

/// A fulcrum configuration for differential tests: frontend `www` on `listen` in front
/// of `origin` alone, no retries (each request reaches the origin at most once), short
/// header and response timeouts (a request left hanging ends soon).
pub fn proxy_config(listen: SocketAddr, origin: SocketAddr) -> String {
    format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "o"
client_header_timeout = "2s"
[backends.o]
retries = 0
response_timeout = "3s"
passive = {{ max_fails = 0 }}
servers = [{{ name = "o1", address = "{origin}" }}]
"#
    )
}

/// The fixed answer; `Connection: close` so that every request a proxy
/// forwards arrives on a connection of its own.
pub const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// Every connection the origin accepted, with the bytes it received.
pub type Record = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

pub struct Origin {
    pub addr: SocketAddr,
    record: Record,
    _rt: tokio::runtime::Runtime,
}

impl Origin {
    pub fn start() -> Origin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let record: Record = Arc::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let rec = record.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn: Arc<Mutex<Vec<u8>>> = Arc::default();
                rec.lock().unwrap().push(conn.clone());
                tokio::spawn(serve_origin(s, conn));
            }
        });
        Origin {
            addr,
            record,
            _rt: rt,
        }
    }

    /// The connections recorded since the last call.
    pub fn take(&self) -> Vec<Vec<u8>> {
        let conns = std::mem::take(&mut *self.record.lock().unwrap());
        conns.iter().map(|c| c.lock().unwrap().clone()).collect()
    }
}

pub async fn serve_origin(mut s: tokio::net::TcpStream, conn: Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    // Bounded: a request that never completes is answered after 3 s anyway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return,
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        conn.lock().unwrap().extend_from_slice(&chunk[..n]);
        if request_complete(&buf) {
            break;
        }
    }
    let _ = s.write_all(ANSWER).await;
    let _ = s.shutdown().await;
}

/// True when `buf` holds one whole request (head and body).
pub fn request_complete(buf: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = req.parse(buf) else {
        return false;
    };
    let body = &buf[len..];
    match framing(req.headers) {
        Framing::Chunked => {
            let mut sc = ChunkScanner::default();
            sc.scan(body).is_ok() && sc.is_done()
        }
        Framing::Length(n) => body.len() as u64 >= n,
    }
}

pub enum Framing {
    Chunked,
    Length(u64),
}

pub fn framing(fields: &[httparse::Header<'_>]) -> Framing {
    let mut length = 0;
    for f in fields {
        if f.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(f.value)
                .to_ascii_lowercase()
                .trim()
                .ends_with("chunked")
        {
            return Framing::Chunked;
        }
        if f.name.eq_ignore_ascii_case("content-length") {
            length = String::from_utf8_lossy(f.value).trim().parse().unwrap_or(0);
        }
    }
    Framing::Length(length)
}

/// Fields each proxy adds or rewrites as it forwards (hop-by-hop and framing
/// fields, forwarding metadata): left out of the comparison.
pub const IGNORED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "forwarded",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
];

/// One upstream request as `METHOD TARGET | fields (sorted, names lower-cased)
/// | decoded body`; the version is left out (HAProxy forwards HTTP/1.0 as
/// 1.0, fulcrum as 1.1) and so is how the body was framed.
pub fn normalise(raw: &[u8]) -> String {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return format!("unparsed {:?}", String::from_utf8_lossy(raw)),
    };
    let mut kept: Vec<String> = req
        .headers
        .iter()
        .map(|f| {
            (
                f.name.to_ascii_lowercase(),
                String::from_utf8_lossy(f.value).trim().to_string(),
            )
        })
        .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    kept.sort();
    let rest = &raw[len..];
    let body = match framing(req.headers) {
        Framing::Chunked => dechunk(rest),
        Framing::Length(n) => rest[..rest.len().min(n as usize)].to_vec(),
    };
    let cut = if request_complete(raw) {
        ""
    } else {
        " (incomplete)"
    };
    format!(
        "{} {} | {} | {:?}{cut}",
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        kept.join("; "),
        String::from_utf8_lossy(&body)
    )
}

/// The payload of a (well-formed, as a proxy sends it) chunked body.
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&b[..eol]);
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        b = &b[eol + 2..];
        if n == 0 || b.len() < n {
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = b.get(n + 2..).unwrap_or(&[]);
    }
    out
}

/// Send `bytes` on a new connection and read the answers: until the proxy
/// closes, or 700 ms pass without a byte once something arrived, or 3 s
/// pass with nothing.
pub fn client(proxy: SocketAddr, bytes: &[u8]) -> String {
    client_with(
        proxy,
        bytes,
        Duration::from_secs(3),
        Duration::from_millis(700),
    )
}

/// As [`client`]: wait at most `first` for the first byte and `idle` between later ones
/// (5 s in all).
pub fn client_with(proxy: SocketAddr, bytes: &[u8], first: Duration, idle: Duration) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&proxy, Duration::from_secs(3)) else {
        return "connect-failed".into();
    };
    let _ = s.write_all(bytes);
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut eof = false;
    while start.elapsed() < Duration::from_secs(5) {
        let wait = if got.is_empty() { first } else { idle };
        let _ = s.set_read_timeout(Some(wait));
        match s.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                eof = true;
                break;
            }
            Err(_) => break,
        }
    }
    verdict(&got, eof)
}

/// The statuses of the responses in `got`, or "close"/"timeout" when none.
pub fn verdict(got: &[u8], eof: bool) -> String {
    let mut statuses = Vec::new();
    let mut i = 0;
    while let Some(at) = got[i..].windows(7).position(|w| w == b"HTTP/1.") {
        let p = i + at;
        if let Some(code) = got.get(p + 9..p + 12) {
            if got.get(p + 8) == Some(&b' ') && code.iter().all(u8::is_ascii_digit) {
                statuses.push(String::from_utf8_lossy(code).to_string());
            }
        }
        i = p + 7;
    }
    match (statuses.is_empty(), got.is_empty(), eof) {
        (false, _, _) => statuses.join(" "),
        (true, false, _) => "garbage".into(),
        (true, true, true) => "close".into(),
        (true, true, false) => "timeout".into(),
    }
}
