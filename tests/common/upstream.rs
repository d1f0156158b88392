//! A scripted upstream and a raw keep-alive client.
//!
//! [`Upstream`] is a TCP server on 127.0.0.1 that answers each request as a script says:
//! exact bytes (chunked, close-delimited, 1xx, malformed…), trickled in small writes, or
//! never. It records every request (head and body) with the connection that carried it.
//! [`Client`] writes raw bytes and reads responses one by one as a proxy sends them
//! (interim answers, chunked bodies with trailers, close-delimited bodies).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest any socket read of the raw client waits.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The scripted upstream.

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection (0, 1, …) carried it.
    pub conn: usize,
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or("")
    }
    pub fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }
    /// Every field as (lower-case name, value).
    pub fn fields(&self) -> Vec<(String, String)> {
        fields_of(&self.head)
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields()
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }
}

pub fn fields_of(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// What the upstream does with a request.
pub enum Reply {
    /// Write these bytes at once and wait for the next request.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendClose(Vec<u8>),
    /// Write these bytes in pieces of this many bytes, flushed one by one with
    /// a short pause between them, and wait for the next request.
    Trickle(Vec<u8>, usize),
    /// Never answer: wait until the peer closes.
    Hang,
}

pub type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A TCP server on 127.0.0.1 answering each request as the script says.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    /// Connections the upstream closed itself (`Reply::SendClose`).
    pub closed: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
    pub acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (seen, conns, closed, stop) =
                (seen.clone(), conns.clone(), closed.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: a test that forgets to stop us ends after a minute.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let n = conns.fetch_add(1, Ordering::SeqCst);
                            let (script, seen, closed, stop) =
                                (script.clone(), seen.clone(), closed.clone(), stop.clone());
                            std::thread::spawn(move || {
                                serve_conn(s, n, &*script, &seen, &closed, &stop)
                            });
                        }
                        // The accept poll's pace (the listener is non-blocking so the
                        // loop sees `stop`).
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Upstream {
            addr,
            seen,
            conns,
            closed,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// The requests seen since the last call (and forgets them).
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("seen lock"))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

pub fn serve_conn(
    mut s: TcpStream,
    conn: usize,
    script: &Script,
    seen: &Mutex<Vec<Seen>>,
    closed: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf, conn, stop) {
        seen.lock().expect("seen lock").push(req.clone());
        match script(&req) {
            Reply::Send(bytes) => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::SendClose(bytes) => {
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(Shutdown::Both);
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Reply::Trickle(bytes, piece) => {
                for p in bytes.chunks(piece) {
                    if s.write_all(p).and_then(|()| s.flush()).is_err() {
                        return;
                    }
                    // The pause between pieces is the scenario (a slow writer).
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            Reply::Hang => {
                // Until the proxy gives up on us (or the test ends).
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut b = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match s.read(&mut b) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
        }
    }
}

pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one request (head, then a Content-Length body) from `s`; `None` at
/// end of stream, on an error, when stopped, or after 30 s without one.
pub fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: usize,
    stop: &AtomicBool,
) -> Option<Seen> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fill = |buf: &mut Vec<u8>| -> Option<()> {
        let mut b = [0u8; 16 * 1024];
        loop {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return None;
            }
            match s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&b[..n]);
                    return Some(());
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => return None,
            }
        }
    };
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = fields_of(&head)
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        fill(buf)?;
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(Seen { conn, head, body })
}

// ---------------------------------------------------------------------------
// A raw client.

/// A response as the client got it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// The body exactly as it came on the wire (chunked framing included).
    pub wire_body: Vec<u8>,
}

impl Response {
    pub fn fields(&self) -> Vec<(String, String)> {
        fields_of(&self.head)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client connection reading responses one by one.
pub struct Client {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write request");
    }

    /// A GET for `path` on this keep-alive connection.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
        self.response(false)
    }

    /// Read more bytes; 0 at end of stream.
    pub fn fill(&mut self) -> usize {
        let mut b = [0u8; 16 * 1024];
        match self.s.read(&mut b) {
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                n
            }
            Err(e) if is_timeout(&e) => panic!(
                "no more bytes from fulcrum within {READ_LIMIT:?}; unread so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            // A reset also ends the stream for the callers here.
            Err(_) => 0,
        }
    }

    pub fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill() > 0,
                "connection closed {} bytes short of {n}; got {:?}",
                n - self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
        }
        self.buf.drain(..n).collect()
    }

    pub fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            assert!(
                self.fill() > 0,
                "connection closed inside a line; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// The next response head (interim ones included).
    pub fn head(&mut self) -> (u16, String) {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "connection closed before a complete response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {head:?}"));
        (status, head)
    }

    /// The next response, body read as its head says.
    pub fn response(&mut self, head_request: bool) -> Response {
        let (status, head) = self.head();
        let fields = fields_of(&head);
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
            trailers: Vec::new(),
            wire_body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return r;
        }
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked")) {
            loop {
                let line = self.line();
                r.wire_body.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line).to_string();
                let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
                if size == 0 {
                    break;
                }
                let data = self.take(size + 2);
                r.wire_body.extend_from_slice(&data);
                assert_eq!(&data[size..], b"\r\n", "chunk data not followed by CRLF");
                r.body.extend_from_slice(&data[..size]);
            }
            loop {
                let line = self.line();
                r.wire_body.extend_from_slice(&line);
                if line == b"\r\n" {
                    break;
                }
                let text = String::from_utf8_lossy(&line).to_string();
                let (k, v) = text.split_once(':').expect("trailer field");
                r.trailers
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            r.body = self.take(len);
            r.wire_body = r.body.clone();
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
            r.wire_body = r.body.clone();
        }
        r
    }

    /// The final response, with the interim (1xx) ones before it.
    pub fn final_response(&mut self, head_request: bool) -> (Vec<Response>, Response) {
        let mut interim = Vec::new();
        loop {
            let r = self.response(head_request);
            if r.status >= 200 {
                return (interim, r);
            }
            interim.push(r);
        }
    }

    /// True when fulcrum closed the connection (no byte left unread).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}
