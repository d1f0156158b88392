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

/// Every VRRP instance of this node.
#[derive(Debug, Default)]
pub struct Vrrp {
    instances: Vec<task::InstanceHandle>,
}

/// A cloneable view of all instances' status, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct VrrpStatus {
    instances: Vec<SharedStatus>,
}

impl VrrpStatus {
    /// Current status of every instance, in config order.
    pub fn get(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
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
                Ok(h) => started.instances.push(h),
                Err(e) => {
                    started.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// True when no instance runs.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// A cloneable status view.
    pub fn status(&self) -> VrrpStatus {
        VrrpStatus {
            instances: self.instances.iter().map(|h| h.status()).collect(),
        }
    }

    /// Graceful stop of every instance at once: masters hand their VIPs over first.
    pub async fn shutdown(self) {
        let all = self.instances.into_iter().map(|h| h.shutdown());
        futures_util::future::join_all(all).await;
    }
}
