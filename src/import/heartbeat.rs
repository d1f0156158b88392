//! heartbeat (ha.cf + haresources) → one `[vrrp.instances.*]`.
//!
//! heartbeat has no VRRP: the pair exchanges its own heartbeats. fulcrum replaces the
//! pair with VRRP between the two nodes: `ucast IFACE PEER` gives the interface and the
//! unicast peer, `auto_failback off` → `preempt = false`, and `IPaddr2::IP/NN/IFACE`
//! resources (or a bare `IP/NN`) in haresources become the virtual IPs. Both nodes must be
//! converted (priorities: the haresources' preferred node gets 101, set 100 on the other).

use super::emit::{q, Src, Table};
use super::report::{Loc, Outcome, Report};
use super::Input;

/// Import one heartbeat setup.
pub fn import(cf: &Input, res: &Input, rep: &mut Report, tables: &mut Vec<Table>) {
    use Outcome::*;
    let mut t = Table::new(
        "vrrp.instances.heartbeat".into(),
        Src::one(
            "heartbeat pair → VRRP (vrid 51 chosen by the import; use the same on both nodes)"
                .into(),
        ),
    );
    let mut iface = None;
    let mut peers = Vec::new();
    let mut psrc = Vec::new();
    let mut preempt = None;
    for (i, raw) in cf.text.lines().enumerate() {
        let loc = Loc {
            file: cf.label.clone(),
            line: i + 1,
        };
        let l = raw.split('#').next().unwrap_or("").trim();
        let w: Vec<&str> = l.split_whitespace().collect();
        let Some(k) = w.first() else { continue };
        let o = match *k {
            "ucast" if w.len() >= 3 => {
                iface = iface.or(w.get(1).map(|s| s.to_string()));
                peers.extend(w.get(2..).unwrap_or_default().iter().map(|p| q(p)));
                psrc.push(format!("{loc} {l}"));
                Translated
            }
            "auto_failback" => match w.get(1).copied() {
                Some("off") | Some("no") | Some("false") => {
                    preempt = Some((false, format!("{loc} {l}")));
                    Translated
                }
                Some("on") | Some("yes") | Some("true") => {
                    preempt = Some((true, format!("{loc} {l}")));
                    Translated
                }
                _ => Unsupported("auto_failback legacy: set preempt yourself".into()),
            },
            "keepalive" => match w.get(1).and_then(|s| s.parse::<u64>().ok()) {
                Some(n) if n >= 1 => {
                    t.str(
                        "advert_interval",
                        &format!("{n}s"),
                        Src::one(format!("{loc} {l}")),
                    );
                    Translated
                }
                _ => Approximated(
                    "keepalive below 1s or with units: VRRP v2 uses whole seconds; default 1s kept"
                        .into(),
                ),
            },
            "bcast" | "mcast" => {
                iface = iface.or(w.get(1).map(|s| s.to_string()));
                Approximated("fulcrum uses VRRP multicast (224.0.0.18) on this interface".into())
            }
            "deadtime" | "warntime" | "initdead" => Approximated(
                "fulcrum's failover time is VRRP's master-down interval (3 × advert + skew)".into(),
            ),
            "udpport" => NoEquivalent("VRRP is IP protocol 112, not a UDP port".into()),
            "node" => Irrelevant("node names are not needed by VRRP".into()),
            "logfile" | "logfacility" | "debugfile" | "use_logd" | "debug" => {
                Irrelevant("logging".into())
            }
            "crm" | "respawn" | "ping" | "ping_group" | "apiauth" => {
                Unsupported(format!("`{k}` is not translated"))
            }
            _ => Unsupported(format!("unknown ha.cf directive `{k}`")),
        };
        rep.add(&loc, l, o);
    }
    // haresources: `node res1 res2 …`, with `\` line continuations.
    let mut vips = Vec::new();
    let mut vip_iface: Option<String> = None;
    let mut vsrc = Vec::new();
    let mut joined: Vec<(Loc, String)> = Vec::new();
    let mut cont = false;
    for (i, raw) in res.text.lines().enumerate() {
        let l = raw.split('#').next().unwrap_or("").trim_end();
        let (body, more) = match l.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (l, false),
        };
        if cont {
            if let Some(last) = joined.last_mut() {
                last.1.push(' ');
                last.1.push_str(body.trim());
            }
        } else if !body.trim().is_empty() {
            joined.push((
                Loc {
                    file: res.label.clone(),
                    line: i + 1,
                },
                body.trim().to_string(),
            ));
        }
        cont = more;
    }
    for (loc, line) in &joined {
        let mut w = line.split_whitespace();
        let node = w.next().unwrap_or("");
        rep.add(loc, line, Translated);
        for r in w {
            let spec = r
                .strip_prefix("IPaddr2::")
                .or_else(|| r.strip_prefix("IPaddr::"));
            let bare = r
                .split('/')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv4Addr>().is_ok());
            if let Some(spec) = spec.or(if bare { Some(r) } else { None }) {
                let mut parts = spec.split('/');
                let ip = parts.next().unwrap_or("");
                let prefix = parts.next().unwrap_or("32");
                if let Some(dev) = parts.next() {
                    // The VIP's interface wins over the heartbeat link (`ucast eth1`).
                    vip_iface = vip_iface.or(Some(dev.to_string()));
                }
                vips.push(q(&format!("{ip}/{prefix}")));
                vsrc.push(format!("{loc} {r} (preferred node {node})"));
            } else {
                rep.notes.push(format!("{loc}: resource `{r}` is a service heartbeat starts; fulcrum is the load balancer itself (import its haproxy.cfg), other services need their own unit"));
            }
        }
    }
    t.str(
        "interface",
        vip_iface.or(iface).as_deref().unwrap_or("eth0"),
        Src::default(),
    );
    t.raw("vrid", "51".into(), Src::default());
    t.raw(
        "priority",
        "101".into(),
        Src::one("the preferred node; give the other node 100".into()),
    );
    t.raw("version", "2".into(), Src::default());
    t.raw("virtual_ips", format!("[{}]", vips.join(", ")), Src(vsrc));
    if let Some((p, s)) = preempt {
        t.raw("preempt", p.to_string(), Src::one(s));
    }
    if !peers.is_empty() {
        t.raw(
            "unicast_peers",
            format!("[{}]", peers.join(", ")),
            Src(psrc),
        );
    }
    tables.push(t);
}
