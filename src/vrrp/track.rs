//! Tracking: turns fulcrum's own health, interface state and a script's exit status into
//! the instance's effective priority or a fault, so the VIP leaves a node that cannot serve.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{TrackConfig, TrackWeight};
use super::hooks::run_command;
use super::vip::Netlink;
use crate::runtime::Runtime;

/// How often frontends and interfaces are looked at (both are cheap reads).
const POLL: Duration = Duration::from_millis(200);

/// Answers "can this node serve?"; called from the tracking task every 200 ms.
pub type HealthProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// A probe over a running [`Runtime`]: healthy unless a frontend routes to a backend that
/// has no usable server (seed 002: "fail over the address if the load balancer is stopped").
pub fn frontends_probe(rt: Arc<Runtime>) -> HealthProbe {
    Arc::new(move || frontends_healthy(&rt))
}

/// True when every backend a frontend can send to has at least one usable server.
pub fn frontends_healthy(rt: &Runtime) -> bool {
    let snap = rt.snapshot();
    snap.frontends.values().all(|fe| {
        fe.default
            .iter()
            .chain(fe.routes.iter().map(|r| &r.backend))
            .all(|b| b.usable_count() > 0)
    })
}

/// What tracking currently asks of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The instance must be in FAULT.
    pub fault: bool,
    /// Effective priority (configured priority adjusted by the weight while failing).
    pub priority: u8,
    /// Failing conditions, for logs and the admin API.
    pub failing: Vec<String>,
}

/// Effective verdict for `configured` priority when `failing` is the list of failed checks.
pub fn verdict(configured: u8, weight: TrackWeight, failing: Vec<String>) -> Verdict {
    if failing.is_empty() {
        return Verdict {
            fault: false,
            priority: configured,
            failing,
        };
    }
    match weight {
        TrackWeight::Fault => Verdict {
            fault: true,
            priority: configured,
            failing,
        },
        TrackWeight::Adjust(w) => Verdict {
            fault: false,
            priority: u8::try_from((i16::from(configured) + w).clamp(1, 254)).unwrap_or(1),
            failing,
        },
    }
}

/// Starts tracking for one instance; the receiver sees a new [`Verdict`] whenever it changes.
/// Returns `None` when nothing is tracked.
pub fn spawn(
    instance: &str,
    configured: u8,
    cfg: &TrackConfig,
    probe: Option<HealthProbe>,
    netlink: Netlink,
) -> Option<watch::Receiver<Verdict>> {
    if cfg.is_empty() {
        return None;
    }
    let (tx, rx) = watch::channel(verdict(configured, cfg.weight, Vec::new()));
    let script_ok = Arc::new(AtomicBool::new(true));
    if let Some(script) = cfg.script.clone() {
        let ok = script_ok.clone();
        let (interval, timeout) = (cfg.script_interval, cfg.script_timeout);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !tx.is_closed() {
                tick.tick().await;
                ok.store(
                    run_command(&script, &[], &[], timeout).await,
                    Ordering::Relaxed,
                );
            }
        });
    }
    let cfg = cfg.clone();
    let instance = instance.to_string();
    if cfg.frontends && probe.is_none() {
        tracing::warn!(instance = %instance, "track.frontends is set but no frontends run here; ignored");
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !tx.is_closed() {
            tick.tick().await;
            let mut failing = Vec::new();
            if cfg.frontends && probe.as_ref().is_some_and(|p| !p()) {
                failing.push("frontends: a backend has no usable server".to_string());
            }
            for name in &cfg.interfaces {
                match netlink.link(name).await {
                    Ok(Some(l)) if l.up => {}
                    Ok(Some(_)) => failing.push(format!("interface {name} is down")),
                    Ok(None) => failing.push(format!("interface {name} does not exist")),
                    Err(e) => failing.push(format!("interface {name}: {e}")),
                }
            }
            if cfg.script.is_some() && !script_ok.load(Ordering::Relaxed) {
                failing.push("track script failed".to_string());
            }
            let next = verdict(configured, cfg.weight, failing);
            tx.send_if_modified(|cur| {
                if *cur == next {
                    return false;
                }
                tracing::info!(instance = %instance, fault = next.fault, priority = next.priority, failing = ?next.failing, "tracking changed");
                *cur = next;
                true
            });
        }
    });
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let ok = verdict(100, TrackWeight::Adjust(-50), vec![]);
        assert_eq!((ok.fault, ok.priority), (false, 100));
        let down = verdict(100, TrackWeight::Adjust(-50), vec!["x".into()]);
        assert_eq!((down.fault, down.priority), (false, 50));
        let clamped = verdict(20, TrackWeight::Adjust(-50), vec!["x".into()]);
        assert_eq!(clamped.priority, 1);
        let up = verdict(250, TrackWeight::Adjust(50), vec!["x".into()]);
        assert_eq!(up.priority, 254);
        let fault = verdict(100, TrackWeight::Fault, vec!["x".into()]);
        assert_eq!((fault.fault, fault.priority), (true, 100));
    }
}
