//! The changes `Runtime::apply` accepts.

use crate::config::types::{AdminState, Config, ServerConfig};

/// Every way live state can change. Reloads, admin API calls and discovery
/// updates all arrive as one of these and go through `Runtime::apply`.
///
/// What each costs: `SetAdmin` is an atomic store on the server plus a record
/// in the runtime overlay (no snapshot is built); `SetWeight` likewise, and
/// rebuilds that one backend when its balancer lays out weights (hash ring);
/// `AddServer`, `RemoveServer` and `SetDiscovered` rebuild that one backend
/// (and the frontends routing to it); a reload diffs and keeps what did not change.
#[derive(Debug, Clone)]
pub enum Change {
    /// Apply a newly loaded configuration file. Runtime edits (admin state,
    /// weight, servers added or removed through the API) are kept unless the
    /// file changed that same server.
    Reload(Box<Config>),
    /// Like `Reload`, and drop every runtime edit first (`reload --reset`).
    ReloadReset(Box<Config>),
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
    /// Replace the servers a backend's discovery source found (merged after the
    /// backend's configured `servers`). Servers no longer listed get no new
    /// traffic; requests and connections in flight on them finish.
    SetDiscovered {
        backend: String,
        servers: Vec<ServerConfig>,
    },
}

impl Change {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Reload(_) => "reload",
            Change::ReloadReset(_) => "reload --reset",
            Change::SetAdmin { .. } => "set admin state",
            Change::SetWeight { .. } => "set weight",
            Change::AddServer { .. } => "add server",
            Change::RemoveServer { .. } => "remove server",
            Change::SetDiscovered { .. } => "discovered servers",
        }
    }
}

/// Check a weight given through the API.
pub(super) fn check_weight(weight: u32) -> Result<(), super::ApplyError> {
    if (1..=256).contains(&weight) {
        Ok(())
    } else {
        Err(super::ApplyError::Invalid(format!(
            "weight {weight} is out of range; use 1..=256 (to stop traffic, drain the server)"
        )))
    }
}
