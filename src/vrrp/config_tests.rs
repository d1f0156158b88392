use super::*;
use crate::config::parse_str;

fn errors(text: &str) -> Vec<String> {
    match parse_str(text, "t.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn instance(text: &str) -> InstanceConfig {
    let cfg = match parse_str(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    };
    cfg.vrrp
        .instances
        .into_values()
        .next()
        .expect("one instance")
}

const MINIMAL: &str = r#"
[vrrp.instances.front]
interface = "eth0"
vrid = 51
priority = 101
virtual_ips = ["192.168.50.100/24"]
"#;

#[test]
fn minimal_instance_gets_keepalived_defaults() {
    let i = instance(MINIMAL);
    assert_eq!(i.name, "front");
    assert_eq!(i.interface, "eth0");
    assert_eq!((i.vrid, i.priority, i.version), (51, 101, 2));
    assert_eq!(i.advert_interval_cs, 100);
    assert_eq!(
        i.virtual_ips,
        vec![VirtualIp {
            address: Ipv4Addr::new(192, 168, 50, 100),
            prefix_len: 24
        }]
    );
    assert!(i.preempt);
    assert_eq!(i.preempt_delay, Duration::ZERO);
    assert_eq!(i.garp_master_delay, Duration::from_secs(5));
    assert_eq!(i.garp_master_repeat, 5);
    assert_eq!(i.auth_pass, None);
    assert!(i.unicast_peers.is_empty());
    assert!(i.track.is_empty());
    assert_eq!(i.notify, NotifyConfig::default());
}

#[test]
fn no_vrrp_table_means_no_instances() {
    let cfg = parse_str("", "t.toml").expect("empty config is valid");
    assert!(cfg.vrrp.instances.is_empty());
}

#[test]
fn design_example_parses() {
    let i = instance(
        r#"
[vrrp.instances.front]
interface = "eth0"
vrid = 51
priority = 101
version = 3
advert_interval = "100ms"
virtual_ips = ["192.168.50.100/24"]
preempt = true
"#,
    );
    assert_eq!((i.version, i.advert_interval_cs), (3, 10));
    assert_eq!(i.advert_interval(), Duration::from_millis(100));
    let p = i.params(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        (p.version, p.vrid, p.priority, p.advert_interval_cs),
        (3, 51, 101, 10)
    );
}

#[test]
fn full_instance() {
    let i = instance(
        r#"
[vrrp.instances.db]
interface = "eth1"
vrid = 7
priority = 255
version = 2
advert_interval = "2s"
virtual_ips = ["10.0.0.100/24", "10.0.0.101/32"]
preempt = false
preempt_delay = "30s"
auth_pass = "s3cret"
unicast_peers = ["10.0.0.2", "10.0.0.3"]
unicast_src = "10.0.0.1"
garp_master_delay = "0s"
garp_master_repeat = 3
track = { frontends = true, weight = -50, interfaces = ["eth2"], script = "true", script_interval = "1s" }
notify = { master = "logger m", backup = "logger b", fault = "logger f", timeout = "3s" }
"#,
    );
    assert_eq!(i.priority, 255);
    assert_eq!(i.advert_interval_cs, 200);
    assert_eq!(i.virtual_ips.len(), 2);
    assert!(!i.preempt);
    assert_eq!(i.preempt_delay, Duration::from_secs(30));
    assert_eq!(i.auth_pass, Some(*b"s3cret\0\0"));
    assert_eq!(i.unicast_peers.len(), 2);
    assert_eq!(i.unicast_src, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(i.garp_master_delay, Duration::ZERO);
    assert_eq!(i.garp_master_repeat, 3);
    assert!(i.track.frontends);
    assert_eq!(i.track.weight, TrackWeight::Adjust(-50));
    assert_eq!(i.track.interfaces, vec!["eth2".to_string()]);
    assert_eq!(i.track.script.as_deref(), Some("true"));
    assert_eq!(i.track.script_interval, Duration::from_secs(1));
    assert_eq!(i.notify.master.as_deref(), Some("logger m"));
    assert_eq!(i.notify.timeout, Duration::from_secs(3));
    let e = i.decode_expect();
    assert_eq!(e.auth, AuthExpect::Password(*b"s3cret\0\0"));
    assert_eq!(e.v2_interval_cs, Some(200));
    let a = i.advert(100);
    assert_eq!(a.addresses.len(), 2);
    assert_eq!(a.auth, Some(*b"s3cret\0\0"));
}

#[test]
fn ranges_are_checked_with_position_and_hint() {
    let errs = errors(
        r#"
[vrrp.instances.a]
interface = "eth0"
vrid = 0
priority = 300
virtual_ips = ["10.0.0.1/24"]
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("t.toml:4:8: error: `vrid` = 0 is out of range"),
        "{errs:?}"
    );
    assert!(
        errs[0].contains("hint: use a VRID from 1 to 255"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("t.toml:5:12: error: `priority` = 300"),
        "{errs:?}"
    );
}

#[test]
fn interval_bounds_depend_on_the_version() {
    let with = |version: u8, interval: &str| {
        errors(&format!(
            "[vrrp.instances.a]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nversion = {version}\nadvert_interval = \"{interval}\"\nvirtual_ips = [\"10.0.0.1/24\"]\n"
        ))
    };
    assert!(with(2, "1s").is_empty());
    assert!(with(2, "255s").is_empty());
    assert!(with(2, "100ms")[0].contains("VRRPv2 carries whole seconds"));
    assert!(with(2, "1500ms")[0].contains("VRRPv2 carries whole seconds"));
    assert!(with(2, "256s")[0].contains("VRRPv2"));
    assert!(with(3, "10ms").is_empty());
    assert!(with(3, "40.95s").is_empty());
    assert!(with(3, "5ms")[0].contains("VRRPv3 carries centiseconds"));
    assert!(with(3, "15ms")[0].contains("steps of 10ms"));
    assert!(with(3, "41s")[0].contains("VRRPv3"));
    assert!(with(4, "1s")[0].contains("version 4 is not supported"));
}

#[test]
fn interval_cs_function() {
    assert_eq!(interval_cs(2, Duration::from_secs(1)), Ok(100));
    assert_eq!(interval_cs(3, Duration::from_millis(100)), Ok(10));
    assert_eq!(interval_cs(3, Duration::from_millis(40_950)), Ok(4095));
    assert!(interval_cs(3, Duration::from_millis(40_960)).is_err());
    assert!(interval_cs(2, Duration::ZERO).is_err());
}

#[test]
fn vips_need_cidr_form() {
    let with = |vip: &str| {
        errors(&format!(
            "[vrrp.instances.a]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvirtual_ips = [\"{vip}\"]\n"
        ))
    };
    assert!(with("10.0.0.1/32").is_empty());
    assert!(with("10.0.0.1")[0].contains("has no prefix length"));
    assert!(with("10.0.0.1")[0].contains("hint: write the address with its prefix length"));
    assert!(with("10.0.0.1/33")[0].contains("bad prefix length"));
    assert!(with("fe80::1/64")[0].contains("is not an IPv4 address"));
    assert!(with("224.0.0.18/32")[0].contains("cannot be a virtual IP"));
    let empty = errors(
        "[vrrp.instances.a]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvirtual_ips = []\n",
    );
    assert!(empty[0].contains("has no virtual IPs"), "{empty:?}");
}

#[test]
fn auth_pass_rules() {
    let base = "[vrrp.instances.a]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvirtual_ips = [\"10.0.0.1/24\"]\n";
    let e = errors(&format!("{base}auth_pass = \"123456789\"\n"));
    assert!(e[0].contains("auth_pass is 9 bytes long"), "{e:?}");
    let e = errors(&format!(
        "{base}version = 3\nadvert_interval = \"1s\"\nauth_pass = \"x\"\n"
    ));
    assert!(e[0].contains("auth_pass needs VRRP version 2"), "{e:?}");
    assert!(errors(&format!("{base}auth_pass = \"12345678\"\n")).is_empty());
}

#[test]
fn duplicates_across_instances() {
    let e = errors(
        r#"
[vrrp.instances.a]
interface = "eth0"
vrid = 5
priority = 100
virtual_ips = ["10.0.0.1/24"]

[vrrp.instances.b]
interface = "eth0"
vrid = 5
priority = 100
virtual_ips = ["10.0.0.1/24"]
"#,
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("VRID 5 on `eth0` is already used by instance `a`"),
        "{e:?}"
    );
    assert!(
        e[1].contains("virtual IP 10.0.0.1 is already managed by instance `a`"),
        "{e:?}"
    );
}

#[test]
fn unicast_and_track_errors() {
    let base = "[vrrp.instances.a]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvirtual_ips = [\"10.0.0.1/24\"]\n";
    let e = errors(&format!(
        "{base}unicast_peers = [\"10.0.0.2\", \"nope\", \"10.0.0.2\"]\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("`nope` is not an IPv4 address"));
    assert!(e[1].contains("listed twice"));
    let e = errors(&format!(
        "{base}unicast_peers = [\"10.0.0.2\"]\nunicast_src = \"10.0.0.2\"\n"
    ));
    assert!(e[0].contains("also listed as a peer"), "{e:?}");
    let e = errors(&format!("{base}track = {{ weight = -10 }}\n"));
    assert!(e[0].contains("tracks nothing"), "{e:?}");
    let e = errors(&format!(
        "{base}track = {{ frontends = true, weight = 0 }}\n"
    ));
    assert!(e[0].contains("bad track weight"), "{e:?}");
    let i = instance(&format!(
        "{base}track = {{ frontends = true, weight = \"fault\" }}\n"
    ));
    assert_eq!(i.track.weight, TrackWeight::Fault);
    let e = errors(&format!("{base}notify = {{ master = \" \" }}\n"));
    assert!(e[0].contains("empty notify command"), "{e:?}");
}

#[test]
fn unknown_keys_are_refused() {
    let e = errors(&format!("{MINIMAL}advert_int = 1\n"));
    assert!(e[0].contains("unknown field `advert_int`"), "{e:?}");
}
