//! The raw layer: exactly what the TOML file says, with source spans, before any
//! checking. `deny_unknown_fields` everywhere so a typo is an error, not a silent default.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub global: Option<RawGlobal>,
    #[serde(default)]
    pub admin: Option<S<RawAdmin>>,
    #[serde(default)]
    pub log: Option<RawLog>,
    #[serde(default)]
    pub frontends: BTreeMap<String, S<RawFrontend>>,
    #[serde(default)]
    pub backends: BTreeMap<String, S<RawBackend>>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub vrrp: Option<crate::vrrp::config::RawVrrp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub threads: Option<S<i64>>,
    #[serde(default)]
    pub cpu_affinity: Option<bool>,
    #[serde(default)]
    pub hard_stop_after: Option<S<String>>,
    pub state_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    #[serde(default)]
    pub peers: Vec<S<String>>,
    /// Shared runtime state: `store = { etcd = { … } }`.
    pub store: Option<S<RawStore>>,
    /// The whole configuration from one etcd key: `config = { etcd = { …, key } }`.
    pub config: Option<S<RawStore>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub etcd: Option<S<RawEtcd>>,
}

/// `etcd = { endpoints = [...], prefix = "...", username, password_file, tls }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    #[serde(default)]
    pub endpoints: Vec<S<String>>,
    pub prefix: Option<S<String>>,
    /// `[cluster] config` only: the key holding the configuration.
    pub key: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub tls: Option<S<RawEtcdTls>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcdTls {
    pub ca: Option<S<String>>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<S<String>>,
    pub token_file: Option<S<String>>,
    pub public_read: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    /// "text" (default), "json" or "off".
    pub access: Option<S<String>>,
    /// "stdout" (default), "stderr", "syslog" or "journald".
    pub target: Option<S<String>>,
    /// A size such as "4MiB", or bytes.
    pub buffer: Option<S<toml::Value>>,
    /// "stderr" (default), "stdout", "syslog" or "journald".
    pub diagnostics: Option<S<String>>,
    /// "text" (default) or "json".
    pub diagnostics_format: Option<S<String>>,
    pub syslog: Option<S<RawSyslog>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyslog {
    pub address: Option<S<String>>,
    pub facility: Option<S<String>>,
    pub format: Option<S<String>>,
    pub tag: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFrontend {
    pub mode: Option<S<String>>,
    pub listen: S<Vec<S<String>>>,
    pub backend: Option<S<String>>,
    #[serde(default)]
    pub routes: Vec<S<RawRoute>>,
    pub client_header_timeout: Option<S<String>>,
    pub client_idle_timeout: Option<S<String>>,
    pub max_header_bytes: Option<S<i64>>,
    pub tls: Option<S<RawTls>>,
    pub h2c: Option<bool>,
    pub normalize_path: Option<bool>,
    pub http2: Option<S<RawHttp2>>,
    /// `true`, or the https port to redirect to.
    pub redirect_https: Option<S<toml::Value>>,
    pub max_body_bytes: Option<S<i64>>,
    pub max_headers: Option<S<i64>>,
    pub request_id: Option<bool>,
    pub request_headers: Option<S<RawHeaderRules>>,
    pub response_headers: Option<S<RawHeaderRules>>,
    pub rate_limit: Option<S<RawRateLimit>>,
    #[serde(default)]
    pub trusted_proxies: Vec<S<String>>,
    pub maxconn: Option<S<i64>>,
    pub accept_proxy: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    #[serde(default)]
    pub remove: Vec<S<String>>,
    #[serde(default)]
    pub set: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub add: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub rate: S<f64>,
    pub per: Option<S<String>>,
    pub burst: Option<S<i64>>,
    /// "ip" (default) or "header:NAME".
    pub key: Option<S<String>>,
    pub max_clients: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub certificates: S<Vec<S<RawCertPair>>>,
    pub min_version: Option<S<String>>,
    pub http2: Option<bool>,
    pub ticket_keys_file: Option<S<String>>,
    pub prefer_server_ciphers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertPair {
    pub cert: S<String>,
    pub key: S<String>,
    pub ocsp_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub host: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub backend: S<String>,
    pub rate_limit: Option<S<RawRateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub balance: Option<S<String>>,
    pub retries: Option<S<i64>>,
    pub connect_timeout: Option<S<String>>,
    pub response_timeout: Option<S<String>>,
    pub pool_idle_timeout: Option<S<String>>,
    pub pool_max_idle: Option<S<i64>>,
    pub health: Option<S<RawHealth>>,
    pub passive: Option<S<RawPassive>>,
    #[serde(default)]
    pub servers: Vec<S<RawServer>>,
    pub discovery: Option<S<RawDiscovery>>,
    pub sticky: Option<S<RawSticky>>,
    pub queue_timeout: Option<S<String>>,
    pub max_queue: Option<S<i64>>,
    /// "any" (default), "primary" or "standby".
    pub role: Option<S<String>>,
    /// "close" (default) or "keep".
    pub on_role_change: Option<S<String>>,
    pub tls: Option<S<RawUpstreamTls>>,
    /// "v1" or "v2".
    pub proxy_protocol: Option<S<String>>,
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub verify: Option<bool>,
    pub ca: Option<S<String>>,
    pub sni: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub cookie: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    pub file: Option<S<String>>,
    pub poll_interval: Option<S<String>>,
    pub dns: Option<S<String>>,
    pub srv: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub interval: Option<S<String>>,
    pub resolver: Option<S<String>>,
    pub etcd: Option<S<RawEtcd>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    /// "http", "tcp" or "none".
    pub kind: S<String>,
    pub method: Option<S<String>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    /// 200, or "200-399", or "2xx".
    pub expect_status: Option<S<toml::Value>>,
    pub interval: Option<S<String>>,
    pub fast_interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub port: Option<S<i64>>,
    pub address: Option<S<String>>,
    /// tcp: bytes to send ("PING\r\n") or the same in hex.
    pub send: Option<S<String>>,
    pub send_hex: Option<S<String>>,
    /// tcp: substring expected in the reply, or the same in hex.
    pub expect: Option<S<String>>,
    pub expect_hex: Option<S<String>>,
    /// postgres/redis credentials.
    pub user: Option<S<String>>,
    pub password: Option<S<String>>,
    pub password_file: Option<S<String>>,
    /// postgres: database to log in to (default "postgres").
    pub database: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp2 {
    pub max_concurrent_streams: Option<S<i64>>,
    pub stream_window: Option<S<i64>>,
    pub connection_window: Option<S<i64>>,
    pub max_send_buffer: Option<S<i64>>,
    pub max_pending_resets: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPassive {
    pub max_fails: Option<S<i64>>,
    pub fail_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub name: S<String>,
    pub address: S<String>,
    pub weight: Option<S<i64>>,
    pub backup: Option<bool>,
    pub maxconn: Option<S<i64>>,
    /// "ready" (default), "drain" or "maint".
    pub state: Option<S<String>>,
}
