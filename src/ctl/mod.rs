//! `fulcrum ctl`: operate running load balancers through their admin API.
//! A change is applied to every node given (`--admin` repeated, or the
//! config's `[admin] listen` plus `[cluster] peers`), with a result per node.

pub mod client;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use client::{call, Node};

/// Options shared by every `ctl` command.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin API URL of a node (repeat for every node of a pair). Default http://127.0.0.1:9000.
    #[arg(long = "admin", global = true)]
    pub admin: Vec<String>,
    /// File holding the bearer token (needed when the admin listener is not on loopback).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Read this node's [admin] listen and its [cluster] peers from a config file.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// The `ctl` commands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCmd {
    /// Version, uptime, config generation, frontends and backends.
    Status,
    /// Every server as an aligned table (from the compact status form).
    Servers {
        /// Only this backend's servers.
        backend: Option<String>,
        /// Only servers in this state: up, down, ready, drain, maint, usable, unusable, ejected.
        #[arg(long)]
        state: Option<String>,
    },
    /// Stop new traffic to BACKEND/SERVER; in-flight requests finish.
    Drain {
        target: String,
        /// Return only when the server has no active connection left.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 1).
        #[arg(long, default_value = "5m", value_parser = parse_dur)]
        timeout: Duration,
    },
    /// Put BACKEND/SERVER back into rotation.
    Ready { target: String },
    /// Take BACKEND/SERVER out completely (no traffic at all).
    Maint { target: String },
    /// Set the weight of BACKEND/SERVER (1..=256).
    Weight { target: String, weight: u32 },
    /// Add a server: BACKEND SERVER ADDRESS.
    Add {
        backend: String,
        server: String,
        address: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long)]
        backup: bool,
        /// Start drained, e.g. to warm it up first.
        #[arg(long)]
        drain: bool,
    },
    /// Remove BACKEND/SERVER (refused while it has active connections unless --force).
    Remove {
        target: String,
        #[arg(long)]
        force: bool,
    },
    /// Re-read the configuration file; prints the errors if it is bad.
    /// Runtime edits (drain, weight, servers added or removed) are kept
    /// unless the file changed that same server.
    Reload {
        /// Drop every runtime edit: the pool becomes exactly the file's (and discovery's).
        #[arg(long)]
        reset: bool,
    },
    /// VRRP instances: state, master, priority, packet counters.
    Vrrp,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::duration::parse_duration(s)
}

fn split_target(t: &str) -> Result<(&str, &str)> {
    match t.split_once('/') {
        Some((b, s)) if !b.is_empty() && !s.is_empty() && !s.contains('/') => Ok((b, s)),
        _ => bail!("`{t}`: name a server as BACKEND/SERVER, e.g. web/web1"),
    }
}

/// The nodes a command goes to.
pub fn nodes(args: &CtlArgs) -> Result<Vec<Node>> {
    let mut urls: Vec<String> = args.admin.clone();
    if let Some(path) = &args.config {
        let cfg = crate::config::load_file(path)
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
        if let Some(a) = cfg.admin.listen {
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                a.ip().to_string()
            };
            let host = if a.is_ipv6() && !a.ip().is_unspecified() {
                format!("[{host}]")
            } else {
                host
            };
            urls.push(format!("http://{host}:{}", a.port()));
        }
        urls.extend(cfg.cluster.peers.iter().cloned());
    }
    if urls.is_empty() {
        urls.push("http://127.0.0.1:9000".into());
    }
    let mut out: Vec<Node> = Vec::new();
    for u in urls {
        let n = Node::parse(&u)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn read_token(args: &CtlArgs) -> Result<Option<String>> {
    match &args.token_file {
        None => Ok(None),
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read token file {}", p.display()))?;
            Ok(Some(t.lines().next().unwrap_or("").trim().to_string()))
        }
    }
}

/// Run one `ctl` command; returns the process exit code.
pub async fn run(args: CtlArgs) -> Result<i32> {
    let nodes = nodes(&args)?;
    let token = read_token(&args)?;
    let token = token.as_deref();
    let many = nodes.len() > 1;
    match &args.cmd {
        CtlCmd::Status | CtlCmd::Servers { .. } | CtlCmd::Vrrp => {
            let mut failed = false;
            for n in &nodes {
                if many {
                    println!("== {}", n.url);
                }
                let path = match &args.cmd {
                    CtlCmd::Vrrp => "/api/v1/vrrp".to_string(),
                    CtlCmd::Servers { backend, state } => {
                        let mut p = "/api/v1/status?compact=true".to_string();
                        if let Some(b) = backend {
                            p += &format!("&backend={}", query_escape(b));
                        }
                        if let Some(s) = state {
                            p += &format!("&state={}", query_escape(s));
                        }
                        p
                    }
                    _ => "/api/v1/status".to_string(),
                };
                match call(n, token, "GET", &path, None).await {
                    Ok(a) if a.status == 200 => match args.cmd {
                        CtlCmd::Status => print!("{}", render_status(&a.json)),
                        CtlCmd::Servers { .. } => print!("{}", render_servers(&a.json)),
                        _ => print!("{}", render_vrrp(&a.json)),
                    },
                    Ok(a) => {
                        eprintln!("{}: {}", n.url, a.error_message());
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("{e:#}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        CtlCmd::Drain {
            target,
            wait,
            timeout,
        } => {
            let (b, s) = split_target(target)?;
            let ok = change_all(
                &nodes,
                token,
                "PUT",
                &format!("/api/v1/backends/{b}/servers/{s}/state"),
                Some(json!({"state": "drain"})),
            )
            .await;
            if !ok {
                return Ok(1);
            }
            if *wait {
                return wait_idle(&nodes, token, b, s, *timeout).await;
            }
            Ok(0)
        }
        CtlCmd::Ready { target } | CtlCmd::Maint { target } => {
            let (b, s) = split_target(target)?;
            let state = if matches!(args.cmd, CtlCmd::Ready { .. }) {
                "ready"
            } else {
                "maint"
            };
            let ok = change_all(
                &nodes,
                token,
                "PUT",
                &format!("/api/v1/backends/{b}/servers/{s}/state"),
                Some(json!({ "state": state })),
            )
            .await;
            Ok(i32::from(!ok))
        }
        CtlCmd::Weight { target, weight } => {
            let (b, s) = split_target(target)?;
            let ok = change_all(
                &nodes,
                token,
                "PUT",
                &format!("/api/v1/backends/{b}/servers/{s}/weight"),
                Some(json!({ "weight": weight })),
            )
            .await;
            Ok(i32::from(!ok))
        }
        CtlCmd::Add {
            backend,
            server,
            address,
            weight,
            backup,
            drain,
        } => {
            let body = json!({
                "name": server, "address": address, "weight": weight, "backup": backup,
                "state": if *drain { "drain" } else { "ready" },
            });
            let ok = change_all(
                &nodes,
                token,
                "POST",
                &format!("/api/v1/backends/{backend}/servers"),
                Some(body),
            )
            .await;
            Ok(i32::from(!ok))
        }
        CtlCmd::Remove { target, force } => {
            let (b, s) = split_target(target)?;
            let q = if *force { "?force=true" } else { "" };
            let ok = change_all(
                &nodes,
                token,
                "DELETE",
                &format!("/api/v1/backends/{b}/servers/{s}{q}"),
                None,
            )
            .await;
            Ok(i32::from(!ok))
        }
        CtlCmd::Reload { reset } => {
            let path = if *reset {
                "/api/v1/reload?reset=true"
            } else {
                "/api/v1/reload"
            };
            let ok = change_all(&nodes, token, "POST", path, None).await;
            Ok(i32::from(!ok))
        }
    }
}

/// Apply one change to every node; print a line per node. True when all succeeded.
async fn change_all(
    nodes: &[Node],
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> bool {
    let mut all_ok = true;
    for n in nodes {
        match call(n, token, method, path, body.clone()).await {
            Ok(a) if (200..300).contains(&a.status) => {
                let what = describe_ok(&a.json);
                println!(
                    "{}: ok{}",
                    n.url,
                    if what.is_empty() {
                        String::new()
                    } else {
                        format!(" ({what})")
                    }
                );
            }
            Ok(a) => {
                all_ok = false;
                println!("{}: FAILED: {}", n.url, a.error_message());
                if let Some(errs) = a.json.get("errors").and_then(|e| e.as_array()) {
                    for e in errs {
                        if let Some(t) = e.get("text").and_then(|t| t.as_str()) {
                            println!("  {}", t.replace('\n', "\n  "));
                        }
                    }
                }
            }
            Err(e) => {
                all_ok = false;
                println!("{}: FAILED: {e:#}", n.url);
            }
        }
    }
    all_ok
}

fn describe_ok(v: &Value) -> String {
    if let Some(g) = v.get("generation").and_then(|g| g.as_u64()) {
        return format!("generation {g}");
    }
    match (
        v.get("name").and_then(|x| x.as_str()),
        v.get("admin").and_then(|x| x.as_str()),
    ) {
        (Some(n), Some(a)) => format!(
            "{n}: {a}, weight {}, {} active",
            v.get("weight").and_then(|w| w.as_u64()).unwrap_or(0),
            v.get("active").and_then(|w| w.as_u64()).unwrap_or(0)
        ),
        _ => String::new(),
    }
}

/// Poll every node until the server has no active connection (or it is gone).
async fn wait_idle(
    nodes: &[Node],
    token: Option<&str>,
    b: &str,
    s: &str,
    timeout: Duration,
) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    let path = format!("/api/v1/backends/{b}/servers/{s}");
    let mut last_report = Instant::now();
    loop {
        let mut busy = 0u64;
        let mut errors = 0;
        for n in nodes {
            match call(n, token, "GET", &path, None).await {
                Ok(a) if a.status == 200 => {
                    busy += a.json.get("active").and_then(|x| x.as_u64()).unwrap_or(0)
                }
                Ok(a) if a.status == 404 => {}
                Ok(a) => {
                    eprintln!("{}: {}", n.url, a.error_message());
                    errors += 1;
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    errors += 1;
                }
            }
        }
        if busy == 0 && errors == 0 {
            println!("{b}/{s} is drained: no active connections");
            return Ok(0);
        }
        if Instant::now() >= deadline {
            println!("{b}/{s}: still {busy} active connection(s) after {timeout:?}; giving up");
            return Ok(1);
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            println!("waiting for {b}/{s}: {busy} active connection(s)");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("-")
}
fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}
fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(|x| x.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `ctl status` text.
pub fn render_status(v: &Value) -> String {
    let mut out = format!(
        "fulcrum {}  up {:.0}s  generation {}  config {}\n",
        s(v, "version"),
        v.get("uptime_seconds")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0),
        n(v, "generation"),
        v.get("config_file")
            .and_then(|x| x.as_str())
            .unwrap_or("(none)")
    );
    for f in list(v, "frontends") {
        let listen: Vec<&str> = list(f, "listen")
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        out += &format!(
            "frontend {:<16} {:<4} {:<24} → {:<12} requests {:>8}  connections {}\n",
            s(f, "name"),
            s(f, "mode"),
            listen.join(","),
            f.get("backend")
                .and_then(|x| x.as_str())
                .unwrap_or("(routes)"),
            n(f, "requests_total"),
            n(f, "active_connections")
        );
    }
    for b in list(v, "backends") {
        out += &format!(
            "backend  {:<16} {:<10} servers usable {}/{}\n",
            s(b, "name"),
            s(b, "balance"),
            n(b, "servers_usable"),
            n(b, "servers_total")
        );
    }
    for i in list(v, "vrrp") {
        out += &format!("vrrp     {:<16} {}\n", s(i, "name"), s(i, "state"));
    }
    out
}

/// Percent-encode a query value (names are letters, digits, `-_.`; anything else is escaped).
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.,".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `ctl servers` table.
pub fn render_servers(v: &Value) -> String {
    let header = [
        "BACKEND",
        "SERVER",
        "ADDRESS",
        "ADMIN",
        "HEALTH",
        "WEIGHT",
        "ACTIVE",
        "TOTAL",
        "REQ/S",
        // After the columns scripts already read by position.
        "SOURCE",
        "LAST CHECK",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for b in list(v, "backends") {
        for sv in list(b, "servers") {
            let mut health = s(sv, "health").to_string();
            if sv.get("ejected").and_then(|x| x.as_bool()).unwrap_or(false) {
                health += " (ejected)";
            }
            if sv.get("backup").and_then(|x| x.as_bool()).unwrap_or(false) {
                health += " backup";
            }
            let check = sv
                .get("last_check")
                .filter(|c| !c.is_null())
                .map(|c| {
                    format!(
                        "{} {:.1}ms",
                        s(c, "detail"),
                        c.get("latency_ms").and_then(|x| x.as_f64()).unwrap_or(0.0)
                    )
                })
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                s(b, "name").into(),
                s(sv, "name").into(),
                s(sv, "address").into(),
                s(sv, "admin").into(),
                health,
                n(sv, "weight").to_string(),
                n(sv, "active").to_string(),
                n(sv, "total").to_string(),
                format!(
                    "{:.1}",
                    sv.get("request_rate")
                        .and_then(|x| x.as_f64())
                        .unwrap_or(0.0)
                ),
                s(sv, "source").into(),
                check,
            ]);
        }
    }
    table(rows)
}

/// `ctl vrrp` table: state, master, priority, packet counters per instance.
pub fn render_vrrp(v: &Value) -> String {
    let Some(items) = v.as_array() else {
        return format!("{v}\n");
    };
    if items.is_empty() {
        return "no VRRP instance is configured on this node\n".into();
    }
    let header = [
        "INSTANCE", "IFACE", "VRID", "STATE", "MASTER", "PRIORITY", "VIPS", "RX", "TX", "INVALID",
        "TRACKING",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for i in items {
        let invalid: u64 = i
            .get("invalid")
            .and_then(|x| x.as_object())
            .map(|m| m.values().filter_map(|c| c.as_u64()).sum())
            .unwrap_or(0);
        let vips: Vec<&str> = list(i, "virtual_ips")
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        let tracking: Vec<&str> = list(i, "tracking")
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        rows.push(vec![
            s(i, "name").into(),
            s(i, "interface").into(),
            n(i, "vrid").to_string(),
            i.get("state")
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .unwrap_or_default(),
            i.get("master")
                .and_then(|x| x.as_str())
                .unwrap_or("-")
                .into(),
            format!("{}/{}", n(i, "priority"), n(i, "configured_priority")),
            format!(
                "{}{}",
                vips.join(","),
                if i.get("vips_held")
                    .and_then(|x| x.as_bool())
                    .unwrap_or(false)
                {
                    " (held)"
                } else {
                    ""
                }
            ),
            n(i, "rx").to_string(),
            n(i, "tx").to_string(),
            invalid.to_string(),
            if tracking.is_empty() {
                "ok".into()
            } else {
                tracking.join("; ")
            },
        ]);
    }
    table(rows)
}

/// Left-aligned columns separated by two spaces.
fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}
