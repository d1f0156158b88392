//! The one test harness: the real `fulcrum` binary and demo backends as child
//! processes on ephemeral loopback ports, torn down on drop, built on the public
//! `fulcrum::lab` pieces (free ports, polls, listeners, namespaces, the HTTP probe).
//!
//! - this module: processes ([`Proc`], [`Lb`], [`backend`]), ports, waits that poll a
//!   condition, a one-shot HTTP client ([`request`], [`raw`]), `fulcrum ctl`, a load loop;
//! - [`upstream`]: a scripted upstream (exact bytes, trickled, silent) and a raw
//!   keep-alive client that reads responses as they come;
//! - [`origin`]: a recording origin (the raw bytes each connection carried), request
//!   normalisation and client-visible verdicts, for differential tests;
//! - [`ns`]: network namespaces (`ip`, running code or waiting inside one), from
//!   `fulcrum::lab::netns`;
//! - [`vrrp`]: the VRRP drills' two-node topology (fulcrum and keepalived nodes, a
//!   client on the VIP), built on [`ns`] and the lab's probe.
#![allow(dead_code)]

pub mod origin;
pub mod upstream;
pub mod vrrp;

/// Network namespaces: the lab's own plumbing, for tests that build their own.
#[allow(unused_imports)]
pub mod ns {
    pub use fulcrum::lab::netns::{in_netns, ip, netns_exists, run_in, wait_listening};
    pub use fulcrum::lab::probe::{http, http_with};
}

#[allow(unused_imports)]
pub use fulcrum::lab::local::pid_alive;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fulcrum")
}

/// A free loopback port (bound then released; the kernel will not hand it out again at once).
pub fn free_addr() -> SocketAddr {
    fulcrum::lab::local::free_addr().expect("bind 127.0.0.1:0")
}

/// A child process killed (by PID, through its handle) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Send a signal to this process only.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    /// Wait (bounded) for exit; returns the exit status if it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn spawn(name: &str, args: &[&str]) -> Proc {
    spawn_env(name, args, &[])
}

/// Starts `fulcrum ARGS…` with extra environment variables (e.g. `FULCRUM_RELAY=off`),
/// output to a log file of its own.
pub fn spawn_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = std::env::temp_dir().join(format!(
        "fulcrum-test-{}-{}-{}.log",
        std::process::id(),
        name,
        fastrand::u64(..)
    ));
    let out = std::fs::File::create(&log).expect("create log");
    let err = out.try_clone().expect("clone log");
    let child = Command::new(bin())
        .args(args)
        .env("FULCRUM_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn fulcrum");
    Proc {
        child,
        name: name.to_string(),
        log,
    }
}

/// Wait until something accepts TCP connections on `addr` (bounded).
pub fn wait_listening(addr: SocketAddr) {
    assert!(
        fulcrum::lab::local::wait_listening(addr, Duration::from_secs(20)),
        "nothing listening on {addr} after 20s"
    );
}

/// The environment that picks an HTTP/1.1 server path for a whole `fulcrum run`: none
/// for the relay (the default), `FULCRUM_RELAY=off` for the hyper path.
pub fn relay_env(relay: bool) -> &'static [(&'static str, &'static str)] {
    if relay {
        &[]
    } else {
        &[("FULCRUM_RELAY", "off")]
    }
}

/// Start a demo backend process.
pub fn backend(name: &str) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let p = spawn(
        name,
        &["backend", "--listen", &addr.to_string(), "--name", name],
    );
    wait_listening(addr);
    (p, addr)
}

/// Start `fulcrum run --config` with `toml` written to a temp file.
pub struct Lb {
    pub proc: Proc,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Lb {
    pub fn start(toml: &str, wait_for: SocketAddr) -> Lb {
        Lb::start_env(toml, wait_for, &[])
    }

    /// As [`Lb::start`], with extra environment variables (kept for [`Lb::restart`]).
    pub fn start_env(toml: &str, wait_for: SocketAddr, env: &[(&str, &str)]) -> Lb {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fulcrum.toml");
        std::fs::write(&config, toml).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = spawn_run(&config, &env);
        assert!(
            fulcrum::lab::local::wait_listening(wait_for, Duration::from_secs(20)),
            "nothing listening on {wait_for} after 20s; fulcrum's output:\n{}",
            proc.output()
        );
        Lb {
            proc,
            config,
            env,
            _dir: dir,
        }
    }
    /// Rewrite the config file and send SIGHUP.
    pub fn reload(&self, toml: &str) {
        std::fs::write(&self.config, toml).expect("write config");
        self.proc.signal(libc::SIGHUP);
    }
    pub fn config_path(&self) -> &Path {
        &self.config
    }
    /// Stop the process gracefully (SIGTERM, bounded wait) and start it again
    /// with the same configuration file.
    pub fn restart(&mut self, wait_for: SocketAddr) {
        self.proc.signal(libc::SIGTERM);
        assert!(
            self.proc.wait_exit(Duration::from_secs(20)).is_some(),
            "lb did not stop: {}",
            self.proc.output()
        );
        self.proc = spawn_run(&self.config, &self.env);
        wait_listening(wait_for);
    }
}

/// `fulcrum run --config CONFIG` with extra environment variables.
fn spawn_run(config: &Path, env: &[(String, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_env(
        "lb",
        &["run", "--config", config.to_str().expect("utf8 path")],
        &env,
    )
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// The `server` field of a demo backend's JSON answer.
    pub fn server(&self) -> String {
        self.json()["server"].as_str().unwrap_or("").to_string()
    }
}

/// Parse one response from raw bytes (Content-Length or close-delimited bodies).
pub fn parse_response(raw: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// One request on a fresh connection with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    send(addr, method, path, headers, "")
}

/// Like [`request`], with a body (sent with Content-Length when not empty).
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response: {:?}", String::from_utf8_lossy(&buf)),
        )
    })
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Resp> {
    request(addr, "GET", path, &[])
}

/// Poll `f` every 20 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, f: impl FnMut() -> bool) -> bool {
    fulcrum::lab::local::poll(limit, Duration::from_millis(20), f)
}

/// Requests in progress on server `server` of backend `backend` (the admin API's
/// `active`), through the admin listener `admin`; 0 when it cannot be read.
pub fn server_active(admin: SocketAddr, backend: &str, server: &str) -> u64 {
    get(
        admin,
        &format!("/api/v1/backends/{backend}/servers/{server}"),
    )
    .ok()
    .and_then(|r| r.json()["active"].as_u64())
    .unwrap_or(0)
}

/// Requests in progress on every server of backend `backend`, summed (from the admin
/// API's status document); 0 when it cannot be read.
pub fn backend_active(admin: SocketAddr, backend: &str) -> u64 {
    let Ok(r) = get(admin, "/api/v1/status") else {
        return 0;
    };
    let j = r.json();
    let backends = j["backends"].as_array().cloned().unwrap_or_default();
    backends
        .iter()
        .filter(|b| b["name"] == backend)
        .flat_map(|b| b["servers"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["active"].as_u64())
        .sum()
}

/// `toml` with an `[admin]` listener on a free port prepended, and that port: for
/// tests that poll the admin API for a condition.
pub fn with_admin(toml: &str) -> (String, SocketAddr) {
    let admin = free_addr();
    (format!("[admin]\nlisten = \"{admin}\"\n\n{toml}"), admin)
}

/// Waits (bounded, 20 s) until `n` requests are in progress on backend `backend`: the
/// condition a test needs before it acts on requests held open by a slow server.
pub fn wait_backend_active(admin: SocketAddr, backend: &str, n: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || backend_active(admin, backend)
            >= n),
        "backend {backend} never had {n} requests in progress (has {})",
        backend_active(admin, backend)
    );
}

/// POST to a demo backend's control endpoint.
pub fn control(backend: SocketAddr, path: &str) {
    let r = request(backend, "POST", path, &[]).expect("control request");
    assert_eq!(r.status, 200, "control {path}: {r:?}");
}

/// Run `fulcrum ctl ARGS…`; returns (exit code, stdout + stderr).
pub fn ctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("ctl")
        .args(args)
        .output()
        .expect("run ctl");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Continuous GET load from `clients` threads until stopped; counts results.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Start `clients` threads, each sending at most `max_each` requests.
    pub fn start(addr: SocketAddr, clients: usize, max_each: usize) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let workers = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    for _ in 0..max_each {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match get(addr, "/") {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                eprintln!("load: failed request: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Wait until `n` more requests succeeded (bounded).
    pub fn wait_more(&self, n: u64) {
        let target = self.ok() + n;
        assert!(
            wait_until(Duration::from_secs(30), || self.ok() >= target),
            "load stalled at {} ok",
            self.ok()
        );
    }
    /// Stop and return (ok, failed).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        (
            self.ok(),
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Send raw bytes on a new connection; return everything answered before the
/// peer closed (or 5 s passed).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).to_string()
}
