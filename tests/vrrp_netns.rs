//! VRRP failover drills in network namespaces (needs root and `ip`; skipped otherwise).
//!
//! Topology per case, all inside namespaces this test creates and deletes:
//!
//! ```text
//!   <p>a: fulcrum node A (10.213.0.11) ─┐
//!   <p>b: fulcrum node B (10.213.0.12) ─┼─ <p>br: bridge br0
//!   <p>c: client (10.213.0.2) ──────────┘        VIP 10.213.0.100
//! ```
//!
//! Each node runs the real `fulcrum run --config` in its namespace, proxying port 80 to a
//! `fulcrum backend` on 127.0.0.1 in that namespace (a keepalived node instead runs keepalived
//! and a `fulcrum backend` on port 80). A client thread, entered into the client namespace
//! with `setns`, requests the VIP every 20 ms and records which server answered. Only
//! loopback and these namespaces are ever used. `keepalived` drills are skipped when it is
//! not installed. The fixture is `tests/common/vrrp.rs`.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::vrrp::*;

#[test]
fn crash_failover_then_preemption_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, client)) = pair("k", Opts::v3(true, false)) else {
        return;
    };
    // The admin API shows both sides of the pair.
    let a = admin_get(&lab.ns("a"), "/api/v1/vrrp").unwrap_or_default();
    let b = admin_get(&lab.ns("b"), "/api/v1/vrrp").unwrap_or_default();
    println!("admin /api/v1/vrrp on A: {a}\nadmin /api/v1/vrrp on B: {b}");
    assert!(a.contains("\"state\":\"master\""), "A's status: {a}");
    assert!(b.contains("\"state\":\"backup\""), "B's status: {b}");
    assert!(b.contains("\"master\":\"10.213.0.11\""), "B's status: {b}");

    let t0 = Instant::now();
    lab.signal("a", libc::SIGKILL);
    assert!(lab.wait_exit("a", Duration::from_secs(5)).is_some());
    assert!(
        client.wait_served_by("b", t0, 10, Duration::from_secs(10)),
        "B never served after A crashed\n{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t0);
    let bound = master_down() + Duration::from_secs(1);
    println!(
        "VRRPv3 {:?} adverts, SIGKILL of the master: outage {gap:?} ({failed} failed requests at {PERIOD:?} spacing); master-down interval {:?}",
        INTERVAL,
        master_down()
    );
    assert!(
        gap < bound,
        "crash outage {gap:?} exceeds {bound:?}\n{}",
        lab.logs()
    );
    assert!(lab.has_vip("b"));

    // A restarts: its start-up hygiene removes the VIP the crash left, then it preempts B.
    let t1 = Instant::now();
    lab.start_node("a", 101);
    assert!(
        lab.wait_vip("a", Duration::from_secs(10)),
        "A did not take the VIP back\n{}",
        lab.logs()
    );
    let took = t1.elapsed();
    assert!(
        client.wait_served_by("a", t1, 10, Duration::from_secs(10)),
        "client not served by A after preemption\n{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t1);
    println!("preemption back to the restarted master: VIP moved after {took:?} (process start included); outage {gap:?} ({failed} failed requests)");
    assert!(
        lab.logs()
            .contains("removed a virtual IP left on the interface"),
        "start-up hygiene did not run\n{}",
        lab.logs()
    );
}

#[test]
fn graceful_stop_hands_over_without_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, client)) = pair("g", Opts::v3(true, false)) else {
        return;
    };
    let t0 = Instant::now();
    lab.signal("a", libc::SIGTERM);
    assert!(
        client.wait_served_by("b", t0, 10, Duration::from_secs(10)),
        "B never served after A stopped\n{}",
        lab.logs()
    );
    let exited = lab.wait_exit("a", Duration::from_secs(40));
    assert_eq!(exited, Some(true), "A did not exit cleanly\n{}", lab.logs());
    assert!(lab.has_vip("b") && !lab.has_vip("a"));
    let (gap, failed) = outage(&client.samples(), t0);
    println!(
        "VRRPv3 {INTERVAL:?} adverts, graceful stop (SIGTERM) of the master: longest gap between answers {gap:?}, {failed} failed requests at {PERIOD:?} spacing"
    );
    assert!(
        failed <= 1,
        "graceful hand-over lost {failed} requests\n{}",
        lab.logs()
    );
    assert!(gap < INTERVAL * 3, "graceful gap {gap:?}\n{}", lab.logs());
}

#[test]
fn preempt_false_keeps_the_new_master() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, client)) = pair("n", Opts::v3(false, false)) else {
        return;
    };
    let t0 = Instant::now();
    lab.signal("a", libc::SIGKILL);
    assert!(lab.wait_exit("a", Duration::from_secs(5)).is_some());
    assert!(
        client.wait_served_by("b", t0, 10, Duration::from_secs(10)),
        "B never served after A crashed\n{}",
        lab.logs()
    );
    lab.start_node("a", 101);
    // A is back and higher, but with preempt = false it must stay backup. The wait is the
    // observation: nothing may change in it, so there is no condition to poll.
    std::thread::sleep(master_down() * 4 + Duration::from_secs(1));
    assert!(
        lab.has_vip("b") && !lab.has_vip("a"),
        "A preempted despite preempt = false\n{}",
        lab.logs()
    );
    let s = client.samples();
    assert_eq!(s.last().and_then(|x| x.answer.as_deref()), Some("b"));
    println!(
        "preempt = false: after {:?} the restarted higher-priority node is still backup",
        master_down() * 4 + Duration::from_secs(1)
    );
}

#[test]
fn unhealthy_backends_move_the_vip() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((lab, client)) = pair("t", Opts::v3(true, true)) else {
        return;
    };
    let t0 = Instant::now();
    // A's only server fails its health check: A's priority drops by 50, below B's.
    assert!(control_backend(
        &lab.ns("a"),
        BACKEND_PORT,
        "/_control/health/fail"
    ));
    assert!(
        lab.wait_vip("b", Duration::from_secs(10)),
        "VIP did not move to B\n{}",
        lab.logs()
    );
    println!(
        "tracking: VIP moved {:?} after A's backend failed its health check",
        t0.elapsed()
    );
    assert!(
        client.wait_served_by("b", t0, 10, Duration::from_secs(10)),
        "client not served by B\n{}",
        lab.logs()
    );
}

/// fulcrum master, keepalived backup: graceful stop, preemption back, crash.
fn keepalived_as_backup(version: u8) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opts = interop_opts(version);
    let case = format!("kb{version}");
    let Some((mut lab, client)) = pair_of(&case, opts, Kind::Fulcrum, Kind::Keepalived) else {
        return;
    };
    let bound = opts.master_down(100) + Duration::from_secs(1);
    let label = format!(
        "VRRPv{version} {:?} adverts, fulcrum master / keepalived backup",
        opts.interval
    );

    let t0 = Instant::now();
    lab.signal("a", libc::SIGTERM);
    assert!(
        client.wait_served_by("b", t0, 10, bound * 2),
        "keepalived never served after fulcrum stopped\n{}",
        lab.logs()
    );
    assert_eq!(lab.wait_exit("a", Duration::from_secs(40)), Some(true));
    let (gap, failed) = outage(&client.samples(), t0);
    println!("{label}: graceful stop of fulcrum: longest gap {gap:?}, {failed} failed requests");
    assert!(
        failed <= 1,
        "hand-over to keepalived lost {failed} requests\n{}",
        lab.logs()
    );

    let t1 = Instant::now();
    lab.start("a", Kind::Fulcrum, 101);
    assert!(
        lab.wait_vip("a", bound * 3),
        "keepalived did not yield to the returning fulcrum\n{}",
        lab.logs()
    );
    assert!(
        client.wait_served_by("a", t1, 10, bound * 2),
        "{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t1);
    println!("{label}: keepalived yields to the returning fulcrum: longest gap {gap:?}, {failed} failed requests");

    let t2 = Instant::now();
    lab.signal("a", libc::SIGKILL);
    assert!(
        client.wait_served_by("b", t2, 10, bound * 2),
        "keepalived never served after fulcrum crashed\n{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t2);
    println!(
        "{label}: SIGKILL of fulcrum: outage {gap:?}, {failed} failed requests (master-down {:?})",
        opts.master_down(100)
    );
    assert!(
        gap < bound,
        "crash outage {gap:?} exceeds {bound:?}\n{}",
        lab.logs()
    );
}

/// keepalived master, fulcrum backup: graceful stop, preemption back, crash.
fn fulcrum_as_backup(version: u8) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opts = interop_opts(version);
    let case = format!("fb{version}");
    let Some((mut lab, client)) = pair_of(&case, opts, Kind::Keepalived, Kind::Fulcrum) else {
        return;
    };
    let bound = opts.master_down(100) + Duration::from_secs(1);
    let label = format!(
        "VRRPv{version} {:?} adverts, keepalived master / fulcrum backup",
        opts.interval
    );

    let t0 = Instant::now();
    lab.signal("a", libc::SIGTERM);
    assert!(
        client.wait_served_by("b", t0, 10, bound * 2),
        "fulcrum never served after keepalived stopped\n{}",
        lab.logs()
    );
    let _ = lab.wait_exit("a", Duration::from_secs(10));
    let (gap, failed) = outage(&client.samples(), t0);
    println!("{label}: graceful stop of keepalived (keepalived's own figure): longest gap {gap:?}, {failed} failed requests");
    assert!(gap < bound, "{}", lab.logs());

    let t1 = Instant::now();
    lab.start("a", Kind::Keepalived, 101);
    assert!(
        lab.wait_vip("a", bound * 3),
        "fulcrum did not yield to the returning keepalived\n{}",
        lab.logs()
    );
    assert!(
        client.wait_served_by("a", t1, 10, bound * 2),
        "{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t1);
    println!("{label}: fulcrum yields to the returning keepalived: longest gap {gap:?}, {failed} failed requests");

    let t2 = Instant::now();
    lab.crash_keepalived("a");
    assert!(
        client.wait_served_by("b", t2, 10, bound * 2),
        "fulcrum never served after keepalived crashed\n{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t2);
    println!("{label}: SIGKILL of keepalived: outage {gap:?}, {failed} failed requests (master-down {:?})", opts.master_down(100));
    assert!(
        gap < bound,
        "crash outage {gap:?} exceeds {bound:?}\n{}",
        lab.logs()
    );
}

#[test]
fn keepalived_interop_v2_keepalived_backup() {
    keepalived_as_backup(2);
}

#[test]
fn keepalived_interop_v3_keepalived_backup() {
    keepalived_as_backup(3);
}

#[test]
fn keepalived_interop_v2_fulcrum_backup() {
    fulcrum_as_backup(2);
}

#[test]
fn keepalived_interop_v3_fulcrum_backup() {
    fulcrum_as_backup(3);
}

/// The same drills at keepalived's default setting (VRRPv2, 1 s adverts, password), for the
/// figures in the README.
#[test]
fn v2_one_second_adverts_graceful_and_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opts = interop_opts(2);
    let Some((mut lab, client)) = pair("v2", opts) else {
        return;
    };
    let bound = opts.master_down(100) + Duration::from_secs(1);
    let t0 = Instant::now();
    lab.signal("a", libc::SIGTERM);
    assert!(
        client.wait_served_by("b", t0, 10, bound * 2),
        "{}",
        lab.logs()
    );
    assert_eq!(lab.wait_exit("a", Duration::from_secs(40)), Some(true));
    let (gap, failed) = outage(&client.samples(), t0);
    println!("VRRPv2 1s adverts, graceful stop of the fulcrum master: longest gap {gap:?}, {failed} failed requests");
    assert!(
        failed <= 1,
        "graceful hand-over lost {failed} requests\n{}",
        lab.logs()
    );

    let t1 = Instant::now();
    lab.start("a", Kind::Fulcrum, 101);
    assert!(
        lab.wait_vip("a", bound * 3),
        "no preemption back\n{}",
        lab.logs()
    );
    assert!(
        client.wait_served_by("a", t1, 10, bound * 2),
        "{}",
        lab.logs()
    );

    let t2 = Instant::now();
    lab.signal("a", libc::SIGKILL);
    assert!(
        client.wait_served_by("b", t2, 10, bound * 2),
        "{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t2);
    println!(
        "VRRPv2 1s adverts, SIGKILL of the fulcrum master: outage {gap:?}, {failed} failed requests (master-down {:?})",
        opts.master_down(100)
    );
    assert!(
        gap < bound,
        "crash outage {gap:?} exceeds {bound:?}\n{}",
        lab.logs()
    );
}

/// Unicast adverts (keepalived `unicast_peer`) instead of multicast: failover still works.
#[test]
fn unicast_peers_fail_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opts = Opts {
        unicast: true,
        ..Opts::v3(true, false)
    };
    let Some((mut lab, client)) = pair("u", opts) else {
        return;
    };
    let t0 = Instant::now();
    lab.signal("a", libc::SIGKILL);
    assert!(
        client.wait_served_by("b", t0, 10, Duration::from_secs(10)),
        "B never served after A crashed\n{}",
        lab.logs()
    );
    let (gap, failed) = outage(&client.samples(), t0);
    println!("VRRPv3 {INTERVAL:?} unicast adverts, SIGKILL of the master: outage {gap:?}, {failed} failed requests");
    let bound = opts.master_down(100) + Duration::from_secs(1);
    assert!(
        gap < bound,
        "crash outage {gap:?} exceeds {bound:?}\n{}",
        lab.logs()
    );
    lab.start_node("a", 101);
    assert!(
        lab.wait_vip("a", Duration::from_secs(10)),
        "A did not preempt over unicast\n{}",
        lab.logs()
    );
}

/// Malformed adverts from the link are dropped and counted by reason; other VRIDs are
/// ignored; a good advert is accepted. Runs the library in this process, in a namespace.
#[test]
fn bad_packets_are_dropped_and_counted() {
    use fulcrum::vrrp::packet::{encode_ip_packet, Advert, VRRP_MCAST_V4};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = match Lab::new("p", Opts::v3(true, false)) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping VRRP netns drill: {why}");
            return;
        }
    };
    let cfg = fulcrum::config::parse_str(
        &format!(
            "[vrrp.instances.vip]\ninterface = \"eth0\"\nvrid = 51\npriority = 100\nversion = 2\nadvert_interval = \"1s\"\nauth_pass = \"s3cret\"\nvirtual_ips = [\"{VIP}/24\"]\n"
        ),
        "inline.toml",
    )
    .expect("valid config");
    let node = InProcess::start(&lab.ns("a"), cfg.vrrp);

    let peer: Ipv4Addr = addr_of(NODE_B).parse().expect("address");
    let good = |priority: u8| Advert {
        version: 2,
        vrid: 51,
        priority,
        advert_interval_cs: 100,
        addresses: vec![VIP],
        auth: Some(*b"s3cret\0\0"),
    };
    let enc = |a: &Advert| encode_ip_packet(a, peer, VRRP_MCAST_V4, 7).expect("encodes");
    let mut ttl = enc(&good(200));
    ttl[8] = 64; // routed: TTL must be 255
    let mut checksum = enc(&good(200));
    checksum[26] ^= 0xff;
    let mut count = enc(&good(200));
    count[23] = 2; // two addresses claimed, one present
    let wrong_auth = enc(&Advert {
        auth: Some(*b"guess\0\0\0"),
        ..good(200)
    });
    let wrong_interval = enc(&Advert {
        advert_interval_cs: 200,
        ..good(200)
    });
    let v3 = enc(&Advert {
        version: 3,
        auth: None,
        ..good(200)
    });
    let other_vrid = enc(&Advert {
        vrid: 52,
        ..good(200)
    });
    let mut truncated = enc(&good(200));
    truncated.truncate(24);
    send_raw(
        &lab.ns("b"),
        vec![
            ttl,
            checksum,
            count,
            wrong_auth,
            wrong_interval,
            v3,
            other_vrid,
            truncated,
            enc(&good(200)),
        ],
    );

    let want = [
        "bad_ttl",
        "bad_checksum",
        "address_count_mismatch",
        "auth_mismatch",
        "interval_mismatch",
        "wrong_version",
        "truncated",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = node.status.get();
        let s = st.first().expect("one instance");
        let all = want.iter().all(|k| s.invalid.get(*k) == Some(&1));
        if all && s.rx >= 1 {
            println!(
                "drop counters: {:?}; rx {}; master {:?}",
                s.invalid, s.rx, s.master
            );
            assert!(
                !s.invalid.contains_key("wrong_vrid"),
                "other VRIDs are ignored, not counted"
            );
            assert_eq!(
                s.master,
                Some(peer),
                "the good advert's sender is the master"
            );
            assert_eq!(s.state.as_str(), "backup");
            break;
        }
        assert!(Instant::now() < deadline, "counters never matched: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tracking a script and an interface drives the instance into FAULT and back, and the
/// notify hooks run for every transition, in order, with the state as argument.
#[test]
fn tracked_script_and_interface_with_notify_hooks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = match Lab::new("s", Opts::v3(true, false)) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping VRRP netns drill: {why}");
            return;
        }
    };
    let flag = lab.dir.path().join("healthy");
    let hooks = lab.dir.path().join("hooks.log");
    std::fs::write(&flag, "").expect("flag");
    let hook = format!("echo $1 >> {}", hooks.display());
    let cfg = fulcrum::config::parse_str(
        &format!(
            r#"[vrrp.instances.vip]
interface = "eth0"
vrid = 51
priority = 100
version = 3
advert_interval = "100ms"
virtual_ips = ["{VIP}/24"]
track = {{ interfaces = ["eth0"], script = "test -e {}", script_interval = "100ms" }}
notify = {{ master = "{hook}", backup = "{hook}", fault = "{hook}" }}
"#,
            flag.display()
        ),
        "inline.toml",
    )
    .expect("valid config");
    let node = InProcess::start(&lab.ns("a"), cfg.vrrp);
    let state = || {
        node.status
            .get()
            .first()
            .map(|s| s.state.as_str().to_string())
            .unwrap_or_default()
    };
    let wait_state = |want: &str| {
        poll(Duration::from_secs(10), Duration::from_millis(10), || {
            state() == want
        })
    };
    assert!(wait_state("master"), "alone on the link, it becomes master");
    assert!(lab.has_vip("a"));

    std::fs::remove_file(&flag).expect("remove flag");
    assert!(wait_state("fault"), "failing script → fault");
    assert!(!lab.has_vip("a"), "a faulty node releases the VIP");
    std::fs::write(&flag, "").expect("flag");
    assert!(wait_state("master"), "script recovers → master again");

    ip(&["-n", &lab.ns("a"), "link", "set", "eth0", "down"]).expect("link down");
    assert!(wait_state("fault"), "tracked interface down → fault");
    ip(&["-n", &lab.ns("a"), "link", "set", "eth0", "up"]).expect("link up");
    assert!(wait_state("master"), "interface up again → master");

    let want = "BACKUP\nMASTER\nFAULT\nBACKUP\nMASTER\nFAULT\nBACKUP\nMASTER\n";
    let ran = || std::fs::read_to_string(&hooks).unwrap_or_default();
    assert!(
        poll(Duration::from_secs(5), Duration::from_millis(20), || ran()
            == want),
        "notify hooks ran as {:?}, want {want:?}",
        ran()
    );
    println!(
        "tracking script + interface: fault and recovery as expected; notify hooks ran in order"
    );
}

/// `fulcrum import` of keepalived's own keepalived.conf pairs with keepalived running the
/// original: keepalived master hands over to the imported fulcrum backup and takes the VIP
/// back when it returns (VRRPv2, 1 s adverts, password: keepalived's default setup).
#[test]
fn imported_keepalived_conf_pairs_with_keepalived() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = interop_opts(2);
    opts.imported_vrrp = true;
    let Some((mut lab, client)) = pair_of("imp", opts, Kind::Keepalived, Kind::Fulcrum) else {
        return;
    };
    let bound = opts.master_down(100) + Duration::from_secs(1);
    let t0 = Instant::now();
    lab.signal("a", libc::SIGTERM);
    assert!(
        client.wait_served_by("b", t0, 10, bound * 2),
        "the imported fulcrum node never served after keepalived stopped\n{}",
        lab.logs()
    );
    let _ = lab.wait_exit("a", Duration::from_secs(10));
    let t1 = Instant::now();
    lab.start("a", Kind::Keepalived, 101);
    assert!(
        lab.wait_vip("a", bound * 3),
        "the imported fulcrum node did not yield to the returning keepalived\n{}",
        lab.logs()
    );
    assert!(
        client.wait_served_by("a", t1, 10, bound * 2),
        "{}",
        lab.logs()
    );
}

/// Whether `addr` is on `node`'s eth0.
fn has_addr(lab: &Lab, node: &str, addr: &str) -> bool {
    ip(&["-n", &lab.ns(node), "-4", "addr", "show", "dev", "eth0"])
        .map(|o| o.contains(&format!("{addr}/")))
        .unwrap_or(false)
}

/// Polls `f` every 10 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A reload that changes an instance's VIPs and priority updates it in place, as keepalived
/// does: the master keeps its state and its VIP (it never becomes master a second time, no
/// request is lost) and adds the new VIP; a lower priority then loses it the election to B,
/// still without a restart.
#[test]
fn reload_updates_a_changed_instance_in_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, client)) = pair("r", Opts::v3(true, false)) else {
        return;
    };
    let config = lab.dir.path().join("a.toml");
    let text = std::fs::read_to_string(&config).expect("A's config");
    let second = "10.213.0.101";
    let one = format!("virtual_ips = [\"{VIP}/24\"]");
    let two = format!("virtual_ips = [\"{VIP}/24\", \"{second}/24\"]");
    let more = text.replace(&one, &two);
    assert_ne!(more, text, "the lab's config changed shape: {text}");

    let t0 = Instant::now();
    std::fs::write(&config, &more).expect("write A's config");
    lab.signal("a", libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || has_addr(&lab, "a", second)),
        "A did not add the new VIP\n{}",
        lab.logs()
    );
    assert!(lab.has_vip("a") && !lab.has_vip("b"), "{}", lab.logs());
    let a = admin_get(&lab.ns("a"), "/api/v1/vrrp").unwrap_or_default();
    assert!(a.contains("\"state\":\"master\""), "A's status: {a}");
    assert!(a.contains("\"became_master\":1"), "A flapped: {a}");
    assert!(a.contains(second), "A's status lists the new VIP: {a}");
    assert!(
        client.wait_served_by("a", Instant::now(), 10, Duration::from_secs(10)),
        "A stopped serving\n{}",
        lab.logs()
    );
    let (_, failed) = outage(&client.samples(), t0);
    assert_eq!(
        failed,
        0,
        "requests lost over an in-place update\n{}",
        lab.logs()
    );

    // Priority 50 < B's 100: B (preempt) takes over; A gives up both VIPs as a backup.
    let t1 = Instant::now();
    let less = text.replace("priority = 101", "priority = 50");
    assert_ne!(less, text, "the lab's config changed shape: {text}");
    std::fs::write(&config, &less).expect("write A's config");
    lab.signal("a", libc::SIGHUP);
    assert!(
        lab.wait_vip("b", Duration::from_secs(10)),
        "B did not take over from the lowered master\n{}",
        lab.logs()
    );
    assert!(
        wait_for(Duration::from_secs(10), || !has_addr(&lab, "a", second)),
        "A kept the removed VIP\n{}",
        lab.logs()
    );
    assert!(
        client.wait_served_by("b", t1, 10, Duration::from_secs(10)),
        "client not served by B\n{}",
        lab.logs()
    );
    let a = admin_get(&lab.ns("a"), "/api/v1/vrrp").unwrap_or_default();
    assert!(a.contains("\"state\":\"backup\""), "A's status: {a}");
    assert!(a.contains("\"configured_priority\":50"), "A's status: {a}");
    assert!(
        !a.contains(second),
        "A's status still lists the removed VIP: {a}"
    );
    let logs = lab.logs();
    assert_eq!(
        logs.matches("vrrp instance starting").count(),
        2,
        "an instance was restarted (once per node expected)\n{logs}"
    );
    assert_eq!(
        logs.matches("vrrp: instance updated in place").count(),
        2,
        "{logs}"
    );
    assert!(!logs.contains("restarting with its new settings"), "{logs}");
}
