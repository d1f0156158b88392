//! The raw `[vrrp]` TOML layer and its validation into [`super::VrrpConfig`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    defaults, interval_cs, InstanceConfig, NotifyConfig, TrackConfig, TrackWeight, VirtualIp,
    VrrpConfig,
};
use crate::config::duration::parse_duration;
use crate::config::error::{ConfigError, Locator};

type S<T> = Spanned<T>;

/// Raw `[vrrp]` table. Not spanned itself: `[vrrp.instances.x]` defines it implicitly,
/// and toml has no span for implicit tables.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrp {
    #[serde(default)]
    instances: BTreeMap<String, S<RawInstance>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    interface: S<String>,
    vrid: S<i64>,
    priority: S<i64>,
    version: Option<S<i64>>,
    advert_interval: Option<S<String>>,
    virtual_ips: S<Vec<S<String>>>,
    preempt: Option<bool>,
    preempt_delay: Option<S<String>>,
    auth_pass: Option<S<String>>,
    #[serde(default)]
    unicast_peers: Vec<S<String>>,
    unicast_src: Option<S<String>>,
    garp_master_delay: Option<S<String>>,
    garp_master_repeat: Option<S<i64>>,
    track: Option<S<RawTrack>>,
    notify: Option<S<RawNotify>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    frontends: Option<bool>,
    /// An integer (-253..=253) or "fault".
    weight: Option<S<toml::Value>>,
    #[serde(default)]
    interfaces: Vec<S<String>>,
    script: Option<S<String>>,
    script_interval: Option<S<String>>,
    script_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    master: Option<S<String>>,
    backup: Option<S<String>>,
    fault: Option<S<String>>,
    timeout: Option<S<String>>,
}

/// Collects errors against one source text.
struct Cx<'a, 'b> {
    loc: &'a Locator<'b>,
    errors: &'a mut Vec<ConfigError>,
}

impl Cx<'_, '_> {
    fn err<T>(&mut self, at: &S<T>, msg: impl Into<String>, hint: Option<&str>) {
        let e = self
            .loc
            .error(at.span().start, msg, hint.map(str::to_string));
        self.errors.push(e);
    }

    /// A duration; zero allowed when `allow_zero`.
    fn duration(
        &mut self,
        v: &Option<S<String>>,
        key: &str,
        default: Duration,
        allow_zero: bool,
    ) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.err(v, format!("`{key}` must be greater than zero"), None);
                default
            }
            Ok(d) => d,
            Err(why) => {
                self.err(
                    v,
                    format!("bad duration for `{key}`: {why}"),
                    Some("write a number with a unit: \"100ms\", \"1s\""),
                );
                default
            }
        }
    }

    fn int(&mut self, v: &S<i64>, key: &str, min: i64, max: i64, hint: &str) -> Option<i64> {
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(v, format!("`{key}` = {n} is out of range"), Some(hint));
            return None;
        }
        Some(n)
    }

    fn ipv4(&mut self, v: &S<String>, key: &str) -> Option<Ipv4Addr> {
        match v.get_ref().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v,
                    format!("`{key}`: `{}` is not an IPv4 address", v.get_ref()),
                    Some("write a dotted IPv4 address, e.g. \"10.0.0.2\""),
                );
                None
            }
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Validates the `[vrrp]` table, pushing every problem to `errors`.
pub(crate) fn validate(
    loc: &Locator<'_>,
    raw: Option<&RawVrrp>,
    errors: &mut Vec<ConfigError>,
) -> VrrpConfig {
    let mut cx = Cx { loc, errors };
    let mut out = VrrpConfig::default();
    let Some(raw) = raw else { return out };
    // (interface, vrid) and VIPs must be unique across this node's instances.
    let mut routers: HashMap<(String, u8), String> = HashMap::new();
    let mut vips: HashMap<Ipv4Addr, String> = HashMap::new();
    for (name, inst) in &raw.instances {
        if !valid_name(name) {
            cx.err(
                inst,
                format!("bad VRRP instance name `{name}`"),
                Some("names use letters, digits, '-', '_' and '.' (at most 64)"),
            );
        }
        let Some(ic) = build_instance(&mut cx, name, inst) else {
            continue;
        };
        let r = inst.get_ref();
        let key = (ic.interface.clone(), ic.vrid);
        if let Some(other) = routers.get(&key) {
            cx.err(
                &r.vrid,
                format!(
                    "VRID {} on `{}` is already used by instance `{other}`",
                    ic.vrid, ic.interface
                ),
                Some("each virtual router on a link needs its own vrid"),
            );
        } else {
            routers.insert(key, name.clone());
        }
        for (v, spanned) in ic.virtual_ips.iter().zip(r.virtual_ips.get_ref()) {
            if let Some(other) = vips.get(&v.address) {
                cx.err(
                    spanned,
                    format!(
                        "virtual IP {} is already managed by instance `{other}`",
                        v.address
                    ),
                    Some("give each instance its own virtual IPs"),
                );
            } else {
                vips.insert(v.address, name.clone());
            }
        }
        out.instances.insert(name.clone(), ic);
    }
    out
}

fn parse_vip(cx: &mut Cx<'_, '_>, v: &S<String>) -> Option<VirtualIp> {
    const HINT: &str = "write the address with its prefix length, e.g. \"192.168.50.100/24\"";
    let text = v.get_ref();
    let Some((addr, len)) = text.split_once('/') else {
        cx.err(
            v,
            format!("virtual IP `{text}` has no prefix length"),
            Some(HINT),
        );
        return None;
    };
    let address = match addr.parse::<Ipv4Addr>() {
        Ok(a) => a,
        Err(_) => {
            cx.err(v, format!("`{addr}` is not an IPv4 address"), Some(HINT));
            return None;
        }
    };
    let prefix_len = match len.parse::<u8>() {
        Ok(n) if n <= 32 => n,
        _ => {
            cx.err(
                v,
                format!("bad prefix length `/{len}`"),
                Some("use /0 to /32"),
            );
            return None;
        }
    };
    if address.is_unspecified()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_loopback()
    {
        cx.err(
            v,
            format!("{address} cannot be a virtual IP"),
            Some("use a unicast address of the interface's network"),
        );
        return None;
    }
    Some(VirtualIp {
        address,
        prefix_len,
    })
}

fn build_instance(
    cx: &mut Cx<'_, '_>,
    name: &str,
    inst: &S<RawInstance>,
) -> Option<InstanceConfig> {
    let r = inst.get_ref();
    let before = cx.errors.len();
    let interface = r.interface.get_ref().clone();
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        cx.err(
            &r.interface,
            format!("bad interface name `{interface}`"),
            Some("use the kernel's name of the interface, e.g. \"eth0\" (at most 15 bytes)"),
        );
    }
    let vrid = cx.int(
        &r.vrid,
        "vrid",
        1,
        255,
        "use a VRID from 1 to 255; every node of the group uses the same one",
    );
    let priority = cx.int(
        &r.priority,
        "priority",
        1,
        255,
        "use 1..254 (higher wins; the backup e.g. 100, the master 101); 255 only on the address owner",
    );
    let version = match &r.version {
        None => Some(i64::from(defaults::VERSION)),
        Some(v) => {
            let n = *v.get_ref();
            if n == 2 || n == 3 {
                Some(n)
            } else {
                cx.err(
                    v,
                    format!("VRRP version {n} is not supported"),
                    Some("use 2 (RFC 3768, keepalived's default) or 3 (RFC 5798)"),
                );
                None
            }
        }
    };
    let version = u8::try_from(version.unwrap_or(2)).unwrap_or(2);
    let interval = cx.duration(
        &r.advert_interval,
        "advert_interval",
        defaults::ADVERT_INTERVAL,
        false,
    );
    let advert_interval_cs = match interval_cs(version, interval) {
        Ok(cs) => cs,
        Err(hint) => {
            if let Some(v) = &r.advert_interval {
                cx.err(
                    v,
                    format!("advert_interval {interval:?} is not valid for VRRPv{version}"),
                    Some(hint),
                );
            }
            100
        }
    };
    let mut virtual_ips = Vec::new();
    if r.virtual_ips.get_ref().is_empty() {
        cx.err(
            &r.virtual_ips,
            format!("instance `{name}` has no virtual IPs"),
            Some("add one: virtual_ips = [\"192.168.50.100/24\"]"),
        );
    }
    if r.virtual_ips.get_ref().len() > 255 {
        cx.err(
            &r.virtual_ips,
            "more than 255 virtual IPs",
            Some("an advert carries at most 255"),
        );
    }
    for v in r.virtual_ips.get_ref() {
        if let Some(vip) = parse_vip(cx, v) {
            if virtual_ips
                .iter()
                .any(|o: &VirtualIp| o.address == vip.address)
            {
                cx.err(
                    v,
                    format!("virtual IP {} is listed twice", vip.address),
                    None,
                );
            } else {
                virtual_ips.push(vip);
            }
        }
    }
    let preempt = r.preempt.unwrap_or(true);
    let preempt_delay = cx.duration(&r.preempt_delay, "preempt_delay", Duration::ZERO, true);
    if preempt_delay > Duration::from_secs(1000) {
        if let Some(v) = &r.preempt_delay {
            cx.err(
                v,
                "preempt_delay is longer than 1000s",
                Some("keepalived's limit is 1000s too"),
            );
        }
    }
    let auth_pass = match &r.auth_pass {
        None => None,
        Some(p) => {
            let bytes = p.get_ref().as_bytes();
            if version != 2 {
                cx.err(
                    p,
                    "auth_pass needs VRRP version 2",
                    Some("VRRPv3 has no authentication; remove auth_pass or set version = 2"),
                );
                None
            } else if bytes.is_empty() || bytes.len() > 8 {
                cx.err(
                    p,
                    format!("auth_pass is {} bytes long", bytes.len()),
                    Some(
                        "use 1 to 8 bytes (keepalived truncates longer ones; fulcrum refuses them)",
                    ),
                );
                None
            } else {
                let mut pw = [0u8; 8];
                for (d, s) in pw.iter_mut().zip(bytes) {
                    *d = *s;
                }
                Some(pw)
            }
        }
    };
    let mut unicast_peers = Vec::new();
    for p in &r.unicast_peers {
        if let Some(a) = cx.ipv4(p, "unicast_peers") {
            if unicast_peers.contains(&a) {
                cx.err(p, format!("unicast peer {a} is listed twice"), None);
            } else if a.is_multicast() || a.is_unspecified() || a.is_broadcast() {
                cx.err(
                    p,
                    format!("unicast peer {a} is not a unicast address"),
                    None,
                );
            } else {
                unicast_peers.push(a);
            }
        }
    }
    let unicast_src = r.unicast_src.as_ref().and_then(|s| {
        let a = cx.ipv4(s, "unicast_src")?;
        if unicast_peers.contains(&a) {
            cx.err(
                s,
                format!("unicast_src {a} is also listed as a peer"),
                Some("list only the other nodes in unicast_peers"),
            );
        }
        Some(a)
    });
    let garp_master_delay = cx.duration(
        &r.garp_master_delay,
        "garp_master_delay",
        defaults::GARP_MASTER_DELAY,
        true,
    );
    let garp_master_repeat = match &r.garp_master_repeat {
        None => defaults::GARP_MASTER_REPEAT,
        Some(v) => cx
            .int(
                v,
                "garp_master_repeat",
                0,
                100,
                "use 0 (no gratuitous ARP) to 100",
            )
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults::GARP_MASTER_REPEAT),
    };
    let track = r
        .track
        .as_ref()
        .map(|t| build_track(cx, t))
        .unwrap_or_default();
    let notify = r
        .notify
        .as_ref()
        .map(|n| build_notify(cx, n))
        .unwrap_or_default();
    if cx.errors.len() != before {
        return None;
    }
    Some(InstanceConfig {
        name: name.to_string(),
        interface,
        vrid: u8::try_from(vrid?).ok()?,
        priority: u8::try_from(priority?).ok()?,
        version,
        advert_interval_cs,
        virtual_ips,
        preempt,
        preempt_delay,
        auth_pass,
        unicast_peers,
        unicast_src,
        garp_master_delay,
        garp_master_repeat,
        track,
        notify,
    })
}

fn build_track(cx: &mut Cx<'_, '_>, t: &S<RawTrack>) -> TrackConfig {
    let r = t.get_ref();
    let weight = match &r.weight {
        None => TrackWeight::Fault,
        Some(w) => match w.get_ref() {
            toml::Value::String(s) if s == "fault" => TrackWeight::Fault,
            toml::Value::Integer(n) if (-253..=253).contains(n) && *n != 0 => {
                TrackWeight::Adjust(i16::try_from(*n).unwrap_or(0))
            }
            _ => {
                cx.err(
                    w,
                    "bad track weight",
                    Some("use a priority change from -253 to 253 (not 0), e.g. -50, or \"fault\""),
                );
                TrackWeight::Fault
            }
        },
    };
    let mut interfaces = Vec::new();
    for i in &r.interfaces {
        let n = i.get_ref();
        if n.is_empty() || n.len() > 15 {
            cx.err(
                i,
                format!("bad interface name `{n}`"),
                Some("at most 15 bytes, e.g. \"eth1\""),
            );
        } else {
            interfaces.push(n.clone());
        }
    }
    let script = r.script.as_ref().and_then(|s| {
        if s.get_ref().trim().is_empty() {
            cx.err(
                s,
                "empty track script",
                Some("give a shell command, e.g. \"pidof nginx\""),
            );
            None
        } else {
            Some(s.get_ref().clone())
        }
    });
    let tc = TrackConfig {
        frontends: r.frontends.unwrap_or(false),
        weight,
        interfaces,
        script,
        script_interval: cx.duration(
            &r.script_interval,
            "script_interval",
            defaults::SCRIPT_INTERVAL,
            false,
        ),
        script_timeout: cx.duration(
            &r.script_timeout,
            "script_timeout",
            defaults::SCRIPT_TIMEOUT,
            false,
        ),
    };
    if tc.is_empty() {
        cx.err(
            t,
            "track table tracks nothing",
            Some("set frontends = true, interfaces = [..] or script = \"..\", or remove `track`"),
        );
    }
    tc
}

fn build_notify(cx: &mut Cx<'_, '_>, n: &S<RawNotify>) -> NotifyConfig {
    let r = n.get_ref();
    let mut cmd = |v: &Option<S<String>>| {
        v.as_ref().and_then(|c| {
            if c.get_ref().trim().is_empty() {
                cx.err(
                    c,
                    "empty notify command",
                    Some("give a shell command or remove the key"),
                );
                None
            } else {
                Some(c.get_ref().clone())
            }
        })
    };
    let (master, backup, fault) = (cmd(&r.master), cmd(&r.backup), cmd(&r.fault));
    NotifyConfig {
        master,
        backup,
        fault,
        timeout: cx.duration(&r.timeout, "timeout", defaults::SCRIPT_TIMEOUT, false),
    }
}
