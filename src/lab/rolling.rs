//! The `rolling-replace` drill (seed 003): a new app server is added to both load balancers
//! with `fulcrum ctl`, observed healthy, then the old one is drained (`--wait`) and removed —
//! and afterwards the swap is undone so the lab is whole again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::netns;
use super::topology::{self, State, ADMIN_PORT, APP_PORT};

/// Runs `fulcrum ctl --admin http://127.0.0.1:9000 ARGS` inside `lb`'s namespace.
pub fn ctl(st: &State, lb: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &st.ns(lb)])
        .arg(&st.bin)
        .arg("ctl")
        .arg("--admin")
        .arg(format!("http://127.0.0.1:{ADMIN_PORT}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running fulcrum ctl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{lb}: fulcrum ctl {}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// Runs the same `ctl` change on both load balancers, as an operator does for a pair.
pub fn ctl_both(st: &State, args: &[&str]) -> Result<()> {
    for lb in ["lb1", "lb2"] {
        ctl(st, lb, args)?;
    }
    Ok(())
}

/// Waits until both load balancers report `server` healthy.
fn wait_healthy(st: &State, server: &str, limit: Duration) -> Result<()> {
    for lb in ["lb1", "lb2"] {
        wait_healthy_on(st, lb, server, limit)?;
    }
    Ok(())
}

/// Waits until `lb` reports `server` healthy.
fn wait_healthy_on(st: &State, lb: &str, server: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let text = ctl(st, lb, &["servers"]).unwrap_or_default();
        let up = text.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&server) && cols.get(4) == Some(&"up")
        });
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{lb} does not report {server} up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces `old` by `new` in backend `app` on both load balancers: add, wait healthy,
/// drain with `--wait`, remove.
fn replace(st: &State, old: &str, new: &str) -> Result<()> {
    let address = format!("{}:{APP_PORT}", topology::addr(new));
    ctl_both(st, &["add", "app", new, &address])?;
    wait_healthy(st, new, Duration::from_secs(10))?;
    let target = format!("app/{old}");
    ctl_both(st, &["drain", &target, "--wait", "--timeout", "10s"])?;
    ctl_both(st, &["remove", &target])?;
    Ok(())
}

/// The injury: start app3, replace app1 by it; after `hold`, put app1 back and retire app3.
pub fn injure(st: &mut State, hold: Duration) -> Result<()> {
    if st.proc("app3").is_none_or(|p| !p.alive()) {
        let args = topology::app_args(st, "app3");
        let log = st.dir.join("app3.log");
        let p = netns::spawn("app3", &st.ns("app3"), &st.bin, &args, &log)?;
        st.procs.retain(|p| p.name != "app3");
        st.procs.push(p);
        st.save()?;
    }
    let to = std::net::SocketAddr::from((topology::addr("app3"), APP_PORT));
    if !netns::wait_listening(&st.ns("app3"), to, Duration::from_secs(10)) {
        bail!("app3 did not start listening");
    }
    let result = replace(st, "app1", "app3");
    std::thread::sleep(hold);
    let undone = undo(st);
    result.and(undone)
}

/// Puts app1 back and retires app3 on each load balancer that has app3 (add app1 → wait
/// healthy → drain app3 → remove app3), then stops app3.
pub fn undo(st: &mut State) -> Result<()> {
    let mut result = Ok(());
    for lb in ["lb1", "lb2"] {
        let servers = match ctl(st, lb, &["servers"]) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                continue;
            }
        };
        let has = |name: &str| {
            servers
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name))
        };
        if !has("app3") {
            continue;
        }
        let step = (|| -> Result<()> {
            if !has("app1") {
                let address = format!("{}:{APP_PORT}", topology::addr("app1"));
                ctl(st, lb, &["add", "app", "app1", &address])?;
            }
            wait_healthy_on(st, lb, "app1", Duration::from_secs(10))?;
            ctl(st, lb, &["drain", "app/app3", "--wait", "--timeout", "10s"])?;
            ctl(st, lb, &["remove", "app/app3"])?;
            Ok(())
        })();
        if step.is_err() {
            result = step;
        }
    }
    if let Some(p) = st.proc("app3").cloned() {
        p.stop(Duration::from_secs(3));
        st.procs.retain(|p| p.name != "app3");
        st.save()?;
    }
    result
}
