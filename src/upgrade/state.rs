//! The runtime state a new process takes over, as JSON: administrative
//! states and weights set at runtime, servers added through the API, and the
//! last health result of every server (so servers do not start cold, and the
//! new process does not wait for first checks it already has answers to).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::types::{AdminState, Config, ServerConfig};
use crate::runtime::server::{CheckReport, ServerKey, ServerState};
use crate::runtime::Snapshot;

/// Format version of [`Handed`]; a new process refuses one it does not know.
pub const VERSION: u32 = 1;

/// Everything sent to the new process besides the sockets themselves.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handed {
    pub version: u32,
    /// The process handing over.
    pub from_pid: u32,
    /// Configured address of each passed socket, in descriptor order.
    pub listeners: Vec<SocketAddr>,
    pub servers: Vec<ServerRecord>,
}

/// One server as the old process ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRecord {
    pub backend: String,
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub maxconn: Option<u32>,
    /// "ready" | "drain" | "maint".
    pub admin: String,
    /// Added through the admin API (not in the file, not discovered).
    pub added_at_runtime: bool,
    /// In the running configuration (file or API), not found by discovery.
    pub configured: bool,
    /// None when no check has answered yet (or checks are off).
    pub health: Option<Health>,
}

/// The last health facts of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub up: bool,
    /// Outcome and reason of the last check.
    pub ok: bool,
    pub detail: String,
}

fn admin_str(a: AdminState) -> &'static str {
    match a {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

fn parse_admin(s: &str) -> Option<AdminState> {
    match s {
        "ready" => Some(AdminState::Ready),
        "drain" => Some(AdminState::Drain),
        "maint" => Some(AdminState::Maint),
        _ => None,
    }
}

/// The servers of `snap`. `file` is the configuration last read from the
/// file: a configured server it does not list was added through the API.
pub fn capture(snap: &Snapshot, file: Option<&Config>) -> Vec<ServerRecord> {
    let mut out = Vec::new();
    for b in snap.backends.values() {
        let in_config = snap.config.backends.get(&*b.name);
        for s in &b.servers {
            let configured =
                in_config.is_some_and(|c| c.servers.iter().any(|x| x.name == s.key.name));
            let in_file = file
                .and_then(|f| f.backends.get(&*b.name))
                .is_some_and(|c| c.servers.iter().any(|x| x.name == s.key.name));
            let checks_on = b.config.health.check.is_some();
            let health = s.last_check().filter(|_| checks_on).map(|r| Health {
                up: s.is_up(),
                ok: r.ok,
                detail: r.detail,
            });
            out.push(ServerRecord {
                backend: b.name.to_string(),
                name: s.key.name.clone(),
                address: s.key.address,
                weight: s.weight(),
                backup: s.is_backup(),
                maxconn: s.maxconn(),
                admin: admin_str(s.admin()).to_string(),
                added_at_runtime: configured && file.is_some() && !in_file,
                configured,
                health,
            });
        }
    }
    out
}

/// Carry runtime edits into the configuration the new process starts with:
/// the admin state and weight of every server it still has, and the servers
/// added through the API (to backends that still exist).
pub fn apply_to_config(cfg: &mut Config, records: &[ServerRecord]) {
    for r in records.iter().filter(|r| r.configured) {
        let Some(b) = cfg.backends.get_mut(&r.backend) else {
            continue;
        };
        let admin = parse_admin(&r.admin).unwrap_or(AdminState::Ready);
        match b.servers.iter_mut().find(|s| s.name == r.name) {
            Some(s) if s.address == r.address => {
                s.admin = admin;
                if (1..=256).contains(&r.weight) {
                    s.weight = r.weight;
                }
            }
            Some(_) => {}
            None if r.added_at_runtime && (1..=256).contains(&r.weight) => {
                b.servers.push(ServerConfig {
                    name: r.name.clone(),
                    address: r.address,
                    weight: r.weight,
                    backup: r.backup,
                    maxconn: r.maxconn,
                    admin,
                });
            }
            None => {}
        }
    }
}

static SEED: Mutex<Option<HashMap<ServerKey, Health>>> = Mutex::new(None);

/// Remember the health results to seed new servers with (see [`seed`]).
pub fn set_seed(records: &[ServerRecord]) {
    let map = records
        .iter()
        .filter_map(|r| {
            let key = ServerKey {
                backend: r.backend.clone(),
                name: r.name.clone(),
                address: r.address,
            };
            r.health.clone().map(|h| (key, h))
        })
        .collect();
    if let Ok(mut g) = SEED.lock() {
        *g = Some(map);
    }
}

/// Forget the seed once start-up is over, so a later reload that re-creates
/// a server does not get an old result.
pub fn clear_seed() {
    if let Ok(mut g) = SEED.lock() {
        *g = None;
    }
}

/// Give a just-created server the health its previous process last saw
/// (once per server; no-op when nothing was handed over).
pub fn seed(server: &ServerState) {
    let Ok(mut g) = SEED.lock() else { return };
    let Some(h) = g.as_mut().and_then(|m| m.remove(&server.key)) else {
        return;
    };
    server.set_up(h.up);
    server.set_last_check(CheckReport {
        ok: h.ok,
        detail: format!("{} (before the upgrade)", h.detail),
        latency: std::time::Duration::ZERO,
        at: server.since_epoch(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, added: bool) -> ServerRecord {
        ServerRecord {
            backend: "web".into(),
            name: name.into(),
            address: "127.0.0.1:9".parse().expect("addr"),
            weight: 7,
            backup: false,
            maxconn: None,
            admin: "drain".into(),
            added_at_runtime: added,
            configured: true,
            health: None,
        }
    }

    #[test]
    fn runtime_edits_and_api_servers_survive() {
        let toml = r#"
[frontends.f]
listen = ["127.0.0.1:0"]
backend = "web"
[backends.web]
servers = [{ name = "a", address = "127.0.0.1:9" }]
"#;
        let mut cfg = crate::config::parse_str(toml, "t.toml").expect("config");
        apply_to_config(
            &mut cfg,
            &[record("a", false), record("b", true), record("gone", false)],
        );
        let servers = &cfg.backends["web"].servers;
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0].admin, AdminState::Drain);
        assert_eq!(servers[0].weight, 7);
        assert_eq!(servers[1].name, "b");
    }
}
