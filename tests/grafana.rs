//! The Grafana dashboard (dist/grafana/fulcrum.json) works on real data: a
//! real Prometheus server (Debian's `prometheus`, installed by .ci/run) on a
//! loopback ephemeral port scrapes a running fulcrum under a little traffic,
//! and every panel's PromQL, asked through Prometheus's HTTP API, returns at
//! least one series. Skips with a reason when `prometheus` is absent.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Percent-encode a query-string value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(prom: SocketAddr, expr: &str) -> Option<Value> {
    let r = get(prom, &format!("/api/v1/query?query={}", encode(expr))).ok()?;
    (r.status == 200).then(|| r.json())
}

/// The PromQL of every panel, with Grafana's variables given values.
fn panel_queries() -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/grafana/fulcrum.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "30s")
                .replace("$job", ".*");
            out.push((p["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    out
}

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    let queries = panel_queries();
    assert!(queries.len() >= 15, "{} panels", queries.len());
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIP: prometheus is not installed (Debian package `prometheus`; .ci/run installs it)"
        );
        return;
    }
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
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
health = {{ kind = "http", path = "/health", interval = "200ms", rise = 1, fall = 2 }}
servers = [{{ name = "web1", address = "{a1}" }}, {{ name = "web2", address = "{a2}" }}]
"#
    );
    let _lb = Lb::start(&toml, listen);
    wait_listening(admin);

    let dir = tempfile::tempdir().expect("tmp");
    let prom_addr = free_addr();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fulcrum\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start prometheus");
    // Ended by PID however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(child);
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    let load = Load::start(listen, 2, 100_000);
    load.wait_more(50);
    // Wait until Prometheus has scraped fulcrum successfully several times.
    let scraped = wait_until(Duration::from_secs(60), || {
        query(
            prom_addr,
            "count_over_time(up{job=\"fulcrum\"}[1m]) >= 5 and up{job=\"fulcrum\"} == 1",
        )
        .is_some_and(|v| {
            v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        })
    });
    assert!(scraped, "Prometheus never scraped fulcrum:\n{}", prom_log());

    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let r = query(prom_addr, expr).unwrap_or_else(|| panic!("{title}: query refused: {expr}"));
        assert_eq!(r["status"], "success", "{title}: {r}");
        let n = r["data"]["result"].as_array().map_or(0, Vec::len);
        if n == 0 {
            empty.push(format!("{title}: {expr}"));
        }
    }
    let (ok, failed) = load.finish();
    println!(
        "load: {ok} ok, {failed} failed; {} panel queries",
        queries.len()
    );
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}
