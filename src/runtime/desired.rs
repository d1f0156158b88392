//! The desired state of a backend's server list: layered sources merged into
//! one list, pure (no I/O, no clocks), so the rules are tested here.
//!
//! A backend's servers come from three sources, in this order of precedence
//! for *which servers exist and at what address*:
//!
//! 1. the configuration file (`servers = [...]`),
//! 2. the backend's discovery source (inventory file, DNS, etcd, …),
//! 3. the runtime API (`POST …/servers`, `fulcrum ctl add`).
//!
//! A name defined by a higher source hides the same name from a lower one.
//! On top of the merged list lies the runtime [`Overlay`] — what operators
//! changed through the API: admin state and weight overrides, servers removed
//! ("tombstones") and servers added. The rule for how long an override holds
//! is HAProxy's `server-state-file` model: **an override holds until the
//! source that defines the server changes that same thing**. An override
//! remembers the source's value it was made against (its `base`); when the
//! source later says something else, the source wins and the override is
//! dropped. A tombstone remembers the address it removed; a source listing
//! the name at another address defines a new server, which shows.
//! `reset` (reload `--reset`) drops the whole overlay.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use crate::config::types::{AdminState, ServerConfig};

/// Where a server in the merged list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerSource {
    /// The configuration file's `servers`.
    File,
    /// An inventory file watched by discovery.
    Inventory,
    /// DNS A/AAAA or SRV records.
    Dns,
    /// Another discovery source (e.g. a key-value store).
    Discovery,
    /// Added through the admin API / `fulcrum ctl add`.
    Api,
}

impl ServerSource {
    /// The name used by the API (`source` field): file, inventory, dns, discovery, api.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::File => "file",
            ServerSource::Inventory => "inventory",
            ServerSource::Dns => "dns",
            ServerSource::Discovery => "discovery",
            ServerSource::Api => "api",
        }
    }

    /// The source kind of servers found by this discovery configuration.
    pub fn of_discovery(cfg: &crate::config::types::DiscoveryConfig) -> ServerSource {
        use crate::config::types::DiscoveryConfig;
        match cfg {
            DiscoveryConfig::File { .. } => ServerSource::Inventory,
            DiscoveryConfig::Dns { .. } => ServerSource::Dns,
            #[cfg(feature = "etcd")]
            DiscoveryConfig::Etcd(_) => ServerSource::Discovery,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            ServerSource::File => 0,
            ServerSource::Inventory => 1,
            ServerSource::Dns => 2,
            ServerSource::Discovery => 3,
            ServerSource::Api => 4,
        }
    }

    pub(crate) fn from_u8(v: u8) -> ServerSource {
        match v {
            1 => ServerSource::Inventory,
            2 => ServerSource::Dns,
            3 => ServerSource::Discovery,
            4 => ServerSource::Api,
            _ => ServerSource::File,
        }
    }
}

/// An operator's value for one setting, with the source's value it was made against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned<T> {
    /// What the operator set.
    pub value: T,
    /// What the defining source said when the operator set it.
    pub base: T,
}

/// Runtime edits of one backend (what the state file keeps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Servers added through the API, in the order added. Their admin state
    /// and weight are edited in place (the API is their source).
    pub added: Vec<ServerConfig>,
    /// Servers removed through the API: name → the address removed.
    pub removed: BTreeMap<String, SocketAddr>,
    /// Admin state set through the API on file or discovered servers.
    pub admin: BTreeMap<String, Pinned<AdminState>>,
    /// Weight set through the API on file or discovered servers.
    pub weight: BTreeMap<String, Pinned<u32>>,
}

impl Overlay {
    /// True when there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.admin.is_empty()
            && self.weight.is_empty()
    }

    /// Record an admin state set through the API on a server whose source
    /// says `base` (for an API-added server, edits it in place).
    pub fn set_admin(&mut self, name: &str, value: AdminState, base: AdminState, api: bool) {
        if api {
            if let Some(a) = self.added.iter_mut().find(|a| a.name == name) {
                a.admin = value;
            }
        } else if value == base {
            self.admin.remove(name);
        } else {
            self.admin.insert(name.to_string(), Pinned { value, base });
        }
    }

    /// Record a weight set through the API (see [`Overlay::set_admin`]).
    pub fn set_weight(&mut self, name: &str, value: u32, base: u32, api: bool) {
        if api {
            if let Some(a) = self.added.iter_mut().find(|a| a.name == name) {
                a.weight = value;
            }
        } else if value == base {
            self.weight.remove(name);
        } else {
            self.weight.insert(name.to_string(), Pinned { value, base });
        }
    }

    /// Record that the API removed `name` at `address` from `source`.
    pub fn remove(&mut self, name: &str, address: SocketAddr, source: ServerSource) {
        self.admin.remove(name);
        self.weight.remove(name);
        if source == ServerSource::Api {
            self.added.retain(|a| a.name != name);
        } else {
            self.removed.insert(name.to_string(), address);
        }
    }

    /// Record a server added through the API. A tombstone of the same name
    /// stays: it keeps the removed server hidden, so the API's one shows.
    pub fn add(&mut self, server: ServerConfig) {
        self.admin.remove(&server.name);
        self.weight.remove(&server.name);
        self.added.push(server);
    }
}

/// One server of the merged list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The server's settings with the overlay applied.
    pub config: ServerConfig,
    /// Which source defines it.
    pub source: ServerSource,
}

/// What [`merge`] dropped from the overlay because a source changed the
/// same server (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub server: String,
    pub what: &'static str,
}

/// Merge a backend's sources and overlay into its server list (file servers,
/// then discovered, then API-added; see the module doc). Overlay entries a
/// source has overridden since are removed from `overlay` and reported.
pub fn merge(
    file: &[ServerConfig],
    discovered: &[ServerConfig],
    discovered_kind: ServerSource,
    overlay: &mut Overlay,
) -> (Vec<Member>, Vec<Superseded>) {
    let mut dropped = Vec::new();
    let mut names: HashSet<&str> = HashSet::with_capacity(file.len() + discovered.len());
    let mut out: Vec<Member> =
        Vec::with_capacity(file.len() + discovered.len() + overlay.added.len());
    let mut stale_tombstones = Vec::new();
    let layers = [(file, ServerSource::File), (discovered, discovered_kind)];
    for (list, source) in layers {
        for s in list {
            if names.contains(s.name.as_str()) {
                continue;
            }
            match overlay.removed.get(&s.name) {
                Some(addr) if *addr == s.address => continue,
                Some(_) => stale_tombstones.push(s.name.clone()),
                None => {}
            }
            names.insert(&s.name);
            out.push(Member {
                config: s.clone(),
                source,
            });
        }
    }
    for name in stale_tombstones {
        overlay.removed.remove(&name);
        dropped.push(Superseded {
            server: name,
            what: "removal (its source now lists it at another address)",
        });
    }
    overlay.added.retain(|a| {
        let shadowed = names.contains(a.name.as_str());
        if shadowed {
            dropped.push(Superseded {
                server: a.name.clone(),
                what: "API-added server (a file or discovery source now defines that name)",
            });
        }
        !shadowed
    });
    out.extend(overlay.added.iter().map(|a| Member {
        config: a.clone(),
        source: ServerSource::Api,
    }));
    for m in &mut out {
        if m.source == ServerSource::Api {
            continue;
        }
        let name = &m.config.name;
        if let Some(p) = overlay.admin.get(name).copied() {
            if p.base == m.config.admin {
                m.config.admin = p.value;
            } else {
                overlay.admin.remove(name);
                dropped.push(Superseded {
                    server: name.clone(),
                    what: "admin state (its source changed it)",
                });
            }
        }
        if let Some(p) = overlay.weight.get(name).copied() {
            if p.base == m.config.weight {
                m.config.weight = p.value;
            } else {
                overlay.weight.remove(name);
                dropped.push(Superseded {
                    server: name.clone(),
                    what: "weight (its source changed it)",
                });
            }
        }
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(name: &str, port: u16) -> ServerConfig {
        crate::config::validate::default_server(name, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn names(m: &[Member]) -> Vec<(&str, &str)> {
        m.iter()
            .map(|m| (m.config.name.as_str(), m.source.as_str()))
            .collect()
    }

    #[test]
    fn precedence_file_then_discovery_then_api() {
        let mut o = Overlay::default();
        o.add(srv("c", 3));
        o.add(srv("b", 9));
        let (m, dropped) = merge(
            &[srv("a", 1)],
            &[srv("a", 5), srv("b", 2)],
            ServerSource::Inventory,
            &mut o,
        );
        assert_eq!(names(&m), [("a", "file"), ("b", "inventory"), ("c", "api")]);
        assert_eq!(m[0].config.address.port(), 1, "the file wins");
        assert_eq!(dropped.len(), 1, "API-added b is shadowed by discovery");
        assert_eq!(o.added.len(), 1);
    }

    #[test]
    fn admin_override_holds_until_the_source_changes_that_server() {
        let mut o = Overlay::default();
        o.set_admin("a", AdminState::Drain, AdminState::Ready, false);
        let file = [srv("a", 1)];
        for _ in 0..3 {
            let (m, d) = merge(&file, &[], ServerSource::Inventory, &mut o);
            assert_eq!(m[0].config.admin, AdminState::Drain);
            assert!(d.is_empty());
        }
        // The source now says maint: it wins and the override goes.
        let mut changed = srv("a", 1);
        changed.admin = AdminState::Maint;
        let (m, d) = merge(&[changed], &[], ServerSource::Inventory, &mut o);
        assert_eq!(m[0].config.admin, AdminState::Maint);
        assert_eq!(d.len(), 1);
        assert!(o.is_empty());
        // Setting it back to what the source says leaves no override.
        o.set_admin("a", AdminState::Drain, AdminState::Ready, false);
        o.set_admin("a", AdminState::Ready, AdminState::Ready, false);
        assert!(o.is_empty());
    }

    #[test]
    fn weight_override_on_a_discovered_server_survives_polls() {
        let mut o = Overlay::default();
        o.set_weight("d", 7, 1, false);
        let (m, _) = merge(&[], &[srv("d", 4)], ServerSource::Dns, &mut o);
        assert_eq!((m[0].config.weight, m[0].source), (7, ServerSource::Dns));
        // Not listed for a while (discovery not yet reported): the override waits.
        let (m, _) = merge(&[], &[], ServerSource::Dns, &mut o);
        assert!(m.is_empty());
        let (m, _) = merge(&[], &[srv("d", 4)], ServerSource::Dns, &mut o);
        assert_eq!(m[0].config.weight, 7);
    }

    #[test]
    fn tombstones_hide_the_removed_address_only() {
        let mut o = Overlay::default();
        o.remove(
            "a",
            SocketAddr::from(([127, 0, 0, 1], 1)),
            ServerSource::File,
        );
        let (m, _) = merge(
            &[srv("a", 1), srv("b", 2)],
            &[],
            ServerSource::Inventory,
            &mut o,
        );
        assert_eq!(names(&m), [("b", "file")]);
        // Re-added by the API under the same name: the API server shows.
        o.add(srv("a", 8));
        let (m, _) = merge(
            &[srv("a", 1), srv("b", 2)],
            &[],
            ServerSource::Inventory,
            &mut o,
        );
        assert_eq!(names(&m), [("b", "file"), ("a", "api")]);
        assert_eq!(m[1].config.address.port(), 8);
        // The file moves `a`: the file's server is a new one and wins the name.
        let mut o2 = Overlay::default();
        o2.remove(
            "a",
            SocketAddr::from(([127, 0, 0, 1], 1)),
            ServerSource::File,
        );
        let (m, d) = merge(&[srv("a", 9)], &[], ServerSource::Inventory, &mut o2);
        assert_eq!(names(&m), [("a", "file")]);
        assert_eq!(d.len(), 1);
        assert!(o2.is_empty());
    }

    #[test]
    fn removing_an_api_server_forgets_it() {
        let mut o = Overlay::default();
        o.add(srv("x", 1));
        o.set_admin("x", AdminState::Maint, AdminState::Ready, true);
        assert_eq!(o.added[0].admin, AdminState::Maint);
        o.remove(
            "x",
            SocketAddr::from(([127, 0, 0, 1], 1)),
            ServerSource::Api,
        );
        assert!(o.is_empty());
    }
}
