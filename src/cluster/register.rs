//! `fulcrum register`: an app server announces itself in etcd under a lease
//! and keeps the lease alive until SIGTERM/SIGINT, then revokes it.
//!
//! The key is `PREFIX/NAME` (default prefix `/fulcrum/backends/BACKEND/`),
//! the value the JSON that etcd discovery reads:
//! `{"address":"10.0.0.5:8080","weight":1,"state":"ready"}`. While the
//! process runs, balancers send traffic to it; when it stops it revokes the
//! lease, so the key goes at once and the balancers drain the server (in-flight
//! requests finish). If the box dies instead, the lease expires after `--ttl`
//! and the key goes then. A lost member or a broken keep-alive stream is
//! survived by reconnecting to the next endpoint; a lease that expired in the
//! meantime is granted again and the key written again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::client::{Client, ConnectOptions, TlsFiles};

/// Arguments of `fulcrum register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// etcd endpoints, comma-separated (`http://10.0.0.1:2379,…`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// Backend to join; the key goes under `/fulcrum/backends/BACKEND/`.
    #[arg(long)]
    pub backend: String,
    /// Address balancers should send traffic to (IP:PORT).
    #[arg(long)]
    pub address: SocketAddr,
    /// Server name (the key's last segment); default from the address, `10-0-0-5-8080`.
    #[arg(long)]
    pub name: Option<String>,
    /// Weight, 1..=256.
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// Lease time to live: how long after this box dies its key disappears.
    #[arg(long, default_value = "10s", value_parser = crate::config::duration::parse_duration)]
    pub ttl: Duration,
    /// Key prefix (ends with `/`); default `/fulcrum/backends/BACKEND/`.
    #[arg(long)]
    pub prefix: Option<String>,
    /// etcd user (the password is read from `--password-file`).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) of the etcd members; turns on TLS.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert auth.
    #[arg(long)]
    pub cert: Option<std::path::PathBuf>,
    /// Key (PEM) of `--cert`.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
}

/// The JSON value written for one server.
pub fn server_value(address: SocketAddr, weight: u32, state: &str) -> String {
    serde_json::json!({ "address": address.to_string(), "weight": weight, "state": state })
        .to_string()
}

impl RegisterArgs {
    fn key(&self) -> Result<String, String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| crate::discovery::dns::address_name(self.address));
        if !crate::discovery::inventory::valid_name(&name) {
            return Err(format!("bad server name `{name}`"));
        }
        if !crate::discovery::inventory::valid_name(&self.backend) {
            return Err(format!("bad backend name `{}`", self.backend));
        }
        let mut prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| format!("/fulcrum/backends/{}/", self.backend));
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(format!("{prefix}{name}"))
    }

    fn connect_options(&self) -> Result<ConnectOptions, String> {
        let password = match &self.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => None,
        };
        let tls = (self.ca.is_some() || self.cert.is_some()).then(|| TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        });
        Ok(ConnectOptions {
            endpoints: self.etcd.clone(),
            username: self.username.clone(),
            password,
            tls,
        })
    }
}

/// Keep one lease alive on `client` until the stream breaks (Err) or the
/// lease is gone (Ok(false)) or `stop` fires (Ok(true)).
async fn keep_alive(
    client: &Client,
    lease: i64,
    ttl: Duration,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<bool, String> {
    let (tx, mut stream) = client.lease_keep_alive(lease).await?;
    // A third of the TTL, like etcd's own clients.
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(true),
            _ = tick.tick() => {
                tx.send(super::pb::LeaseKeepAliveRequest { id: lease })
                    .await
                    .map_err(|_| "keep-alive stream closed".to_string())?;
            }
            msg = stream.message() => match msg {
                Ok(Some(r)) if r.ttl <= 0 => return Ok(false),
                Ok(Some(_)) => {}
                Ok(None) => return Err("keep-alive stream ended".into()),
                Err(s) => return Err(format!("keep-alive: {}", s.message())),
            },
        }
    }
}

/// Run `fulcrum register` until SIGTERM/SIGINT. Returns an error only for bad
/// arguments; an unreachable etcd is retried (and logged) forever.
pub async fn run(args: RegisterArgs) -> anyhow::Result<()> {
    let key = args.key().map_err(anyhow::Error::msg)?;
    let opts = args.connect_options().map_err(anyhow::Error::msg)?;
    if !(1..=256).contains(&args.weight) {
        anyhow::bail!("weight {} is out of range; use 1..=256", args.weight);
    }
    let ttl_secs = i64::try_from(args.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let value = server_value(args.address, args.weight, "ready");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut stop = Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    let mut lease: Option<i64> = None;
    let mut next_endpoint = 0usize;
    let mut last_error = String::new();
    loop {
        let attempt = async {
            let client = Client::connect(&opts, next_endpoint).await?;
            Ok::<_, String>(client)
        };
        let client = tokio::select! {
            _ = &mut stop => break,
            c = attempt => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                if e != last_error {
                    tracing::warn!(error = %e, "etcd unreachable; retrying");
                    last_error = e;
                }
                next_endpoint += 1;
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        next_endpoint = client.index;
        let id = match lease {
            Some(id) => id,
            None => {
                let granted = async {
                    let id = client.lease_grant(ttl_secs).await?;
                    client.put(&key, value.as_bytes(), id).await?;
                    Ok::<_, String>(id)
                };
                match granted.await {
                    Ok(id) => {
                        tracing::info!(key = %key, lease = format!("{id:x}"), ttl = ttl_secs, endpoint = %client.endpoint, "registered");
                        lease = Some(id);
                        id
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, endpoint = %client.endpoint, "registration failed; retrying");
                        next_endpoint += 1;
                        tokio::select! {
                            _ = &mut stop => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                        continue;
                    }
                }
            }
        };
        match keep_alive(&client, id, args.ttl, &mut stop).await {
            Ok(true) => break,
            Ok(false) => {
                tracing::warn!(key = %key, "lease expired; registering again");
                lease = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %client.endpoint, "lost etcd member; reconnecting");
                next_endpoint += 1;
            }
        }
    }
    if let Some(id) = lease {
        // Revoke so the balancers drain this server now instead of after the TTL.
        let revoke = async {
            let client = Client::connect(&opts, next_endpoint).await?;
            client.lease_revoke(id).await
        };
        match tokio::time::timeout(Duration::from_secs(5), revoke).await {
            Ok(Ok(())) => tracing::info!(key = %key, "lease revoked; deregistered"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not revoke the lease; the key goes when it expires")
            }
            Err(_) => tracing::warn!("revoking the lease timed out; the key goes when it expires"),
        }
    }
    Ok(())
}
