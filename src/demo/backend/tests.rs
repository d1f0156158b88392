//! Backend tests over real sockets on 127.0.0.1.

use super::*;
use std::io::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(name: &str) -> BackendHandle {
    start_backend(BackendOptions {
        name: name.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap()
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole answer.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, "", "").await
}

async fn post(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "POST", path, "", "").await
}

/// A fresh connection that is closed by the server without an answer.
async fn assert_closed_at_once(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf).await {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} bytes"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
}

#[tokio::test]
async fn json_names_server_and_counts_requests() {
    let b = start("alpha").await;
    let r = request(
        b.local_addr(),
        "POST",
        "/x?y=1",
        "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\n",
        "hello",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("content-type: application/json"));
    assert!(r.head.contains("x-served-by: alpha"));
    assert!(r.body.ends_with('\n'));
    let j = r.json();
    assert_eq!(j["server"], "alpha");
    assert_eq!(j["path"], "/x");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["host"], "test.local");
    assert_eq!(j["x_forwarded_for"], "10.0.0.9");
    assert_eq!(j["x_forwarded_proto"], "https");
    assert_eq!(j["x_forwarded_host"], Value::Null);
    assert_eq!(j["request"], 1);
    assert_eq!(j["body_bytes"], 5);

    let j = get(b.local_addr(), "/other").await.json();
    assert_eq!(j["request"], 2);
    assert_eq!(j["body_bytes"], 0);
    // Health and control requests are not application traffic.
    get(b.local_addr(), "/health").await;
    assert_eq!(b.request_count(), 2);
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let b = start("ka").await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut raw = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        // Each answer ends with the JSON body's trailing newline.
        loop {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed between requests");
            raw.extend_from_slice(&buf[..n]);
            if raw.ends_with(b"}\n") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(b.request_count(), 2);
}

#[tokio::test]
async fn health_toggles_via_handle_and_control_endpoint() {
    let b = start("h").await;
    let addr = b.local_addr();
    let r = get(addr, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["server"], "h");

    b.set_healthy(false);
    assert_eq!(get(addr, "/health").await.status, 503);
    b.set_healthy(true);
    assert_eq!(get(addr, "/health").await.status, 200);

    let r = post(addr, "/_control/health/fail").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["healthy"], false);
    assert!(!b.is_healthy());
    assert_eq!(get(addr, "/health").await.status, 503);
    assert_eq!(post(addr, "/_control/health/ok").await.status, 200);
    assert_eq!(get(addr, "/health").await.status, 200);

    // Control endpoints want POST, and unknown ones are 404.
    assert_eq!(get(addr, "/_control/health/fail").await.status, 405);
    assert_eq!(post(addr, "/_control/nope").await.status, 404);
    assert_eq!(get(addr, "/health").await.status, 200);
}

#[tokio::test]
async fn delay_applies_and_responses_still_arrive() {
    let b = start("d").await;
    let addr = b.local_addr();
    b.set_delay(Duration::from_millis(30));
    assert_eq!(get(addr, "/").await.status, 200);
    b.set_delay(Duration::ZERO);

    let r = post(addr, "/_control/delay?ms=20").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["delay_ms"], 20);
    assert_eq!(get(addr, "/x").await.json()["server"], "d");
    assert_eq!(post(addr, "/_control/delay?ms=abc").await.status, 400);
    assert_eq!(post(addr, "/_control/delay").await.status, 400);
    assert_eq!(post(addr, "/_control/delay?ms=0").await.status, 200);
}

#[tokio::test]
async fn slow_waits_then_answers_json() {
    let b = start("s").await;
    let r = get(b.local_addr(), "/slow?ms=20").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/slow");
    assert_eq!(get(b.local_addr(), "/slow").await.status, 400);
}

#[tokio::test]
async fn close_mode_closes_new_connections() {
    let b = start("c").await;
    let addr = b.local_addr();
    b.set_close(true);
    assert_closed_at_once(addr).await;
    b.set_close(false);
    assert_eq!(get(addr, "/").await.status, 200);

    // Over HTTP: the switching request is answered, later connections are not.
    let r = post(addr, "/_control/close/on").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["close"], true);
    assert_closed_at_once(addr).await;
    b.set_close(false);
    assert_eq!(post(addr, "/_control/close/off").await.status, 200);
    assert_eq!(get(addr, "/").await.status, 200);
}

#[tokio::test]
async fn close_mode_ends_open_keep_alive_connections() {
    let b = start("c2").await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    // One answered request proves the connection was accepted before close mode.
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).await.unwrap() > 0);
    b.set_close(true);
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let r = parse_reply(&raw);
    assert_eq!(r.status, 200);
    assert!(r.head.contains("connection: close"));
}

#[tokio::test]
async fn websocket_upgrade_answers_101_and_echoes() {
    let b = start("ws").await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();

    // Read exactly the response head; whatever follows belongs to the echo.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "EOF in head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"));
    assert!(head.contains("connection: upgrade"));
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="));

    s.write_all(b"\x81\x05hello raw bytes").await.unwrap();
    let mut echoed = [0u8; 17];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"\x81\x05hello raw bytes");
}

#[tokio::test]
async fn websocket_without_key_is_rejected_and_plain_ws_is_echo() {
    let b = start("ws2").await;
    let r = request(b.local_addr(), "GET", "/ws", "Upgrade: websocket\r\n", "").await;
    assert_eq!(r.status, 400);
    let r = get(b.local_addr(), "/ws").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/ws");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let b = start("h2").await;
    let stream = TcpStream::connect(b.local_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{}/two", b.local_addr()))
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["server"], "h2");
    assert_eq!(j["path"], "/two");
    assert_eq!(j["body_bytes"], 3);
    assert_eq!(j["host"], b.local_addr().to_string());
}

#[tokio::test]
async fn bad_requests_do_not_kill_the_server() {
    let b = start("bad").await;
    let addr = b.local_addr();
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: nope\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    }
    assert_eq!(get(addr, "/still-alive").await.status, 200);
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let b = start("stop").await;
    let addr = b.local_addr();
    assert_eq!(get(addr, "/").await.status, 200);
    b.stop().await;
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn stop_drops_open_connections() {
    let b = start("stop2").await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).await.unwrap() > 0);
    b.stop().await;
    // The idle keep-alive connection is dropped by the server, not kept forever.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
}
