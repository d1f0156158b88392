//! The changes `Runtime::apply` accepts, and how each edits the configuration.

use std::sync::Arc;

use crate::config::types::{AdminState, Config, ServerConfig};

use super::snapshot::Snapshot;
use super::ApplyError;

/// Every way live state can change. Reloads, admin API calls and discovery
/// updates all arrive as one of these and go through `Runtime::apply`.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace the whole configuration (SIGHUP, API reload).
    Reload(Box<Config>),
    /// Set a server's administrative state (ready / drain / maint).
    SetAdmin {
        backend: String,
        server: String,
        state: AdminState,
    },
    /// Set a server's weight (1..=256).
    SetWeight {
        backend: String,
        server: String,
        weight: u32,
    },
    /// Add a server to a backend.
    AddServer {
        backend: String,
        server: ServerConfig,
    },
    /// Remove a server; refused while it has active connections unless `force`.
    RemoveServer {
        backend: String,
        server: String,
        force: bool,
    },
    /// Replace the servers a backend's discovery source found (added after the
    /// backend's configured `servers`). Servers no longer listed get no new
    /// traffic; requests and connections in flight on them finish.
    SetDiscovered {
        backend: String,
        servers: Vec<ServerConfig>,
    },
}

fn find_server<'a>(
    cfg: &'a mut Config,
    backend: &str,
    server: &str,
) -> Result<&'a mut ServerConfig, ApplyError> {
    let b = cfg
        .backends
        .get_mut(backend)
        .ok_or_else(|| ApplyError::UnknownBackend(backend.to_string()))?;
    b.servers
        .iter_mut()
        .find(|s| s.name == server)
        .ok_or_else(|| ApplyError::UnknownServer(backend.to_string(), server.to_string()))
}

/// The configuration that results from applying `change` to `current`.
/// `SetAdmin` also sets the live state at once, so a drain takes effect even
/// for connections that picked a server from the previous snapshot.
pub(super) fn next_config(current: &Snapshot, change: Change) -> Result<Config, ApplyError> {
    let mut cfg = Config::clone(&current.config);
    match change {
        Change::Reload(c) => return Ok(*c),
        Change::SetDiscovered { .. } => {}
        Change::SetAdmin {
            backend,
            server,
            state,
        } => {
            find_server(&mut cfg, &backend, &server)?.admin = state;
            if let Some(s) = current.server(&backend, &server) {
                s.set_admin(state);
            }
        }
        Change::SetWeight {
            backend,
            server,
            weight,
        } => {
            if !(1..=256).contains(&weight) {
                return Err(ApplyError::Invalid(format!(
                    "weight {weight} is out of range; use 1..=256 (to stop traffic, drain the server)"
                )));
            }
            find_server(&mut cfg, &backend, &server)?.weight = weight;
        }
        Change::AddServer { backend, server } => {
            let b = cfg
                .backends
                .get_mut(&backend)
                .ok_or_else(|| ApplyError::UnknownBackend(backend.clone()))?;
            if b.servers.iter().any(|s| s.name == server.name) {
                return Err(ApplyError::Invalid(format!(
                    "backend `{backend}` already has a server named `{}`",
                    server.name
                )));
            }
            if !(1..=256).contains(&server.weight) {
                return Err(ApplyError::Invalid(format!(
                    "weight {} is out of range; use 1..=256",
                    server.weight
                )));
            }
            b.servers.push(server);
        }
        Change::RemoveServer {
            backend,
            server,
            force,
        } => {
            let live: Option<Arc<_>> = current.server(&backend, &server).cloned();
            let b = cfg
                .backends
                .get_mut(&backend)
                .ok_or_else(|| ApplyError::UnknownBackend(backend.clone()))?;
            let pos = b
                .servers
                .iter()
                .position(|s| s.name == server)
                .ok_or_else(|| ApplyError::UnknownServer(backend.clone(), server.clone()))?;
            if let Some(live) = live {
                let active = live.active();
                if active > 0 && !force {
                    return Err(ApplyError::Busy {
                        backend,
                        server,
                        active,
                    });
                }
            }
            b.servers.remove(pos);
        }
    }
    Ok(cfg)
}
