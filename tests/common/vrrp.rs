//! The VRRP drills' fixture (`tests/vrrp_netns.rs`): namespaces, a bridge, fulcrum and
//! keepalived nodes, `fulcrum backend` processes, a client that keeps requesting the VIP
//! (the lab's probe), and VRRP run in-process inside a namespace. Everything is torn down
//! on drop, even on panic. Namespaces, `ip` and the probe are `fulcrum::lab`'s.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fulcrum::lab::probe::{Answer, Probe};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);
pub const NODE_A: &str = "10.213.0.11/24";
pub const NODE_B: &str = "10.213.0.12/24";
pub const CLIENT: &str = "10.213.0.2/24";
/// VRRPv3 advert interval used by the drills.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Client request period.
pub const PERIOD: Duration = Duration::from_millis(20);

/// The drills share the machine's two cores: run them one at a time so timings are fair.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// The fulcrum binary; `FULCRUM_BIN` overrides it (useful when a shared target directory
/// may be rebuilt from another tree while the drills run).
pub fn bin() -> String {
    std::env::var("FULCRUM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fulcrum").to_string())
}

/// Runs `ip ARGS`; returns stdout or a message with stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    fulcrum::lab::netns::ip(args).map_err(|e| format!("{e:#}"))
}

pub use fulcrum::lab::local::poll;
/// Runs `f` on a new thread that has entered network namespace `ns`.
pub use fulcrum::lab::netns::in_netns;

/// Port of a fulcrum node's admin API, on 127.0.0.1 of its namespace.
pub const ADMIN_PORT: u16 = 9000;

/// `GET path` on the admin API of the node in `ns`; the response body.
pub fn admin_get(ns: &str, path: &'static str) -> Option<String> {
    let to = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    let text = in_netns(ns, move || http(to, "GET", path, Duration::from_secs(2)))
        .join()
        .ok()?
        .ok()??;
    // Compact, so tests can look for `"key":"value"` whatever the formatting.
    let body = text.split_once("\r\n\r\n")?.1;
    Some(body.split_whitespace().collect())
}

/// Port the `fulcrum backend` of a fulcrum node listens on, on 127.0.0.1 of its namespace.
pub const BACKEND_PORT: u16 = 8081;

/// Sends one HTTP/1.1 request with `Connection: close`; returns the whole response text.
pub fn http(to: SocketAddr, method: &str, path: &str, timeout: Duration) -> Option<String> {
    // A short connect timeout keeps the measurement fine-grained: during an outage the SYN
    // is lost and would otherwise only be retried after a second.
    fulcrum::lab::probe::http_with(to, method, path, Duration::from_millis(50), timeout)
}

/// Sends a control request to the `fulcrum backend` of `ns` (e.g. `/_control/health/fail`).
pub fn control_backend(ns: &str, port: u16, path: &'static str) -> bool {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    in_netns(ns, move || http(to, "POST", path, Duration::from_secs(2)))
        .join()
        .ok()
        .and_then(|r| r.ok().flatten())
        .is_some_and(|t| t.starts_with("HTTP/1.1 200"))
}

/// Waits until something accepts connections on `port` inside `ns`.
pub fn wait_listening(ns: &str, port: u16) -> bool {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    fulcrum::lab::netns::wait_listening(ns, to, Duration::from_secs(10))
}

/// One request of the client: when it ended and which node answered.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub answer: Option<String>,
}

/// Requests the VIP every [`PERIOD`] from the client namespace until dropped (at most
/// a minute): the lab's probe ([`fulcrum::lab::probe::Probe`]) with this file's request.
pub struct Client {
    pub probe: Probe,
}

/// One client request through the VIP; returns the name of the server that answered.
pub fn request(to: SocketAddr) -> Option<String> {
    vip_request(to, Duration::from_millis(500))?.server
}

/// The probe's request: 50 ms to connect, 500 ms to answer.
fn vip_request(to: SocketAddr, _: Duration) -> Option<Answer> {
    fulcrum::lab::probe::answer_of(&http(to, "GET", "/", Duration::from_millis(500))?)
}

impl Client {
    pub fn start(ns: &str) -> Client {
        let to = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
        Client {
            probe: Probe::start(ns, to, vip_request, PERIOD, Duration::from_secs(60)),
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        let t0 = self.probe.t0;
        self.probe
            .samples()
            .into_iter()
            .map(|x| Sample {
                at: t0 + Duration::from_secs_f64(x.end_ms.max(0.0) / 1000.0),
                answer: x.answer.and_then(|a| a.server),
            })
            .collect()
    }

    /// Waits until `node` has answered `n` requests in a row after `since`.
    pub fn wait_served_by(&self, node: &str, since: Instant, n: usize, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(20), || {
            let s = self.samples();
            let tail: Vec<_> = s.iter().filter(|x| x.at > since).collect();
            tail.len() >= n
                && tail
                    .iter()
                    .rev()
                    .take(n)
                    .all(|x| x.answer.as_deref() == Some(node))
        })
    }
}

/// What the client saw from `from` on: the longest time without a successful answer
/// (measured between successful answers), and the number of failed requests.
pub fn outage(samples: &[Sample], from: Instant) -> (Duration, usize) {
    let mut last_ok: Option<Instant> = samples
        .iter()
        .filter(|s| s.at <= from && s.answer.is_some())
        .map(|s| s.at)
        .next_back();
    let mut worst = Duration::ZERO;
    let mut failed = 0;
    for s in samples.iter().filter(|s| s.at > from) {
        match &s.answer {
            Some(_) => {
                if let Some(l) = last_ok {
                    worst = worst.max(s.at - l);
                }
                last_ok = Some(s.at);
            }
            None => failed += 1,
        }
    }
    (worst, failed)
}

/// Settings of one drill's nodes.
#[derive(Clone, Copy)]
pub struct Opts {
    pub preempt: bool,
    pub track: bool,
    /// VRRP version; v2 uses whole-second adverts and keepalived's simple password.
    pub version: u8,
    pub interval: Duration,
    /// Unicast adverts to the other node instead of multicast.
    pub unicast: bool,
    /// fulcrum nodes take their VRRP section from `fulcrum import` of the keepalived.conf a
    /// keepalived node would run with the same settings (proves the import pairs).
    pub imported_vrrp: bool,
}

impl Opts {
    pub fn v3(preempt: bool, track: bool) -> Opts {
        Opts {
            preempt,
            track,
            version: 3,
            interval: INTERVAL,
            unicast: false,
            imported_vrrp: false,
        }
    }

    /// Master-down interval of a backup with `priority` (RFC 5798 / RFC 3768 skew).
    pub fn master_down(&self, priority: u32) -> Duration {
        let skew = if self.version == 3 {
            self.interval * (256 - priority) / 256
        } else {
            Duration::from_secs(1) * (256 - priority) / 256
        };
        self.interval * 3 + skew
    }
}

/// The namespaces, processes and backends of one drill; removed on drop, even on panic.
pub struct Lab {
    pub prefix: String,
    pub namespaces: Vec<String>,
    pub nodes: Vec<(String, Option<Child>, PathBuf)>,
    /// `fulcrum backend` processes by node, with their logs.
    pub backends: Vec<(String, Child, PathBuf)>,
    /// keepalived's VRRP child pid files, to kill the children a crash drill or a panic leaves.
    pub keepalived_pids: Vec<PathBuf>,
    pub dir: tempfile::TempDir,
    pub opts: Opts,
}

impl Lab {
    /// Builds the topology, or returns why it cannot (not root, no `ip netns`).
    pub fn new(case: &str, opts: Opts) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let prefix = format!("fvr{}{case}", std::process::id());
        let mut lab = Lab {
            prefix: prefix.clone(),
            namespaces: Vec::new(),
            nodes: Vec::new(),
            backends: Vec::new(),
            keepalived_pids: Vec::new(),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            opts,
        };
        for n in ["br", "a", "b", "c"] {
            let ns = format!("{prefix}{n}");
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let br = format!("{prefix}br");
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for (n, addr) in [("a", NODE_A), ("b", NODE_B), ("c", CLIENT)] {
            let ns = format!("{prefix}{n}");
            let port = format!("v{n}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    pub fn config(&self, node: &str, priority: u8, backend_port: u16) -> PathBuf {
        let track = if self.opts.track {
            "track = { frontends = true, weight = -50 }\n"
        } else {
            ""
        };
        let auth = if self.opts.version == 2 {
            "auth_pass = \"s3cret\"\n"
        } else {
            ""
        };
        let unicast = match (self.opts.unicast, node) {
            (false, _) => String::new(),
            (true, "a") => format!("unicast_peers = [\"{}\"]\n", addr_of(NODE_B)),
            (true, _) => format!("unicast_peers = [\"{}\"]\n", addr_of(NODE_A)),
        };
        if self.opts.imported_vrrp {
            return self.config_imported(node, priority, backend_port);
        }
        let text = format!(
            r#"[admin]
listen = "127.0.0.1:{ADMIN_PORT}"

[frontends.www]
listen = ["0.0.0.0:80"]
backend = "app"

[backends.app]
health = {{ kind = "http", path = "/health", interval = "100ms", rise = 1, fall = 1 }}
servers = [{{ name = "{node}", address = "127.0.0.1:{backend_port}" }}]

[vrrp.instances.vip]
interface = "eth0"
vrid = 51
priority = {priority}
version = {}
advert_interval = "{}ms"
virtual_ips = ["{VIP}/24"]
preempt = {}
{auth}{track}{unicast}"#,
            self.opts.version,
            self.opts.interval.as_millis(),
            self.opts.preempt
        );
        let path = self.dir.path().join(format!("{node}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts `fulcrum backend` named `node` on `ip:port` in `node`'s namespace, unless one
    /// runs there already, and waits until it listens.
    pub fn start_backend(&mut self, node: &str, ip: &str, port: u16) {
        if self.backends.iter().any(|(n, _, _)| n == node) {
            return;
        }
        let log = self.dir.path().join(format!("{node}-backend.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(node),
                &bin(),
                "backend",
                "--name",
                node,
            ])
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn fulcrum backend");
        self.backends.push((node.to_string(), child, log));
        assert!(
            wait_listening(&self.ns(node), port),
            "backend {node} did not start\n{}",
            self.logs()
        );
    }

    /// Stops `node`'s backend.
    pub fn stop_backend(&mut self, node: &str) {
        self.backends.retain_mut(|(n, child, _)| {
            if n == node {
                let _ = child.kill();
                let _ = child.wait();
            }
            n != node
        });
    }

    /// Starts (or restarts) node `node` ("a" or "b") with `priority`.
    pub fn start_node(&mut self, node: &str, priority: u8) {
        // A restarted node keeps its backend.
        self.start_backend(node, "127.0.0.1", BACKEND_PORT);
        let config = self.config(node, priority, BACKEND_PORT);
        let log = self
            .dir
            .path()
            .join(format!("{node}-{}.log", self.nodes.len()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), &bin(), "run", "--config"])
            .arg(&config)
            .env("FULCRUM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn fulcrum");
        self.nodes.push((node.to_string(), Some(child), log));
    }

    /// The keepalived.conf a keepalived node runs with these settings.
    pub fn keepalived_conf(&self, node: &str, priority: u8) -> String {
        let (version, advert_int, auth) = if self.opts.version == 2 {
            (
                2,
                format!("{}", self.opts.interval.as_secs()),
                "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }\n",
            )
        } else {
            (3, format!("{}", self.opts.interval.as_secs_f64()), "")
        };
        let preempt = if self.opts.preempt {
            ""
        } else {
            "    nopreempt\n"
        };
        format!(
            "global_defs {{\n    router_id ka_{node}\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    version {version}\n    advert_int {advert_int}\n{auth}{preempt}    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        )
    }

    /// A fulcrum node's config whose VRRP section is `fulcrum import` of
    /// [`Lab::keepalived_conf`] for the same node and priority.
    fn config_imported(&self, node: &str, priority: u8, backend_port: u16) -> PathBuf {
        let dir = self.dir.path();
        let conf = dir.join(format!("import-{node}.conf"));
        std::fs::write(&conf, self.keepalived_conf(node, priority)).expect("write keepalived.conf");
        let out = Command::new(bin())
            .args(["import"])
            .arg(&conf)
            .output()
            .expect("fulcrum import");
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vrrp = String::from_utf8_lossy(&out.stdout).to_string();
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\n\n[frontends.www]\nlisten = [\"0.0.0.0:80\"]\nbackend = \"app\"\n\n[backends.app]\nhealth = {{ kind = \"http\", path = \"/health\", interval = \"100ms\", rise = 1, fall = 1 }}\nservers = [{{ name = \"{node}\", address = \"127.0.0.1:{backend_port}\" }}]\n\n{vrrp}"
        );
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts keepalived as node `node` with `priority`; a plain HTTP server on the node's
    /// port 80 stands for the web tier, so the client gets answers through the VIP.
    pub fn start_keepalived(&mut self, node: &str, priority: u8) {
        self.start_backend(node, "0.0.0.0", 80);
        let conf = self.keepalived_conf(node, priority);
        let n = self.nodes.len();
        let dir = self.dir.path();
        let conf_path = dir.join(format!("keepalived-{node}.conf"));
        std::fs::write(&conf_path, conf).expect("write keepalived.conf");
        let pid = dir.join(format!("ka-{node}-{n}.pid"));
        let vrrp_pid = dir.join(format!("ka-{node}-{n}-vrrp.pid"));
        let chk_pid = dir.join(format!("ka-{node}-{n}-chk.pid"));
        let log = dir.join(format!("{node}-{n}-keepalived.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(node),
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
            ])
            .arg("--use-file")
            .arg(&conf_path)
            .arg("--pid")
            .arg(&pid)
            .arg("--vrrp_pid")
            .arg(&vrrp_pid)
            .arg("--checkers_pid")
            .arg(&chk_pid)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn keepalived");
        self.keepalived_pids.push(vrrp_pid);
        self.nodes.push((node.to_string(), Some(child), log));
    }

    /// Kills keepalived's VRRP child of `node` the hard way, then its parent, and stops the
    /// node's web server: a crash of the whole load balancer.
    pub fn crash_keepalived(&mut self, node: &str) {
        self.signal(node, libc::SIGSTOP); // the parent must not restart the child
        if let Some(pid) = self.keepalived_pids.last().and_then(|p| live_keepalived(p)) {
            // SAFETY: signals keepalived's VRRP child, which this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        self.signal(node, libc::SIGKILL);
        let _ = self.wait_exit(node, Duration::from_secs(5));
        // The node's web tier goes down with it, as fulcrum's proxy does when it is killed.
        self.stop_backend(node);
    }

    /// The running process of `node`.
    pub fn child(&mut self, node: &str) -> &mut Child {
        self.nodes
            .iter_mut()
            .rev()
            .find(|(n, c, _)| n == node && c.is_some())
            .and_then(|(_, c, _)| c.as_mut())
            .expect("node is running")
    }

    pub fn signal(&mut self, node: &str, sig: i32) {
        let pid = self.child(node).id();
        // SAFETY: signals one process we started, by its PID.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }

    /// Waits (bounded) for `node` to exit after a signal; returns whether it exited cleanly.
    pub fn wait_exit(&mut self, node: &str, limit: Duration) -> Option<bool> {
        let mut status = None;
        poll(limit, Duration::from_millis(10), || {
            status = self.child(node).try_wait().ok().flatten();
            status.is_some()
        });
        let st = status?;
        if let Some(slot) = self
            .nodes
            .iter_mut()
            .rev()
            .find(|(n, c, _)| n == node && c.is_some())
        {
            slot.1 = None;
        }
        Some(st.success())
    }

    /// Whether the VIP is on `node`'s eth0.
    pub fn has_vip(&self, node: &str) -> bool {
        ip(&["-n", &self.ns(node), "-4", "addr", "show", "dev", "eth0"])
            .map(|o| o.contains(&format!("{VIP}/")))
            .unwrap_or(false)
    }

    /// Waits until the VIP is on `node` only.
    pub fn wait_vip(&self, node: &str, limit: Duration) -> bool {
        let other = if node == "a" { "b" } else { "a" };
        poll(limit, Duration::from_millis(10), || {
            self.has_vip(node) && !self.has_vip(other)
        })
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        let backends = self.backends.iter().map(|(n, _, l)| (n, l));
        for (node, log) in self.nodes.iter().map(|(n, _, l)| (n, l)).chain(backends) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            all.push_str(&format!(
                "---- node {node} ({}) ----\n{text}\n",
                log.display()
            ));
        }
        all
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.nodes {
            if let Some(c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for p in &self.keepalived_pids {
            if let Some(pid) = live_keepalived(p) {
                // SAFETY: signals keepalived's VRRP child, which this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, child, _) in &mut self.backends {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("teardown: {e}");
            }
        }
    }
}

/// The PID in keepalived's pid file `path`, if that process is still a keepalived.
pub fn live_keepalived(path: &std::path::Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "keepalived").then_some(pid)
}

/// The address part of "a.b.c.d/len".
pub fn addr_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// What runs on a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Fulcrum,
    Keepalived,
}

impl Lab {
    pub fn start(&mut self, node: &str, kind: Kind, priority: u8) {
        match kind {
            Kind::Fulcrum => self.start_node(node, priority),
            Kind::Keepalived => self.start_keepalived(node, priority),
        }
    }
}

/// Starts A (101) then B (100), both fulcrum, and waits for A to be master and serving.
pub fn pair(case: &str, opts: Opts) -> Option<(Lab, Client)> {
    pair_of(case, opts, Kind::Fulcrum, Kind::Fulcrum)
}

/// Starts A (`a`, priority 101) then B (`b`, 100) and waits for A to be master and serving.
pub fn pair_of(case: &str, opts: Opts, a: Kind, b: Kind) -> Option<(Lab, Client)> {
    if a == Kind::Keepalived || b == Kind::Keepalived {
        let found = Command::new("keepalived")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_err() {
            eprintln!("skipping keepalived interop drill: keepalived is not installed (apt-get install keepalived)");
            return None;
        }
    }
    let mut lab = match Lab::new(case, opts) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping VRRP netns drill: {why}");
            return None;
        }
    };
    lab.start("a", a, 101);
    assert!(
        lab.wait_vip("a", Duration::from_secs(10)),
        "A never became master\n{}",
        lab.logs()
    );
    lab.start("b", b, 100);
    let client = Client::start(&lab.ns("c"));
    assert!(
        client.wait_served_by("a", Instant::now(), 10, Duration::from_secs(10)),
        "client not served by A\n{}",
        lab.logs()
    );
    // Let B settle into backup (it must not take over while A is healthy). The wait is
    // the observation: nothing may happen in it, so there is no condition to poll.
    std::thread::sleep(opts.master_down(100) + opts.interval);
    assert!(
        lab.has_vip("a") && !lab.has_vip("b"),
        "VIP moved while A was healthy\n{}",
        lab.logs()
    );
    Some((lab, client))
}

/// Master-down interval of the backup (priority 100): 3 intervals + skew.
pub fn master_down() -> Duration {
    INTERVAL * 3 + INTERVAL * (256 - 100) / 256
}

pub fn interop_opts(version: u8) -> Opts {
    Opts {
        preempt: true,
        track: false,
        version,
        interval: if version == 2 {
            Duration::from_secs(1)
        } else {
            INTERVAL
        },
        unicast: false,
        imported_vrrp: false,
    }
}

/// Runs VRRP in this process inside namespace `ns` until the returned guard is dropped.
pub struct InProcess {
    pub status: fulcrum::vrrp::VrrpStatus,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<JoinHandle<Result<(), String>>>,
}

impl InProcess {
    pub fn start(ns: &str, cfg: fulcrum::vrrp::config::VrrpConfig) -> InProcess {
        let (status_tx, status_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = in_netns(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let v = fulcrum::vrrp::Vrrp::start(&cfg, None).await;
                let v = match v {
                    Ok(v) => v,
                    Err(e) => panic!("vrrp did not start: {e}"),
                };
                status_tx.send(v.status()).expect("send status");
                let _ = stop_rx.await;
                v.shutdown().await;
            });
        });
        let status = status_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("in-process VRRP started");
        InProcess {
            status,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends whole IPv4 packets (header included) to 224.0.0.18 out of `ns`'s eth0.
pub fn send_raw(ns: &str, packets: Vec<Vec<u8>>) {
    let sent = in_netns(ns, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
        s.bind_device(Some(b"eth0")).expect("bind eth0");
        s.set_header_included_v4(true).expect("IP_HDRINCL");
        let to = SockAddr::from(SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 18), 0));
        for p in &packets {
            s.send_to(p, &to).expect("send");
        }
    })
    .join();
    assert!(
        matches!(sent, Ok(Ok(()))),
        "sending raw packets failed: {sent:?}"
    );
}
