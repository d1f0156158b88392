//! TCP mode through the real binary: a 1 MiB echo round trip each way with
//! half-close, retry onto another server when one refuses, and a send/expect
//! check that marks a garbage-speaking server down with its reason.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{free_addr, get, wait_until, Lb};

const MIB: usize = 1024 * 1024;
/// Bound for every wait; generous for a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(20);

/// A TCP server on 127.0.0.1:0 handled by `serve` per connection, on threads;
/// stops accepting when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(serve: fn(TcpStream)) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    thread::spawn(move || serve(c));
                }
            }
        });
        Server { addr, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Echo until the client half-closes, then half-close back.
fn echo(mut c: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
}

/// Answers anything with bytes no protocol would expect.
fn garbage(mut c: TcpStream) {
    let mut buf = [0u8; 64];
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.read(&mut buf);
    let _ = c.write_all(b"\x00\xffHELLO? \x1b[31m garbage\r\n");
}

fn tcp_config(
    listen: SocketAddr,
    admin: SocketAddr,
    health: &str,
    servers: &[SocketAddr],
) -> String {
    let list = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  {{ name = \"s{i}\", address = \"{a}\" }},\n"))
        .collect::<String>();
    format!(
        r#"[admin]
listen = "{admin}"

[frontends.tcp]
mode = "tcp"
listen = ["{listen}"]
backend = "pool"

[backends.pool]
balance = "roundrobin"
{health}
servers = [
{list}]
"#
    )
}

/// Round trip: write `data`, half-close, read everything echoed back.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).expect("connect through fulcrum");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut w = c.try_clone().expect("clone");
    let out = data.to_vec();
    // Write on another thread: the echo comes back while we still send.
    let writer = thread::spawn(move || {
        w.write_all(&out).expect("write 1 MiB");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut back = Vec::with_capacity(data.len());
    c.read_to_end(&mut back).expect("read echo until EOF");
    writer.join().expect("writer");
    back
}

#[test]
fn echo_one_mib_each_way_with_half_close() {
    let echo1 = Server::start(echo);
    let listen = free_addr();
    let admin = free_addr();
    let lb = Lb::start(&tcp_config(listen, admin, "", &[echo1.addr]), listen);
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..2 {
        let back = round_trip(listen, &data);
        assert_eq!(
            back.len(),
            data.len(),
            "all echoed bytes arrive after half-close"
        );
        assert!(back == data, "echoed bytes are identical");
    }
    // Byte counters in the status (both directions, both connections).
    let counted = wait_until(WAIT, || {
        let st = get(admin, "/api/v1/status").expect("status").json();
        let s = &st["backends"][0]["servers"][0];
        s["bytes_in"].as_u64() == Some(2 * MIB as u64)
            && s["bytes_out"].as_u64() == Some(2 * MIB as u64)
    });
    assert!(counted, "byte counters: {}", lb.proc.output());
}

#[test]
fn retries_onto_another_server_when_one_refuses() {
    let echo1 = Server::start(echo);
    // Bound then released: connections to it are refused.
    let dead = free_addr();
    let listen = free_addr();
    let admin = free_addr();
    // No active checks: only the connect retry can avoid the dead server.
    let _lb = Lb::start(
        &tcp_config(listen, admin, "retries = 2", &[dead, echo1.addr]),
        listen,
    );
    for i in 0..6u8 {
        let back = round_trip(listen, &[i; 1000]);
        assert_eq!(
            back,
            vec![i; 1000],
            "connection {i} reached the live server"
        );
    }
}

#[test]
fn send_expect_check_marks_garbage_server_down_with_reason() {
    let good = Server::start(|mut c| {
        let mut buf = [0u8; 64];
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        if matches!(c.read(&mut buf), Ok(n) if n > 0) {
            let _ = c.write_all(b"+PONG\r\n");
        }
    });
    let bad = Server::start(garbage);
    let listen = free_addr();
    let admin = free_addr();
    let health = r#"health = { kind = "tcp", send = "PING\r\n", expect = "+PONG", interval = "100ms", rise = 1, fall = 1 }"#;
    let lb = Lb::start(
        &tcp_config(listen, admin, health, &[good.addr, bad.addr]),
        listen,
    );
    let mut last = serde_json::Value::Null;
    let seen = wait_until(WAIT, || {
        let st = get(admin, "/api/v1/status").expect("status").json();
        last = st["backends"][0].clone();
        let s0 = &last["servers"][0];
        let s1 = &last["servers"][1];
        s0["usable"] == true
            && s0["last_check"]["detail"] == "tcp-check ok"
            && s1["usable"] == false
            && s1["last_check"]["ok"] == false
    });
    assert!(seen, "status: {last:#}\nlog: {}", lb.proc.output());
    let reason = last["servers"][1]["last_check"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with(r#"unexpected reply "\x00\xffHELLO? \x1b[31m garbage\r\n""#)
            && reason.ends_with(r#"(expected "+PONG")"#),
        "reason: {reason}"
    );
    assert_eq!(last["health_check"], "tcp send/expect");
    // fulcrum is still alive and serving.
    assert!(lb.proc.output().lines().all(|l| !l.contains("panicked")));
}
