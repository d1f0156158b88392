//! Runtime edits kept across reloads and restarts (the state file): the seed
//! 003 rolling replace done with `fulcrum ctl` on inventory-file and API
//! servers, then `ctl reload`, then a restart: the pool is the one the
//! operator left. `reload --reset` drops the edits; a corrupt state file is
//! ignored with a warning.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn status(admin: SocketAddr) -> Value {
    get(admin, "/api/v1/status").expect("status").json()
}

/// (name, admin, source, weight) of every server of `web`, sorted by name.
fn pool(admin: SocketAddr) -> Vec<(String, String, String, u64)> {
    let st = status(admin);
    let mut v: Vec<_> = st["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["name"] == "web")
        .flat_map(|b| b["servers"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["admin"].as_str().unwrap_or("").to_string(),
                s["source"].as_str().unwrap_or("").to_string(),
                s["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(name: &str, admin: &str, source: &str, weight: u64) -> (String, String, String, u64) {
    (name.into(), admin.into(), source.into(), weight)
}

fn ok(args: &[&str]) -> String {
    let (code, out) = ctl(args);
    assert_eq!(code, 0, "ctl {args:?}: {out}");
    out
}

#[test]
fn rolling_replace_with_ctl_survives_reload_and_restart() {
    let (b1, a1) = backend("web-1");
    let (_b2, a2) = backend("web-2");
    let (_b3, a3) = backend("web-3");
    let (_bf, af) = backend("web-f");
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let inventory = dir.path().join("web.json");
    let inv = format!(
        "[\n  {{\"name\":\"web-1\",\"address\":\"{a1}\"}},\n  {{\"name\":\"web-2\",\"address\":\"{a2}\"}}\n]\n"
    );
    std::fs::write(&inventory, &inv).expect("inventory");
    let toml = format!(
        r#"
[admin]
listen = "{admin}"

[log]
access = "off"

[frontends.www]
listen = ["{listen}"]
backend = "web"

[backends.web]
health = {{ kind = "http", path = "/health", interval = "100ms", rise = 1, fall = 1 }}
discovery = {{ file = "{}", poll_interval = "50ms" }}
servers = [{{ name = "web-f", address = "{af}" }}]
"#,
        inventory.display()
    );
    let mut lb = Lb::start(&toml, admin);
    let url = format!("http://{admin}");
    let limit = Duration::from_secs(10);
    let initial = vec![
        row("web-1", "ready", "inventory", 1),
        row("web-2", "ready", "inventory", 1),
        row("web-f", "ready", "file", 1),
    ];
    assert!(
        wait_until(limit, || pool(admin) == initial),
        "{:?}",
        pool(admin)
    );

    // The rolling replace: a new box through the API, the inventory's web-2
    // drained, web-1 dies and is removed, the file's server weighted.
    ok(&["--admin", &url, "add", "web", "web-3", &a3.to_string()]);
    ok(&["--admin", &url, "weight", "web/web-3", "5"]);
    ok(&["--admin", &url, "drain", "web/web-2"]);
    ok(&["--admin", &url, "weight", "web/web-f", "3"]);
    drop(b1);
    ok(&["--admin", &url, "remove", "web/web-1"]);
    let (code, out) = ctl(&["--admin", &url, "drain", "web/nope"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("web-2") && out.contains("web-3"),
        "the known names: {out}"
    );
    let left = vec![
        row("web-2", "drain", "inventory", 1),
        row("web-3", "ready", "api", 5),
        row("web-f", "ready", "file", 3),
    ];
    assert_eq!(pool(admin), left);
    // The read side: compact, filtered, paged.
    let drained = get(admin, "/api/v1/status?compact=true&state=drain")
        .expect("status")
        .json();
    let names: Vec<_> = drained["backends"][0]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["web-2"], "{drained}");
    assert!(drained["backends"][0]["servers"][0]
        .get("check_history")
        .is_none());
    let page = get(admin, "/api/v1/status?backend=web&limit=2")
        .expect("status")
        .json();
    assert_eq!(page["page"]["servers_matched"], 3, "{page}");
    assert_eq!(page["page"]["next_offset"], 2, "{page}");
    assert_eq!(
        page["backends"][0]["servers"].as_array().map(Vec::len),
        Some(2)
    );
    let r = get(admin, "/api/v1/status?state=sideways").expect("status");
    assert_eq!(r.status, 400, "{}", r.body);
    let out = ok(&["--admin", &url, "servers", "web", "--state", "drain"]);
    assert!(out.contains("web-2") && !out.contains("web-3"), "{out}");
    let out = ok(&["--admin", &url, "servers"]);
    assert!(out.contains("SOURCE") && out.contains("inventory"), "{out}");

    // The inventory is rewritten (same servers): the drain of web-2 holds.
    std::fs::write(&inventory, format!("{inv}\n")).expect("inventory");
    let g = status(admin)["generation"].as_u64().unwrap_or(0);
    ok(&["--admin", &url, "reload"]);
    assert!(status(admin)["generation"].as_u64().unwrap_or(0) > g);
    assert_eq!(pool(admin), left, "after reload");

    // Traffic goes to the usable servers only.
    assert!(wait_until(limit, || {
        (0..10).all(|_| {
            get(listen, "/").is_ok_and(|r| ["web-3", "web-f"].contains(&r.server().as_str()))
        })
    }));

    // Restart: the state file brings the pool back as the operator left it.
    lb.restart(admin);
    assert!(
        wait_until(limit, || pool(admin) == left),
        "after restart: {:?}",
        pool(admin)
    );
    assert!(wait_until(limit, || {
        (0..10).all(|_| {
            get(listen, "/").is_ok_and(|r| ["web-3", "web-f"].contains(&r.server().as_str()))
        })
    }));

    // reload --reset: exactly the file's and the inventory's pool again.
    ok(&["--admin", &url, "reload", "--reset"]);
    assert_eq!(pool(admin), initial);

    // A corrupt state file is ignored with one warning naming it.
    ok(&["--admin", &url, "drain", "web/web-2"]);
    let state = lb.config_path().with_file_name("fulcrum.state.json");
    assert!(wait_until(limit, || std::fs::read_to_string(&state)
        .is_ok_and(|s| s.contains("web-2"))));
    lb.proc.signal(libc::SIGTERM);
    assert!(lb.proc.wait_exit(Duration::from_secs(20)).is_some());
    std::fs::write(&state, "{ not json").expect("corrupt");
    lb.restart(admin);
    assert!(
        wait_until(limit, || pool(admin) == initial),
        "{:?}",
        pool(admin)
    );
    let log = lb.proc.output();
    assert!(
        log.contains("state file ignored") && log.contains("fulcrum.state.json"),
        "{log}"
    );
}
