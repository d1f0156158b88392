//! Configuration: every example validates; bad files give file:line:col errors.

mod common;

use std::process::Command;
use std::time::Duration;

use fulcrum::config::{parse_str, types::*};

#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if let Err(e) = fulcrum::config::load_file(&path) {
            panic!("{} is invalid:\n{e}", path.display());
        }
        let out = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "fulcrum check {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 4, "expected the seed examples, found {n}");
}

#[test]
fn seed_examples_mean_what_they_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let c = fulcrum::config::load_file(&dir.join("seed000-leastconn.toml")).expect("valid");
    let app = &c.backends["app"];
    assert_eq!(app.balance, Algorithm::LeastConn);
    assert_eq!(app.health.port, Some(80));
    assert_eq!(app.health.rise, 2);
    assert_eq!(app.health.fall, 3);
    let c = fulcrum::config::load_file(&dir.join("seed003-host-routing.toml")).expect("valid");
    let fe = &c.frontends["http-in"];
    assert_eq!(
        fe.routes[0].host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    assert_eq!(
        fe.routes[1].host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    let c = fulcrum::config::load_file(&dir.join("seed004-tcp-balance.toml")).expect("valid");
    assert_eq!(c.frontends["balance"].mode, Mode::Tcp);
}

#[test]
fn defaults_are_haproxy_like() {
    let c = parse_str(
        r#"
[frontends.f]
listen = ["127.0.0.1:8080"]
backend = "b"
[backends.b]
health = { kind = "http" }
servers = [{ name = "s", address = "127.0.0.1:1" }]
"#,
        "t.toml",
    )
    .expect("valid");
    let b = &c.backends["b"];
    assert_eq!(b.balance, Algorithm::RoundRobin);
    assert_eq!(b.health.interval.as_secs(), 2);
    assert_eq!((b.health.rise, b.health.fall), (2, 3));
    assert_eq!(b.timeouts.connect.as_secs(), 5);
    assert_eq!(b.retries, 3);
    assert_eq!(c.admin.listen, None);
    assert_eq!(b.servers[0].weight, 1);
    assert_eq!(c.global.threads, None, "one worker per core unless set");
}

#[test]
fn global_threads_is_checked() {
    let base = "[frontends.f]\nlisten = [\"127.0.0.1:8080\"]\nbackend = \"b\"\n[backends.b]\nservers = [{ name = \"s\", address = \"127.0.0.1:1\" }]\n";
    let ok = parse_str(&format!("[global]\nthreads = 1\n{base}"), "t.toml").expect("valid");
    assert_eq!(ok.global.threads, Some(1));
    let errs = parse_str(&format!("[global]\nthreads = 0\n{base}"), "t.toml")
        .expect_err("0 threads")
        .0;
    let shown = errs[0].to_string();
    assert!(
        shown.starts_with("t.toml:2:11") && shown.contains("`threads` = 0 is out of range"),
        "{shown}"
    );
}

#[test]
fn every_error_is_reported_with_position_and_hint() {
    let text = r#"[frontends.www]
listen = ["0.0.0.0:80", "not-an-address"]
backend = "nope"
routes = [{ host = "api.example.com", backend = "missing" }]

[frontends.other]
listen = ["0.0.0.0:80"]
backend = "web"

[backends.web]
balance = "fastest"
connect_timeout = "5 parsecs"
health = { kind = "http", interval = "20", expect_status = "2yy" }
servers = [
  { name = "a", address = "10.0.0.1:80", weight = 0 },
  { name = "a", address = "10.0.0.2" },
]
"#;
    let errs = parse_str(text, "bad.toml").expect_err("invalid").0;
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = shown.join("\n");
    let expect = [
        ("bad.toml:2:25", "bad listen address"),
        ("bad.toml:3:11", "unknown backend `nope`"),
        ("bad.toml:4:", "unknown backend `missing`"),
        ("bad.toml:7:11", "already used by frontend `www`"),
        ("bad.toml:11:11", "unknown balance algorithm"),
        ("bad.toml:12:19", "bad duration"),
        ("bad.toml:13:", "bad duration for `interval`"),
        ("bad.toml:13:", "bad expect_status"),
        ("bad.toml:15:", "weight 0"),
        ("bad.toml:16:", "appears twice"),
        ("bad.toml:16:", "bad server address"),
    ];
    for (pos, msg) in expect {
        assert!(
            shown.iter().any(|s| s.starts_with(pos) && s.contains(msg)),
            "missing `{pos}` … `{msg}` in:\n{all}"
        );
    }
    assert!(all.contains("hint: known backends: web"), "{all}");
    assert!(
        errs.iter().all(|e| e.hint.is_some()),
        "every error should carry a hint:\n{all}"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_point_at_the_spot() {
    let errs = parse_str(
        "[backends.web]\nservers = []\nbalanse = \"leastconn\"\n",
        "typo.toml",
    )
    .expect_err("invalid")
    .0;
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].col), (3, 1), "{}", errs[0]);
    assert!(errs[0].message.contains("balanse"), "{}", errs[0]);
    let errs = parse_str(
        "[frontends.x]\nlisten = [\"127.0.0.1:1\" oops]\nbackend = \"b\"\n",
        "syntax.toml",
    )
    .expect_err("invalid")
    .0;
    assert_eq!(errs[0].line, 2, "{}", errs[0]);
}

#[test]
fn check_command_exits_1_with_positions() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[frontends.f]\nlisten = [\"127.0.0.1:1\"]\nbackend = \"ghost\"\n",
    )
    .expect("write");
    let out = Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:11: error: unknown backend `ghost`"),
        "{err}"
    );
    let out = Command::new(common::bin())
        .args(["check", "--config", "/nonexistent/fulcrum.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn default_check_timeout_has_a_floor_and_a_ceiling() {
    use fulcrum::config::validate::default_check_timeout;
    let ms = Duration::from_millis;
    // Seed 004's `inter 20`: a 20 ms interval still gets a 1 s timeout.
    assert_eq!(default_check_timeout(ms(20)), ms(1000));
    assert_eq!(default_check_timeout(ms(999)), ms(1000));
    assert_eq!(default_check_timeout(ms(2000)), ms(2000));
    assert_eq!(default_check_timeout(ms(60_000)), ms(5000));
    let cfg = fulcrum::config::parse_str(
        r#"
[frontends.f]
listen = ["127.0.0.1:0"]
backend = "b"
[backends.b]
health = { kind = "tcp", interval = "20ms" }
servers = [{ name = "s", address = "127.0.0.1:9" }]
"#,
        "t.toml",
    )
    .expect("valid");
    assert_eq!(cfg.backends["b"].health.timeout, ms(1000));
    assert_eq!(cfg.backends["b"].health.interval, ms(20));
}

#[test]
fn hard_stop_after_is_a_global_duration() {
    let cfg = fulcrum::config::parse_str("[global]\nhard_stop_after = \"7s\"\n", "t.toml")
        .expect("valid");
    assert_eq!(cfg.global.hard_stop_after, Some(Duration::from_secs(7)));
    let errs = fulcrum::config::parse_str("[global]\nhard_stop_after = \"soon\"\n", "t.toml")
        .expect_err("bad duration")
        .0;
    assert_eq!(errs[0].line, 2, "{}", errs[0]);
}

/// Found by `fuzz/config_load`: a control character in a comment made the
/// TOML layer report an error with no words. Every refusal says what is wrong.
#[test]
fn a_control_character_in_a_comment_is_named() {
    let text = "# a comment with a \u{0} in it\n[frontends.www]\n";
    let errs = parse_str(text, "x.toml").expect_err("a NUL is not TOML");
    assert_eq!(errs.0.len(), 1);
    let e = &errs.0[0];
    assert_eq!((e.line, e.col), (1, 20), "{e}");
    assert!(e.message.contains("unexpected character"), "{}", e.message);
    // Every corpus input of the fuzz target is covered the same way.
    let crashes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_load");
    for entry in std::fs::read_dir(crashes).expect("fuzz corpus") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Err(errs) = parse_str(text, "f.toml") {
                assert!(errs.0.iter().all(|e| !e.message.is_empty()), "{errs}");
            }
        }
    }
}
