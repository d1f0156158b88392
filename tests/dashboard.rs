//! The dashboard in real headless Chromium: the page served at `/` by the admin
//! listener loads with no console errors, shows every server, and a Drain clicked in
//! the page changes the server's state in the API.
//!
//! Needs Debian's `/usr/bin/chromium` and `tests/browser/node_modules/playwright-core`;
//! when either is missing the test runs `.ci/browser-deps.sh` to install them, and fails
//! (never skips) if that does not work.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backend, free_addr, get, wait_until, Lb};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Chromium and playwright-core are present, installing them with `.ci/browser-deps.sh` if not.
fn ensure_browser_deps() {
    let root = repo();
    let have = || {
        Path::new("/usr/bin/chromium").exists()
            && root
                .join("tests/browser/node_modules/playwright-core/package.json")
                .exists()
    };
    if have() {
        return;
    }
    eprintln!("dashboard test: chromium or playwright-core missing; running .ci/browser-deps.sh");
    let status = Command::new("bash")
        .arg(root.join(".ci/browser-deps.sh"))
        .current_dir(&root)
        .status();
    match status {
        Ok(s) if s.success() && have() => {}
        Ok(s) => panic!(
            ".ci/browser-deps.sh ({s}) did not provide /usr/bin/chromium and \
             tests/browser/node_modules/playwright-core; the dashboard test needs both \
             (apt-get install chromium; cd tests/browser && npm ci)"
        ),
        Err(e) => panic!("cannot run .ci/browser-deps.sh: {e}"),
    }
}

fn status_json(admin: SocketAddr) -> serde_json::Value {
    let r = get(admin, "/api/v1/status").expect("GET /api/v1/status");
    assert_eq!(r.status, 200, "GET /api/v1/status: {r:?}");
    r.json()
}

fn server_field(st: &serde_json::Value, backend: &str, server: &str, field: &str) -> String {
    st["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["name"] == backend)
        .flat_map(|b| b["servers"].as_array().into_iter().flatten())
        .find(|s| s["name"] == server)
        .map(|s| s[field].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn dashboard_in_chromium_shows_servers_and_drains() {
    ensure_browser_deps();

    let (_w1, a_w1) = backend("web1");
    let (_w2, a_w2) = backend("web2");
    let (_p1, a_p1) = backend("api1");
    let (_p2, a_p2) = backend("api2");
    let listen = free_addr();
    let admin = free_addr();
    // A backend fed by an inventory file, broken after start: the page must show
    // the discovery source's last error.
    let inv_dir = tempfile::tempdir().expect("tempdir");
    let inv = inv_dir.path().join("inv.json");
    std::fs::write(
        &inv,
        format!("[\n  {{\"name\":\"inv1\",\"address\":\"{a_w1}\"}}\n]\n"),
    )
    .expect("write inventory");
    let health = r#"health = { kind = "http", path = "/health", interval = "200ms", rise = 1, fall = 2, timeout = "500ms" }"#;
    let config = format!(
        r#"[admin]
listen = "{admin}"

[frontends.public]
listen = ["{listen}"]
backend = "web"
routes = [{{ path_prefix = "/api/", backend = "api" }}]

[backends.web]
balance = "roundrobin"
{health}
servers = [
  {{ name = "web1", address = "{a_w1}", weight = 2 }},
  {{ name = "web2", address = "{a_w2}" }},
]

[backends.api]
balance = "leastconn"
{health}
servers = [
  {{ name = "api1", address = "{a_p1}" }},
  {{ name = "api2", address = "{a_p2}" }},
]

[backends.inv]
discovery = {{ file = "{inv}", poll_interval = "100ms" }}
"#,
        inv = inv.display()
    );
    let lb = Lb::start(&config, admin);

    // Ready: every server up by its health check (so the page has check history to show).
    let all = [
        ("web", "web1"),
        ("web", "web2"),
        ("api", "api1"),
        ("api", "api2"),
    ];
    assert!(
        wait_until(Duration::from_secs(15), || {
            let st = status_json(admin);
            all.iter()
                .all(|(b, s)| server_field(&st, b, s, "health") == "up")
        }),
        "servers never all came up: {}\n{}",
        status_json(admin),
        lb.proc.output()
    );
    // Break the inventory: the last good list stays, and the status says why.
    std::fs::write(&inv, "[ {\"name\": \"inv1\", \"address\": ").expect("break inventory");
    assert!(
        wait_until(Duration::from_secs(15), || {
            let st = status_json(admin);
            st["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["name"] == "inv" && b["discovery"]["last_error"].is_string())
        }),
        "the broken inventory never showed as last_error: {}",
        status_json(admin)
    );
    let page = get(admin, "/").expect("GET /");
    assert_eq!(
        page.status, 200,
        "GET / must serve the dashboard (src/admin/dashboard.html, embedded with include_str!): {}",
        page.body
    );
    assert!(
        page.body.contains("<title>fulcrum</title>"),
        "GET / is not the dashboard: {}",
        &page.body[..page.body.len().min(200)]
    );
    // Steady traffic while the page is open, so counters and sparklines move.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = get(listen, "/");
                let _ = get(listen, "/api/x");
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };

    let screenshot = repo().join("target/dashboard.png");
    let expect = all.map(|(_, s)| s).join(",");
    let node = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .arg(format!("http://{admin}/"))
        .args([
            "--expect",
            &expect,
            "--drain",
            "web1",
            "--checked",
            "--discovery-error",
            "inv",
            "--screenshot",
        ])
        .arg(&screenshot)
        .current_dir(repo())
        .stdin(Stdio::null())
        .spawn()
        .expect("run node tests/browser/dashboard.mjs (is Node.js installed?)");
    let mut node = Node(node);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = node.0.try_wait().expect("wait for node") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard.mjs still running after 90s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    assert!(
        status.success(),
        "dashboard.mjs failed ({status}); see its output above\nfulcrum log:\n{}",
        lb.proc.output()
    );

    // The click went through the API: web1 is drained, the others untouched.
    let st = status_json(admin);
    assert_eq!(server_field(&st, "web", "web1", "admin"), "drain", "{st}");
    for (b, s) in &all[1..] {
        assert_eq!(server_field(&st, b, s, "admin"), "ready", "{b}/{s}: {st}");
    }
}

/// The dashboard at 10 000 servers in 1 000 backends (no health checks; ten
/// addresses nothing listens on, shared by every backend): in Chromium the
/// page shows every backend closed with the search box, and searching one
/// server's name shows its row alone. Screenshots go to
/// `target/dashboard-10k.png` and `target/dashboard-10k-search.png`.
#[test]
fn dashboard_at_ten_thousand_servers_starts_closed_and_finds_a_server() {
    ensure_browser_deps();
    const BACKENDS: usize = 1000;
    const PER: usize = 10;
    let listen = free_addr();
    let admin = free_addr();
    let mut config = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[log]\naccess = \"off\"\n\n[frontends.public]\nlisten = [\"{listen}\"]\nbackend = \"be0000\"\n"
    );
    for b in 0..BACKENDS {
        config.push_str(&format!("\n[backends.be{b:04}]\nservers = [\n"));
        for s in 0..PER {
            config.push_str(&format!(
                "  {{ name = \"be{b:04}-s{s}\", address = \"127.0.0.1:{}\" }},\n",
                20000 + s
            ));
        }
        config.push_str("]\n");
    }
    let lb = Lb::start(&config, admin);
    let st = get(admin, "/api/v1/status?compact=true").expect("GET /api/v1/status");
    assert_eq!(st.status, 200, "{st:?}");
    let servers: usize = st.json()["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["servers"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(servers, BACKENDS * PER, "{}", lb.proc.output());

    let screenshot = repo().join("target/dashboard-10k.png");
    let node = Command::new("node")
        .arg(repo().join("tests/browser/dashboard_scale.mjs"))
        .arg(format!("http://{admin}/"))
        .args(["--backends", &BACKENDS.to_string()])
        .args(["--servers", &(BACKENDS * PER).to_string()])
        .args(["--search", "be0777-s3", "--screenshot"])
        .arg(&screenshot)
        .current_dir(repo())
        .stdin(Stdio::null())
        .spawn()
        .expect("run node tests/browser/dashboard_scale.mjs (is Node.js installed?)");
    let mut node = Node(node);
    // Bounds the whole run (the script bounds each of its waits too).
    let deadline = Instant::now() + Duration::from_secs(400);
    let status = loop {
        if let Some(st) = node.0.try_wait().expect("wait for node") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard_scale.mjs still running after 400s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "dashboard_scale.mjs failed ({status}); see its output above\nfulcrum log:\n{}",
        lb.proc.output()
    );
    for shot in [
        "target/dashboard-10k.png",
        "target/dashboard-10k-search.png",
    ] {
        let len = std::fs::metadata(repo().join(shot)).map_or(0, |m| m.len());
        assert!(len > 0, "{shot} was not written");
    }
}

/// The Node.js driver, killed through its handle (by PID) if the test ends before it does.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
