//! `fulcrum demo`: three demo backends and a round-robin load balancer with
//! HTTP health checks, all on loopback, no root and no files needed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::{start_backend, BackendOptions};
use crate::config::types::*;
use crate::config::validate::{default_backend, default_frontend, default_server};

/// Where the demo listens.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Address of the demo site (the load balancer's frontend).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin listener (dashboard, API, metrics).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub admin: SocketAddr,
    /// Port of the first demo backend; the three backends use this port and the next two.
    #[arg(long, default_value_t = 9101)]
    pub backend_port: u16,
}

/// The configuration the demo runs: frontend `www` → backend `web` (web1..web3).
pub fn demo_config(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    backends: &[(String, SocketAddr)],
) -> Config {
    let servers = backends
        .iter()
        .map(|(name, address)| default_server(name, *address))
        .collect();
    let mut web = default_backend("web", servers);
    web.timeouts.connect = Duration::from_secs(1);
    web.health = HealthConfig {
        check: Some(CheckKind::Http {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            expect: StatusRange { min: 200, max: 200 },
        }),
        interval: Duration::from_secs(1),
        fast_interval: Duration::from_millis(250),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
        port: None,
        address: None,
    };
    let www = default_frontend("www", Mode::Http, vec![listen], Some("web".into()));
    Config {
        source: None,
        admin: AdminConfig {
            listen: admin,
            token_file: None,
            public_read: false,
        },
        log: LogConfig::default(),
        frontends: BTreeMap::from([("www".to_string(), www)]),
        backends: BTreeMap::from([("web".to_string(), web)]),
        cluster: ClusterConfig::default(),
        global: Default::default(),
        vrrp: Default::default(),
    }
}

/// Run the demo until Ctrl-C or SIGTERM.
pub async fn run_demo(o: DemoOptions) -> Result<()> {
    let ip = o.listen.ip();
    let mut handles = Vec::new();
    for i in 0..3u16 {
        let name = format!("web{}", i + 1);
        let port = o
            .backend_port
            .checked_add(i)
            .context("--backend-port is too high")?;
        let listen = SocketAddr::new(ip, port);
        let h = start_backend(BackendOptions {
            name: name.clone(),
            listen,
        })
        .await
        .with_context(|| {
            format!("cannot start demo backend {name} on {listen} (use --backend-port)")
        })?;
        handles.push((name, h));
    }
    let backends: Vec<(String, SocketAddr)> = handles
        .iter()
        .map(|(n, h)| (n.clone(), h.local_addr()))
        .collect();
    let rt = crate::supervisor::start(demo_config(o.listen, Some(o.admin), &backends))
        .await
        .with_context(|| {
            format!(
                "cannot start the load balancer on {} (use --listen)",
                o.listen
            )
        })?;
    let admin_cfg = rt.snapshot().config.admin.clone();
    crate::admin::start(rt.clone(), &admin_cfg, Default::default())
        .await
        .with_context(|| {
            format!(
                "cannot start the admin listener on {} (use --admin)",
                o.admin
            )
        })?;

    // Wait (bounded) until health checks have seen every backend.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let up = rt
            .snapshot()
            .backends
            .get("web")
            .map_or(0, |b| b.usable_count());
        if up == backends.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!();
    println!("fulcrum demo is running.");
    println!();
    println!("  site (load balancer):  http://{}/", o.listen);
    println!("  dashboard:             http://{}/", o.admin);
    println!("  status API:            http://{}/api/v1/status", o.admin);
    println!("  metrics:               http://{}/metrics", o.admin);
    for (name, addr) in &backends {
        println!("  backend {name}:         http://{addr}/   (health: http://{addr}/health)");
    }
    println!();
    println!("Round robin at work, six requests through the load balancer:");
    for i in 1..=6 {
        match get(o.listen, "/").await {
            Ok((status, body)) => {
                let server = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("server").and_then(|s| s.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                println!("  request {i}: HTTP {status} from {server}");
            }
            Err(e) => println!("  request {i}: failed: {e}"),
        }
    }
    let web2 = backends.get(1).map(|(_, a)| *a).unwrap_or(o.listen);
    println!();
    println!("Try it:");
    println!("  curl -s http://{}/                                  # answered by web1, web2, web3 in turn", o.listen);
    println!("  curl -s -X POST http://{web2}/_control/health/fail    # web2's health check fails: it leaves the pool");
    println!("  curl -s -X POST http://{web2}/_control/health/ok      # and comes back after 2 good checks");
    println!(
        "  while true; do curl -s http://{}/; sleep 0.2; done  # seed 004's curl loop",
        o.listen
    );
    println!();
    println!("Access log below. Ctrl-C to stop.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    rt.shutdown(Duration::from_secs(5)).await;
    for (_, h) in handles {
        h.stop().await;
    }
    Ok(())
}

/// One `GET` over a fresh connection; returns status and body.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    Ok((status, body.to_string()))
}
