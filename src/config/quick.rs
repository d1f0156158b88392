//! Config-less quick mode, like `balance -b 0.0.0.0 80 web0 web1`:
//! `fulcrum run --listen 0.0.0.0:80 --server 10.0.0.1:80 --server 10.0.0.2:80`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::types::*;
use super::validate::{default_backend, default_frontend, default_server};

/// What the command line gave.
#[derive(Debug, Clone)]
pub struct QuickOptions {
    pub listen: Vec<SocketAddr>,
    pub servers: Vec<SocketAddr>,
    pub mode: Mode,
    pub balance: Algorithm,
    /// None: no active checks. Some: "tcp" or an HTTP path such as "/health".
    pub check: Option<String>,
    pub admin: Option<SocketAddr>,
}

/// Build a one-frontend, one-backend configuration named `quick`.
pub fn quick_config(o: &QuickOptions) -> Result<Config, String> {
    if o.listen.is_empty() {
        return Err("give at least one --listen address".into());
    }
    if o.servers.is_empty() {
        return Err("give at least one --server address".into());
    }
    let check = match o.check.as_deref() {
        None => None,
        Some("tcp") => Some(CheckKind::Tcp),
        Some(p) if p.starts_with('/') => Some(CheckKind::Http {
            method: "GET".into(),
            path: p.to_string(),
            host: None,
            expect: StatusRange { min: 200, max: 399 },
        }),
        Some(other) => {
            return Err(format!(
                "--check `{other}`: use \"tcp\" or an HTTP path like \"/health\""
            ))
        }
    };
    let servers = o
        .servers
        .iter()
        .enumerate()
        .map(|(i, a)| default_server(&format!("s{}", i + 1), *a))
        .collect();
    let mut backend = default_backend("quick", servers);
    backend.balance = o.balance;
    backend.health.check = check;
    let frontend = default_frontend("quick", o.mode, o.listen.clone(), Some("quick".into()));
    Ok(Config {
        source: None,
        admin: AdminConfig {
            listen: o.admin,
            token_file: None,
            public_read: false,
        },
        log: LogConfig::default(),
        frontends: BTreeMap::from([("quick".to_string(), frontend)]),
        backends: BTreeMap::from([("quick".to_string(), backend)]),
        cluster: ClusterConfig::default(),
        global: Default::default(),
        vrrp: Default::default(),
    })
}
