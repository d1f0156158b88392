//! VRRP families of `/metrics`, encoded by `prometheus-client` through the
//! admin collector ([`crate::admin::metrics`]), which calls [`encode`] after
//! its own families. Instances in name order, so two scrapes of an idle node
//! match. Labels: `instance` and `vrid` (one per configured instance), `state`
//! (4 values) and `reason` (the fixed set of drop reasons).

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::machine::State;
use super::task::InstanceStatus;
use crate::admin::metrics::{counter, gauge, Labels, Val};

/// Every state, for the one-hot `fulcrum_vrrp_state` gauge.
const STATES: [State; 4] = [
    State::Initialize,
    State::Backup,
    State::Master,
    State::Fault,
];

/// Encodes the VRRP families for `instances`; nothing when there are none.
pub fn encode(e: &mut DescriptorEncoder, instances: &[InstanceStatus]) -> fmt::Result {
    let mut list: Vec<&InstanceStatus> = instances.iter().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let id = |s: &InstanceStatus| -> Labels {
        vec![("instance", s.name.clone()), ("vrid", s.vrid.to_string())]
    };
    let per = |get: &dyn Fn(&InstanceStatus) -> u64| -> Vec<(Labels, Val)> {
        list.iter().map(|s| (id(s), Val::U(get(s)))).collect()
    };
    gauge(
        e,
        "fulcrum_vrrp_state",
        "VRRP state of the instance (1 for the current state).",
        list.iter()
            .flat_map(|s| {
                STATES.iter().map(move |st| {
                    let mut l = id(s);
                    l.push(("state", st.as_str().to_string()));
                    (l, Val::U(u64::from(s.state == *st)))
                })
            })
            .collect(),
    )?;
    gauge(
        e,
        "fulcrum_vrrp_priority",
        "Effective priority after tracking.",
        per(&|s| u64::from(s.priority)),
    )?;
    gauge(
        e,
        "fulcrum_vrrp_vips_held",
        "1 while the virtual IPs are on the interface.",
        per(&|s| u64::from(s.vips_held)),
    )?;
    counter(
        e,
        "fulcrum_vrrp_adverts_received_total",
        "Valid adverts for the instance's VRID received.",
        per(&|s| s.rx),
    )?;
    counter(
        e,
        "fulcrum_vrrp_adverts_sent_total",
        "Adverts sent (one per destination).",
        per(&|s| s.tx),
    )?;
    counter(
        e,
        "fulcrum_vrrp_became_master_total",
        "Times the instance became master.",
        per(&|s| s.became_master),
    )?;
    counter(
        e,
        "fulcrum_vrrp_dropped_total",
        "Received VRRP packets dropped, by reason.",
        list.iter()
            .flat_map(|s| {
                s.invalid.iter().map(move |(reason, n)| {
                    let mut l = id(s);
                    l.push(("reason", reason.clone()));
                    (l, Val::U(*n))
                })
            })
            .collect(),
    )
}

/// The VRRP families alone in the text format 0.0.4 (empty without instances).
pub fn render(instances: &[InstanceStatus]) -> String {
    #[derive(Debug)]
    struct One(Vec<InstanceStatus>);
    impl prometheus_client::collector::Collector for One {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            encode(&mut e, &self.0)
        }
    }
    let mut r = prometheus_client::registry::Registry::default();
    r.register_collector(Box::new(One(instances.to_vec())));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode_registry(&mut out, &r).is_err() {
        return String::new();
    }
    crate::admin::metrics::to_text_004(&out)
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
