//! Failure drills on the classic (and two-tier) topology: the probe requests the VIP while a drill injures
//! the topology at a fixed point; the report says what the client saw, beside the seed's claim.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::database::DB_PORT;
use super::probe::{self, Probe, Summary};
use super::topology::{self, State, VIP};

/// Every drill `all` runs, in order.
pub const ALL: [&str; 6] = [
    "app-crash",
    "app-unhealthy",
    "rolling-replace",
    "lb-stop",
    "lb-crash",
    "lb-return",
];

/// Extra drills of `two-tier`: the backend tier's master and one of its app servers.
pub const BACK: [&str; 2] = ["back-lb-crash", "back-app-crash"];

/// The drills `all` runs on `topology`.
pub fn all_for(topology: &str) -> Vec<&'static str> {
    let mut v = ALL.to_vec();
    if topology == "two-tier" {
        v.extend(BACK);
    }
    if topology == "database" {
        v.push("db-failover");
    }
    v
}

/// When the injury happens, after the probe started.
pub const INJURY_AT: Duration = Duration::from_secs(1);

/// What a seed reported for the failure a drill reproduces.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// Which seed.
    pub seed: &'static str,
    /// What it said.
    pub said: &'static str,
}

/// The result of one drill.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Drill name.
    pub drill: String,
    /// What was done to the topology.
    pub injury: &'static str,
    /// When, ms after the probe started.
    pub injury_at_ms: u64,
    /// Probe period, ms.
    pub rate_ms: u64,
    /// What the client saw.
    pub probe: Summary,
    /// What the seeds reported.
    pub claims: Vec<Claim>,
    /// What the configured timers predict, in words.
    pub expected: String,
    /// The bound the drill is checked against: most failed requests allowed, or `None` when
    /// the bound is on the outage.
    pub max_failed: Option<usize>,
    /// Largest outage allowed, ms, when the bound is on the outage.
    pub max_outage_ms: Option<u64>,
    /// Whether the measurement is within the bound.
    pub pass: bool,
}

fn description(name: &str) -> Option<&'static str> {
    Some(match name {
        "app-crash" => "SIGKILL app server app1; restart it 2.5 s later",
        "app-unhealthy" => "app1's /health answers 503 (control endpoint); ok again 2.5 s later",
        "lb-stop" => "SIGTERM the master load balancer lb1 (graceful stop); lb2 takes the VIP",
        "lb-crash" => "SIGKILL the master load balancer lb1; lb2 takes the VIP",
        "lb-return" => "lb1 (stopped before the probe) starts again and preempts lb2",
        "back-lb-crash" => "SIGKILL the backend tier's master blb1; blb2 takes the backend VIP",
        "back-app-crash" => "SIGKILL backend app server bapp1; restart it 2.5 s later",
        "db-failover" => {
            "immediate shutdown of the PostgreSQL primary, then pg_ctl promote on the standby (seed 001's playbook)"
        }
        "rolling-replace" => {
            "fulcrum ctl on both LBs: add app3 → wait healthy → drain app1 --wait → remove app1 (undone 1 s later the same way)"
        }
        _ => return None,
    })
}

fn claims(name: &str) -> Vec<Claim> {
    let c = |seed, said| Claim { seed, said };
    match name {
        "app-crash" => vec![
            c(
                "002",
                "~2 s app-server failover (watch curl every 2 s while stopping an app server)",
            ),
            c(
                "004",
                "stopping Apache on web0: the curl loop keeps printing Web1, no error shown",
            ),
            c(
                "000",
                "reboot an app server: haproxy notices and stops sending requests to it",
            ),
        ],
        "app-unhealthy" => vec![c(
            "002",
            "~2 s app-server failover: health checks divert requests to the healthy node",
        )],
        "lb-stop" => vec![
            c(
                "002",
                "~1 s VIP failover when keepalived or haproxy is stopped",
            ),
            c(
                "004",
                "stopping heartbeat on dir0: ~5 consecutive curls lost",
            ),
        ],
        "lb-crash" => vec![
            c(
                "004",
                "rebooting dir0: ~5 consecutive curls lost (curl: (7) couldn't connect)",
            ),
            c("002", "~1 s VIP failover"),
            c(
                "000",
                "reboot the master load balancer: you still get the page",
            ),
        ],
        "rolling-replace" => vec![c(
            "003",
            "a load balancer lets you do deployments without having any downtime",
        )],
        "back-lb-crash" => vec![c(
            "002",
            "~1 s VIP failover (backend-00 fails to backend-02)",
        )],
        "back-app-crash" => vec![c(
            "002",
            "~2 s app-server failover: all requests diverted to the healthy node",
        )],
        "db-failover" => vec![c(
            "001",
            "manual playbook: promote the standby, then redirect the application to the new main database",
        )],
        "lb-return" => vec![c(
            "000",
            "when the master comes back it takes the VIP again, unnoticed by the end user",
        )],
        _ => Vec::new(),
    }
}

/// Restores anything a previous drill (or a crash) left broken: restarts dead processes,
/// heals app1's health, and waits for the lab to be whole with lb1 master.
pub fn make_whole(st: &mut State) -> Result<()> {
    if st.topology == "database" {
        // Before the generic restarts: a stopped old primary must come back as a standby.
        super::database::make_whole(st)?;
    }
    if st.proc("app3").is_some() {
        // A rolling-replace that did not finish: put app1 back, retire app3.
        super::rolling::undo(st)?;
    }
    let names: Vec<String> = st.procs.iter().map(|p| p.name.clone()).collect();
    for name in names {
        st.restart(&name)?;
    }
    for app in ["app1", "app2"] {
        topology::control_app(st, app, "/_control/health/ok");
    }
    topology::wait_whole(st, Duration::from_secs(20)).context("the lab is not whole")?;
    if st.topology == "database" {
        let to = SocketAddr::from((VIP, DB_PORT));
        let ok = super::netns::run_in(&st.ns("client"), move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if super::database::request(to, Duration::from_secs(1)).is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })?;
        if !ok {
            bail!("no database primary answers on the VIP's port {DB_PORT}");
        }
    }
    Ok(())
}

/// Runs drill `name` on the lab in `st`, with a probe every `rate` for `duration`.
pub fn run_drill(st: &mut State, name: &str, rate: Duration, duration: Duration) -> Result<Report> {
    let Some(injury) = description(name) else {
        bail!(
            "unknown drill {name:?}; drills: {}, {} (two-tier), db-failover (database), all",
            ALL.join(", "),
            BACK.join(", ")
        );
    };
    if BACK.contains(&name) && st.topology != "two-tier" {
        bail!("drill {name} needs the two-tier topology");
    }
    if name == "db-failover" && st.topology != "database" {
        bail!("drill db-failover needs the database topology");
    }
    if duration < INJURY_AT + Duration::from_secs(3) {
        bail!("--duration must be at least 4s (the injury comes at 1 s)");
    }
    make_whole(st)?;
    if name == "lb-return" {
        // Take lb1 out gracefully first, so the probe starts on lb2.
        stop_proc(st, "lb1", libc::SIGTERM)?;
        if !topology::wait_vip(st, "lb2", Duration::from_secs(5)) {
            bail!("lb2 did not take the VIP after lb1 stopped");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (to, request): (SocketAddr, probe::RequestFn) = if name == "db-failover" {
        ((VIP, DB_PORT).into(), super::database::request)
    } else {
        ((VIP, 80).into(), probe::request)
    };
    let probe = Probe::start(&st.ns("client"), to, request, rate, duration);
    std::thread::sleep(INJURY_AT);
    let injury_at_ms = probe.now_ms() as u64;
    let result = injure(st, name);
    let samples = probe.finish();
    result?;
    let samples = samples?;
    // Put the lab back together outside the measurement.
    make_whole(st)?;
    let summary = probe::summarize(&samples);
    let md = topology::master_down();
    let (expected, max_failed, max_outage_ms) = match name {
        "lb-crash" | "back-lb-crash" => {
            let limit = md + Duration::from_secs(1);
            (
                format!(
                    "outage about Master_Down_Interval = 3 × {} ms + skew = {} ms (bound {} ms)",
                    topology::ADVERT.as_millis(),
                    md.as_millis(),
                    limit.as_millis()
                ),
                None,
                Some(limit.as_millis() as u64),
            )
        }
        "lb-return" => (
            "lb1 preempts once its checks see the servers up; the old master answers until the new one adverts"
                .to_string(),
            None,
            Some((md + Duration::from_secs(1)).as_millis() as u64),
        ),
        "lb-stop" => (
            "0 failed: the stopping master advertises priority 0 and keeps answering until lb2 is master \
             (bound 1: a connection opened to lb1 in the instant lb2's gratuitous ARP lands can be reset)"
                .to_string(),
            Some(1),
            None,
        ),
        "db-failover" => (
            "nothing is re-pointed: the checks (200 ms, fall 2, rise 1) see the promoted standby report primary; bound 10 s"
                .to_string(),
            None,
            Some(10_000),
        ),
        "rolling-replace" => (
            "0 failed: a drained server gets no new requests; removal waits for its connections"
                .to_string(),
            Some(0),
            None,
        ),
        _ => (
            "0 failed: a refused connection is retried on the other server; checks (150 ms, fall 2) mark it down"
                .to_string(),
            Some(0),
            None,
        ),
    };
    let pass = summary.sent > 0
        && max_failed.is_none_or(|m| summary.failed <= m)
        && max_outage_ms.is_none_or(|m| summary.outage_ms <= m);
    Ok(Report {
        drill: name.to_string(),
        injury,
        injury_at_ms,
        rate_ms: rate.as_millis() as u64,
        probe: summary,
        claims: claims(name),
        expected,
        max_failed,
        max_outage_ms,
        pass,
    })
}

/// Sends `sig` to lab process `name` and waits until it is gone.
fn stop_proc(st: &State, name: &str, sig: i32) -> Result<()> {
    let Some(p) = st.proc(name) else {
        bail!("the lab has no process {name}");
    };
    if !p.signal(sig) {
        bail!("{name} (pid {}) is not running", p.pid);
    }
    if !p.wait_gone(Duration::from_secs(10)) {
        p.signal(libc::SIGKILL);
        p.wait_gone(Duration::from_secs(5));
    }
    Ok(())
}

fn injure(st: &mut State, name: &str) -> Result<()> {
    let restore_after = Duration::from_millis(2500);
    match name {
        "app-crash" => {
            stop_proc(st, "app1", libc::SIGKILL)?;
            std::thread::sleep(restore_after);
            st.restart("app1")?;
        }
        "app-unhealthy" => {
            if !topology::control_app(st, "app1", "/_control/health/fail") {
                bail!("app1's control endpoint did not answer");
            }
            std::thread::sleep(restore_after);
            if !topology::control_app(st, "app1", "/_control/health/ok") {
                bail!("app1's control endpoint did not answer");
            }
        }
        "lb-stop" => stop_proc(st, "lb1", libc::SIGTERM)?,
        "lb-crash" => stop_proc(st, "lb1", libc::SIGKILL)?,
        "back-lb-crash" => stop_proc(st, "blb1", libc::SIGKILL)?,
        "db-failover" => super::database::failover(st)?,
        "back-app-crash" => {
            stop_proc(st, "bapp1", libc::SIGKILL)?;
            std::thread::sleep(restore_after);
            st.restart("bapp1")?;
        }
        "lb-return" => st.restart("lb1")?,
        "rolling-replace" => super::rolling::injure(st, Duration::from_secs(1))?,
        _ => {}
    }
    Ok(())
}

/// Prints `r` for a person.
pub fn print_report(r: &Report) {
    let p = &r.probe;
    println!("== drill {} ==", r.drill);
    println!("  injury at {} ms: {}", r.injury_at_ms, r.injury);
    println!(
        "  probe: {} requests (every {} ms), {} failed; longest outage {} ms ({} failed in a row); longest gap between answers {} ms",
        p.sent, r.rate_ms, p.failed, p.outage_ms, p.longest_failure_run, p.longest_gap_ms
    );
    let who: Vec<String> = p
        .timeline
        .iter()
        .map(|s| {
            let servers: Vec<String> = s.servers.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            format!(
                "{} {}–{} ms ({} req{})",
                s.lb,
                s.from_ms,
                s.to_ms,
                s.requests,
                if servers.is_empty() {
                    String::new()
                } else {
                    format!(": {}", servers.join(" "))
                }
            )
        })
        .collect();
    println!("  answered by: {}", who.join(" → "));
    let per: Vec<String> = p
        .buckets
        .iter()
        .map(|b| {
            let mut names: Vec<String> = b.servers.keys().cloned().collect();
            if b.failed > 0 {
                names.push(format!("{}×FAILED", b.failed));
            }
            format!("{:.1}s {}", b.from_ms as f64 / 1000.0, names.join("+"))
        })
        .collect();
    println!(
        "  app servers per {} ms: {}",
        probe::BUCKET_MS,
        per.join(" · ")
    );
    println!("  expected: {}", r.expected);
    for c in &r.claims {
        println!("  seed {}: {}", c.seed, c.said);
    }
    println!(
        "  measured: {} failed, {} ms outage — {}",
        p.failed,
        p.outage_ms,
        if r.pass {
            "PASS"
        } else {
            "FAIL (outside the bound)"
        }
    );
}

/// Writes the reports as JSON to `path`.
pub fn write_json(path: &Path, topology: &str, reports: &[Report]) -> Result<()> {
    let text = serde_json::to_vec_pretty(&serde_json::json!({
        "topology": topology,
        "vip": VIP.to_string(),
        "advert_interval_ms": topology::ADVERT.as_millis() as u64,
        "master_down_interval_ms": topology::master_down().as_millis() as u64,
        "drills": reports,
    }))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
