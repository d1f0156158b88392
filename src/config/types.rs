//! Typed configuration: what `validate()` produces from the raw TOML layer.
//!
//! Everything here is already checked: addresses parsed, durations converted,
//! references between frontends and backends resolved. The runtime builds its
//! snapshot from these types only.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// File the configuration came from (None for quick mode / demo).
    pub source: Option<PathBuf>,
    /// Process-wide settings (`[global]`).
    pub global: GlobalConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Frontends by name, in name order.
    pub frontends: BTreeMap<String, FrontendConfig>,
    /// Backends by name, in name order.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Other load balancers of the same group, for `fulcrum ctl`.
    pub cluster: ClusterConfig,
    /// VRRP instances (`[vrrp.instances.NAME]`); empty when VRRP is off.
    pub vrrp: crate::vrrp::config::VrrpConfig,
}

/// Process-wide settings, read at start (a reload keeps the running values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Proxy workers (HAProxy `nbthread`): each a thread with its own
    /// current-thread event loop and accept loops. None: one per CPU the
    /// process may run on (`std::thread::available_parallelism`, which
    /// honours the affinity mask and cgroup CPU quotas).
    pub threads: Option<usize>,
    /// Pin worker i to the i-th CPU of the process's affinity mask (HAProxy
    /// `cpu-map`); off by default.
    pub cpu_affinity: bool,
    /// How long a stopping or upgraded-away process waits for its open
    /// connections before it exits anyway (HAProxy `hard-stop-after`);
    /// None: `fulcrum run --grace` (30 s by default).
    pub hard_stop_after: Option<Duration>,
    /// Where runtime edits are kept across restarts (`state_file`).
    pub state_file: StateFile,
}

/// The `[global] state_file` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateFile {
    /// `<config dir>/<config stem>.state.json` when running from a file; none otherwise.
    #[default]
    Default,
    /// `state_file = "off"`: runtime edits last until the process ends.
    Off,
    /// An explicit path (relative paths are taken from the config file's directory).
    Path(PathBuf),
}

impl Config {
    /// The state file this configuration asks for, if any.
    pub fn state_file_path(&self) -> Option<PathBuf> {
        let dir = self
            .source
            .as_ref()
            .and_then(|s| s.parent())
            .map(std::path::Path::to_path_buf);
        match &self.global.state_file {
            StateFile::Off => None,
            StateFile::Path(p) if p.is_absolute() => Some(p.clone()),
            StateFile::Path(p) => Some(dir.unwrap_or_default().join(p)),
            StateFile::Default => {
                let src = self.source.as_ref()?;
                let stem = src.file_stem()?.to_string_lossy().into_owned();
                Some(dir.unwrap_or_default().join(format!("{stem}.state.json")))
            }
        }
    }
}

/// The nodes `fulcrum ctl` applies a change to, besides `--admin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Admin URLs such as `http://10.0.0.2:9000`.
    pub peers: Vec<String>,
    /// Shared runtime state in etcd (`store = { etcd = … }`): admin changes
    /// are written there and every node applies them from its watch.
    pub store: Option<EtcdConfig>,
    /// The whole configuration from one etcd key (`config = { etcd = { …, key } }`);
    /// `prefix` holds the key. This file is then the bootstrap: used when the
    /// key is absent, bad or unreachable at start.
    pub config: Option<EtcdConfig>,
}

/// How to reach etcd, and under which key prefix (discovery and the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT` (https with `tls`).
    pub endpoints: Vec<String>,
    /// Key prefix, ending with `/`.
    pub prefix: String,
    /// etcd user, for clusters with auth enabled.
    pub username: Option<String>,
    /// File holding `username`'s password (read at each connect).
    pub password_file: Option<PathBuf>,
    /// TLS to etcd, with an optional client certificate.
    pub tls: Option<EtcdTls>,
}

/// TLS files for etcd (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA of the members' certificates; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate (etcd `--client-cert-auth`).
    pub cert: Option<PathBuf>,
    /// Key of `cert`.
    pub key: Option<PathBuf>,
}

/// The admin listener (dashboard, JSON API, metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// None disables the admin listener.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token required for changes (and for reads
    /// unless `public_read`) when the listener is not on loopback.
    pub token_file: Option<PathBuf>,
    /// Allow read-only calls (status, metrics, dashboard) without a token.
    pub public_read: bool,
}

/// `[log]`: the access log and the diagnostics. Only `access` follows a
/// reload; where lines go is read at start (a reload keeps the running values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub access: AccessLog,
    /// Where access-log lines go.
    pub target: LogTarget,
    /// Bytes of access-log lines queued for a slow sink before lines are dropped.
    pub buffer: usize,
    /// Where diagnostics (tracing events) go.
    pub diagnostics: DiagTarget,
    /// Diagnostics as text lines or one JSON object per event.
    pub diagnostics_format: DiagFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: AccessLog::Text,
            target: LogTarget::Stdout,
            buffer: crate::log::access::DEFAULT_BUFFER,
            diagnostics: DiagTarget::Stderr,
            diagnostics_format: DiagFormat::Text,
        }
    }
}

/// Where access-log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    Syslog(SyslogConfig),
    /// systemd-journald's native socket.
    Journald,
}

/// Where diagnostics are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiagTarget {
    Stderr,
    Stdout,
    Syslog(SyslogConfig),
    Journald,
}

/// Diagnostics line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagFormat {
    Text,
    Json,
}

/// `[log.syslog]`: how syslog is reached (shared by both targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// A Unix socket path (`/dev/log`) or `HOST:PORT` for UDP.
    pub address: String,
    /// A facility name the `syslog` crate knows (`local0`, `daemon`…).
    pub facility: String,
    pub format: SyslogFormat,
    /// The APP-NAME / TAG field.
    pub tag: String,
}

/// Syslog message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// BSD syslog (what `/dev/log` daemons and HAProxy's default speak).
    Rfc3164,
    Rfc5424,
}

/// Where and how access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// One HAProxy-httplog-like text line per request.
    Text,
    /// One JSON object per request.
    Json,
}

/// Protocol a frontend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

/// HTTP/2 limits of a frontend (`http2 = { … }`): what one client connection
/// may make the proxy hold. Per stream at most `stream_window` of request
/// body and `max_send_buffer` of response body are buffered, and at most
/// `max_concurrent_streams` streams are open, so one connection holds at
/// most about `max_concurrent_streams × (max_send_buffer + 64 KiB upstream
/// read buffer)` of response data plus `connection_window` of request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Request-body bytes a client may send on one stream before the proxy
    /// reads them (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// Request-body bytes a client may send on the connection before the proxy reads them.
    pub connection_window: u32,
    /// Response-body bytes held per stream for a client that does not read.
    pub max_send_buffer: usize,
    /// Streams a client may open and reset before the proxy accepts them
    /// (the "rapid reset" attack, CVE-2023-44487): beyond, GOAWAY.
    pub max_pending_resets: usize,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_send_buffer: 64 * 1024,
            max_pending_resets: 20,
        }
    }
}

/// A listening side: addresses, the default backend and routing rules.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontendConfig {
    pub name: String,
    pub mode: Mode,
    pub listen: Vec<SocketAddr>,
    /// Backend used when no route matches (None: 503 when nothing matches).
    pub backend: Option<String>,
    /// Routes in file order; the first match wins.
    pub routes: Vec<Route>,
    pub timeouts: FrontendTimeouts,
    /// Largest request head (request line + headers) accepted, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// TLS termination on every listen address of this frontend.
    pub tls: Option<TlsConfig>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain listener.
    pub h2c: bool,
    /// Normalise request paths before routing and forwarding: resolve `.`
    /// and `..` segments, merge `//`, decode `%XX` of unreserved characters.
    pub normalize_path: bool,
    /// HTTP/2 limits (flow-control windows, streams, buffers, resets).
    pub http2: Http2Limits,
    /// Answer every request with a 301 to the same URL over https.
    pub redirect_https: Option<RedirectHttps>,
    /// Largest request body accepted (413 beyond); None = no limit.
    pub max_body_bytes: Option<u64>,
    /// Most request header fields accepted (431 beyond).
    pub max_headers: usize,
    /// Add `X-Request-Id` to requests that have none.
    pub request_id: bool,
    /// Header edits on requests going upstream.
    pub request_headers: HeaderRules,
    /// Header edits on responses going to the client.
    pub response_headers: HeaderRules,
    /// Per-client request rate limit for the whole frontend.
    pub rate_limit: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` is believed when finding the client address.
    pub trusted_proxies: Vec<Cidr>,
    /// Most concurrent client connections; more wait in the kernel's accept queue.
    pub maxconn: Option<u32>,
    /// Expect a PROXY protocol (v1 or v2) header on every connection, from
    /// the load balancer in front (only from `trusted_proxies` when set).
    pub accept_proxy: bool,
}

/// PROXY protocol version sent to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// Header edits: remove, then set (replace), then add (append). Values may use
/// `{client_ip}`, `{request_id}`, `{frontend}`, `{backend}` and `{server}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
}

impl HeaderRules {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// A token bucket per client: `rate` requests per `per`, bursts up to `burst`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub per: Duration,
    pub burst: u32,
    /// What identifies a client.
    pub key: RateKey,
    /// Most clients tracked at once (memory bound).
    pub max_clients: usize,
}

/// Rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value (e.g. an API key); requests without it use the client IP.
    Header(String),
}

/// An IP network, e.g. `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// TLS termination settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chains and keys; the first is served when no SNI name matches.
    pub certificates: Vec<CertPair>,
    pub min_version: TlsVersion,
    /// Offer HTTP/2 through ALPN (besides HTTP/1.1).
    pub http2: bool,
    /// Session-ticket keys shared with the other node of an HA pair
    /// (see `tls::tickets`); None: keys made up at start, per process.
    pub ticket_keys_file: Option<PathBuf>,
    /// Pick the cipher suite by the server's order (HAProxy `prefer-server-ciphers`,
    /// its default; default true here too).
    pub prefer_server_ciphers: bool,
}

/// One PEM certificate chain file and its PEM private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// DER OCSP response stapled to handshakes with this certificate (read on every reload).
    pub ocsp_file: Option<PathBuf>,
}

/// Lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// Where `redirect_https` sends clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectHttps {
    /// Port in the Location (None: the default 443, not written).
    pub port: Option<u16>,
}

/// Client-side timeouts (HAProxy `timeout http-request`, `timeout http-keep-alive`, `timeout client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendTimeouts {
    /// The whole request head must arrive within this time (slowloris defence).
    pub client_header: Duration,
    /// An idle keep-alive client connection is closed after this time.
    pub client_idle: Duration,
}

/// One routing rule. Both conditions, when present, must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub backend: String,
    /// Per-client rate limit for requests matching this route.
    pub rate_limit: Option<RateLimit>,
}

/// How a route matches the request's host (port stripped, compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`, stored lower-case.
    Exact(String),
    /// `*.example.com`: stored as the lower-case suffix `.example.com`; matches one or more labels.
    Suffix(String),
}

/// Balancing algorithm names as they appear in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    Random,
    Source,
    Uri,
    First,
}

/// A pool of servers and how traffic is spread and checked across them.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub balance: Algorithm,
    /// Extra attempts on a different server after a connection failure.
    pub retries: u32,
    pub timeouts: BackendTimeouts,
    /// Idle keep-alive connections kept per server.
    pub pool_max_idle: usize,
    pub health: HealthConfig,
    pub passive: PassiveConfig,
    pub servers: Vec<ServerConfig>,
    /// Where the server list comes from at run time, besides `servers`.
    pub discovery: Option<DiscoveryConfig>,
    /// Cookie persistence (HAProxy `cookie NAME insert indirect nocache`).
    pub sticky: Option<Sticky>,
    /// How long a request waits for a server below its `maxconn` (503 after).
    pub queue_timeout: Duration,
    /// Most requests waiting for a server slot (503 beyond).
    pub max_queue: usize,
    /// Speak TLS to the servers.
    pub tls: Option<UpstreamTls>,
    /// Send a PROXY protocol header naming the client on each new connection.
    pub proxy_protocol: Option<ProxyVersion>,
    /// Speak HTTP/2 to the servers (h2c, or ALPN-less h2 over `tls`); one
    /// multiplexed connection per server. Upgrades still use HTTP/1.1.
    pub http2: bool,
    /// Database role filter (`role`, `on_role_change`).
    pub role: RolePolicy,
}

/// TLS from fulcrum to a backend's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Check the server's certificate (default true).
    pub verify: bool,
    /// Trust these PEM CA certificates instead of the system's.
    pub ca: Option<PathBuf>,
    /// Name to send in SNI and to verify (default: the server's IP address).
    pub sni: Option<String>,
}

/// Cookie-based session persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// Cookie name.
    pub cookie: String,
}

/// Which database role a backend's servers must report to take new
/// connections, and what happens to open ones when a server's role changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolePolicy {
    pub want: RoleFilter,
    pub on_change: OnRoleChange,
}

/// Backend `role`: which servers take new connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoleFilter {
    /// Every healthy server, whatever its role.
    #[default]
    Any,
    /// Only servers whose check reports them as primary (writable).
    Primary,
    /// Servers reported as standby; the primary when no standby is usable.
    Standby,
}

/// Backend `on_role_change`: open TCP connections to a server whose role
/// changed (or that went down) after they were made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnRoleChange {
    /// Close them so clients reconnect to the right node.
    #[default]
    Close,
    /// Leave them open.
    Keep,
}

/// Live server discovery for a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryConfig {
    /// A watched inventory file (JSON or TOML list of servers with `exclude` /
    /// `drain` flags), re-read within `poll` of a change.
    File { path: PathBuf, poll: Duration },
    /// DNS records re-resolved every `interval`.
    Dns {
        name: String,
        record: DnsRecord,
        /// Port for A/AAAA records (SRV records carry their own).
        port: Option<u16>,
        interval: Duration,
        /// Resolver to ask instead of the system's (`IP:PORT`).
        resolver: Option<SocketAddr>,
    },
    /// One etcd key per server under a prefix, watched.
    Etcd(EtcdConfig),
}

/// Which DNS records name the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA records, with the configured port.
    A,
    /// SRV records (target and port), targets resolved to addresses.
    Srv,
}

/// Upstream-side timeouts (HAProxy `timeout connect`, `timeout server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendTimeouts {
    pub connect: Duration,
    /// Time to wait for the upstream's response head.
    pub response: Duration,
    /// Idle pooled upstream connections are closed after this time.
    pub pool_idle: Duration,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// 1..=256 like HAProxy.
    pub weight: u32,
    /// Used only when no primary server is usable.
    pub backup: bool,
    /// Concurrent connection cap (used by `first`; queueing comes with issue 5).
    pub maxconn: Option<u32>,
    /// Administrative state at start-up.
    pub admin: AdminState,
}

/// Administrative state, HAProxy's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Takes traffic.
    Ready,
    /// No new sessions; existing ones finish.
    Drain,
    /// No traffic at all.
    Maint,
}

/// Active health checking of a backend's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// None: checks off, servers are considered up.
    pub check: Option<CheckKind>,
    pub interval: Duration,
    /// Interval used while a server is between states (HAProxy `fastinter`).
    pub fast_interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Check this port instead of the server's (HAProxy `port`).
    pub port: Option<u16>,
    /// Check this address instead of the server's (HAProxy `addr`).
    pub address: Option<IpAddr>,
}

/// What an active check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Succeeds when a TCP connection is established.
    Tcp,
    /// Sends an HTTP/1.1 request and compares the status.
    Http {
        method: String,
        path: String,
        host: Option<String>,
        expect: StatusRange,
    },
    /// Connects, optionally sends bytes and expects bytes in the reply
    /// (HAProxy `tcp-check send` / `tcp-check expect string`).
    TcpExpect {
        send: Option<Vec<u8>>,
        /// Must appear within the first bytes read (substring match).
        expect: Option<Vec<u8>>,
    },
    /// Logs in to PostgreSQL and asks `SELECT pg_is_in_recovery()`.
    Postgres(PostgresCheck),
    /// `PING`, then `ROLE` (or `INFO replication`) on Redis.
    Redis(RedisCheck),
}

impl CheckKind {
    /// True for checks that report a database role (primary/standby).
    pub fn reports_role(&self) -> bool {
        matches!(self, CheckKind::Postgres(_) | CheckKind::Redis(_))
    }

    /// Short description for status pages: "tcp", "http GET /health", "postgres".
    pub fn describe(&self) -> String {
        match self {
            CheckKind::Tcp => "tcp".into(),
            CheckKind::Http { method, path, .. } => format!("http {method} {path}"),
            CheckKind::TcpExpect { .. } => "tcp send/expect".into(),
            CheckKind::Postgres(p) => format!("postgres {}@{}", p.user, p.database),
            CheckKind::Redis(_) => "redis".into(),
        }
    }
}

/// Credentials and database of a `postgres` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresCheck {
    pub user: String,
    pub password: Option<Secret>,
    /// Default `postgres`.
    pub database: String,
}

/// Credentials of a `redis` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCheck {
    /// ACL user (Redis 6+); None sends `AUTH password`.
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// A password given inline or read from a file at every check (so a rotated
/// secret is picked up without a reload). Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl Secret {
    /// The secret's value; a file's trailing newline is dropped.
    pub fn reveal(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => {
                let s = std::fs::read_to_string(p)?;
                Ok(s.trim_end_matches(['\r', '\n']).to_string())
            }
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
            Secret::File(p) => write!(f, "Secret(file {})", p.display()),
        }
    }
}

/// Inclusive range of acceptable HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    /// True when `status` lies in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// Passive health (nginx `max_fails` / `fail_timeout`): a server that fails
/// `max_fails` consecutive requests is ejected for `fail_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConfig {
    /// 0 disables passive ejection.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}
