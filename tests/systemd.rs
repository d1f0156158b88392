//! The systemd notify protocol, driven through a real `NOTIFY_SOCKET`: a
//! Unix datagram socket this test binds, as systemd would. READY=1 once
//! serving, WATCHDOG=1 pings at half of WATCHDOG_USEC, RELOADING=1 with
//! MONOTONIC_USEC then READY=1 on SIGHUP, MAINPID= from the new process of
//! an upgrade, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{backend, free_addr, wait_listening};

/// Datagrams received so far, each as text.
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    /// Wait (bounded) for a datagram containing `what`; returns it.
    fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        if let Some(m) = self.seen.iter().find(|m| m.contains(what)) {
            return m.clone();
        }
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let m = String::from_utf8_lossy(&buf[..n]).to_string();
                    self.seen.push(m.clone());
                    if m.contains(what) {
                        return m;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!("no {what:?} within {limit:?}; got {:?}", self.seen);
    }

    fn forget(&mut self) {
        self.seen.clear();
    }

    /// Take in what is queued now.
    fn collect(&mut self) {
        let _ = self.sock.set_nonblocking(true);
        let mut buf = vec![0u8; 4096];
        for _ in 0..10_000 {
            match self.sock.recv(&mut buf) {
                Ok(n) => self
                    .seen
                    .push(String::from_utf8_lossy(&buf[..n]).to_string()),
                Err(_) => break,
            }
        }
        let _ = self.sock.set_nonblocking(false);
    }

    /// Forget what was received and what is still queued.
    fn drain(&mut self) {
        self.collect();
        self.forget();
    }
}

struct Kill(Vec<u32>);
impl Drop for Kill {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: kill has no memory preconditions; PIDs this test started.
            unsafe {
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn notify_ready_watchdog_reload_upgrade_stopping() {
    let (_b, a) = backend("b1");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut n = Notify {
        sock,
        seen: Vec::new(),
    };
    let http = free_addr();
    let cfg = dir.path().join("f.toml");
    let toml = format!(
        r#"
[frontends.www]
listen = ["{http}"]
backend = "web"
[backends.web]
health = {{ kind = "http", path = "/health", interval = "200ms" }}
servers = [{{ name = "s1", address = "{a}" }}]
"#
    );
    std::fs::write(&cfg, &toml).expect("write");
    let log = dir.path().join("lb.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "300000")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("clone")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn");
    let mut kill = Kill(vec![child.id()]);
    let pid = child.id();

    let ready = n.wait_for("READY=1", Duration::from_secs(20));
    assert!(!ready.contains("MAINPID"), "{ready}");
    wait_listening(http);
    n.wait_for("WATCHDOG=1", Duration::from_secs(5));

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again.
    n.forget();
    // SAFETY: kill has no memory preconditions; our child.
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
    let reloading = n.wait_for("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(usec > 0, "{reloading}");
    n.wait_for("READY=1", Duration::from_secs(10));

    // Upgrade: the new process names itself the main one.
    n.forget();
    let up = Command::new(common::bin())
        .args(["upgrade", "--pid", &pid.to_string()])
        .output()
        .expect("upgrade");
    let text = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        up.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let new: u32 = text
        .split_once("PID ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("new PID");
    kill.0.push(new);
    let main = n.wait_for(&format!("MAINPID={new}"), Duration::from_secs(10));
    assert!(main.contains("MAINPID="), "{main}");
    let _ = child.wait();
    n.collect();
    // The old process said nothing after handing over: no STOPPING.
    assert!(
        !n.seen.iter().any(|m| m.contains("STOPPING")),
        "{:?}",
        n.seen
    );
    // The new one pings the watchdog (WATCHDOG_PID would name the old PID
    // under systemd); the old one is gone, so what arrives now is the new one's.
    n.drain();
    n.wait_for("WATCHDOG=1", Duration::from_secs(5));

    // SIGTERM: STOPPING=1.
    // SAFETY: as above; the process our child started.
    unsafe {
        libc::kill(new as i32, libc::SIGTERM);
    }
    n.wait_for("STOPPING=1", Duration::from_secs(10));
}
