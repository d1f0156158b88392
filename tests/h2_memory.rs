//! HTTP/2 memory is bounded by the frontend's `http2` limits: clients that
//! open many streams of large responses and never read them make fulcrum
//! hold at most about `streams × (max_send_buffer + upstream read buffer)`,
//! not the whole responses. Measured as the proxy's peak RSS (`VmHWM` in
//! /proc/PID/status) — memory, not timing. Also: the h2c Upgrade from
//! HTTP/1.1 is declined cleanly (served as HTTP/1.1).

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Each response's size: far more than any buffer may hold.
const RESPONSE: u64 = 10 * 1024 * 1024;
const CLIENTS: usize = 3;
const STREAMS: usize = 100;

/// An origin answering every request with `RESPONSE` bytes, counting what it wrote.
async fn big_origin(written: Arc<AtomicU64>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let written = written.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&b[..n]),
                        _ => return,
                    }
                }
                let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {RESPONSE}\r\n\r\n");
                if s.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = RESPONSE;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    written.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
            });
        }
    });
    addr
}

/// A client socket whose read side is never ready: the client writes its
/// requests and then never reads a byte of the answers, like an attacker
/// that advertised large windows and stopped reading.
struct NoRead(tokio::net::TcpStream);

impl AsyncRead for NoRead {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for NoRead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A field of /proc/PID/status in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_h2_clients_cannot_grow_memory() {
    let written = Arc::new(AtomicU64::new(0));
    let origin = big_origin(written.clone()).await;
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "big"
h2c = true
http2 = {{ max_concurrent_streams = {STREAMS}, max_send_buffer = 65536 }}
[backends.big]
servers = [{{ name = "o", address = "{origin}" }}]
"#
    );
    let lb = tokio::task::spawn_blocking(move || Lb::start(&toml, listen))
        .await
        .unwrap();
    let pid = lb.proc.pid();
    // One ordinary request first, so the baseline includes warmed-up runtime state.
    let base = status_kib(pid, "VmRSS");

    let mut keep = Vec::new();
    for _ in 0..CLIENTS {
        let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Large windows: fulcrum may send all it likes, as far as HTTP/2 goes.
            .initial_stream_window_size(16 * 1024 * 1024)
            .initial_connection_window_size(1 << 30)
            .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(NoRead(tcp)))
            .await
            .unwrap();
        keep.push(tokio::spawn(conn));
        for i in 0..STREAMS {
            let req = http::Request::get(format!("http://{listen}/big/{i}"))
                .body(http_body_util::Empty::new())
                .unwrap();
            // The answer never arrives (nothing is read): keep the future alive.
            let f = sender.send_request(req);
            keep.push(tokio::spawn(async move {
                let _ = f.await;
                Ok(())
            }));
        }
    }

    // Wait until the transfer stalls: the origin wrote nothing more for a
    // second (bounded: 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    while Instant::now() < deadline {
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) && now > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = status_kib(pid, "VmHWM");
    let rss = status_kib(pid, "VmRSS");
    let streams = (CLIENTS * STREAMS) as u64;
    // Per stream: the h2 send buffer (64 KiB), the chunk in hand and the
    // upstream read buffer (64 KiB each), and allocator slack: 320 KiB is
    // generous; before the limits it was 0.7–1.5 MiB a stream.
    let bound = base + streams * 320 + 32 * 1024;
    println!(
        "origin wrote {} MiB; fulcrum RSS base {base} KiB, now {rss} KiB, peak {peak} KiB, bound {bound} KiB ({streams} streams)",
        last >> 20
    );
    assert!(
        last > 0,
        "the origin sent nothing: the streams never started"
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB exceeds {bound} KiB\n{}",
        lb.proc.output()
    );
    for t in keep {
        t.abort();
    }
    drop(lb);
}

#[test]
fn h2c_upgrade_is_served_as_http11() {
    let (_b, backend_addr) = backend("web");
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
h2c = true
[backends.web]
servers = [{{ name = "web", address = "{backend_addr}" }}]
"#
    );
    let _lb = Lb::start(&toml, listen);
    let resp = raw(
        listen,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("upgrade: h2c"),
        "{resp}"
    );
}
