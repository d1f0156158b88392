//! The admin API's edges: a token on a loopback listener is enforced, refusals
//! are logged without the credential, the bearer scheme is case-insensitive,
//! 405 carries `Allow`, bad server names and addresses are 400, a taken name is
//! 409, and `fulcrum check` refuses what `run` refuses.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn config(listen: SocketAddr, admin: SocketAddr, server: SocketAddr, extra_admin: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"
{extra_admin}

[log]
access = "off"

[frontends.www]
listen = ["{listen}"]
backend = "web"

[backends.web]
servers = [{{ name = "web1", address = "{server}" }}]
"#
    )
}

const TOKEN: &str = "loopback-token-for-tests-0123456789";

#[test]
fn a_token_on_a_loopback_listener_is_required_and_refusals_are_logged() {
    let (_b, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let extra = format!("token_file = \"{}\"", token_file.display());
    let lb = Lb::start(&config(listen, admin, a1, &extra), listen);
    wait_listening(admin);

    let drain = r#"{"state":"drain"}"#;
    let path = "/api/v1/backends/web/servers/web1/state";
    let r = send(admin, "PUT", path, &[], drain).expect("req");
    assert_eq!(
        r.status, 401,
        "loopback must not bypass a configured token: {r:?}"
    );
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let wrong = "Bearer not-the-token-but-long-enough-secret";
    let r = send(admin, "PUT", path, &[("Authorization", wrong)], drain).expect("req");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(get(admin, "/api/v1/status").expect("req").status, 401);

    // RFC 9110 §11.1: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {TOKEN}");
        let r = request(admin, "GET", "/api/v1/status", &[("Authorization", &auth)]).expect("req");
        assert_eq!(r.status, 200, "scheme {scheme}: {r:?}");
    }
    let auth = format!("bearer {TOKEN}");
    let r = send(admin, "PUT", path, &[("Authorization", &auth)], drain).expect("req");
    assert_eq!(r.status, 200, "{r:?}");

    // Each refusal is logged with the client address and path, never the token sent.
    assert!(
        wait_until(Duration::from_secs(5), || lb
            .proc
            .output()
            .matches("admin API authentication failed")
            .count()
            >= 3),
        "{}",
        lb.proc.output()
    );
    let out = lb.proc.output();
    let line = out
        .lines()
        .find(|l| l.contains("authentication failed") && l.contains("wrong bearer token"))
        .unwrap_or_else(|| panic!("no refusal line for the wrong token:\n{out}"));
    assert!(
        line.contains("127.0.0.1:"),
        "client address missing: {line}"
    );
    assert!(line.contains(path), "path missing: {line}");
    assert!(
        !out.contains("not-the-token"),
        "the credential was logged:\n{out}"
    );
    assert!(!out.contains(TOKEN), "the token was logged:\n{out}");
}

#[test]
fn methods_names_addresses_and_duplicates_get_the_right_status() {
    let (_b, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, a1, ""), listen);
    wait_listening(admin);

    for (method, path, allow) in [
        ("DELETE", "/api/v1/status", "GET, HEAD"),
        ("GET", "/api/v1/reload", "POST"),
        (
            "PATCH",
            "/api/v1/backends/web/servers/web1",
            "GET, HEAD, DELETE",
        ),
        (
            "GET",
            "/api/v1/backends/web/servers/web1/state",
            "PUT, POST",
        ),
        ("GET", "/api/v1/backends/web/servers", "POST"),
    ] {
        let r = request(admin, method, path, &[]).expect("req");
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}: {r:?}");
    }
    // The methods `Allow` names are served.
    let r = request(admin, "HEAD", "/api/v1/status", &[]).expect("head");
    assert_eq!(r.status, 200, "{r:?}");

    let add = |name: &str, address: &str| {
        let body = serde_json::json!({ "name": name, "address": address }).to_string();
        send(admin, "POST", "/api/v1/backends/web/servers", &[], &body).expect("add")
    };
    for name in [".", "..", "a/b", "", "x y"] {
        let r = add(name, &a1.to_string());
        assert_eq!(r.status, 400, "name {name:?}: {r:?}");
    }
    for address in [
        "0.0.0.0:0",
        "0.0.0.0:80",
        "127.0.0.1:0",
        "255.255.255.255:80",
        "224.0.0.1:80",
        "[ff02::1]:80",
        "[::]:80",
    ] {
        let r = add("newone", address);
        assert_eq!(r.status, 400, "address {address}: {r:?}");
        assert!(r.body.contains("error"), "{r:?}");
    }
    let r = add("web1", &a1.to_string());
    assert_eq!(r.status, 409, "duplicate name: {r:?}");
    let r = add("web2", &a1.to_string());
    assert_eq!(r.status, 201, "{r:?}");
    let r = add("web2", &a1.to_string());
    assert_eq!(r.status, 409, "duplicate of an API-added server: {r:?}");

    let big = format!(r#"{{"state":"{}"}}"#, "x".repeat(70 * 1024));
    let r = send(
        admin,
        "PUT",
        "/api/v1/backends/web/servers/web1/state",
        &[],
        &big,
    )
    .expect("big");
    assert_eq!(r.status, 413, "{}", r.status);
}

fn check(toml: &str, dir: &std::path::Path) -> (bool, String) {
    let path = dir.join("fulcrum.toml");
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_what_run_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let short = dir.path().join("short.token");
    std::fs::write(&short, "tooshort\n").expect("write");
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"{}\"\n",
        short.display()
    );
    let (ok, err) = check(&toml, dir.path());
    assert!(!ok, "check accepted a short token");
    assert!(err.contains("too short") && err.contains(":3:"), "{err}");
    assert!(
        !err.contains("tooshort"),
        "the token's text was printed: {err}"
    );
    // `run` refuses the same file for the same reason.
    let cfg = dir.path().join("fulcrum.toml");
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too short"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing =
        "[admin]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"/nonexistent/admin.token\"\n";
    let (ok, err) = check(missing, dir.path());
    assert!(!ok && err.contains("cannot read admin token file"), "{err}");

    for address in [
        "0.0.0.0:0",
        "10.0.0.1:0",
        "255.255.255.255:80",
        "224.0.0.1:80",
        "[ff05::2]:80",
        "0.0.0.0:80",
    ] {
        let toml = format!(
            "[frontends.www]\nlisten = [\"127.0.0.1:8080\"]\nbackend = \"web\"\n\n[backends.web]\nservers = [{{ name = \"a\", address = \"{address}\" }}]\n"
        );
        let (ok, err) = check(&toml, dir.path());
        assert!(!ok, "check accepted server address {address}");
        assert!(err.contains(":6:"), "{address}: {err}");
    }
    for name in [".", ".."] {
        let toml = format!(
            "[frontends.www]\nlisten = [\"127.0.0.1:8080\"]\nbackend = \"web\"\n\n[backends.web]\nservers = [{{ name = \"{name}\", address = \"127.0.0.1:80\" }}]\n"
        );
        let (ok, err) = check(&toml, dir.path());
        assert!(!ok, "check accepted server name {name}: {err}");
    }
}

#[test]
fn stats_csv_has_haproxys_columns() {
    let (_b, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, a1, ""), listen);
    wait_listening(admin);
    for _ in 0..3 {
        assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
            .map(|r| r.status == 200)
            .unwrap_or(false)));
    }
    for path in ["/stats;csv", "/api/v1/stats.csv"] {
        let r = get(admin, path).expect("csv");
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")));
        let mut lines = r.body.lines();
        let header = lines.next().expect("header");
        let cols: Vec<&str> = header
            .trim_start_matches("# ")
            .trim_end_matches(',')
            .split(',')
            .collect();
        assert_eq!(&cols[..4], ["pxname", "svname", "qcur", "qmax"], "{header}");
        assert_eq!(cols[17], "status");
        assert_eq!(cols.len(), 51);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let col = |row: &Vec<&str>, name: &str| -> String {
            let i = cols.iter().position(|c| *c == name).expect("column");
            row.get(i).copied().unwrap_or("").to_string()
        };
        let find = |px: &str, sv: &str| {
            rows.iter()
                .find(|r| r.first() == Some(&px) && r.get(1) == Some(&sv))
                .unwrap_or_else(|| panic!("no row {px}/{sv}:\n{}", r.body))
        };
        let fe = find("www", "FRONTEND");
        assert!(col(fe, "stot").parse::<u64>().expect("stot") >= 3);
        let srv = find("web", "web1");
        assert_eq!(col(srv, "status"), "UP");
        assert_eq!(col(srv, "type"), "2");
        assert!(
            col(srv, "bin").parse::<u64>().expect("bin") > 0,
            "head bytes count"
        );
        assert!(col(srv, "hrsp_2xx").parse::<u64>().expect("2xx") >= 3);
        let be = find("web", "BACKEND");
        assert_eq!(col(be, "type"), "1");
    }
    let st = get(admin, "/api/v1/status").expect("status").json();
    let s = &st["backends"][0]["servers"][0];
    for key in [
        "active_max",
        "request_rate_max",
        "check_down",
        "last_change_seconds",
        "downtime_seconds",
    ] {
        assert!(!s[key].is_null(), "status lacks {key}: {s}");
    }
    assert!(!st["backends"][0]["queue_max"].is_null());
    assert!(!st["frontends"][0]["denied_total"].is_null());
}
