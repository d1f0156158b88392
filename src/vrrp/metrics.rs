//! VRRP families in the Prometheus text exposition format (0.0.4), for `/metrics` to append
//! after its own families. Instances in name order, so two scrapes of an idle node match.

use std::fmt::Write;

use super::machine::State;
use super::task::InstanceStatus;

/// Every state, for the one-hot `fulcrum_vrrp_state` gauge.
const STATES: [State; 4] = [
    State::Initialize,
    State::Backup,
    State::Master,
    State::Fault,
];

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the VRRP families for `instances`; empty text when there are none.
pub fn render(instances: &[InstanceStatus]) -> String {
    let mut list: Vec<&InstanceStatus> = instances.iter().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    if list.is_empty() {
        return out;
    }
    let id = |s: &InstanceStatus| format!("instance=\"{}\",vrid=\"{}\"", esc(&s.name), s.vrid);
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    family(
        "fulcrum_vrrp_state",
        "gauge",
        "VRRP state of the instance (1 for the current state).",
        list.iter()
            .flat_map(|s| {
                STATES.iter().map(move |st| {
                    (
                        format!("{},state=\"{}\"", id(s), st.as_str()),
                        u64::from(s.state == *st),
                    )
                })
            })
            .collect(),
    );
    family(
        "fulcrum_vrrp_priority",
        "gauge",
        "Effective priority after tracking.",
        list.iter()
            .map(|s| (id(s), u64::from(s.priority)))
            .collect(),
    );
    family(
        "fulcrum_vrrp_vips_held",
        "gauge",
        "1 while the virtual IPs are on the interface.",
        list.iter()
            .map(|s| (id(s), u64::from(s.vips_held)))
            .collect(),
    );
    family(
        "fulcrum_vrrp_adverts_received_total",
        "counter",
        "Valid adverts for the instance's VRID received.",
        list.iter().map(|s| (id(s), s.rx)).collect(),
    );
    family(
        "fulcrum_vrrp_adverts_sent_total",
        "counter",
        "Adverts sent (one per destination).",
        list.iter().map(|s| (id(s), s.tx)).collect(),
    );
    family(
        "fulcrum_vrrp_became_master_total",
        "counter",
        "Times the instance became master.",
        list.iter().map(|s| (id(s), s.became_master)).collect(),
    );
    family(
        "fulcrum_vrrp_dropped_total",
        "counter",
        "Received VRRP packets dropped, by reason.",
        list.iter()
            .flat_map(|s| {
                s.invalid
                    .iter()
                    .map(move |(reason, n)| (format!("{},reason=\"{}\"", id(s), esc(reason)), *n))
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn status(name: &str, state: State) -> InstanceStatus {
        InstanceStatus {
            name: name.to_string(),
            interface: "eth0".into(),
            vrid: 51,
            version: 3,
            state,
            master: Some(Ipv4Addr::new(10, 0, 0, 1)),
            primary_ip: Ipv4Addr::new(10, 0, 0, 1),
            configured_priority: 101,
            priority: 101,
            virtual_ips: vec!["10.0.0.100/24".into()],
            vips_held: state == State::Master,
            rx: 3,
            tx: 7,
            invalid: BTreeMap::from([("bad_ttl".to_string(), 2)]),
            became_master: 1,
            tracking: Vec::new(),
        }
    }

    #[test]
    fn families_and_samples() {
        assert_eq!(render(&[]), "");
        let text = render(&[status("z", State::Backup), status("a\"b", State::Master)]);
        assert!(text.contains("# TYPE fulcrum_vrrp_state gauge\n"));
        assert!(text
            .contains("fulcrum_vrrp_state{instance=\"a\\\"b\",vrid=\"51\",state=\"master\"} 1\n"));
        assert!(
            text.contains("fulcrum_vrrp_state{instance=\"z\",vrid=\"51\",state=\"master\"} 0\n")
        );
        assert!(text.contains("fulcrum_vrrp_vips_held{instance=\"z\",vrid=\"51\"} 0\n"));
        assert!(text.contains("fulcrum_vrrp_adverts_sent_total{instance=\"z\",vrid=\"51\"} 7\n"));
        assert!(text.contains(
            "fulcrum_vrrp_dropped_total{instance=\"z\",vrid=\"51\",reason=\"bad_ttl\"} 2\n"
        ));
        // Sorted by instance name: "a\"b" before "z".
        let a = text.find("instance=\"a\\\"b\"").unwrap_or(usize::MAX);
        let z = text.find("instance=\"z\"").unwrap_or(0);
        assert!(a < z);
        assert_eq!(text.matches("# HELP fulcrum_vrrp_state ").count(), 1);
    }
}
