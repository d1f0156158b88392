//! The topologies — `classic` (seeds 000 and 004), and the parts `two-tier` (seed 002) and
//! `database` (seed 001, see `database.rs`) add to it — and the lab's state file.
//!
//! ```text
//!                 bridge (namespace PREFIX-br)
//!   ┌──────────┬──────────┬──────────┬──────────┬──────────┐
//!  client     lb1        lb2        app1       app2
//!  .2         .11        .12        .21:8080   .22:8080      10.231.0.0/24, VIP .100
//! ```
//!
//! Also on the bridge: `app3` .23 (started by the rolling-replace drill); in `two-tier`
//! `blb1` .31 and `blb2` .32 (VIP .200), `bapp1` .41, `bapp2` .42; in `database` `db1` .51,
//! `db2` .52.
//!
//! Every namespace is named `PREFIX-ROLE`; the bridge and the veths live inside the lab's own
//! namespaces, so the host's namespace gets no interface, address or route.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::netns::{self, ip, Proc};

/// The lab's subnet; used only inside the lab's namespaces.
pub const SUBNET_PREFIX: &str = "10.231.0";
/// The virtual IP the two load balancers share.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 100);
/// The backend tier's VIP in the `two-tier` topology (shared by `blb1` and `blb2`).
pub const VIP_BACK: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 200);
/// VRRP advert interval of the pair.
pub const ADVERT: Duration = Duration::from_millis(100);
/// Priority of lb1 (the preferred master); lb2 has 100.
pub const PRIO_LB1: u32 = 101;
/// Priority of lb2.
pub const PRIO_LB2: u32 = 100;
/// Port of each load balancer's admin API (on 127.0.0.1 of its namespace).
pub const ADMIN_PORT: u16 = 9000;
/// Port the app servers listen on.
pub const APP_PORT: u16 = 8080;
/// Response header naming the load balancer that answered.
pub const LB_HEADER: &str = "x-lab-lb";

/// The backup's Master_Down_Interval (RFC 5798): 3 × advert + skew.
pub fn master_down() -> Duration {
    ADVERT * 3 + ADVERT * (256 - PRIO_LB2) / 256
}

/// What a running lab consists of; written to the state file so another process can
/// drill it or take it down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Topology name.
    pub topology: String,
    /// Unique prefix of every namespace.
    pub prefix: String,
    /// Namespaces created, in creation order.
    pub namespaces: Vec<String>,
    /// Processes started.
    pub procs: Vec<Proc>,
    /// Directory holding configs and logs.
    pub dir: PathBuf,
    /// The fulcrum binary the processes run.
    pub bin: PathBuf,
}

/// Directory of the state file: `/run/fulcrum-lab` (the lab needs root anyway).
pub fn state_dir() -> PathBuf {
    std::env::var_os("FULCRUM_LAB_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/fulcrum-lab"))
}

/// The state file.
pub fn state_path() -> PathBuf {
    state_dir().join("state.json")
}

impl State {
    /// Reads the state file; `None` when no lab is up.
    pub fn load() -> Result<Option<State>> {
        let path = state_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a lab state file", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state file (atomically, via a rename).
    pub fn save(&self) -> Result<()> {
        let dir = state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, state_path())?;
        Ok(())
    }

    /// Namespace of `role`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The tracked process `name`.
    pub fn proc(&self, name: &str) -> Option<&Proc> {
        self.procs.iter().find(|p| p.name == name)
    }

    /// Starts (or restarts) process `name` from its recorded arguments and records the new PID.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let Some(old) = self.proc(name).cloned() else {
            bail!("the lab has no process {name}");
        };
        if old.alive() {
            return Ok(());
        }
        let p = match &old.program {
            Some((program, uid, gid)) => {
                netns::spawn_as(name, &old.ns, program, &old.args, &old.log, *uid, *gid)?
            }
            None => netns::spawn(name, &old.ns, &self.bin, &old.args, &old.log)?,
        };
        if let Some(slot) = self.procs.iter_mut().find(|p| p.name == name) {
            *slot = p;
        }
        self.save()
    }

    /// Stops every process and deletes every namespace (which removes the bridge and veths);
    /// then removes the state file and the lab directory. Returns what could not be removed.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for p in self.procs.iter().rev() {
            p.stop(Duration::from_secs(3));
            if p.alive() {
                problems.push(format!("process {} (pid {}) is still alive", p.name, p.pid));
            }
        }
        // Anything still running inside the lab's namespaces is the lab's (e.g. PostgreSQL's
        // children, a `runuser`): SIGKILL it by PID, or the namespace would live on.
        for ns in &self.namespaces {
            for pid in netns::pids_in(ns) {
                netns::kill_in(ns, pid);
            }
        }
        for ns in self.namespaces.iter().rev() {
            if netns::netns_exists(ns) {
                if let Err(e) = ip(&["netns", "del", ns]) {
                    problems.push(e.to_string());
                }
            }
        }
        if self.dir.starts_with(state_dir()) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if problems.is_empty() {
            let _ = std::fs::remove_file(state_path());
        }
        problems
    }
}

/// Address of `role` inside the lab subnet.
pub fn addr(role: &str) -> Ipv4Addr {
    let last = match role {
        "client" => 2,
        "lb1" => 11,
        "lb2" => 12,
        "app1" => 21,
        "app2" => 22,
        "app3" => 23,
        "blb1" => 31,
        "blb2" => 32,
        "bapp1" => 41,
        "bapp2" => 42,
        "db1" => 51,
        "db2" => 52,
        _ => 99,
    };
    Ipv4Addr::new(10, 231, 0, last)
}

/// Whether `role` belongs to the backend tier of `two-tier` (`blb1`, `bapp2`, …).
pub fn is_back(role: &str) -> bool {
    role.starts_with('b') && role != "br"
}

/// The VIP of `role`'s tier.
pub fn vip_of(role: &str) -> Ipv4Addr {
    if is_back(role) {
        VIP_BACK
    } else {
        VIP
    }
}

/// The other load balancer of `lb`'s pair.
pub fn partner(lb: &str) -> &'static str {
    match lb {
        "lb1" => "lb2",
        "lb2" => "lb1",
        "blb1" => "blb2",
        _ => "blb1",
    }
}

/// The configuration of load balancer `lb` (`lb1`/`lb2`, or `blb1`/`blb2` of the backend tier).
pub fn lb_config(lb: &str, topology: &str) -> String {
    let priority = if lb.ends_with('1') {
        PRIO_LB1
    } else {
        PRIO_LB2
    };
    let (n1, n2, vip, vrid) = if is_back(lb) {
        ("bapp1", "bapp2", VIP_BACK, 52)
    } else {
        ("app1", "app2", VIP, 51)
    };
    let (a1, a2) = (addr(n1), addr(n2));
    let mut text = format!(
        r#"# fulcrum lab, topology classic: {lb}
[admin]
listen = "127.0.0.1:{ADMIN_PORT}"

[frontends.www]
listen = ["0.0.0.0:80"]
backend = "app"
response_headers = {{ set = {{ "X-Lab-LB" = "{lb}" }} }}

[backends.app]
balance = "roundrobin"
retries = 3
connect_timeout = "300ms"
response_timeout = "2s"
health = {{ kind = "http", path = "/health", interval = "150ms", timeout = "150ms", rise = 2, fall = 2 }}
passive = {{ max_fails = 3, fail_timeout = "1s" }}
servers = [
  {{ name = "{n1}", address = "{a1}:{APP_PORT}" }},
  {{ name = "{n2}", address = "{a2}:{APP_PORT}" }},
]

[vrrp.instances.vip]
interface = "eth0"
vrid = {vrid}
priority = {priority}
version = 3
advert_interval = "{}ms"
virtual_ips = ["{vip}/24"]
preempt = true
track = {{ frontends = true, weight = -60 }}
"#,
        ADVERT.as_millis()
    );
    if topology == "database" && !is_back(lb) {
        text.push_str(&super::database::lb_config_extra());
    }
    text
}

/// Roles of the classic topology, in start order of their namespaces.
/// (`app3` gets a namespace but no process: the rolling-replace drill starts it.)
pub const ROLES: [&str; 6] = ["client", "app1", "app2", "app3", "lb1", "lb2"];

/// Extra roles of `two-tier` (seed 002): the backend tier's pair and its app servers; the
/// front tier's app servers are frontend apps that call the backend tier's VIP.
pub const BACK_ROLES: [&str; 4] = ["blb1", "blb2", "bapp1", "bapp2"];

/// Roles of `topology`.
pub fn roles(topology: &str) -> Vec<&'static str> {
    let mut r = ROLES.to_vec();
    if topology == "two-tier" {
        r.extend(BACK_ROLES);
    }
    if topology == "database" {
        r.extend(["db1", "db2"]);
    }
    r
}

/// Arguments (after the binary) of app server `name` in `st`'s topology.
pub fn app_args(st: &State, name: &str) -> Vec<String> {
    let listen = format!("{}:{APP_PORT}", addr(name));
    if st.topology == "two-tier" && !is_back(name) {
        vec![
            "lab".into(),
            "frontend-app".into(),
            "--listen".into(),
            listen,
            "--name".into(),
            name.into(),
            "--backend".into(),
            format!("{VIP_BACK}:80"),
        ]
    } else {
        vec![
            "backend".into(),
            "--listen".into(),
            listen,
            "--name".into(),
            name.into(),
        ]
    }
}

/// A fresh unique prefix: `fl` + 5 digits of the PID (+ a random digit), short enough for
/// interface names (15 characters).
pub fn new_prefix() -> String {
    format!(
        "fl{:05}{}",
        std::process::id() % 100_000,
        fastrand::u8(0..10)
    )
}

/// Builds the network of the classic topology into `st` (recording each namespace as soon as
/// it exists, so a failure part-way tears down what was made).
pub fn build_network(st: &mut State, interrupted: &dyn Fn() -> bool) -> Result<()> {
    let roles = roles(&st.topology);
    build_network_of(st, &roles, addr, interrupted)
}

/// The lab network for `roles`: a bridge namespace and one namespace per role on it, each with
/// `eth0` at `addr(role)`/24 (every topology's wiring; the fleet's too).
pub fn build_network_of(
    st: &mut State,
    roles: &[&str],
    addr: fn(&str) -> std::net::Ipv4Addr,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let br = st.ns("br");
    ip(&["netns", "add", &br])?;
    st.namespaces.push(br.clone());
    st.save()?;
    ip(&["-n", &br, "link", "set", "lo", "up"])?;
    ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &br, "link", "set", "br0", "up"])?;
    for &role in roles {
        if interrupted() {
            bail!("interrupted");
        }
        let ns = st.ns(role);
        ip(&["netns", "add", &ns])?;
        st.namespaces.push(ns.clone());
        st.save()?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let port = format!("{}-{role}", st.prefix);
        ip(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &br, "link", "set", &port, "up"])?;
        let cidr = format!("{}/24", addr(role));
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    }
    Ok(())
}

/// Starts the app servers and the load balancers of the classic topology and waits until
/// the VIP answers from the client namespace.
pub fn start_processes(st: &mut State, interrupted: &dyn Fn() -> bool) -> Result<()> {
    if st.topology == "two-tier" {
        start_tier(st, ["bapp1", "bapp2"], ["blb1", "blb2"], interrupted)?;
    }
    start_tier(st, ["app1", "app2"], ["lb1", "lb2"], interrupted)?;
    if st.topology == "database" {
        if interrupted() {
            bail!("interrupted");
        }
        super::database::build(st)?;
    }
    wait_whole(st, Duration::from_secs(15))
}

/// Starts a tier: its two app servers, then its first load balancer (waiting until it holds
/// the VIP), then the second.
fn start_tier(
    st: &mut State,
    apps: [&str; 2],
    lbs: [&str; 2],
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    for app in apps {
        let args = app_args(st, app);
        let log = st.dir.join(format!("{app}.log"));
        let p = netns::spawn(app, &st.ns(app), &st.bin, &args, &log)?;
        st.procs.push(p);
        st.save()?;
    }
    for app in apps {
        let to = SocketAddr::from((addr(app), APP_PORT));
        if !netns::wait_listening(&st.ns(app), to, Duration::from_secs(10)) {
            bail!(
                "{app} did not start listening; see {}",
                st.dir.join(format!("{app}.log")).display()
            );
        }
    }
    for lb in lbs {
        if interrupted() {
            bail!("interrupted");
        }
        let config = st.dir.join(format!("{lb}.toml"));
        std::fs::write(&config, lb_config(lb, &st.topology))
            .with_context(|| format!("writing {}", config.display()))?;
        let args = vec![
            "run".to_string(),
            "--config".to_string(),
            config.display().to_string(),
            "--grace".to_string(),
            "5s".to_string(),
        ];
        let log = st.dir.join(format!("{lb}.log"));
        let p = netns::spawn(lb, &st.ns(lb), &st.bin, &args, &log)?;
        st.procs.push(p);
        st.save()?;
        if lb == lbs[0] && !wait_vip(st, lb, Duration::from_secs(15)) {
            bail!(
                "{lb} did not take the VIP; see {}",
                st.dir.join(format!("{lb}.log")).display()
            );
        }
    }
    Ok(())
}

/// Whether the VIP is on `role`'s eth0.
pub fn has_vip(st: &State, role: &str) -> bool {
    ip(&["-n", &st.ns(role), "-4", "addr", "show", "dev", "eth0"])
        .map(|o| o.contains(&format!("{}/", vip_of(role))))
        .unwrap_or(false)
}

/// Waits until the VIP is on `role` only.
pub fn wait_vip(st: &State, role: &str, limit: Duration) -> bool {
    let other = partner(role);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if has_vip(st, role) && !has_vip(st, other) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until the lab is whole: every process alive, the VIP on lb1, both app servers
/// answering through it, and lb2's admin API up.
pub fn wait_whole(st: &State, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    for p in &st.procs {
        if !p.alive() {
            bail!(
                "{} (pid {}) is not running; see {}",
                p.name,
                p.pid,
                p.log.display()
            );
        }
    }
    if !wait_vip(st, "lb1", limit) {
        bail!("the VIP is not on lb1 alone");
    }
    if st.topology == "two-tier" {
        if !wait_vip(st, "blb1", limit) {
            bail!("the backend VIP is not on blb1 alone");
        }
        for lb in ["blb1", "blb2"] {
            if !wait_servers_up(st, lb, deadline) {
                bail!("{lb} does not see both backend app servers up");
            }
        }
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    for lb in lbs_of(st) {
        if !netns::wait_listening(&st.ns(lb), admin, limit) {
            bail!("{lb}'s admin API does not answer");
        }
    }
    let client = st.ns("client");
    let seen = netns::run_in(&client, move || {
        let to = SocketAddr::from((VIP, 80));
        let mut seen = std::collections::BTreeSet::new();
        let mut streak = 0;
        while Instant::now() < deadline {
            match super::probe::request(to, Duration::from_millis(500)) {
                Some(a) if a.lb.as_deref() == Some("lb1") => {
                    streak += 1;
                    if let Some(s) = a.server {
                        let front = s.split('→').next().unwrap_or_default();
                        seen.insert(front.to_string());
                    }
                }
                _ => streak = 0,
            }
            if streak >= 10 && seen.len() >= 2 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })?;
    if !seen {
        bail!("the VIP does not answer from both app servers through lb1");
    }
    // lb2's checks must have both servers up too before a drill moves the VIP there.
    if !wait_servers_up(st, "lb2", deadline) {
        bail!("lb2 does not see both app servers up");
    }
    Ok(())
}

/// The load balancers of `st`'s topology.
pub fn lbs_of(st: &State) -> Vec<&'static str> {
    if st.topology == "two-tier" {
        vec!["lb1", "lb2", "blb1", "blb2"]
    } else {
        vec!["lb1", "lb2"]
    }
}

/// Waits until `lb`'s admin API reports both servers up.
pub fn wait_servers_up(st: &State, lb: &str, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Some(body) = admin_get(st, lb, "/api/v1/status") {
            let up = body.matches("\"health\":\"up\"").count();
            if up >= 2 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `GET path` on `lb`'s admin API; the compacted body.
pub fn admin_get(st: &State, lb: &str, path: &'static str) -> Option<String> {
    let to = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    let text = netns::run_in(&st.ns(lb), move || {
        super::probe::http(to, "GET", path, Duration::from_secs(2))
    })
    .ok()??;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(body.split_whitespace().collect())
}

/// `POST path` to app server `app`'s control endpoint; whether it answered 200.
pub fn control_app(st: &State, app: &str, path: &'static str) -> bool {
    let to = SocketAddr::from((addr(app), APP_PORT));
    netns::run_in(&st.ns(app), move || {
        super::probe::http(to, "POST", path, Duration::from_secs(2))
    })
    .ok()
    .flatten()
    .is_some_and(|t| t.starts_with("HTTP/1.1 200"))
}

/// The lab directory for `prefix`.
pub fn lab_dir(prefix: &str) -> PathBuf {
    state_dir().join(prefix)
}
