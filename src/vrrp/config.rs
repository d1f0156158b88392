//! `[vrrp.instances.NAME]`: the raw TOML layer, its validation, and the typed result.
//!
//! ```toml
//! [vrrp.instances.front]
//! interface = "eth0"
//! vrid = 51
//! priority = 101
//! version = 3                       # 2 (keepalived's default) or 3
//! advert_interval = "100ms"         # v2: whole seconds; v3: 10ms..40.95s in steps of 10ms
//! virtual_ips = ["192.168.50.100/24"]
//! preempt = true
//! preempt_delay = "0s"
//! auth_pass = "secret"              # v2 only, at most 8 bytes
//! unicast_peers = ["10.0.0.2"]      # instead of multicast 224.0.0.18
//! unicast_src = "10.0.0.1"
//! garp_master_delay = "5s"
//! garp_master_repeat = 5
//! track = { frontends = true, weight = -50, interfaces = ["eth1"], script = "cmd", script_interval = "2s" }
//! notify = { master = "cmd", backup = "cmd", fault = "cmd", timeout = "5s" }
//! # hooks get the new state (MASTER, BACKUP, FAULT) as $1 and in FULCRUM_VRRP_STATE,
//! # with FULCRUM_VRRP_INSTANCE, FULCRUM_VRRP_VRID and FULCRUM_VRRP_PRIORITY
//! ```
//!
//! The raw TOML layer and its validation are in `config_validate.rs`: every problem is
//! collected with its position and a hint, like the rest of the configuration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::machine::Params;
use super::packet::{Advert, AuthExpect, DecodeExpect};

#[path = "config_validate.rs"]
mod validate;

pub(crate) use validate::{validate, RawVrrp};

/// Defaults, keepalived's where keepalived has one.
pub mod defaults {
    use std::time::Duration;
    /// keepalived's default VRRP version.
    pub const VERSION: u8 = 2;
    /// keepalived's `advert_int 1`.
    pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);
    /// keepalived's `vrrp_garp_master_delay 5`.
    pub const GARP_MASTER_DELAY: Duration = Duration::from_secs(5);
    /// keepalived's `vrrp_garp_master_repeat 5`.
    pub const GARP_MASTER_REPEAT: u32 = 5;
    /// How often a tracking script runs.
    pub const SCRIPT_INTERVAL: Duration = Duration::from_secs(2);
    /// How long a notify or tracking script may run before it is killed.
    pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);
}

/// All VRRP instances of this node (none: VRRP is off).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpConfig {
    /// Instances by name, in name order.
    pub instances: BTreeMap<String, InstanceConfig>,
}

/// One virtual address with the prefix length it is added with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtualIp {
    /// The floating address.
    pub address: Ipv4Addr,
    /// Prefix length used when adding it to the interface (the `/24` of the config).
    pub prefix_len: u8,
}

impl std::fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// What a failing tracked condition does to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackWeight {
    /// The instance goes to FAULT (keepalived's behaviour without a weight).
    Fault,
    /// The effective priority changes by this much (usually negative) while it fails.
    Adjust(i16),
}

/// Conditions the instance tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// Fails when a frontend's backend has no usable server.
    pub frontends: bool,
    /// Applied once when any tracked condition fails.
    pub weight: TrackWeight,
    /// Fails when one of these interfaces is down.
    pub interfaces: Vec<String>,
    /// Shell command; fails when it exits non-zero or times out.
    pub script: Option<String>,
    /// How often the script runs.
    pub script_interval: Duration,
    /// How long one script run may take.
    pub script_timeout: Duration,
}

impl TrackConfig {
    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        !self.frontends && self.interfaces.is_empty() && self.script.is_none()
    }
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            frontends: false,
            weight: TrackWeight::Fault,
            interfaces: Vec::new(),
            script: None,
            script_interval: defaults::SCRIPT_INTERVAL,
            script_timeout: defaults::SCRIPT_TIMEOUT,
        }
    }
}

/// Commands run on state changes (keepalived `notify_master`/`notify_backup`/`notify_fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Run on becoming master.
    pub master: Option<String>,
    /// Run on becoming backup.
    pub backup: Option<String>,
    /// Run on entering fault.
    pub fault: Option<String>,
    /// A hook still running after this is killed.
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            master: None,
            backup: None,
            fault: None,
            timeout: defaults::SCRIPT_TIMEOUT,
        }
    }
}

/// One validated `[vrrp.instances.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The table name, for logs and the admin API.
    pub name: String,
    /// Interface the adverts go out on and the virtual IPs are added to.
    pub interface: String,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// Advert interval in centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    /// Virtual addresses, in config order.
    pub virtual_ips: Vec<VirtualIp>,
    /// Whether a higher-priority backup takes over from a live master.
    pub preempt: bool,
    /// How long a backup that could preempt waits first.
    pub preempt_delay: Duration,
    /// v2 simple password, zero padded (`auth_type PASS`).
    pub auth_pass: Option<[u8; 8]>,
    /// Unicast peers; empty means multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Source address for adverts (default: the interface's primary IPv4 address).
    pub unicast_src: Option<Ipv4Addr>,
    /// Delay before the second burst of gratuitous ARPs (0 = no second burst).
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs per burst and address.
    pub garp_master_repeat: u32,
    /// Tracked conditions.
    pub track: TrackConfig,
    /// State-change hooks.
    pub notify: NotifyConfig,
}

impl InstanceConfig {
    /// Our advert interval.
    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.advert_interval_cs) * 10)
    }

    /// State-machine parameters, with `primary_ip` as our advert source.
    pub fn params(&self, primary_ip: Ipv4Addr) -> Params {
        Params {
            version: self.version,
            vrid: self.vrid,
            priority: self.priority,
            advert_interval_cs: self.advert_interval_cs,
            primary_ip,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            garp_master_delay: self.garp_master_delay,
            garp_master_repeat: self.garp_master_repeat,
        }
    }

    /// What incoming adverts must match to count as ours.
    pub fn decode_expect(&self) -> DecodeExpect {
        DecodeExpect {
            version: Some(self.version),
            vrid: Some(self.vrid),
            auth: match self.auth_pass {
                Some(pw) => AuthExpect::Password(pw),
                None => AuthExpect::NoAuth,
            },
            v2_interval_cs: (self.version == 2).then_some(self.advert_interval_cs),
        }
    }

    /// The advert we send with `priority`.
    pub fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.version,
            vrid: self.vrid,
            priority,
            advert_interval_cs: self.advert_interval_cs,
            addresses: self.virtual_ips.iter().map(|v| v.address).collect(),
            auth: if self.version == 2 {
                self.auth_pass
            } else {
                None
            },
        }
    }
}

/// The advert interval in centiseconds if `version` can carry it, else a hint.
pub fn interval_cs(version: u8, interval: Duration) -> Result<u16, &'static str> {
    let ms = interval.as_millis();
    if version == 2 {
        if !ms.is_multiple_of(1000) || !(1000..=255_000).contains(&ms) {
            return Err("VRRPv2 carries whole seconds: use \"1s\" to \"255s\", or set version = 3 for sub-second adverts");
        }
    } else if !ms.is_multiple_of(10) || !(10..=40_950).contains(&ms) {
        return Err("VRRPv3 carries centiseconds: use \"10ms\" to \"40.95s\" in steps of 10ms");
    }
    u16::try_from(ms / 10).map_err(|_| "interval too long")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
