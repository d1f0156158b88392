//! The control plane end to end: admin API, `fulcrum ctl`, tokens, reloads
//! under load, and the OpenAPI document matching the implementation.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    servers: &[(&str, SocketAddr)],
    extra_admin: &str,
) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", address = \"{a}\" }}"))
        .collect();
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
health = {{ kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 2, fall = 2 }}
servers = [{}]
"#,
        list.join(", ")
    )
}

fn status(admin: SocketAddr) -> Value {
    get(admin, "/api/v1/status").expect("status").json()
}

fn server<'a>(st: &'a Value, b: &str, s: &str) -> Option<&'a Value> {
    st["backends"].as_array()?.iter().find(|x| x["name"] == b)?["servers"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == s)
}

#[test]
fn rolling_replacement_with_ctl_under_load_loses_nothing() {
    let (_b1, a1) = backend("old");
    let (_b2, a2) = backend("new");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, &[("old", a1)], ""), listen);
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.status == 200)
        .unwrap_or(false)));
    let url = format!("http://{admin}");
    let load = Load::start(listen, 8, 100_000);
    load.wait_more(100);

    // Seed 003: bootstrap the new box, put it in, observe, take the old one out gracefully.
    let (code, out) = ctl(&["--admin", &url, "add", "web", "new", &a2.to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || server(
            &status(admin),
            "web",
            "new"
        )
        .is_some_and(|s| s["usable"] == true)),
        "new server never became healthy"
    );
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.server() == "new")
        .unwrap_or(false)));
    let (code, out) = ctl(&[
        "--admin",
        &url,
        "drain",
        "web/old",
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("drained"), "{out}");
    load.wait_more(100);
    let (code, out) = ctl(&["--admin", &url, "remove", "web/old"]);
    assert_eq!(code, 0, "{out}");
    load.wait_more(100);
    let (ok, failed) = load.finish();
    println!("rolling replacement: {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    for _ in 0..10 {
        assert_eq!(get(listen, "/").expect("get").server(), "new");
    }
    let (code, out) = ctl(&["--admin", &url, "servers"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("BACKEND") && out.contains("new") && !out.contains("old"),
        "{out}"
    );
}

#[test]
fn drain_and_maint_stop_new_traffic_and_ready_restores_it() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(
        &config(listen, admin, &[("web1", a1), ("web2", a2)], ""),
        listen,
    );
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || server(
        &status(admin),
        "web",
        "web2"
    )
    .is_some_and(|s| s["usable"] == true)));
    let url = format!("http://{admin}");
    for state in ["drain", "maint"] {
        let (code, out) = ctl(&["--admin", &url, state, "web/web2"]);
        assert_eq!(code, 0, "{out}");
        for _ in 0..10 {
            assert_eq!(
                get(listen, "/").expect("get").server(),
                "web1",
                "after {state}"
            );
        }
        assert_eq!(
            server(&status(admin), "web", "web2").expect("web2")["admin"],
            state
        );
        let (code, out) = ctl(&["--admin", &url, "ready", "web/web2"]);
        assert_eq!(code, 0, "{out}");
        assert!(wait_until(Duration::from_secs(5), || (0..4).any(|_| get(
            listen, "/"
        )
        .map(|r| r.server() == "web2")
        .unwrap_or(false))));
    }
    let (code, out) = ctl(&["--admin", &url, "weight", "web/web2", "3"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        server(&status(admin), "web", "web2").expect("web2")["weight"],
        3
    );
}

#[test]
fn bad_api_input_gets_4xx_and_changes_nothing() {
    let (_b1, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, &[("web1", a1)], ""), listen);
    wait_listening(admin);
    let generation = status(admin)["generation"].clone();
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        (
            "PUT",
            "/api/v1/backends/web/servers/web1/state",
            "{not json",
            400,
        ),
        (
            "PUT",
            "/api/v1/backends/web/servers/web1/state",
            r#"{"state":"sleepy"}"#,
            400,
        ),
        (
            "PUT",
            "/api/v1/backends/web/servers/ghost/state",
            r#"{"state":"drain"}"#,
            404,
        ),
        (
            "PUT",
            "/api/v1/backends/nope/servers/web1/state",
            r#"{"state":"drain"}"#,
            404,
        ),
        (
            "PUT",
            "/api/v1/backends/web/servers/web1/weight",
            r#"{"weight":0}"#,
            400,
        ),
        (
            "PUT",
            "/api/v1/backends/web/servers/web1/weight",
            r#"{"weight":"heavy"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/backends/web/servers",
            r#"{"name":"web1","address":"127.0.0.1:1"}"#,
            // A taken name is a conflict (issue 19), no longer a plain 400.
            409,
        ),
        (
            "POST",
            "/api/v1/backends/web/servers",
            r#"{"name":"x","address":"nowhere"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/backends/web/servers",
            r#"{"name":"bad name!","address":"127.0.0.1:1"}"#,
            400,
        ),
        ("DELETE", "/api/v1/backends/web/servers/ghost", "", 404),
        ("GET", "/api/v1/nothing-here", "", 404),
        ("DELETE", "/api/v1/status", "", 405),
    ];
    for (method, path, body, want) in cases {
        let r = send(admin, method, path, &[], body).expect("request");
        assert_eq!(r.status, want, "{method} {path} {body}: {r:?}");
        assert!(
            r.json()["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: no error message: {}",
            r.body
        );
    }
    let big = format!(r#"{{"state":"{}"}}"#, "x".repeat(100_000));
    let r = send(
        admin,
        "PUT",
        "/api/v1/backends/web/servers/web1/state",
        &[],
        &big,
    )
    .expect("request");
    assert_eq!(r.status, 413, "{r:?}");
    let st = status(admin);
    assert_eq!(
        st["generation"], generation,
        "a refused call changed the configuration"
    );
    assert_eq!(server(&st, "web", "web1").expect("web1")["admin"], "ready");
    assert_eq!(
        st["backends"][0]["servers"].as_array().map(|a| a.len()),
        Some(1)
    );
}

#[test]
fn remove_refuses_a_busy_server_unless_forced() {
    let (_b1, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, &[("web1", a1)], ""), listen);
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.status == 200)
        .unwrap_or(false)));
    let slow = std::thread::spawn(move || get(listen, "/slow?ms=2000"));
    assert!(wait_until(Duration::from_secs(5), || server(
        &status(admin),
        "web",
        "web1"
    )
    .is_some_and(|s| s["active"] == 1)));
    let url = format!("http://{admin}");
    let (code, out) = ctl(&["--admin", &url, "remove", "web/web1"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("active connection"), "{out}");
    assert_eq!(
        slow.join().expect("join").expect("slow request").status,
        200
    );
}

#[test]
fn non_loopback_admin_requires_the_token() {
    let (_b1, a1) = backend("web1");
    let listen = free_addr();
    // Listen on every address, so the token applies; the test still talks to 127.0.0.1 only.
    let port = free_addr().port();
    let admin_any: SocketAddr = format!("0.0.0.0:{port}").parse().expect("addr");
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("admin.token");
    let token = "s3cret-token-for-tests-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let extra = format!("token_file = \"{}\"", token_file.display());
    let _lb = Lb::start(&config(listen, admin_any, &[("web1", a1)], &extra), listen);
    wait_listening(admin);
    let r = send(
        admin,
        "PUT",
        "/api/v1/backends/web/servers/web1/state",
        &[],
        r#"{"state":"drain"}"#,
    )
    .expect("req");
    assert_eq!(r.status, 401, "{r:?}");
    let r = send(
        admin,
        "PUT",
        "/api/v1/backends/web/servers/web1/state",
        &[("Authorization", "Bearer wrong-token-wrong-token-00")],
        r#"{"state":"drain"}"#,
    )
    .expect("req");
    assert_eq!(r.status, 401, "{r:?}");
    let r = get(admin, "/api/v1/status").expect("req");
    assert_eq!(
        r.status, 401,
        "reads need the token too without public_read"
    );
    let auth = format!("Bearer {token}");
    let st = request(admin, "GET", "/api/v1/status", &[("Authorization", &auth)])
        .expect("req")
        .json();
    assert_eq!(
        server(&st, "web", "web1").expect("web1")["admin"],
        "ready",
        "the refused calls changed state"
    );
    let url = format!("http://{admin}");
    let (code, out) = ctl(&["--admin", &url, "drain", "web/web1"]);
    assert_ne!(code, 0, "ctl without a token must fail: {out}");
    let (code, out) = ctl(&[
        "--admin",
        &url,
        "--token-file",
        token_file.to_str().expect("utf8"),
        "drain",
        "web/web1",
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn reload_through_the_api_reports_errors_and_keeps_running() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Lb::start(&config(listen, admin, &[("web1", a1)], ""), listen);
    wait_listening(admin);
    let g0 = status(admin)["generation"].as_u64().expect("generation");
    std::fs::write(
        lb.config_path(),
        "[frontends.www]\nlisten = [\"nowhere\"]\nbackend = \"ghost\"\n",
    )
    .expect("write");
    let r = request(admin, "POST", "/api/v1/reload", &[]).expect("reload");
    assert_eq!(r.status, 422, "{r:?}");
    let errs = r.json()["errors"].as_array().cloned().unwrap_or_default();
    assert!(errs.len() >= 2, "{}", r.body);
    assert!(
        errs.iter().all(|e| e["line"].as_u64().unwrap_or(0) > 0),
        "{}",
        r.body
    );
    let url = format!("http://{admin}");
    let (code, out) = ctl(&["--admin", &url, "reload"]);
    assert_ne!(code, 0);
    assert!(out.contains("fulcrum.toml:2:"), "{out}");
    assert_eq!(status(admin)["generation"].as_u64(), Some(g0));
    assert_eq!(get(listen, "/").expect("still serving").status, 200);
    std::fs::write(
        lb.config_path(),
        config(listen, admin, &[("web1", a1), ("web2", a2)], ""),
    )
    .expect("write");
    let (code, out) = ctl(&["--admin", &url, "reload"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(status(admin)["generation"].as_u64(), Some(g0 + 1));
}

#[test]
fn ctl_applies_a_change_to_every_node_and_reports_each() {
    let (_b1, a1) = backend("web1");
    let (l1, ad1) = (free_addr(), free_addr());
    let (l2, ad2) = (free_addr(), free_addr());
    let _lb1 = Lb::start(&config(l1, ad1, &[("web1", a1)], ""), l1);
    let _lb2 = Lb::start(&config(l2, ad2, &[("web1", a1)], ""), l2);
    wait_listening(ad1);
    wait_listening(ad2);
    let (u1, u2) = (format!("http://{ad1}"), format!("http://{ad2}"));
    let (code, out) = ctl(&["--admin", &u1, "--admin", &u2, "drain", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{u1}: ok")) && out.contains(&format!("{u2}: ok")),
        "{out}"
    );
    for ad in [ad1, ad2] {
        assert_eq!(
            server(&status(ad), "web", "web1").expect("web1")["admin"],
            "drain"
        );
    }
    // One node unreachable: the others still change, the exit code says it failed.
    let dead = format!("http://{}", free_addr());
    let (code, out) = ctl(&["--admin", &u1, "--admin", &dead, "ready", "web/web1"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("{u1}: ok")), "{out}");
    assert!(
        out.contains(&format!("{dead}: FAILED")) && out.contains("cannot reach"),
        "{out}"
    );
    assert_eq!(
        server(&status(ad1), "web", "web1").expect("web1")["admin"],
        "ready"
    );
    // Peers from the config file.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("ctl.toml");
    std::fs::write(
        &cfg,
        format!("[admin]\nlisten = \"{ad1}\"\n[cluster]\npeers = [\"{u2}\"]\n"),
    )
    .expect("write");
    let (code, out) = ctl(&["--config", cfg.to_str().expect("utf8"), "maint", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    for ad in [ad1, ad2] {
        assert_eq!(
            server(&status(ad), "web", "web1").expect("web1")["admin"],
            "maint"
        );
    }
}

#[test]
fn hot_reload_under_load_drops_nothing() {
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (_b3, a3) = backend("web3");
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Lb::start(
        &config(
            listen,
            admin,
            &[("web1", a1), ("web2", a2), ("web3", a3)],
            "",
        ),
        listen,
    );
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || server(
        &status(admin),
        "web",
        "web3"
    )
    .is_some_and(|s| s["usable"] == true)));
    let load = Load::start(listen, 20, 100_000);
    load.wait_more(200);
    // Change weights, add a backend with a route, remove a server.
    let next = format!(
        r#"
[admin]
listen = "{admin}"
[log]
access = "off"
[frontends.www]
listen = ["{listen}"]
backend = "web"
routes = [{{ path_prefix = "/api/", backend = "api" }}]
[backends.web]
health = {{ kind = "http", path = "/health", interval = "100ms", fast_interval = "50ms", rise = 2, fall = 2 }}
servers = [{{ name = "web1", address = "{a1}", weight = 5 }}, {{ name = "web2", address = "{a2}", weight = 1 }}]
[backends.api]
servers = [{{ name = "web3", address = "{a3}" }}]
"#
    );
    lb.reload(&next);
    assert!(wait_until(Duration::from_secs(10), || status(admin)
        ["backends"]
        .as_array()
        .is_some_and(|b| b.len() == 2)));
    load.wait_more(500);
    let (ok, failed) = load.finish();
    println!("hot reload under load: {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    assert_eq!(get(listen, "/api/x").expect("api").server(), "web3");
}

/// Check `v` against an OpenAPI schema subset: type, required, properties,
/// items, enum, nullable, $ref, allOf and anyOf.
fn conforms(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next().unwrap_or("");
        return conforms(spec, &spec["components"]["schemas"][name], v, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at}: null"))
        };
    }
    if let Some(any) = schema.get("anyOf").and_then(|a| a.as_array()) {
        let errors: Vec<String> = any
            .iter()
            .filter_map(|s| conforms(spec, s, v, at).err())
            .collect();
        if errors.len() == any.len() {
            return Err(format!(
                "{at}: matches none of anyOf: {}",
                errors.join("; ")
            ));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(|a| a.as_array()) {
        for s in all {
            conforms(spec, s, v, at)?;
        }
    }
    if let Some(e) = schema.get("enum").and_then(|e| e.as_array()) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    let ok = match schema.get("type").and_then(|t| t.as_str()) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{at}: {v} is not {}", schema["type"]));
    }
    for r in schema
        .get("required")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let k = r.as_str().unwrap_or("");
        if v.get(k).is_none() {
            return Err(format!("{at}: missing `{k}`"));
        }
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (k, s) in props {
            if let Some(x) = v.get(k) {
                conforms(spec, s, x, &format!("{at}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            conforms(spec, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn openapi_document_matches_the_implementation() {
    let spec: Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json parses");
    let (_b1, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, &[("web1", a1)], ""), listen);
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.status == 200)
        .unwrap_or(false)));
    let schema_of = |path: &str, method: &str, code: &str| -> Value {
        let mut r = spec["paths"][path][method]["responses"][code].clone();
        if let Some(name) = r
            .get("$ref")
            .and_then(|x| x.as_str())
            .map(|s| s.rsplit('/').next().unwrap_or("").to_string())
        {
            r = spec["components"]["responses"][name].clone();
        }
        r["content"]["application/json"]["schema"].clone()
    };
    // Every documented path and method is routed, and answers match their schemas.
    let add_body = format!(r#"{{"name":"extra","address":"{a1}","weight":3}}"#);
    let calls: Vec<(&str, &str, String, &str, &str)> = vec![
        ("/api/v1/status", "get", "/api/v1/status".into(), "", "200"),
        ("/api/v1/vrrp", "get", "/api/v1/vrrp".into(), "", "200"),
        (
            "/api/v1/backends/{backend}/servers/{server}",
            "get",
            "/api/v1/backends/web/servers/web1".into(),
            "",
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}/weight",
            "put",
            "/api/v1/backends/web/servers/web1/weight".into(),
            r#"{"weight":2}"#,
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}/state",
            "put",
            "/api/v1/backends/web/servers/web1/state".into(),
            r#"{"state":"ready"}"#,
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}/weight",
            "post",
            "/api/v1/backends/web/servers/web1/weight".into(),
            r#"{"weight":1}"#,
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}/state",
            "post",
            "/api/v1/backends/web/servers/web1/state".into(),
            r#"{"state":"ready"}"#,
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers",
            "post",
            "/api/v1/backends/web/servers".into(),
            &add_body,
            "201",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}",
            "delete",
            "/api/v1/backends/web/servers/extra".into(),
            "",
            "200",
        ),
        (
            "/api/v1/backends/{backend}/servers/{server}",
            "get",
            "/api/v1/backends/web/servers/ghost".into(),
            "",
            "404",
        ),
        ("/api/v1/reload", "post", "/api/v1/reload".into(), "", "200"),
        (
            "/api/v1/reload",
            "post",
            "/api/v1/reload?reset=null".into(),
            "",
            "400",
        ),
        (
            "/api/v1/status",
            "get",
            "/api/v1/status?compact=true&history=true".into(),
            "",
            "200",
        ),
    ];
    let mut covered = std::collections::HashSet::new();
    for (doc_path, method, real, body, code) in calls {
        let r = send(admin, &method.to_uppercase(), &real, &[], body).expect("request");
        assert_eq!(r.status.to_string(), code, "{method} {real}: {}", r.body);
        let schema = schema_of(doc_path, method, code);
        assert!(
            !schema.is_null(),
            "{method} {doc_path} {code} is not documented"
        );
        if let Err(e) = conforms(&spec, &schema, &r.json(), "response") {
            panic!("{method} {real}: {e}\n{}", r.body);
        }
        covered.insert((doc_path.to_string(), method.to_string()));
    }
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for method in ops
            .as_object()
            .expect("ops")
            .keys()
            .filter(|m| *m != "parameters")
        {
            assert!(
                covered.contains(&(path.clone(), method.clone())),
                "{method} {path} is documented but not exercised"
            );
        }
    }
}

#[test]
fn metrics_are_served_and_count_both_directions() {
    let (_b1, a1) = backend("web1");
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&config(listen, admin, &[("web1", a1)], ""), listen);
    wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.status == 200)
        .unwrap_or(false)));
    let r = send(listen, "POST", "/upload", &[], &"x".repeat(1000)).expect("post");
    assert_eq!(r.json()["body_bytes"], 1000, "{r:?}");
    let m = get(admin, "/metrics").expect("metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{m:?}"
    );
    assert!(
        m.body
            .contains("fulcrum_server_up{backend=\"web\",server=\"web1\"} 1"),
        "{}",
        m.body
    );
    let st = server(&status(admin), "web", "web1")
        .cloned()
        .expect("web1");
    assert!(st["bytes_in"].as_u64().unwrap_or(0) >= 1000, "{st}");
    assert!(st["bytes_out"].as_u64().unwrap_or(0) > 0, "{st}");
}

/// The `(before, after)` pairs of the change log lines for `web/a` whose
/// message starts with `what` ("admin state", "weight"), in log order.
fn change_log(log: &str, what: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("backend=web") && l.contains("server=a "))
        .filter_map(|l| {
            let rest = &l[l.find(&format!(" {what} "))? + what.len() + 2..];
            let (before, rest) = rest.split_once(" → ")?;
            let after = rest.split_whitespace().next()?;
            Some((before.to_string(), after.to_string()))
        })
        .collect()
}

/// True when `log` is one serial history starting at `initial`: every
/// change starts from what the previous one left.
fn chained(log: &[(String, String)], initial: &str) -> Result<(), String> {
    let mut at = initial.to_string();
    for (i, (before, after)) in log.iter().enumerate() {
        if *before != at {
            return Err(format!(
                "change {i} went {before} → {after}, but the state was {at}"
            ));
        }
        at = after.clone();
    }
    Ok(())
}

#[test]
fn concurrent_writers_of_one_server_serialise() {
    let (listen, admin, up) = (free_addr(), free_addr(), free_addr());
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
servers = [{{ name = "a", address = "{up}", weight = 1 }}, {{ name = "b", address = "{up}" }}]
"#
    );
    let lb = Lb::start(&toml, admin);
    const WRITERS: usize = 6;
    const EACH: usize = 20;
    let states = ["drain", "maint", "ready"];
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                for i in 0..EACH {
                    let (path, body, value) = if (w + i) % 2 == 0 {
                        let s = states[(w * 7 + i) % states.len()];
                        ("state", format!(r#"{{"state":"{s}"}}"#), s.to_string())
                    } else {
                        // Distinct per writer and step, so each logged value names its request.
                        let weight = 2 + w * EACH + i;
                        (
                            "weight",
                            format!(r#"{{"weight":{weight}}}"#),
                            weight.to_string(),
                        )
                    };
                    let r = send(
                        admin,
                        "PUT",
                        &format!("/api/v1/backends/web/servers/a/{path}"),
                        &[],
                        &body,
                    )
                    .expect("admin answers");
                    assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
                    sent.push((path, value));
                }
                sent
            })
        })
        .collect();
    let sent: Vec<(&str, String)> = writers
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .collect();
    let want_states = sent.iter().filter(|(p, _)| *p == "state").count();
    let want_weights = sent.len() - want_states;

    // Each change is logged once, under the lock that orders it.
    let (mut admins, mut weights) = (Vec::new(), Vec::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = lb.proc.output();
            admins = change_log(&log, "admin state");
            weights = change_log(&log, "weight");
            admins.len() >= want_states && weights.len() >= want_weights
        }),
        "not every change was logged: {} of {want_states} state, {} of {want_weights} weight changes\n{}",
        admins.len(),
        weights.len(),
        lb.proc.output()
    );
    assert_eq!(admins.len(), want_states, "{admins:?}");
    assert_eq!(weights.len(), want_weights, "{weights:?}");
    chained(&admins, "ready").unwrap_or_else(|e| panic!("admin state log: {e}: {admins:?}"));
    chained(&weights, "1").unwrap_or_else(|e| panic!("weight log: {e}: {weights:?}"));
    // The log's values are exactly the requested ones (each weight once).
    let mut logged: Vec<&String> = weights.iter().map(|(_, a)| a).collect();
    let mut asked: Vec<&String> = sent
        .iter()
        .filter(|(p, _)| *p == "weight")
        .map(|(_, v)| v)
        .collect();
    logged.sort();
    asked.sort();
    assert_eq!(logged, asked);

    // The server is where the last change of each kind left it; the other is untouched.
    let st = status(admin);
    let a = server(&st, "web", "a").expect("server a");
    let last = |l: &[(String, String)]| l.last().map(|(_, a)| a.clone()).unwrap_or_default();
    assert_eq!(a["admin"], last(&admins), "{a}");
    assert_eq!(a["weight"].to_string(), last(&weights), "{a}");
    let b = server(&st, "web", "b").expect("server b");
    assert_eq!(
        (b["admin"].as_str(), b["weight"].as_u64()),
        (Some("ready"), Some(1))
    );
}
