//! The access log under a stalled reader: fulcrum's stdout is a pipe this
//! test stops reading for 10 s while clients keep sending requests. Every
//! request must still be answered, memory must stay bounded, and afterwards
//! lines written + lines dropped (the metric) must equal the requests sent.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backend, free_addr, get, wait_listening, wait_until};

/// A child killed (by PID) when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(admin: std::net::SocketAddr, name: &str) -> Option<u64> {
    let r = get(admin, "/metrics").ok()?;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

#[test]
fn stalled_reader_drops_lines_and_never_stalls_requests() {
    let (_b, baddr) = backend("a");
    let listen = free_addr();
    let admin = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("fulcrum.toml");
    // The smallest queue, so a 10 s stall overflows it quickly.
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"{admin}\"\n[log]\nbuffer = \"64KiB\"\n\
             [frontends.www]\nlisten = [\"{listen}\"]\nbackend = \"web\"\n\
             [backends.web]\nservers = [{{ name = \"a\", address = \"{baddr}\" }}]\n"
        ),
    )
    .expect("write config");
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut child = Child(
        Command::new(common::bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn fulcrum"),
    );
    let pid = child.0.id();
    let mut stdout = child.0.stdout.take().expect("stdout pipe");
    wait_listening(listen);
    wait_listening(admin);

    // The reader: counts lines, and stops reading while `paused`.
    let paused = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicU64::new(0));
    let reader = {
        let (paused, lines) = (paused.clone(), lines.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut bad = 0u64;
            loop {
                while paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return bad,
                    Ok(n) => {
                        let chunk = &buf[..n];
                        bad += chunk.windows(2).filter(|w| w == b"\n\n").count() as u64;
                        lines.fetch_add(
                            chunk.iter().filter(|&&c| c == b'\n').count() as u64,
                            Ordering::Relaxed,
                        );
                    }
                }
            }
        })
    };

    // The load: 4 clients, a long path so each line is ~1 KiB.
    let path = format!("/{}", "x".repeat(1000));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, slowest, path) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                slowest_us.clone(),
                path.clone(),
            );
            std::thread::spawn(move || {
                // Bounded: at most this many requests per client.
                for _ in 0..2_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    match get(listen, &path) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    slowest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();

    assert!(
        wait_until(Duration::from_secs(20), || lines.load(Ordering::Relaxed)
            >= 100),
        "no access-log lines read"
    );
    let rss_before = vm_rss_kib(pid);

    // Stop reading for 10 s under load.
    paused.store(true, Ordering::Relaxed);
    let served_at_pause = ok.load(Ordering::Relaxed);
    let pause = Instant::now();
    let mut rss_max = 0;
    let mut dropped_during_pause = 0;
    while pause.elapsed() < Duration::from_secs(10) {
        rss_max = rss_max.max(vm_rss_kib(pid));
        dropped_during_pause = metric(admin, "fulcrum_log_lines_dropped_total").unwrap_or(0);
        // The 10 s pause is the scenario; this samples memory and drops during it.
        std::thread::sleep(Duration::from_millis(100));
    }
    let served_in_pause = ok.load(Ordering::Relaxed) - served_at_pause;
    paused.store(false, Ordering::Relaxed);

    // A little more load after the reader is back, then stop the clients.
    let resumed = ok.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(20), || ok.load(Ordering::Relaxed)
            >= resumed + 100),
        "requests stalled after the reader resumed"
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let dropped = metric(admin, "fulcrum_log_lines_dropped_total").expect("drop metric");
    eprintln!(
        "requests {ok} (failed {failed}), {served_in_pause} served during the 10 s stall, \
         slowest {} ms; dropped {dropped} ({dropped_during_pause} seen during the stall); \
         VmRSS {rss_before} KiB before, {rss_max} KiB max during the stall",
        slowest_us.load(Ordering::Relaxed) / 1000
    );
    assert_eq!(
        failed, 0,
        "requests failed while the log reader was stalled"
    );
    assert!(
        served_in_pause > 0,
        "no request was served during the stall"
    );
    assert!(
        dropped > 0,
        "nothing dropped: the stall did not fill the 64 KiB queue (served {served_in_pause})"
    );
    // Generous: the queue (64 KiB) and a 64 KiB buffer per thread are all
    // the log may hold; a leak of 1 KiB lines would pass 200 MiB quickly.
    assert!(
        rss_max < 200 * 1024,
        "VmRSS grew to {rss_max} KiB while the reader was stalled"
    );

    // The rest is written within the flush interval once the reader reads.
    // The drop count is read again on every poll: a client counts its answer
    // before fulcrum logs it, so the last lines may still be handed off (and
    // a whole batch dropped, while the writer holds the stall's backlog) after
    // the first read above.
    let mut dropped = dropped;
    let all = wait_until(Duration::from_secs(20), || {
        if let Some(d) = metric(admin, "fulcrum_log_lines_dropped_total") {
            dropped = d;
        }
        lines.load(Ordering::Relaxed) + dropped >= ok
    });
    // A clean stop writes whatever is left.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let bad = reader.join().expect("reader");
    let _ = child.0.wait();
    let written = lines.load(Ordering::Relaxed);
    assert_eq!(bad, 0, "empty lines in the access log");
    assert_eq!(
        written + dropped,
        ok,
        "lines written ({written}) + dropped ({dropped}) != requests ({ok}); flushed before stop: {all}"
    );
}

/// A server that answers by path: `/cut` a body shorter than its length and a close,
/// `/bad-chunk` a 200 head then invalid chunked framing in the same write,
/// `/late-bad-chunk` a 200 head and a good chunk, then (after a pause, so the
/// head has gone to the client) a bad chunk line, `/endless` a body too long
/// to read, anything else an empty 200. Threads, ended by the test's exit.
fn misbehaving_server() -> std::net::SocketAddr {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 65536 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                if path == "/cut" {
                    // The body ends short and the connection closes.
                    let _ =
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this");
                    return;
                }
                let _ = match path.as_str() {
                    "/bad-chunk" => s.write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
                    ),
                    "/late-bad-chunk" => s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                        .and_then(|_| {
                            std::thread::sleep(Duration::from_millis(300));
                            s.write_all(b"zz\r\n")
                        }),
                    "/endless" => s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                        .and_then(|_| {
                            let chunk = vec![b'x'; 16 * 1024];
                            for _ in 0..65536 {
                                s.write_all(&chunk)?;
                            }
                            Ok(())
                        }),
                    _ => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                };
                // Hold the connection until the proxy closes it.
                let _ = s.read(&mut buf);
            });
        }
    });
    addr
}

/// `GET path` on a fresh connection; everything that comes until the close.
fn get_all(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to proxy");
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send request");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// The access log's termination state says who ended an incomplete exchange,
/// like HAProxy's: `SD` the server (body cut short), `PD` the proxy (invalid
/// chunked framing from the server), `CD` the client (hung up mid-body), `--`
/// a clean end; JSON lines carry it as `termination`. On both HTTP/1.1 paths
/// (relay and hyper). On the relay, a body that is invalid in the bytes that
/// came with the head gets a 502 (nothing had gone to the client yet).
#[test]
fn termination_states_split_client_server_and_proxy() {
    use std::io::Write;
    let odd = misbehaving_server();
    for (relay, format) in [
        (true, "text"),
        (false, "text"),
        (true, "json"),
        (false, "json"),
    ] {
        let listen = free_addr();
        let toml = format!(
            "[log]\naccess = \"{format}\"\n\n[frontends.www]\nlisten = [\"{listen}\"]\nbackend = \"odd\"\n\n\
             [backends.odd]\nservers = [{{ name = \"o1\", address = \"{odd}\" }}]\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fulcrum.toml");
        std::fs::write(&config, toml).expect("write config");
        let log_path = dir.path().join("out.log");
        let out = std::fs::File::create(&log_path).expect("log file");
        let err = out.try_clone().expect("clone");
        let mut cmd = Command::new(common::bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if !relay {
            cmd.env("FULCRUM_RELAY", "off");
        }
        let _lb = Child(cmd.spawn().expect("spawn fulcrum"));
        wait_listening(listen);
        let what = format!("relay={relay} {format}");

        let fine = get_all(listen, "/fine");
        assert!(fine.starts_with(b"HTTP/1.1 200"), "{what}: {fine:?}");
        get_all(listen, "/cut");
        let bad = get_all(listen, "/bad-chunk");
        if relay {
            assert!(
                bad.starts_with(b"HTTP/1.1 502"),
                "{what}: a body invalid before anything went out gets 502: {:?}",
                String::from_utf8_lossy(&bad)
            );
        }
        let late = get_all(listen, "/late-bad-chunk");
        assert!(
            late.starts_with(b"HTTP/1.1 200"),
            "{what}: the head went out before the bad chunk: {:?}",
            String::from_utf8_lossy(&late)
        );
        {
            let mut s = std::net::TcpStream::connect(listen).expect("connect");
            s.write_all(b"GET /endless HTTP/1.1\r\nHost: test\r\n\r\n")
                .expect("send");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).expect("read the head");
                assert!(n > 0 && got.len() < 65536, "{what}: no head: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            // Dropped with unread bytes: a reset, mid-body.
        }

        let flag = |path: &str, want: &str| -> bool {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            text.lines().any(|l| {
                let has_path = l.contains(&format!("GET {path}\""))
                    || l.contains(&format!("\"uri\":\"{path}\""));
                let has_flag = if format == "json" {
                    l.contains(&format!("\"termination\":\"{want}\""))
                } else {
                    l.contains(&format!(" {want} \"GET {path}\""))
                };
                has_path && has_flag
            })
        };
        for (path, want) in [
            ("/fine", "--"),
            ("/cut", "SD"),
            ("/bad-chunk", "PD"),
            ("/late-bad-chunk", "PD"),
            ("/endless", "CD"),
        ] {
            assert!(
                wait_until(Duration::from_secs(20), || flag(path, want)),
                "{what}: no {want} line for {path}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if relay {
            assert!(
                flag("/bad-chunk", "PD")
                    && std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .lines()
                        .any(|l| l.contains("/bad-chunk")
                            && (l.contains(" 502 ") || l.contains("\"status\":502"))),
                "{what}: the 502 is what the log says was sent"
            );
        }
    }
}
