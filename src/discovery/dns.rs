//! DNS discovery: A/AAAA or SRV records of a name, re-resolved every interval.
//!
//! - A/AAAA: one server per address, on the configured port, named after the
//!   address (`10.0.0.1:80` → `10-0-0-1-80`, `[2001:db8::1]:80` → `2001-db8--1-80`).
//! - SRV: one server per target address and port, named `TARGET-PORT` (or
//!   `TARGET-ADDRESS-PORT` when a target has several addresses), weight from
//!   the record clamped to 1..=256 (0 → 1). Records with the lowest priority
//!   value are the primaries; the others become backup servers.
//!
//! A lookup that fails, times out or returns no records keeps the last good
//! list: a DNS hiccup never empties a backend.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use super::inventory::valid_name;
use super::Reporter;
use crate::config::types::{AdminState, DnsRecord, ServerConfig};

/// Settings of one DNS source (the `Dns` variant of `DiscoveryConfig`).
#[derive(Debug, Clone)]
pub struct DnsSource {
    /// The name to resolve.
    pub name: String,
    /// A/AAAA or SRV.
    pub record: DnsRecord,
    /// Port for A/AAAA servers.
    pub port: Option<u16>,
    /// Time between lookups.
    pub interval: Duration,
    /// Name server to ask instead of the system's.
    pub resolver: Option<SocketAddr>,
}

/// A resolver that asks `server` over UDP, or the system's resolver. Answers
/// are cached at most `interval`, so each round sees changes.
pub fn build_resolver(
    server: Option<SocketAddr>,
    interval: Duration,
) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut cfg = ResolverConfig::new();
            cfg.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default())
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let o = builder.options_mut();
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.positive_max_ttl = Some(interval);
    o.negative_max_ttl = Some(interval);
    o.timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    o.attempts = 2;
    Ok(builder.build())
}

/// A server name made from an address: letters, digits and '-' only.
pub fn address_name(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    };
    format!("{ip}-{}", addr.port())
}

fn server(name: String, address: SocketAddr, weight: u32, backup: bool) -> ServerConfig {
    let name = if valid_name(&name) {
        name
    } else {
        address_name(address)
    };
    ServerConfig {
        name,
        address,
        weight,
        backup,
        maxconn: None,
        admin: AdminState::Ready,
    }
}

/// Sorted by name, without duplicate names (the first one wins).
fn normalize(mut servers: Vec<ServerConfig>) -> Vec<ServerConfig> {
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    servers.dedup_by(|a, b| a.name == b.name);
    servers
}

async fn lookup_ips(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    let found = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| format!("lookup of {name} failed: {e}"))?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// One lookup round. An empty answer counts as a failure.
pub async fn resolve(
    resolver: &TokioResolver,
    src: &DnsSource,
) -> Result<Vec<ServerConfig>, String> {
    let servers = match src.record {
        DnsRecord::A => {
            let port = src.port.unwrap_or(80);
            lookup_ips(resolver, &src.name)
                .await?
                .into_iter()
                .map(|ip| {
                    let a = SocketAddr::new(ip, port);
                    server(address_name(a), a, 1, false)
                })
                .collect()
        }
        DnsRecord::Srv => {
            let records = resolver
                .srv_lookup(src.name.as_str())
                .await
                .map_err(|e| format!("SRV lookup of {} failed: {e}", src.name))?;
            let records: Vec<_> = records.iter().cloned().collect();
            let best = records.iter().map(|r| r.priority()).min().unwrap_or(0);
            let mut servers = Vec::new();
            for r in &records {
                let target = r.target().to_utf8();
                let target = target.trim_end_matches('.').to_string();
                // A failed target lookup fails the round rather than dropping
                // that target's servers.
                let ips = lookup_ips(resolver, &target).await?;
                let weight = u32::from(r.weight()).clamp(1, 256);
                let backup = r.priority() > best;
                for ip in &ips {
                    let a = SocketAddr::new(*ip, r.port());
                    let name = if ips.len() == 1 {
                        format!("{target}-{}", r.port())
                    } else {
                        format!("{target}-{}", address_name(a))
                    };
                    servers.push(server(name, a, weight, backup));
                }
            }
            servers
        }
    };
    // Records naming 0.0.0.0, a multicast group or port 0 are not servers.
    let servers: Vec<ServerConfig> = servers
        .into_iter()
        .filter(|s| crate::config::rules::server_address_problem(s.address).is_none())
        .collect();
    if servers.is_empty() {
        return Err(format!("no records for {}", src.name));
    }
    Ok(normalize(servers))
}

/// Resolve every `interval` and apply changes until the task is dropped.
pub(crate) async fn run(mut reporter: Reporter, src: DnsSource) {
    let interval = src.interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolver: Option<TokioResolver> = None;
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        if resolver.is_none() {
            match build_resolver(src.resolver, interval) {
                Ok(r) => resolver = Some(r),
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(name = %src.name, error = %e, "DNS discovery cannot start");
                    }
                    reporter.failed(e.clone());
                    last_error = Some(e);
                    continue;
                }
            }
        }
        let Some(r) = resolver.as_ref() else { continue };
        match resolve(r, &src).await {
            Ok(servers) => {
                last_error = None;
                reporter.found(servers).await;
            }
            Err(e) => {
                // Log each new kind of failure once, not every interval.
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(name = %src.name, error = %e, "DNS discovery failed; keeping the last good server list");
                }
                reporter.failed(e.clone());
                last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_names_are_valid_and_stable() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(address_name(a), "10-0-0-1-80");
        let b: SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
        assert_eq!(address_name(b), "2001-db8--1-8080");
        assert!(valid_name(&address_name(b)));
    }

    #[test]
    fn bad_names_fall_back_to_the_address() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(server("x".repeat(80), a, 1, false).name, "10-0-0-1-80");
        assert_eq!(
            server("web1.internal-80".into(), a, 1, false).name,
            "web1.internal-80"
        );
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v = normalize(vec![
            server("b".into(), a, 1, false),
            server("a".into(), a, 1, false),
            server("b".into(), a, 2, false),
        ]);
        let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
