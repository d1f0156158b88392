//! `fulcrum lab`: the seeds' topologies in network namespaces on one machine, and failure
//! drills that measure what a client sees.
//!
//! `lab up classic` builds namespaces (unique prefix), a bridge and veths inside them, starts
//! two `fulcrum run` load balancers sharing a VIP by VRRP and two `fulcrum backend` app
//! servers, and records everything in a state file; `lab down` (from any process) removes it
//! all; `lab drill NAME` injures the running lab while a probe client requests the VIP.
//! `two-tier` (seed 002) adds a backend pair with its own VIP behind frontend apps;
//! `database` (seed 001) adds a PostgreSQL primary and standby behind a TCP frontend;
//! `fleet` (issue 21) is three balancers fed by etcd and app boxes that register themselves.

pub mod app;
pub mod database;
pub mod drill;
pub mod fleet;
pub mod local;
pub mod netns;
pub mod probe;
pub mod rolling;
pub mod topology;
pub mod upgrade_drill;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use topology::State;

/// Arguments of `fulcrum lab`.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    cmd: LabCmd,
}

#[derive(clap::Subcommand, Debug)]
enum LabCmd {
    /// Build a topology: classic (seeds 000/004), two-tier (seed 002), database (seed 001)
    /// or fleet (3 balancers on etcd, app boxes that register).
    Up {
        /// Topology name.
        topology: String,
    },
    /// Remove the running lab: processes, namespaces, bridge, veths, state.
    Down,
    /// Show the running lab.
    Status,
    /// Run a failure drill (or `all`) against the running lab and report the outage.
    Drill {
        /// app-crash, app-unhealthy, rolling-replace, lb-stop, lb-crash, lb-return or all
        /// (fleet: app-box-dies);
        /// `upgrade` (5 hitless upgrades of one load balancer) needs no lab and no root.
        name: String,
        /// Probe period.
        #[arg(long, default_value = "20ms", value_parser = parse_dur)]
        rate: Duration,
        /// How long the probe runs per drill (the injury comes at 1 s).
        #[arg(long, default_value = "6s", value_parser = parse_dur)]
        duration: Duration,
        /// Also write the reports as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The two-tier topology's frontend app (started by `lab up two-tier`).
    #[command(hide = true)]
    FrontendApp {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Name reported in answers.
        #[arg(long)]
        name: String,
        /// The backend tier's VIP and port.
        #[arg(long)]
        backend: std::net::SocketAddr,
    },
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::duration::parse_duration(s)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C (SIGINT) or SIGTERM arrived.
fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Runs `fulcrum lab …`; prints errors and returns the exit code.
pub fn run(args: LabArgs) -> ExitCode {
    match dispatch(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fulcrum lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: LabArgs) -> Result<bool> {
    // The upgrade drill runs on loopback: no namespaces, no root.
    let loopback = match &args.cmd {
        LabCmd::FrontendApp { .. } => true,
        LabCmd::Drill { name, .. } => name == "upgrade",
        _ => false,
    };
    if !loopback {
        netns::preflight()?;
        catch_signals();
    }
    match args.cmd {
        LabCmd::FrontendApp {
            listen,
            name,
            backend,
        } => app::serve(listen, &name, backend).map(|()| true),
        LabCmd::Up { topology } => up(&topology).map(|st| {
            print_up(&st);
            true
        }),
        LabCmd::Down => down(),
        LabCmd::Status => status(),
        LabCmd::Drill {
            name,
            rate,
            duration,
            json,
        } => drills(&name, rate, duration, json.as_deref()),
    }
}

/// Builds `topology`; on any failure or Ctrl-C removes everything created.
pub fn up(topology: &str) -> Result<State> {
    match topology {
        "classic" | "two-tier" => {}
        "database" => {
            database::pg_bin()?;
            database::postgres_user()?;
        }
        "fleet" => {
            fleet::etcd_bin()?;
        }
        other => {
            bail!("unknown topology {other:?}; available: classic, two-tier, database, fleet")
        }
    }
    if let Some(st) = State::load()? {
        bail!(
            "a lab is already up (topology {}, prefix {}); run `fulcrum lab down` first",
            st.topology,
            st.prefix
        );
    }
    let prefix = topology::new_prefix();
    let dir = topology::lab_dir(&prefix);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = std::env::current_exe().context("cannot find the fulcrum binary")?;
    let mut st = State {
        topology: topology.to_string(),
        prefix,
        namespaces: Vec::new(),
        procs: Vec::new(),
        dir,
        bin,
    };
    st.save()?;
    let built = if topology == "fleet" {
        fleet::build(&mut st, &interrupted)
    } else {
        topology::build_network(&mut st, &interrupted)
            .and_then(|()| topology::start_processes(&mut st, &interrupted))
    };
    let built = built.and_then(|()| {
        if interrupted() {
            bail!("interrupted")
        } else {
            Ok(())
        }
    });
    if let Err(e) = built {
        let logs = if interrupted() {
            String::new()
        } else {
            tail_logs(&st)
        };
        let problems = st.teardown();
        for p in &problems {
            eprintln!("fulcrum lab: cleanup: {p}");
        }
        bail!("lab up {topology} failed ({e:#}); removed everything it had built{logs}");
    }
    Ok(st)
}

fn tail_logs(st: &State) -> String {
    let mut out = String::new();
    for p in &st.procs {
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
        out.push_str(&format!(
            "\n  --- {} ({}) ---\n    {tail}",
            p.name,
            p.log.display()
        ));
    }
    out
}

fn print_up(st: &State) {
    if st.topology == "fleet" {
        fleet::print_up(st);
        return;
    }
    println!(
        "lab up: topology {} (prefix {}), VIP {} on lb1 (VRRP v3, {} ms adverts, priorities 101/100, preempt)",
        st.topology,
        st.prefix,
        topology::VIP,
        topology::ADVERT.as_millis()
    );
    println!(
        "  reach the VIP:   ip netns exec {} curl -si http://{}/",
        st.ns("client"),
        topology::VIP
    );
    if st.topology == "two-tier" {
        println!(
            "  backend tier: VIP {} on blb1 (VRRP vrid 52); frontend apps answer {{\"frontend\", \"backend\"}}",
            topology::VIP_BACK
        );
    }
    if st.topology == "database" {
        println!(
            "  PostgreSQL: primary db1 + streaming standby db2 behind {}:{} (role = \"primary\"): ip netns exec {} psql -h {} -U postgres -c 'select inet_server_addr()'",
            topology::VIP,
            database::DB_PORT,
            st.ns("client"),
            topology::VIP
        );
    }
    for lb in topology::lbs_of(st) {
        println!(
            "  {lb} dashboard:   ip netns exec {} curl http://127.0.0.1:{}/   (API /api/v1/status, ctl: ip netns exec {} {} ctl servers)",
            st.ns(lb),
            topology::ADMIN_PORT,
            st.ns(lb),
            st.bin.display()
        );
    }
    println!("  logs and configs: {}", st.dir.display());
    println!("  drills: fulcrum lab drill all|lb-crash|lb-stop|lb-return|app-crash|app-unhealthy|rolling-replace (two-tier: back-lb-crash|back-app-crash; database: db-failover)");
    println!("  remove: fulcrum lab down");
}

/// Removes the running lab; `Ok(true)` when everything is gone.
pub fn down() -> Result<bool> {
    let Some(st) = State::load()? else {
        println!("no lab is up");
        return Ok(true);
    };
    let problems = st.teardown();
    if problems.is_empty() {
        println!(
            "lab down: removed {} namespaces and {} processes (prefix {})",
            st.namespaces.len(),
            st.procs.len(),
            st.prefix
        );
        Ok(true)
    } else {
        for p in &problems {
            eprintln!("fulcrum lab down: {p}");
        }
        Ok(false)
    }
}

fn status() -> Result<bool> {
    let Some(st) = State::load()? else {
        println!("no lab is up");
        return Ok(true);
    };
    println!(
        "topology {} (prefix {}), state {}",
        st.topology,
        st.prefix,
        topology::state_path().display()
    );
    for ns in &st.namespaces {
        println!(
            "  namespace {ns}: {}",
            if netns::netns_exists(ns) {
                "present"
            } else {
                "MISSING"
            }
        );
    }
    let mut whole = true;
    for p in &st.procs {
        let alive = p.alive();
        whole &= alive;
        println!(
            "  {:5} pid {:7} in {}: {}",
            p.name,
            p.pid,
            p.ns,
            if alive { "running" } else { "NOT RUNNING" }
        );
    }
    for lb in topology::lbs_of(&st) {
        if topology::has_vip(&st, lb) {
            println!("  VIP {} is on {lb}", topology::vip_of(lb));
        }
    }
    Ok(whole)
}

fn drills(
    name: &str,
    rate: Duration,
    duration: Duration,
    json: Option<&std::path::Path>,
) -> Result<bool> {
    if rate < Duration::from_millis(1) || rate > Duration::from_secs(1) {
        bail!("--rate must be between 1ms and 1s");
    }
    if duration > Duration::from_secs(120) {
        bail!("--duration must be at most 120s");
    }
    if name == "upgrade" {
        let (report, rounds) = upgrade_drill::run(rate, duration)?;
        drill::print_report(&report);
        upgrade_drill::print_rounds(&rounds);
        if let Some(path) = json {
            let text = serde_json::to_vec_pretty(&serde_json::json!({
                "topology": "loopback (one load balancer, no VRRP)",
                "drills": [report],
                "upgrades": rounds,
            }))?;
            std::fs::write(path, text)?;
            println!("report written to {}", path.display());
        }
        return Ok(report.pass);
    }
    let (mut st, ours) = match State::load()? {
        Some(st) => (st, false),
        None if name == "all" => {
            println!("no lab is up: bringing up classic for the drills");
            let st = up("classic")?;
            print_up(&st);
            (st, true)
        }
        None => bail!("no lab is up: run `fulcrum lab up classic` first"),
    };
    if st.topology == "fleet" {
        return fleet::drills(&mut st, name, rate, duration, json);
    }
    if name == "app-box-dies" {
        bail!("drill app-box-dies needs the fleet topology (`fulcrum lab up fleet`)");
    }
    let names: Vec<&str> = if name == "all" {
        drill::all_for(&st.topology)
    } else {
        vec![name]
    };
    let mut reports = Vec::new();
    let mut result = Ok(());
    for n in names {
        if interrupted() {
            result = Err(anyhow::anyhow!("interrupted"));
            break;
        }
        match drill::run_drill(&mut st, n, rate, duration) {
            Ok(r) => {
                drill::print_report(&r);
                reports.push(r);
            }
            Err(e) => {
                result = Err(e.context(format!("drill {n}")));
                break;
            }
        }
    }
    if let Some(path) = json {
        drill::write_json(path, &st.topology, &reports)?;
        println!("reports written to {}", path.display());
    }
    if ours {
        let problems = st.teardown();
        for p in &problems {
            eprintln!("fulcrum lab: cleanup: {p}");
        }
    }
    result?;
    let pass = reports.iter().all(|r| r.pass);
    println!(
        "{} drill(s): {}",
        reports.len(),
        if pass {
            "all within bounds"
        } else {
            "SOME OUTSIDE BOUNDS"
        }
    );
    Ok(pass)
}
