//! The `fleet` topology (issue 21): three load balancers that take their servers from etcd,
//! one etcd member, and three app boxes that register themselves with `fulcrum register`
//! under a lease — and the `app-box-dies` drill.
//!
//! ```text
//!                     bridge (namespace PREFIX-br)
//!   ┌────────┬────────┬────────┬────────┬────────┬────────┬────────┬────────┐
//!  client   lb1      lb2      lb3      app1     app2     app3     etcd
//!  .2       .11      .12      .13      .21      .22      .23      .61:2379
//! ```
//!
//! No VIP here: each balancer is reached on its own address, and the probe requests all
//! three at once. Every balancer has
//! `discovery = { etcd = { endpoints = ["http://10.231.0.61:2379"], prefix = "/fulcrum/backends/app/" } }`,
//! HTTP checks and retries like `classic`. An app box runs `fulcrum backend` and
//! `fulcrum register --ttl 3s` (processes `appN` and `appN-reg`).
//!
//! `app-box-dies`: 1 s into the probe, app1's box dies — its server and register process
//! are SIGKILLed (so the lease is not revoked: it has to expire), then its interface goes
//! down (so connections to it time out, as to a box that lost power). The drill polls
//! every balancer's admin API and reports, per balancer, the failed requests, when it
//! stopped sending to app1 (app1 not usable, or gone) and when app1 was gone from its
//! backend (the lease expired and the key was deleted).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::netns::{self, ip};
use super::probe::{self, Probe, Summary};
use super::topology::{State, ADMIN_PORT, APP_PORT};

/// The balancers.
pub const LBS: [&str; 3] = ["lb1", "lb2", "lb3"];
/// The app boxes.
pub const APPS: [&str; 3] = ["app1", "app2", "app3"];
/// The box the drill kills.
pub const VICTIM: &str = "app1";
/// etcd's client port (on the etcd namespace's address).
pub const ETCD_PORT: u16 = 2379;
/// Lease TTL of every registration: how long after a box dies its key goes.
pub const TTL: Duration = Duration::from_secs(3);
/// The etcd key prefix of the app servers.
pub const PREFIX: &str = "/fulcrum/backends/app/";
/// Where the drill's injury comes, after the probes started.
pub const INJURY_AT: Duration = Duration::from_secs(1);
/// The drills of this topology.
pub const DRILLS: [&str; 1] = ["app-box-dies"];

/// Roles, in namespace creation order.
pub const ROLES: [&str; 8] = [
    "client", "etcd", "app1", "app2", "app3", "lb1", "lb2", "lb3",
];

/// Address of `role` in the lab subnet.
pub fn addr(role: &str) -> Ipv4Addr {
    let last = match role {
        "client" => 2,
        "lb1" => 11,
        "lb2" => 12,
        "lb3" => 13,
        "app1" => 21,
        "app2" => 22,
        "app3" => 23,
        "etcd" => 61,
        _ => 99,
    };
    Ipv4Addr::new(10, 231, 0, last)
}

/// The etcd binary (Debian's `etcd-server` installs `/usr/bin/etcd`).
pub fn etcd_bin() -> Result<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the fleet topology needs etcd (/usr/bin/etcd not found; apt-get install etcd-server)"
            )
        })
}

fn etcd_url() -> String {
    format!("http://{}:{ETCD_PORT}", addr("etcd"))
}

/// The configuration of balancer `lb`.
pub fn lb_config(lb: &str) -> String {
    format!(
        r#"# fulcrum lab, topology fleet: {lb}
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
discovery = {{ etcd = {{ endpoints = ["{}"], prefix = "{PREFIX}" }} }}
"#,
        etcd_url()
    )
}

/// Builds the fleet's network and starts its processes (recording each as it goes, so a
/// failure part-way tears down what was made), then waits until it is whole.
pub fn build(st: &mut State, interrupted: &dyn Fn() -> bool) -> Result<()> {
    let etcd = etcd_bin()?;
    build_network(st, interrupted)?;
    start_etcd(st, &etcd)?;
    for app in APPS {
        if interrupted() {
            bail!("interrupted");
        }
        start_app(st, app)?;
    }
    for lb in LBS {
        if interrupted() {
            bail!("interrupted");
        }
        let config = st.dir.join(format!("{lb}.toml"));
        std::fs::write(&config, lb_config(lb))
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
    }
    wait_whole(st, Duration::from_secs(30))
}

fn build_network(st: &mut State, interrupted: &dyn Fn() -> bool) -> Result<()> {
    super::topology::build_network_of(st, &ROLES, addr, interrupted)
}

/// One etcd member (as root, in its own namespace; peers on that namespace's loopback).
fn start_etcd(st: &mut State, etcd: &Path) -> Result<()> {
    let data = st.dir.join("etcd-data");
    let peer = "http://127.0.0.1:2380";
    let args = vec![
        "--name=lab".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={}", etcd_url()),
        format!("--advertise-client-urls={}", etcd_url()),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=lab={peer}"),
        "--initial-cluster-state=new".to_string(),
        "--initial-cluster-token=fulcrum-lab".to_string(),
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
    ];
    let log = st.dir.join("etcd.log");
    let p = netns::spawn_as("etcd", &st.ns("etcd"), etcd, &args, &log, 0, 0)?;
    st.procs.push(p);
    st.save()?;
    let to = SocketAddr::from((addr("etcd"), ETCD_PORT));
    if !netns::wait_listening(&st.ns("etcd"), to, Duration::from_secs(20)) {
        bail!("etcd did not start listening; see {}", log.display());
    }
    Ok(())
}

/// The arguments of app box `app`'s server and of its register process.
fn app_args(app: &str) -> (Vec<String>, Vec<String>) {
    let listen = format!("{}:{APP_PORT}", addr(app));
    let server = vec![
        "backend".into(),
        "--listen".into(),
        listen.clone(),
        "--name".into(),
        app.into(),
    ];
    let register = vec![
        "register".into(),
        "--etcd".into(),
        etcd_url(),
        "--backend".into(),
        "app".into(),
        "--address".into(),
        listen,
        "--name".into(),
        app.into(),
        "--ttl".into(),
        format!("{}s", TTL.as_secs()),
    ];
    (server, register)
}

/// Starts app box `app`: its server, and once that listens, its registration.
fn start_app(st: &mut State, app: &str) -> Result<()> {
    let (server, register) = app_args(app);
    let log = st.dir.join(format!("{app}.log"));
    let p = netns::spawn(app, &st.ns(app), &st.bin, &server, &log)?;
    st.procs.push(p);
    st.save()?;
    let to = SocketAddr::from((addr(app), APP_PORT));
    if !netns::wait_listening(&st.ns(app), to, Duration::from_secs(10)) {
        bail!("{app} did not start listening; see {}", log.display());
    }
    let name = format!("{app}-reg");
    let log = st.dir.join(format!("{name}.log"));
    let p = netns::spawn(&name, &st.ns(app), &st.bin, &register, &log)?;
    st.procs.push(p);
    st.save()
}

/// One server of backend `app` as a balancer's admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Server name.
    pub name: String,
    /// Health check says up.
    pub up: bool,
    /// The balancer would pick it for a new request.
    pub usable: bool,
}

/// The servers of backend `app` on balancer `lb`; `None` when its admin API does not answer.
pub fn servers_on(st: &State, lb: &str) -> Option<Vec<Seen>> {
    let to = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    let text = netns::run_in(&st.ns(lb), move || {
        probe::http(to, "GET", "/api/v1/status", Duration::from_secs(2))
    })
    .ok()??;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let backend = v["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "app")?;
    let servers = backend["servers"].as_array()?;
    Some(
        servers
            .iter()
            .map(|s| Seen {
                name: s["name"].as_str().unwrap_or_default().to_string(),
                up: s["health"] == "up",
                usable: s["usable"] == true,
            })
            .collect(),
    )
}

/// Waits until the fleet is whole: every process alive, every balancer sees the three app
/// servers up, and each balancer answers from all three.
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
    let admin = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    for lb in LBS {
        if !netns::wait_listening(&st.ns(lb), admin, limit) {
            bail!("{lb}'s admin API does not answer");
        }
        loop {
            let all_up = servers_on(st, lb).is_some_and(|v| {
                APPS.iter()
                    .all(|a| v.iter().any(|s| s.name == *a && s.up && s.usable))
            });
            if all_up {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{lb} does not see app1, app2 and app3 registered and up (servers: {:?})",
                    servers_on(st, lb)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let to: Vec<SocketAddr> = LBS.iter().map(|lb| (addr(lb), 80).into()).collect();
    let ok = netns::run_in(&st.ns("client"), move || {
        to.iter().all(|to| {
            let mut seen = std::collections::BTreeSet::new();
            while Instant::now() < deadline && seen.len() < APPS.len() {
                if let Some(s) =
                    probe::request(*to, Duration::from_millis(500)).and_then(|a| a.server)
                {
                    seen.insert(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen.len() == APPS.len()
        })
    })?;
    if !ok {
        bail!("not every balancer answers from app1, app2 and app3");
    }
    Ok(())
}

/// Restores what a drill broke: the dead box's interface, its server and its registration.
pub fn make_whole(st: &mut State) -> Result<()> {
    for app in APPS {
        let ns = st.ns(app);
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    }
    for app in APPS {
        st.restart(app)?;
        let to = SocketAddr::from((addr(app), APP_PORT));
        if !netns::wait_listening(&st.ns(app), to, Duration::from_secs(10)) {
            bail!("{app} did not start listening again");
        }
        st.restart(&format!("{app}-reg"))?;
    }
    for name in ["etcd", "lb1", "lb2", "lb3"] {
        st.restart(name)?;
    }
    wait_whole(st, Duration::from_secs(30)).context("the fleet is not whole")
}

/// What one balancer did during the drill.
#[derive(Debug, Clone, Serialize)]
pub struct PerLb {
    /// Balancer.
    pub lb: String,
    /// What its probe saw.
    pub probe: Summary,
    /// When it stopped sending new requests to the dead box (its server not usable or
    /// gone), ms after the injury; `None` if it never did within the drill.
    pub stopped_ms: Option<u64>,
    /// When the dead box's server was gone from its backend (lease expired, key deleted),
    /// ms after the injury.
    pub removed_ms: Option<u64>,
}

/// The report of `app-box-dies`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Drill name.
    pub drill: String,
    /// What was done.
    pub injury: String,
    /// When, ms after the probes started.
    pub injury_at_ms: u64,
    /// Probe period per balancer, ms.
    pub rate_ms: u64,
    /// Lease TTL of the registrations, ms.
    pub ttl_ms: u64,
    /// Per balancer.
    pub balancers: Vec<PerLb>,
    /// Failed requests over all balancers.
    pub failed: usize,
    /// When every balancer had stopped sending to the dead box, ms after the injury.
    pub all_stopped_ms: Option<u64>,
    /// When the dead box was gone from every balancer, ms after the injury.
    pub all_removed_ms: Option<u64>,
    /// What the timers predict.
    pub expected: String,
    /// What removal should take: TTL + 2 s (etcd checks leases every 500 ms; the watch and
    /// a rebuild follow). Reported beside the measurement, not a pass condition (the machine
    /// may be loaded); the drill polls for removal until TTL + 7 s.
    pub expected_removed_ms: u64,
    /// 0 failed on every balancer, and the dead box removed from every balancer.
    pub pass: bool,
}

/// Runs the fleet's drill `name` (or `all`); prints the reports, writes them as JSON to
/// `json`, and returns whether all passed.
pub fn drills(
    st: &mut State,
    name: &str,
    rate: Duration,
    duration: Duration,
    json: Option<&Path>,
) -> Result<bool> {
    if name != "all" && !DRILLS.contains(&name) {
        bail!(
            "drill {name:?} does not run on the fleet topology; its drills: {}, all",
            DRILLS.join(", ")
        );
    }
    let report = run_box_dies(st, rate, duration)?;
    print_report(&report);
    if let Some(path) = json {
        let text = serde_json::to_vec_pretty(&serde_json::json!({
            "topology": "fleet",
            "drills": [&report],
        }))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("reports written to {}", path.display());
    }
    println!(
        "1 drill(s): {}",
        if report.pass {
            "all within bounds"
        } else {
            "SOME OUTSIDE BOUNDS"
        }
    );
    Ok(report.pass)
}

fn kill(st: &State, name: &str) -> Result<()> {
    let Some(p) = st.proc(name) else {
        bail!("the lab has no process {name}");
    };
    if !p.signal(libc::SIGKILL) {
        bail!("{name} (pid {}) is not running", p.pid);
    }
    if !p.wait_gone(Duration::from_secs(5)) {
        bail!("{name} (pid {}) did not die", p.pid);
    }
    Ok(())
}

/// `app-box-dies`.
pub fn run_box_dies(st: &mut State, rate: Duration, duration: Duration) -> Result<FleetReport> {
    make_whole(st)?;
    let max_removed = TTL + Duration::from_secs(2);
    // The probes run until well after the lease can have expired.
    let duration = duration.max(INJURY_AT + max_removed + Duration::from_secs(2));
    let client = st.ns("client");
    let probes: Vec<Probe> = LBS
        .iter()
        .map(|lb| {
            Probe::start(
                &client,
                (addr(lb), 80).into(),
                probe::request,
                rate,
                duration,
            )
        })
        .collect();
    let t0 = probes.first().map(|p| p.t0).unwrap_or_else(Instant::now);
    std::thread::sleep(INJURY_AT.saturating_sub(t0.elapsed()));
    let injured = Instant::now();
    let injury_at_ms = (injured - t0).as_millis() as u64;
    // The box dies: its server and its registration are SIGKILLed (no chance to revoke the
    // lease), then its interface goes down, so from then on connections to it time out as
    // to a box that lost power. (The kernel closes the killed server's sockets first, as
    // the brief's "its server killed" implies: the balancers' idle connections to it end.)
    let result = kill(st, VICTIM)
        .and_then(|()| kill(st, &format!("{VICTIM}-reg")))
        .and_then(|()| {
            std::thread::sleep(Duration::from_millis(20));
            ip(&["-n", &st.ns(VICTIM), "link", "set", "eth0", "down"]).map(|_| ())
        });
    let mut stopped: BTreeMap<&str, u64> = BTreeMap::new();
    let mut removed: BTreeMap<&str, u64> = BTreeMap::new();
    if result.is_ok() {
        let deadline = injured + max_removed + Duration::from_secs(5);
        while removed.len() < LBS.len() && Instant::now() < deadline {
            for lb in LBS {
                if removed.contains_key(lb) {
                    continue;
                }
                let Some(servers) = servers_on(st, lb) else {
                    continue;
                };
                let ms = injured.elapsed().as_millis() as u64;
                match servers.iter().find(|s| s.name == VICTIM) {
                    None => {
                        stopped.entry(lb).or_insert(ms);
                        removed.insert(lb, ms);
                    }
                    Some(s) if !s.usable => {
                        stopped.entry(lb).or_insert(ms);
                    }
                    Some(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut balancers = Vec::new();
    let mut probe_error = None;
    for (lb, p) in LBS.iter().zip(probes) {
        match p.finish() {
            Ok(samples) => balancers.push(PerLb {
                lb: lb.to_string(),
                probe: probe::summarize(&samples),
                stopped_ms: stopped.get(lb).copied(),
                removed_ms: removed.get(lb).copied(),
            }),
            Err(e) => probe_error = Some(e),
        }
    }
    result?;
    if let Some(e) = probe_error {
        return Err(e);
    }
    // Put the fleet back together outside the measurement.
    make_whole(st)?;
    let all = |m: &BTreeMap<&str, u64>| {
        (m.len() == LBS.len())
            .then(|| m.values().copied().max())
            .flatten()
    };
    let failed = balancers.iter().map(|b| b.probe.failed).sum();
    let all_removed_ms = all(&removed);
    let max_removed_ms = max_removed.as_millis() as u64;
    let pass = balancers
        .iter()
        .all(|b| b.probe.sent > 0 && b.probe.failed == 0)
        && all_removed_ms.is_some();
    Ok(FleetReport {
        drill: "app-box-dies".into(),
        injury: format!(
            "{VICTIM}'s box dies: its server and `fulcrum register` are SIGKILLed (the lease, TTL {} s, is not revoked), then its interface goes down",
            TTL.as_secs()
        ),
        injury_at_ms,
        rate_ms: rate.as_millis() as u64,
        ttl_ms: TTL.as_millis() as u64,
        balancers,
        failed,
        all_stopped_ms: all(&stopped),
        all_removed_ms,
        expected: format!(
            "0 failed on every balancer: a connect to the dead box times out (300 ms) and is retried on another server; \
             checks (150 ms, fall 2) stop new requests to it within about 0.5 s; its key goes when the lease expires \
             ({} s TTL, etcd checks leases every 500 ms): about {max_removed_ms} ms at most",
            TTL.as_secs()
        ),
        expected_removed_ms: max_removed_ms,
        pass,
    })
}

/// Prints `r` for a person.
pub fn print_report(r: &FleetReport) {
    println!("== drill {} ==", r.drill);
    println!("  injury at {} ms: {}", r.injury_at_ms, r.injury);
    let ms = |v: Option<u64>| v.map_or("never".to_string(), |v| format!("{v} ms"));
    for b in &r.balancers {
        let p = &b.probe;
        let servers: Vec<String> = p.servers.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        println!(
            "  {}: {} requests (every {} ms), {} failed, longest gap {} ms; answered by {}; stopped sending to {VICTIM} after {}, {VICTIM} gone after {}",
            b.lb,
            p.sent,
            r.rate_ms,
            p.failed,
            p.longest_gap_ms,
            servers.join(" "),
            ms(b.stopped_ms),
            ms(b.removed_ms)
        );
    }
    println!("  expected: {}", r.expected);
    println!(
        "  measured: {} failed over {} balancers; every balancer stopped sending to {VICTIM} after {}, and dropped it after {} — {}",
        r.failed,
        r.balancers.len(),
        ms(r.all_stopped_ms),
        ms(r.all_removed_ms),
        if r.pass {
            "PASS"
        } else {
            "FAIL (outside the bound)"
        }
    );
}

/// Prints how to reach the fleet.
pub fn print_up(st: &State) {
    println!(
        "lab up: topology fleet (prefix {}): 3 balancers, etcd at {}, app boxes registered under {PREFIX} (lease TTL {} s)",
        st.prefix,
        etcd_url(),
        TTL.as_secs()
    );
    for lb in LBS {
        println!(
            "  {lb}: ip netns exec {} curl -si http://{}/   (dashboard: ip netns exec {} curl http://127.0.0.1:{ADMIN_PORT}/)",
            st.ns("client"),
            addr(lb),
            st.ns(lb)
        );
    }
    println!(
        "  etcd: ip netns exec {} etcdctl --endpoints {} get --prefix {PREFIX}",
        st.ns("etcd"),
        etcd_url()
    );
    println!("  logs and configs: {}", st.dir.display());
    println!("  drills: fulcrum lab drill app-box-dies|all");
    println!("  remove: fulcrum lab down");
}
