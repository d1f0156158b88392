//! The systemd notify protocol (`Type=notify`, `Type=notify-reload`): READY,
//! RELOADING (with MONOTONIC_USEC, as notify-reload expects), STOPPING,
//! WATCHDOG pings and MAINPID after an upgrade, through the `sd-notify`
//! crate. Without `NOTIFY_SOCKET` every call does nothing.
//!
//! After an upgrade the new process is the service's main process: it
//! announces `MAINPID=` itself (the unit needs `NotifyAccess=all`), and the
//! old one, having announced the same, sends nothing more (a late STOPPING
//! from it would stop the service).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

static SILENT: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if SILENT.load(Ordering::SeqCst) {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Serving. A process started by an upgrade also names itself the main one.
pub fn ready(upgraded: bool) {
    let pid = NotifyState::MainPid(std::process::id());
    if upgraded {
        send(&[
            pid,
            NotifyState::Ready,
            NotifyState::Status("serving (upgraded)"),
        ]);
    } else {
        send(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }
}

/// A reload starts (SIGHUP); [`reloaded`] follows whatever its outcome.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The reload is over (applied or refused: the process serves either way).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A graceful stop starts.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `pid` is the main process from now on; this one goes quiet.
pub fn hand_over(pid: u32) {
    send(&[NotifyState::MainPid(pid)]);
    SILENT.store(true, Ordering::SeqCst);
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if it is meant
/// for this process: `WATCHDOG_PID` unset or ours — or, in a process started
/// by an upgrade, the old main PID (systemd set it before the upgrade).
pub fn watchdog_period(upgraded: bool) -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    let pid_ok = match std::env::var("WATCHDOG_PID") {
        Err(_) => true,
        Ok(p) => upgraded || p.parse::<u32>().ok() == Some(std::process::id()),
    };
    pid_ok.then(|| Duration::from_micros(usec))
}

/// Ping the watchdog at half its period from the event loop (so a stuck
/// loop is noticed), until this process hands over or exits.
pub fn spawn_watchdog(period: Duration) {
    let every = (period / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if SILENT.load(Ordering::SeqCst) {
                return;
            }
            send(&[NotifyState::Watchdog]);
        }
    });
}
