//! Unit tests of the import: translations, bad input, and a seeded no-panic property.

use super::*;

fn no_dns(_: &str) -> Option<std::net::IpAddr> {
    None
}

fn imp(text: &str) -> Result<Imported, ImportError> {
    let input = Input {
        label: "haproxy.cfg".into(),
        dir: PathBuf::from("."),
        text: text.into(),
    };
    import(Some(&input), None, None, Hostnames::Resolve, &no_dns)
}

#[test]
fn host_and_path_acls_become_routes_and_pass_check() {
    let out = imp("defaults\n mode http\nfrontend f\n bind :80\n acl a hdr(host) -i api.example.com\n acl p path_beg /static/\n use_backend b if a p\n default_backend b\nbackend b\n server s1 10.0.0.1:80 check\n").expect("import");
    assert!(
        out.toml.contains(
            "{ host = \"api.example.com\", path_prefix = \"/static/\", backend = \"b\" }"
        ),
        "{}",
        out.toml
    );
    crate::config::parse_str(&out.toml, "out").expect("passes check");
}

#[test]
fn errors_haproxy_refuses_are_reported_at_their_line() {
    let e = imp("frontend f\n bind :80\n timeout client 5x\n")
        .err()
        .expect("error");
    assert!(e.to_string().contains("haproxy.cfg:3"), "{e}");
    let e = imp("frontend f\n bind :80\n default_backend nowhere\n")
        .err()
        .expect("error");
    assert!(e.to_string().contains("nowhere"), "{e}");
}

#[test]
fn unknown_directives_go_to_the_report() {
    let out = imp("frontend f\n bind :80\n frobnicate 1\n default_backend b\nbackend b\n server s 10.0.0.1:80\n").expect("import");
    assert!(out
        .report
        .outcome_at("haproxy.cfg", 3)
        .is_some_and(Outcome::is_dropped));
}

#[test]
fn binary_input_is_refused() {
    assert!(check_text("x", vec![0, 1, 2]).is_err());
    assert!(check_text("x", vec![0xff, 0xfe]).is_err());
}

#[test]
fn keepalived_script_checking_haproxy_tracks_frontends() {
    let k = Input { label: "keepalived.conf".into(), dir: PathBuf::from("."), text: "vrrp_script chk { script \"killall -0 haproxy\"\n interval 2\n weight -20 }\nvrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n priority 101\n advert_int 1\n nopreempt\n authentication {\n auth_type PASS\n auth_pass s3cret\n }\n virtual_ipaddress {\n 192.168.50.100/24\n }\n track_script {\n chk\n }\n}\n".into() };
    let out = import(None, Some(&k), None, Hostnames::Resolve, &no_dns).expect("import");
    assert!(
        out.toml
            .contains("track = { frontends = true, weight = -20 }"),
        "{}",
        out.toml
    );
    crate::config::parse_str(&out.toml, "out").expect("passes check");
}

/// Random mutations of a realistic config never panic (seeded, bounded).
#[test]
fn mutated_configs_never_panic() {
    let base = "global\n nbthread 2\ndefaults\n mode http\n timeout client 5s\nfrontend f\n bind :80\n acl a hdr(host) -i x.example\n use_backend b if a || { path_beg /p }\n redirect scheme https if !{ ssl_fc }\n default_backend b\nbackend b\n option httpchk GET /h\n cookie S insert\n server s 10.0.0.1:80 check inter 2s\n";
    let pieces = [
        "{",
        "}",
        "!",
        "||",
        "\"",
        "'",
        "\\",
        "%[",
        "]",
        "acl",
        "if",
        "unless",
        ":",
        "-i",
        " ",
        "\n",
        "server",
        "bind",
        "use_backend",
    ];
    let mut rng = fastrand::Rng::with_seed(20);
    for _ in 0..300 {
        let mut s: Vec<char> = base.chars().collect();
        for _ in 0..rng.usize(1..8) {
            let at = rng.usize(0..=s.len());
            let p = pieces[rng.usize(0..pieces.len())];
            if rng.bool() && at < s.len() {
                s.remove(at);
            } else {
                for (i, c) in p.chars().enumerate() {
                    s.insert((at + i).min(s.len()), c);
                }
            }
        }
        let text: String = s.into_iter().collect();
        let _ = imp(&text);
    }
}

#[test]
fn hostnames_resolve_by_default_or_become_dns_discovery() {
    let text = "defaults\n mode http\nfrontend f\n bind :80\n default_backend b\nbackend b\n server s app.internal:8080 check\n";
    let input = Input {
        label: "haproxy.cfg".into(),
        dir: PathBuf::from("."),
        text: text.into(),
    };
    let fake = |h: &str| (h == "app.internal").then(|| std::net::IpAddr::from([10, 9, 8, 7]));
    let out = import(Some(&input), None, None, Hostnames::Resolve, &fake).expect("import");
    assert!(
        out.toml.contains("address = \"10.9.8.7:8080\""),
        "{}",
        out.toml
    );
    let out = import(Some(&input), None, None, Hostnames::Dns, &fake).expect("import");
    assert!(
        out.toml
            .contains("discovery = { dns = \"app.internal\", port = 8080 }"),
        "{}",
        out.toml
    );
    crate::config::parse_str(&out.toml, "out").expect("passes check");
}

#[test]
fn tokenizer_follows_haproxy_quoting() {
    use super::haproxy::tokenize;
    assert_eq!(
        tokenize(r#"a "b c" 'd\e' f\ g # x"#).expect("ok"),
        ["a", "b c", "d\\e", "f g"]
    );
    assert!(tokenize("a \"b").is_err());
}

#[test]
fn heartbeat_becomes_a_vrrp_instance() {
    let cf = Input {
        label: "ha.cf".into(),
        dir: PathBuf::from("."),
        text: "keepalive 2\nucast eth1 10.0.0.2\nauto_failback off\nnode a\n".into(),
    };
    let res = Input {
        label: "haresources".into(),
        dir: PathBuf::from("."),
        text: "a \\\n IPaddr2::10.0.0.100/24/eth0 \\\n haproxy\n".into(),
    };
    let out = import(None, None, Some((&cf, &res)), Hostnames::Resolve, &no_dns).expect("import");
    assert!(
        out.toml.contains("preempt = false")
            && out.toml.contains("\"10.0.0.100/24\"")
            && out.toml.contains("interface = \"eth0\""),
        "{}",
        out.toml
    );
    crate::config::parse_str(&out.toml, "out").expect("passes check");
}

/// Found by fuzz/import_haproxy: two `backend api` sections made the output
/// declare `[backends.api]` twice. HAProxy refuses them; so does the import,
/// at the second one's line. A frontend and a backend may share a name.
#[test]
fn two_proxies_of_one_name_on_one_side_are_refused() {
    let twice = "backend api\n    server a 10.0.0.1:80\nbackend api\n    server b 10.0.0.2:80\n";
    let e = imp(twice).err().expect("two backends named api");
    let text = e.to_string();
    assert!(text.contains(":3:") && text.contains("same name"), "{text}");
    let ok = "frontend web\n    bind :80\n    default_backend web\nbackend web\n    server a 10.0.0.1:80\n";
    assert!(imp(ok).is_ok());
}

#[test]
fn a_directive_repeated_in_one_section_is_written_once_with_the_last_value() {
    // Found by fuzz/import_haproxy: two `nbthread` lines became a duplicate TOML key.
    let out = imp("global\n nbthread 2\n nbthread 4\ndefaults\n mode http\nfrontend f\n bind :80\n default_backend b\nbackend b\n server s1 10.0.0.1:80\n").expect("import");
    assert_eq!(out.toml.matches("threads = ").count(), 1, "{}", out.toml);
    let cfg = crate::config::parse_str(&out.toml, "out").expect("passes check");
    assert_eq!(cfg.global.threads, Some(4), "{}", out.toml);
}

/// Found by fuzz/import_haproxy: a source line with a control character (here `check\x05`,
/// a word to HAProxy) was echoed into a TOML comment, where TOML allows none but tab, so
/// the output did not parse. Comments now escape them.
#[test]
fn a_control_character_in_a_source_line_keeps_the_output_valid_toml() {
    let text = include_str!("../../fuzz/corpus/import_haproxy/regression-control-char-comment.cfg");
    assert!(
        text.contains('\u{5}'),
        "the input keeps its control character"
    );
    let out = imp(text).expect("import");
    out.toml
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{}", out.toml));
    assert!(!out.toml.contains('\u{5}'), "{}", out.toml);
    let lone_cr = imp("backend web\n server w1 10.0.0.1:80 check\rx\n").expect("import");
    lone_cr
        .toml
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{}", lone_cr.toml));
}
