//! External commands: notify hooks on state changes and tracking scripts.
//!
//! Both run with a timeout and are killed when it passes (see [`run_command`]). Notify hooks of
//! one instance run one after the other, in transition order, on their own task: the protocol
//! loop only queues them and never waits.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use super::config::NotifyConfig;
use super::machine::State;

/// Runs `cmd` with positional `args` and `env`, killing it after `timeout`. Returns whether
/// it exited with status 0 in time.
///
/// A single word (a path or program name) is executed directly with `args` as its
/// arguments, like keepalived's notify scripts. Anything else is a shell command, run as
/// `/bin/sh -c CMD fulcrum-hook ARGS...`, so it sees the arguments as `$1`, `$2`, ...
pub async fn run_command(
    cmd: &str,
    args: &[&str],
    env: &[(&str, String)],
    timeout: Duration,
) -> bool {
    let cmd = cmd.trim();
    let plain = !cmd.is_empty()
        && cmd
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "/._-+@%=:,".contains(ch));
    let mut c = if plain {
        Command::new(cmd)
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(cmd).arg("fulcrum-hook");
        c
    };
    // Its own process group, so a timeout ends what it started too (a shell
    // command's children), as keepalived does.
    c.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(command = cmd, error = %e, "cannot start command");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            if !status.success() {
                tracing::debug!(command = cmd, %status, "command failed");
            }
            status.success()
        }
        Ok(Err(e)) => {
            tracing::warn!(command = cmd, error = %e, "cannot wait for command");
            false
        }
        Err(_) => {
            tracing::warn!(command = cmd, ?timeout, "command timed out; killed");
            if let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill(2) on the group this function created (the
                // child is its leader and has not been reaped: no reuse).
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            false
        }
    }
}

/// One queued notification.
#[derive(Debug, Clone)]
struct Note {
    state: State,
    priority: u8,
}

/// Queues notify hooks for one instance and runs them in order on a background task.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: Option<mpsc::UnboundedSender<Note>>,
}

impl Notifier {
    /// Starts the runner for `instance` (VRID `vrid`); a config without hooks starts nothing.
    pub fn start(instance: &str, vrid: u8, cfg: &NotifyConfig) -> Self {
        if cfg.master.is_none() && cfg.backup.is_none() && cfg.fault.is_none() {
            return Notifier { tx: None };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Note>();
        let cfg = cfg.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            while let Some(note) = rx.recv().await {
                let cmd = match note.state {
                    State::Master => cfg.master.as_deref(),
                    State::Backup => cfg.backup.as_deref(),
                    State::Fault => cfg.fault.as_deref(),
                    State::Initialize => None,
                };
                let Some(cmd) = cmd else { continue };
                let state = note.state.as_str().to_ascii_uppercase();
                let env = [
                    ("FULCRUM_VRRP_INSTANCE", instance.clone()),
                    ("FULCRUM_VRRP_STATE", state.clone()),
                    ("FULCRUM_VRRP_VRID", vrid.to_string()),
                    ("FULCRUM_VRRP_PRIORITY", note.priority.to_string()),
                ];
                let ok = run_command(cmd, &[&state], &env, cfg.timeout).await;
                tracing::info!(instance = %instance, state = %state, ok, "notify hook ran");
            }
        });
        Notifier { tx: Some(tx) }
    }

    /// Queues the hook for `state` (if one is configured); never waits.
    pub fn notify(&self, state: State, priority: u8) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Note { state, priority });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_gets_args_env_and_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let cmd = format!(
            "printf '%s %s' \"$FULCRUM_VRRP_STATE\" \"$1\" > {}",
            out.display()
        );
        let env = [("FULCRUM_VRRP_STATE", "MASTER".to_string())];
        assert!(run_command(&cmd, &["ARG"], &env, Duration::from_secs(5)).await);
        let text = std::fs::read_to_string(&out).expect("hook wrote its file");
        assert_eq!(text, "MASTER ARG");
        assert!(!run_command("exit 3", &[], &[], Duration::from_secs(5)).await);
        let started = std::time::Instant::now();
        assert!(!run_command("sleep 5", &[], &[], Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    /// A shell command that times out is ended with everything it started.
    #[tokio::test]
    async fn a_timed_out_command_takes_its_children_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        assert!(!run_command(&cmd, &[], &[], Duration::from_secs(2)).await);
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .expect("the command wrote its child's pid")
            .trim()
            .parse()
            .expect("a pid");
        // Gone, or a zombie until init reaps it; bounded wait.
        let ended = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        while !ended() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ended(), "the command's child {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn a_script_path_gets_the_state_as_argument() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = dir.path().join("notify.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1\" > {}\n", out.display()),
        )
        .expect("script");
        let status = std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(status.success());
        let path = script.display().to_string();
        assert!(run_command(&path, &["BACKUP"], &[], Duration::from_secs(5)).await);
        assert_eq!(std::fs::read_to_string(&out).expect("written"), "BACKUP\n");
        assert!(!run_command("/nonexistent/hook", &[], &[], Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn notifier_runs_hooks_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("log");
        let cmd = format!("echo \"$1\" >> {}", out.display());
        let cfg = NotifyConfig {
            master: Some(cmd.clone()),
            backup: Some(cmd.clone()),
            fault: Some(cmd),
            timeout: Duration::from_secs(5),
        };
        let n = Notifier::start("front", 51, &cfg);
        n.notify(State::Backup, 100);
        n.notify(State::Master, 100);
        n.notify(State::Fault, 100);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().count() == 3 {
                assert_eq!(text, "BACKUP\nMASTER\nFAULT\n");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hooks did not run: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
