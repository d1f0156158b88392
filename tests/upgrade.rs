//! Hitless upgrade and cold start: `fulcrum upgrade` replaces the running
//! process N times under a steady HTTP (new connections and keep-alive) and
//! TCP load with no failed request, at 1 and 2 threads; a new process that
//! fails leaves the old one serving; runtime state (drains, API-added servers,
//! health) crosses over; a TCP frontend answers a connection made the moment
//! its port opens.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backend, free_addr, get, pid_alive, wait_until, Lb};

/// PIDs started by upgrades (children of the old process, not of this test):
/// killed when dropped.
#[derive(Default)]
struct Pids(Vec<u32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill has no memory preconditions; these PIDs are
            // processes this test's fulcrum started.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// `fulcrum upgrade --pid PID ARGS…`: (exit code, new PID, output).
fn upgrade(pid: u32, args: &[&str]) -> (i32, Option<u32>, String) {
    let out = Command::new(common::bin())
        .args(["upgrade", "--pid", &pid.to_string()])
        .args(args)
        .output()
        .expect("run fulcrum upgrade");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let new = text
        .split_once("PID ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .filter(|_| out.status.success());
    (out.status.code().unwrap_or(-1), new, text)
}

/// A second copy of the binary, as an operator would install the new one.
fn second_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("fulcrum-new");
    std::fs::copy(common::bin(), &p).expect("copy binary");
    p
}

/// Counters of a client loop.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One keep-alive client: requests on one connection until the answer says
/// `Connection: close`, then a new connection. Every error counts.
fn keepalive_client(addr: SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    for _ in 0..200_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut r = match conn.take() {
            Some(r) => r,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    BufReader::new(s)
                }
                Err(e) => {
                    eprintln!("keep-alive: connect: {e}");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let sent = r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let answer = sent.and_then(|()| read_answer(&mut r));
        match answer {
            Ok((200, close)) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                if !close {
                    conn = Some(r);
                }
            }
            other => {
                eprintln!("keep-alive: failed request: {other:?}");
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Read one response with a Content-Length body: (status, Connection: close).
fn read_answer(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("closed before the answer"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut len, mut close) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed in the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, close))
}

/// One TCP-mode client loop: a new connection per exchange, an HTTP request
/// through the TCP frontend, the answer read to the end.
fn tcp_client(addr: SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    for _ in 0..200_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let r = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match r {
            Ok(s) if s.starts_with("HTTP/1.1 200") => c.ok.fetch_add(1, Ordering::Relaxed),
            other => {
                eprintln!("tcp: failed exchange: {other:?}");
                c.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn config(
    threads: usize,
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    servers: &[SocketAddr],
) -> String {
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ name = \"s{i}\", address = \"{a}\" }}"))
        .collect();
    format!(
        r#"
[global]
threads = {threads}
hard_stop_after = "10s"

[admin]
listen = "{admin}"

[frontends.www]
listen = ["{http}"]
backend = "web"

[frontends.db]
listen = ["{tcp}"]
mode = "tcp"
backend = "web"

[backends.web]
health = {{ kind = "http", path = "/health", interval = "100ms" }}
servers = [{}]
"#,
        list.join(", ")
    )
}

fn upgrades_under_load(threads: usize) {
    upgrades_under_load_with(&[threads; 6]);
}

/// Five upgrades under load; the process before round i runs `threads[i]`
/// workers (the config file is rewritten before each upgrade).
fn upgrades_under_load_with(seq: &[usize]) {
    let threads = seq[0];
    let (_b1, a1) = backend("b1");
    let (_b2, a2) = backend("b2");
    let (http, tcp, admin) = (free_addr(), free_addr(), free_addr());
    let mut lb = Lb::start(&config(threads, http, tcp, admin, &[a1, a2]), http);
    let mut pids = Pids::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let new_binary = second_binary(dir.path());
    let new_binary = new_binary.to_str().expect("utf8");

    let stop = Arc::new(AtomicBool::new(false));
    let (ka, tc) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (s, c) = (stop.clone(), ka.clone());
        clients.push(std::thread::spawn(move || keepalive_client(http, s, c)));
    }
    let (s, c) = (stop.clone(), tc.clone());
    clients.push(std::thread::spawn(move || tcp_client(tcp, s, c)));
    let load = common::Load::start(http, 2, 200_000);
    load.wait_more(20);

    let mut serving = lb.proc.pid();
    for round in 0..5 {
        let before = (
            load.ok(),
            ka.ok.load(Ordering::Relaxed),
            tc.ok.load(Ordering::Relaxed),
        );
        if seq[round + 1] != seq[round] {
            std::fs::write(
                lb.config_path(),
                config(seq[round + 1], http, tcp, admin, &[a1, a2]),
            )
            .expect("rewrite config");
        }
        let (code, new, out) = upgrade(serving, &["--binary", new_binary]);
        assert_eq!(code, 0, "upgrade {round}: {out}\n{}", lb.proc.output());
        let new = new.unwrap_or_else(|| panic!("no PID in {out:?}"));
        pids.0.push(new);
        let old = serving;
        serving = new;
        // The old process exits by itself once its connections are done.
        assert!(
            wait_until(Duration::from_secs(20), || !pid_alive(old)),
            "PID {old} still runs after handing over\n{}",
            lb.proc.output()
        );
        // Every kind of client goes on being served by the new process.
        assert!(
            wait_until(Duration::from_secs(20), || load.ok() > before.0 + 10
                && ka.ok.load(Ordering::Relaxed) > before.1 + 10
                && tc.ok.load(Ordering::Relaxed) > before.2 + 10),
            "load stalled after upgrade {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let (ok, failed) = load.finish();
    let log = lb.proc.output();
    assert_eq!(
        failed, 0,
        "{failed} of {ok} new-connection requests failed\n{log}"
    );
    let (kok, kfailed) = (
        ka.ok.load(Ordering::Relaxed),
        ka.failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        kfailed, 0,
        "{kfailed} of {kok} keep-alive requests failed\n{log}"
    );
    let (tok, tfailed) = (
        tc.ok.load(Ordering::Relaxed),
        tc.failed.load(Ordering::Relaxed),
    );
    assert_eq!(tfailed, 0, "{tfailed} of {tok} TCP exchanges failed\n{log}");
    eprintln!("5 upgrades at {seq:?} thread(s): {ok} new-connection, {kok} keep-alive, {tok} TCP requests, none failed");
    // The last process serves alone and stops gracefully.
    // SAFETY: kill has no memory preconditions; `serving` is ours.
    unsafe {
        libc::kill(serving as i32, libc::SIGTERM);
    }
    assert!(wait_until(Duration::from_secs(20), || !pid_alive(serving)));
    let _ = lb.proc.wait_exit(Duration::from_secs(1));
}

/// The new process may run a different number of workers than the old one:
/// they share the one inherited socket per address, none is left unserved.
#[test]
fn upgrades_changing_the_worker_count_fail_no_request() {
    upgrades_under_load_with(&[2, 3, 1, 2, 4, 2]);
}

#[test]
fn five_upgrades_under_load_fail_no_request_one_thread() {
    upgrades_under_load(1);
}

#[test]
fn five_upgrades_under_load_fail_no_request_two_threads() {
    upgrades_under_load(2);
}

#[test]
fn a_failed_new_process_leaves_the_old_one_serving() {
    let (_b1, a1) = backend("b1");
    let (http, tcp, admin) = (free_addr(), free_addr(), free_addr());
    let good = config(1, http, tcp, admin, &[a1]);
    let lb = Lb::start(&good, http);
    let _pids = Pids::default();
    let pid = lb.proc.pid();

    // A bad configuration: the new process refuses it, the old one serves.
    std::fs::write(lb.config_path(), format!("{good}\nbogus_key = 1\n")).expect("write");
    let (code, _, out) = upgrade(pid, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("bogus_key") && out.contains("keeps serving"),
        "{out}"
    );
    assert_eq!(get(http, "/").expect("old serves").status, 200);

    // A binary that dies at start.
    std::fs::write(lb.config_path(), &good).expect("write");
    let (code, _, out) = upgrade(pid, &["--binary", "/bin/false"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(get(http, "/").expect("old serves").status, 200);
    assert!(pid_alive(pid));
    // Nothing else listens for upgrades in its place.
    let (code, _, out) = upgrade(pid, &["--binary", "/nonexistent/fulcrum"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(get(http, "/").expect("old serves").status, 200);
}

#[test]
fn runtime_state_crosses_the_upgrade() {
    let (_b1, a1) = backend("b1");
    let (_b2, a2) = backend("b2");
    let (http, tcp, admin) = (free_addr(), free_addr(), free_addr());
    let lb = Lb::start(&config(1, http, tcp, admin, &[a1]), http);
    let mut pids = Pids::default();
    let admin_s = admin.to_string();
    assert!(wait_until(Duration::from_secs(10), || get(http, "/")
        .is_ok_and(|r| r.status == 200)));
    let (code, out) = common::ctl(&["--admin", &admin_s, "add", "web", "extra", &a2.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = common::ctl(&["--admin", &admin_s, "drain", "web/s0"]);
    assert_eq!(code, 0, "{out}");

    let (code, new, out) = upgrade(lb.proc.pid(), &[]);
    assert_eq!(code, 0, "{out}\n{}", lb.proc.output());
    pids.0.extend(new);
    // The new process answers on the same admin address with the same state.
    let status = get(admin, "/api/v1/status").expect("status").json();
    let servers = status["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "web"))
        .map(|b| b["servers"].clone())
        .unwrap_or_default();
    let find = |name: &str| {
        servers
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_default()
    };
    assert_eq!(find("s0")["admin"], "drain", "{status}");
    assert_eq!(find("extra")["address"], a2.to_string(), "{status}");
    // Health came along: the drained server is up from the start, with the
    // old process's result.
    assert_eq!(find("s0")["health"], "up", "{status}");
    // Traffic goes to the API-added server only (s0 is drained).
    assert!(wait_until(Duration::from_secs(10), || get(http, "/")
        .is_ok_and(|r| r.server() == "b2")));

    // Right away again, choosing the process by its configuration file: only
    // the new process answers for it (the old one closed its upgrade socket
    // before answering).
    let out = Command::new(common::bin())
        .args(["upgrade", "--config"])
        .arg(lb.config_path())
        .output()
        .expect("run fulcrum upgrade");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    pids.0.extend(
        text.split_once("PID ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|p| p.parse::<u32>().ok()),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(get(http, "/").expect("serves").status, 200);
}

/// A raw TCP echo-less HTTP exchange through a TCP frontend.
/// Connects as soon as `addr` takes connections (polled every millisecond, 20 s at
/// most) and makes one exchange at once; `None` when it never opened.
fn first_exchange(addr: SocketAddr) -> Option<std::io::Result<String>> {
    let mut answer = None;
    fulcrum::lab::local::poll(Duration::from_secs(20), Duration::from_millis(1), || {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            answer = Some(tcp_exchange(addr));
        }
        answer.is_some()
    });
    answer
}

fn tcp_exchange(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn tcp_frontend_answers_a_connection_made_the_moment_it_opens() {
    let (_b1, a1) = backend("b1");
    let tcp = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[frontends.db]
listen = ["{tcp}"]
mode = "tcp"
backend = "db"

[backends.db]
health = {{ kind = "tcp", interval = "2s" }}
servers = [{{ name = "db1", address = "{a1}" }}]
"#
        ),
    )
    .expect("write");
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let answer = first_exchange(tcp);
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.expect("the TCP frontend never opened");
    let text = answer.expect("exchange");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}

/// One echo on an upgraded (WebSocket) connection: the demo backend echoes raw bytes.
fn ws_echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    if got == msg {
        Ok(())
    } else {
        Err(std::io::Error::other("echo mismatch"))
    }
}

/// Regression (bench/soak.sh): a WebSocket open through the old process was cut
/// when it upgraded away — hyper's connection ends at the 101, so the tunnel
/// was not counted and the old process exited at once. It must run on (up to
/// `hard_stop_after`), and the old process exit once it closes.
#[test]
fn a_websocket_open_across_an_upgrade_keeps_working() {
    let (_b1, a1) = backend("b1");
    let (http, tcp, admin) = (free_addr(), free_addr(), free_addr());
    let lb = Lb::start(&config(1, http, tcp, admin, &[a1]), http);
    let mut pids = Pids::default();
    let old = lb.proc.pid();
    assert!(wait_until(Duration::from_secs(10), || get(http, "/")
        .is_ok_and(|r| r.status == 200)));

    let mut ws = TcpStream::connect(http).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    ws_echo(&mut ws, b"before").expect("echo before the upgrade");

    let (code, new, out) = upgrade(old, &[]);
    assert_eq!(code, 0, "{out}\n{}", lb.proc.output());
    pids.0.extend(new);
    // The new process serves; the old one still holds the tunnel.
    assert_eq!(get(http, "/").expect("new process serves").status, 200);
    // Past the old process's idle linger: it would have exited by now.
    let until = Instant::now() + fulcrum::proxy::DRAIN_IDLE_LINGER * 2;
    let mut n = 0;
    while Instant::now() < until && n < 1000 {
        n += 1;
        ws_echo(&mut ws, format!("after-{n};").as_bytes())
            .unwrap_or_else(|e| panic!("echo {n} after the upgrade: {e}\n{}", lb.proc.output()));
        // The scenario: a tunnel in use, message after message, past the linger.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pid_alive(old), "the old process waits for the tunnel");
    drop(ws);
    assert!(
        wait_until(Duration::from_secs(15), || !pid_alive(old)),
        "the old process exits once the tunnel closes\n{}",
        lb.proc.output()
    );
}

/// Regression (bench/soak.sh): a backend fed by a discovery file is empty until
/// the file's first read; a process that opened its frontend before (a fresh
/// start, or the new process of an upgrade) answered 503 "no server" meanwhile.
/// The cold start now waits for the source's first list too.
#[test]
fn a_discovered_backend_answers_the_first_request_after_start() {
    let (_b1, a1) = backend("b1");
    let http = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inv.json");
    std::fs::write(&inv, format!(r#"[{{"name": "i1", "address": "{a1}"}}]"#)).expect("write");
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[frontends.www]
listen = ["{http}"]
backend = "inv"

[backends.inv]
health = {{ kind = "http", path = "/health", interval = "2s" }}
discovery = {{ file = "{}", poll_interval = "500ms" }}
"#,
            inv.display()
        ),
    )
    .expect("write");
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let answer = first_exchange(http);
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.expect("the frontend never opened");
    let text = answer.expect("exchange");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}
