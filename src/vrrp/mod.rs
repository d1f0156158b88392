//! Built-in VRRP, wire-compatible with keepalived: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798)
//! over IPv4.
//!
//! The module is split so the protocol can be tested without a network:
//! - [`packet`] encodes and decodes advertisements; every malformed input becomes a
//!   [`DropReason`] (a log message and a counter label), never a panic.
//! - [`machine`] is the sans-IO state machine: it takes `(now, Event)` and returns
//!   [`Action`]s (send an advert, add or remove the virtual IPs, send gratuitous ARPs).
//!
//! The I/O around them only executes actions:
//! - [`config`]: `[vrrp.instances.NAME]`, validated with file:line:col errors.
//! - [`net`]: the raw IPv4 protocol-112 socket; [`vip`]: interface facts and virtual IPs
//!   over rtnetlink; [`garp`]: gratuitous ARP frames on an `AF_PACKET` socket.
//! - [`hooks`]: notify hooks and tracking scripts; [`track`]: health → priority or fault.
//! - [`task`]: one tokio task per instance, including the graceful hand-over.
//! - [`metrics`]: the instances' status as Prometheus families.
//!
//! [`Vrrp`] starts every configured instance and stops them together.

#![warn(missing_docs)]

pub mod config;
pub mod garp;
pub mod hooks;
pub mod machine;
pub mod metrics;
pub mod net;
pub mod packet;
pub mod task;
pub mod track;
pub mod vip;

pub use machine::{Action, Event, Instance, Params, State, Status};
pub use packet::{
    decode_ip_packet, decode_vrrp, encode, encode_ip_packet, Advert, AuthExpect, DecodeExpect,
    DropReason, EncodeError, Received,
};

pub use task::{InstanceStatus, SharedStatus};
pub use track::{frontends_probe, HealthProbe};

/// Every VRRP instance of this node, by name, with the settings it runs with.
#[derive(Debug, Default)]
pub struct Vrrp {
    instances: std::collections::BTreeMap<String, (config::InstanceConfig, task::InstanceHandle)>,
    /// The status views handed out by [`Vrrp::status`], kept current by [`Vrrp::reconcile`].
    shared: std::sync::Arc<std::sync::Mutex<Vec<SharedStatus>>>,
}

/// A cloneable view of all instances' status, for the admin API. It follows
/// the instances a reload starts or stops.
#[derive(Debug, Clone, Default)]
pub struct VrrpStatus {
    instances: std::sync::Arc<std::sync::Mutex<Vec<SharedStatus>>>,
}

impl VrrpStatus {
    /// Current status of every instance, in name order.
    pub fn get(&self) -> Vec<InstanceStatus> {
        let list = self.instances.lock().map(|l| l.clone()).unwrap_or_default();
        list.iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .collect()
    }

    /// The VRRP families for Prometheus `/metrics` (empty text without instances).
    pub fn prometheus(&self) -> String {
        metrics::render(&self.get())
    }

    /// [`VrrpStatus::get`] as JSON objects, for the admin API.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.get()
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect()
    }
}

impl Vrrp {
    /// Starts every instance of `cfg`; `probe` answers "can this node serve?" for
    /// `track.frontends`. On error, instances already started are stopped again.
    pub async fn start(
        cfg: &config::VrrpConfig,
        probe: Option<HealthProbe>,
    ) -> std::io::Result<Vrrp> {
        let mut started = Vrrp::default();
        for ic in cfg.instances.values() {
            match task::start(ic.clone(), probe.clone()).await {
                Ok(h) => {
                    started.instances.insert(ic.name.clone(), (ic.clone(), h));
                }
                Err(e) => {
                    started.shutdown().await;
                    return Err(e);
                }
            }
        }
        started.publish();
        Ok(started)
    }

    fn publish(&self) {
        let list = self.instances.values().map(|(_, h)| h.status()).collect();
        if let Ok(mut g) = self.shared.lock() {
            *g = list;
        }
    }

    /// Re-apply `[vrrp]` after a reload: an instance whose settings did not
    /// change keeps running untouched (no flap, no advert missed); a changed
    /// one with the same identity (interface, VRID, version, advert source:
    /// [`task::updatable`]) is updated in place — it keeps its state, a
    /// master stays master unless its new priority loses the election, new
    /// VIPs are added and removed ones deleted — as keepalived does on
    /// reload; one whose identity changed is stopped gracefully (a master
    /// hands its VIPs over) and started with the new settings; a removed one
    /// is stopped; a new one starts. An instance that cannot start is logged
    /// and left out; the others run on.
    pub async fn reconcile(&mut self, cfg: &config::VrrpConfig, probe: Option<HealthProbe>) {
        let mut updated = 0;
        for (name, (old, h)) in self.instances.iter_mut() {
            let Some(new) = cfg.instances.get(name) else {
                continue;
            };
            if new != old && task::updatable(old, new) && h.update(new.clone()) {
                *old = new.clone();
                updated += 1;
            }
        }
        let stale: Vec<String> = self
            .instances
            .iter()
            .filter(|(name, (old, _))| cfg.instances.get(*name) != Some(old))
            .map(|(name, _)| name.clone())
            .collect();
        let mut stopping = Vec::new();
        for name in &stale {
            if let Some((_, h)) = self.instances.remove(name) {
                let what = if cfg.instances.contains_key(name) {
                    "restarting with its new settings (interface, VRID, version or advert source changed)"
                } else {
                    "removed from the configuration"
                };
                tracing::info!(instance = %name, "vrrp: {what}");
                stopping.push(h.shutdown());
            }
        }
        futures_util::future::join_all(stopping).await;
        for (name, ic) in &cfg.instances {
            if self.instances.contains_key(name) {
                continue;
            }
            match task::start(ic.clone(), probe.clone()).await {
                Ok(h) => {
                    tracing::info!(instance = %name, "vrrp: instance started");
                    self.instances.insert(name.clone(), (ic.clone(), h));
                }
                Err(e) => tracing::error!(instance = %name, "vrrp: cannot start: {e}"),
            }
        }
        tracing::info!(
            running = self.instances.len(),
            updated_in_place = updated,
            restarted_or_removed = stale.len(),
            "vrrp re-applied"
        );
        self.publish();
    }

    /// True when no instance runs.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// A cloneable status view.
    pub fn status(&self) -> VrrpStatus {
        VrrpStatus {
            instances: self.shared.clone(),
        }
    }

    /// Graceful stop of every instance at once: masters hand their VIPs over first.
    pub async fn shutdown(self) {
        let all = self.instances.into_values().map(|(_, h)| h.shutdown());
        futures_util::future::join_all(all).await;
    }
}
