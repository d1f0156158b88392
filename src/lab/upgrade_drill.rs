//! The `upgrade` drill: one load balancer on loopback (no VRRP, no network
//! namespace, no root), two demo app servers, a probe client at a fixed rate,
//! and `rounds` hitless upgrades to a second copy of the binary while it
//! runs. The report says what the client saw and how long each hand-over
//! and each old process's drain took.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::drill::Report;
use super::probe;

/// Upgrades one drill performs.
pub const ROUNDS: usize = 5;

/// One hand-over as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// When `fulcrum upgrade` was asked, ms after the probe started.
    pub at_ms: u64,
    /// Until the new process said ready (the old one stops accepting then).
    pub handover_ms: u64,
    /// Until the old process had exited (its connections done).
    pub old_exit_ms: u64,
    pub old_pid: u32,
    pub new_pid: u32,
}

/// Processes the drill started, killed (by PID) when it ends.
#[derive(Default)]
struct Procs {
    children: Vec<Child>,
    orphans: Vec<u32>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.orphans {
            // SAFETY: kill has no memory preconditions; PIDs this drill's
            // load balancer started for its upgrades.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    super::local::free_addr().context("no free loopback port")
}

fn wait_listening(addr: SocketAddr) -> Result<()> {
    if !super::local::wait_listening(addr, Duration::from_secs(20)) {
        bail!("nothing listens on {addr} after 20 s")
    }
    Ok(())
}

fn gone(pid: u32) -> bool {
    !super::local::pid_alive(pid)
}

/// Run the drill: a probe every `rate` for `duration`, with [`ROUNDS`]
/// upgrades spread over it. Returns the report and the rounds.
pub fn run(rate: Duration, duration: Duration) -> Result<(Report, Vec<Round>)> {
    if duration < Duration::from_secs(3) {
        bail!("--duration must be at least 3s for the upgrade drill");
    }
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let dir = std::env::temp_dir().join(format!("fulcrum-upgrade-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&exe, &dir, rate, duration);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    exe: &Path,
    dir: &Path,
    rate: Duration,
    duration: Duration,
) -> Result<(Report, Vec<Round>)> {
    let mut procs = Procs::default();
    let mut apps = Vec::new();
    for name in ["app1", "app2"] {
        let addr = free_port()?;
        let child = Command::new(exe)
            .args(["backend", "--listen", &addr.to_string(), "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a demo app server")?;
        procs.children.push(child);
        apps.push(addr);
    }
    for a in &apps {
        wait_listening(*a)?;
    }
    let listen = free_port()?;
    let config = dir.join("fulcrum.toml");
    std::fs::write(
        &config,
        format!(
            r#"[frontends.www]
listen = ["{listen}"]
backend = "app"

[backends.app]
health = {{ kind = "http", path = "/health", interval = "150ms", fall = 2 }}
servers = [{{ name = "app1", address = "{}" }}, {{ name = "app2", address = "{}" }}]
"#,
            apps[0], apps[1]
        ),
    )?;
    let new_binary = dir.join("fulcrum-new");
    std::fs::copy(exe, &new_binary).context("cannot copy the binary for the upgrade")?;
    let log = std::fs::File::create(dir.join("lb.log"))?;
    let lb = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot start the load balancer")?;
    let mut serving = lb.id();
    procs.children.push(lb);
    wait_listening(listen)?;

    // The probe, in this process's namespace (no lab needed).
    let probe = probe::Probe::start_here(listen, probe::request, rate, duration);
    let t0 = probe.t0;
    let ms = move |i: Instant| (i - t0).as_secs_f64() * 1000.0;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spacing = duration / (ROUNDS as u32 + 1);
    let mut rounds = Vec::new();
    let mut failure = None;
    for i in 0..ROUNDS {
        let at = t0 + spacing * (i as u32 + 1);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            // The schedule: upgrades are spread over the probe's run (the pause is the scenario).
            std::thread::sleep(wait);
        }
        let asked = Instant::now();
        let outcome = rt.block_on(crate::upgrade::request(
            serving,
            Some(new_binary.clone()),
            crate::upgrade::DEFAULT_TIMEOUT,
        ));
        let handover = asked.elapsed();
        let new = match outcome {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e.context(format!("upgrade {}", i + 1)));
                break;
            }
        };
        procs.orphans.push(new);
        let old = serving;
        serving = new;
        super::local::poll(Duration::from_secs(40), Duration::from_millis(5), || {
            gone(old)
        });
        rounds.push(Round {
            at_ms: ms(asked) as u64,
            handover_ms: handover.as_millis() as u64,
            old_exit_ms: asked.elapsed().as_millis() as u64,
            old_pid: old,
            new_pid: new,
        });
    }
    let samples = probe.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let samples = samples?;
    let summary = probe::summarize(&samples);
    let pass = summary.sent > 0 && summary.failed == 0;
    let report = Report {
        drill: "upgrade".to_string(),
        injury: "fulcrum upgrade to a second copy of the binary, 5 times (sockets passed over SCM_RIGHTS)",
        injury_at_ms: rounds.first().map(|r| r.at_ms).unwrap_or(0),
        rate_ms: rate.as_millis() as u64,
        probe: summary,
        claims: Vec::new(),
        expected: "0 failed: both processes hold the same listening sockets; the old one stops accepting only once the new one is ready"
            .to_string(),
        max_failed: Some(0),
        max_outage_ms: None,
        pass,
    };
    Ok((report, rounds))
}

/// Prints the rounds after the drill's report.
pub fn print_rounds(rounds: &[Round]) {
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  upgrade {}: at {} ms, PID {} → {}: new process ready in {} ms, old one gone after {} ms",
            i + 1,
            r.at_ms,
            r.old_pid,
            r.new_pid,
            r.handover_ms,
            r.old_exit_ms
        );
    }
}
