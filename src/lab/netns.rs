//! Network-namespace plumbing for the lab: `ip` commands, entering a namespace on one thread,
//! starting processes inside a namespace, and signalling processes by PID (checked against
//! their start time so a recycled PID is never signalled).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Runs `ip ARGS`; returns stdout, or an error carrying `ip`'s stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (is iproute2 installed?)")?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Checks what the lab needs: root, the `ip` tool, and network-namespace support.
/// The error names what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("`fulcrum lab` needs root (network namespaces, veths, a bridge): run it with sudo");
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(_) => {
            bail!("`fulcrum lab` needs the `ip` tool from iproute2 (apt-get install iproute2)")
        }
    }
    if !Path::new("/proc/self/ns/net").exists() {
        bail!("this kernel has no network-namespace support (/proc/self/ns/net is missing)");
    }
    if let Err(e) = ip(&["netns", "list"]) {
        bail!("`ip netns` does not work here: {e}");
    }
    Ok(())
}

/// Whether namespace `ns` exists (`/run/netns/NS`).
pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Runs `f` on a new thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<Result<T, String>> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns on this thread only, with a descriptor kept open for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
}

/// Runs `f` inside namespace `ns` and waits for its result.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    match in_netns(ns, f).join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow!("entering namespace {ns}: {e}")),
        Err(_) => Err(anyhow!("thread in namespace {ns} panicked")),
    }
}

/// A process the lab started, identified by PID and start time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    /// Role in the topology, e.g. `lb1`, `app2`.
    pub name: String,
    /// Namespace it runs in.
    pub ns: String,
    /// Its PID (`ip netns exec` execs the command, so this is the program itself).
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start: u64,
    /// Program arguments after the binary, to restart it.
    pub args: Vec<String>,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
    /// Program run instead of the fulcrum binary (e.g. `postgres`), with the user it runs as.
    #[serde(default)]
    pub program: Option<(PathBuf, u32, u32)>,
}

/// Start time of `pid` and whether it is a zombie, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 (starttime) is index 19.
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

impl Proc {
    /// Whether this very process (same PID and start time) is alive and not a zombie.
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((start, false)) if start == self.start)
    }

    /// Sends `sig` if the process is still this one; returns whether it was sent.
    pub fn signal(&self, sig: i32) -> bool {
        if !self.alive() {
            return false;
        }
        // SAFETY: signals one process the lab started, checked by PID and start time.
        unsafe { libc::kill(self.pid, sig) == 0 }
    }

    /// Waits (bounded) until the process is gone; reaps it if it is our child.
    pub fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            // SAFETY: waitpid with WNOHANG on a PID; fails harmlessly if it is not our child.
            unsafe {
                libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG);
            }
            if !self.alive() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub fn stop(&self, grace: Duration) {
        // PostgreSQL: SIGINT is its fast shutdown (SIGTERM waits for clients).
        let sig = if self.program.is_some() {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        if self.signal(sig) && !self.wait_gone(grace) {
            self.signal(libc::SIGKILL);
            self.wait_gone(Duration::from_secs(5));
        }
    }
}

/// Starts `bin ARGS` inside namespace `ns`, in its own session (a Ctrl-C in the terminal
/// does not reach it; the lab stops it by PID), with stdout and stderr to `log`.
pub fn spawn(name: &str, ns: &str, bin: &Path, args: &[String], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .env("FULCRUM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child is left running; `Proc` tracks it. Dropping `Child` does not kill it.
    drop(child);
    let start = stat(pid)
        .map(|(s, _)| s)
        .ok_or_else(|| anyhow!("{name} exited at once; see {}", log.display()))?;
    Ok(Proc {
        name: name.to_string(),
        ns: ns.to_string(),
        pid,
        start,
        args: args.to_vec(),
        log: log.to_path_buf(),
        program: None,
    })
}

/// Starts `program ARGS` inside namespace `ns` as user `uid`/`gid` (entering the namespace
/// itself, so the PID is the program's), in its own session, output to `log`.
pub fn spawn_as(
    name: &str,
    ns: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    uid: u32,
    gid: u32,
) -> Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    // SAFETY: chown on a path we just created; failure only means the program cannot log.
    if let Ok(c) = std::ffi::CString::new(log.as_os_str().as_encoded_bytes()) {
        unsafe {
            libc::chown(c.as_ptr(), uid, gid);
        }
    }
    let err = out.try_clone()?;
    let nsfile = std::fs::File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("namespace {ns}"))?;
    let fd = nsfile.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: only async-signal-safe syscalls (setns, setsid, setgroups, setgid, setuid)
    // on the child, with a descriptor the parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0
                || libc::setsid() < 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    drop(nsfile);
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    drop(child);
    let start = stat(pid)
        .map(|(s, _)| s)
        .ok_or_else(|| anyhow!("{name} exited at once; see {}", log.display()))?;
    Ok(Proc {
        name: name.to_string(),
        ns: ns.to_string(),
        pid,
        start,
        args: args.to_vec(),
        log: log.to_path_buf(),
        program: Some((program.to_path_buf(), uid, gid)),
    })
}

/// Waits until something accepts TCP connections on `addr` inside `ns`.
pub fn wait_listening(ns: &str, addr: std::net::SocketAddr, limit: Duration) -> bool {
    run_in(ns, move || super::local::wait_listening(addr, limit)).unwrap_or(false)
}

/// PIDs of the processes inside namespace `ns` (`ip netns pids`).
pub fn pids_in(ns: &str) -> Vec<i32> {
    if !netns_exists(ns) {
        return Vec::new();
    }
    ip(&["netns", "pids", ns])
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs `pid` if it is (still) inside namespace `ns`, and reaps it if it is our child.
pub fn kill_in(ns: &str, pid: i32) {
    if !pids_in(ns).contains(&pid) {
        return;
    }
    // SAFETY: signals a process inside the lab's own namespace, by PID, checked just before.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
}
