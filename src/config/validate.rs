//! `validate()`: raw spanned config → typed [`Config`], collecting every error
//! with its position and a hint instead of stopping at the first. One file per
//! section: [`frontend`], [`backend`], [`health`], [`tls`]; this one holds the
//! shared context, `[global]`, `[admin]`, `[cluster]` and the whole-file checks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_duration;
use super::error::{ConfigError, Locator};
use super::raw::*;
use super::types::*;

mod backend;
pub use health::default_check_timeout;
mod frontend;
mod health;
mod tls;

use backend::*;
use frontend::*;
use health::*;
use tls::*;

/// Defaults, HAProxy-like (Debian's stock haproxy.cfg: connect 5s, client/server 50s).
pub mod defaults {
    use std::time::Duration;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(50);
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const POOL_MAX_IDLE: usize = 1024;
    pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const RETRIES: u32 = 3;
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
    /// The least default check timeout (see `default_check_timeout`).
    pub const CHECK_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);
    /// The largest default check timeout.
    pub const CHECK_TIMEOUT_CEILING: Duration = Duration::from_secs(5);
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;
    pub const MAX_FAILS: u32 = 3;
    pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9000";
    pub const MAX_HEADERS: usize = 100;
    /// HAProxy's `timeout queue` falls back to `timeout connect`.
    pub const QUEUE_TIMEOUT: Duration = CONNECT_TIMEOUT;
    pub const MAX_QUEUE: usize = 1024;
    pub const RATE_MAX_CLIENTS: usize = 100_000;
}

/// A frontend with every optional setting at its default.
pub fn default_frontend(
    name: &str,
    mode: Mode,
    listen: Vec<SocketAddr>,
    backend: Option<String>,
) -> FrontendConfig {
    FrontendConfig {
        name: name.to_string(),
        mode,
        listen,
        backend,
        routes: Vec::new(),
        timeouts: FrontendTimeouts {
            client_header: defaults::CLIENT_HEADER_TIMEOUT,
            client_idle: defaults::CLIENT_IDLE_TIMEOUT,
        },
        max_header_bytes: defaults::MAX_HEADER_BYTES,
        tls: None,
        h2c: false,
        normalize_path: false,
        http2: Http2Limits::default(),
        redirect_https: None,
        max_body_bytes: None,
        max_headers: defaults::MAX_HEADERS,
        request_id: true,
        request_headers: HeaderRules::default(),
        response_headers: HeaderRules::default(),
        rate_limit: None,
        trusted_proxies: Vec::new(),
        maxconn: None,
        accept_proxy: false,
    }
}

/// A backend with every optional setting at its default (no health checks).
pub fn default_backend(name: &str, servers: Vec<ServerConfig>) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        balance: Algorithm::RoundRobin,
        retries: defaults::RETRIES,
        timeouts: BackendTimeouts {
            connect: defaults::CONNECT_TIMEOUT,
            response: defaults::RESPONSE_TIMEOUT,
            pool_idle: defaults::POOL_IDLE_TIMEOUT,
        },
        pool_max_idle: defaults::POOL_MAX_IDLE,
        health: HealthConfig {
            check: None,
            interval: defaults::CHECK_INTERVAL,
            fast_interval: defaults::CHECK_INTERVAL / 4,
            timeout: defaults::CHECK_INTERVAL,
            rise: defaults::RISE,
            fall: defaults::FALL,
            port: None,
            address: None,
        },
        passive: PassiveConfig {
            max_fails: defaults::MAX_FAILS,
            fail_timeout: defaults::FAIL_TIMEOUT,
        },
        servers,
        discovery: None,
        sticky: None,
        queue_timeout: defaults::QUEUE_TIMEOUT,
        max_queue: defaults::MAX_QUEUE,
        role: RolePolicy::default(),
        tls: None,
        proxy_protocol: None,
        http2: false,
    }
}

/// A ready server with weight 1.
pub fn default_server(name: &str, address: SocketAddr) -> ServerConfig {
    ServerConfig {
        name: name.to_string(),
        address,
        weight: 1,
        backup: false,
        maxconn: None,
        admin: AdminState::Ready,
    }
}

pub(super) struct Ctx<'a> {
    loc: Locator<'a>,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    /// Errors reported so far.
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub(super) fn err<T>(&mut self, at: &S<T>, msg: impl Into<String>, hint: Option<&str>) {
        let e = self
            .loc
            .error(at.span().start, msg, hint.map(str::to_string));
        self.errors.push(e);
    }

    fn duration(&mut self, v: &Option<S<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.err(v, format!("`{key}` must be greater than zero"), None);
                default
            }
            Ok(d) => d,
            Err(why) => {
                self.err(
                    v,
                    format!("bad duration for `{key}`: {why}"),
                    Some("write a number with a unit: \"150ms\", \"2s\", \"1m\""),
                );
                default
            }
        }
    }

    /// Parse a string value (an address, typically); on failure report
    /// "bad WHAT `value`" at its position with `hint`.
    fn parse<T: std::str::FromStr>(&mut self, v: &S<String>, what: &str, hint: &str) -> Option<T> {
        let parsed = v.get_ref().parse::<T>().ok();
        if parsed.is_none() {
            self.err(v, format!("bad {what} `{}`", v.get_ref()), Some(hint));
        }
        parsed
    }

    fn int(&mut self, v: &Option<S<i64>>, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(
                v,
                format!("`{key}` = {n} is out of range"),
                Some(&format!("use a value from {min} to {max}")),
            );
            return default;
        }
        n
    }
}

use super::rules::{valid_name, NAME_HINT};

/// Parse TOML text and validate it. `file` labels error positions.
pub fn parse_str(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let loc = Locator::new(file, text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let mut msg = e.message().trim().to_string();
            if msg.is_empty() {
                // toml gives no words for some lexer errors (a control
                // character in a comment, found by fuzz/config_load).
                msg = match text.get(offset..).and_then(|t| t.chars().next()) {
                    Some(c) => format!("invalid TOML: unexpected character {c:?}"),
                    None => "invalid TOML: unexpected end of file".to_string(),
                };
            }
            let hint = if msg.contains("unknown field") {
                Some(
                    "check the spelling; the config reference in README.md lists every key"
                        .to_string(),
                )
            } else {
                None
            };
            return Err(vec![loc.error(offset, msg, hint)]);
        }
    };
    let mut cx = Ctx {
        loc,
        errors: Vec::new(),
    };
    let cfg = build(&mut cx, raw);
    if cx.errors.is_empty() {
        Ok(cfg)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.col));
        Err(cx.errors)
    }
}

fn build(cx: &mut Ctx<'_>, raw: RawConfig) -> Config {
    let admin = build_admin(cx, raw.admin.as_ref());
    let log = super::log_validate::build_log(&cx.loc, &mut cx.errors, raw.log.as_ref());

    let mut backends = BTreeMap::new();
    for (name, b) in &raw.backends {
        if !valid_name(name) {
            cx.err(b, format!("bad backend name `{name}`"), Some(NAME_HINT));
        }
        backends.insert(name.clone(), build_backend(cx, name, b));
    }

    // Listen addresses must be unique across frontends and the admin listener.
    let mut seen_listen: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(a) = admin.listen {
        seen_listen.insert(a, "the admin listener".to_string());
    }
    let mut frontends = BTreeMap::new();
    // File order, so "already used" points at the second occurrence.
    let mut in_file_order: Vec<_> = raw.frontends.iter().collect();
    in_file_order.sort_by_key(|(_, f)| f.span().start);
    for (name, f) in in_file_order {
        if !valid_name(name) {
            cx.err(f, format!("bad frontend name `{name}`"), Some(NAME_HINT));
        }
        let fe = build_frontend(cx, name, f, &backends, &mut seen_listen);
        frontends.insert(name.clone(), fe);
    }
    let cluster = build_cluster(cx, raw.cluster.as_ref());
    let global = GlobalConfig {
        threads: raw.global.as_ref().and_then(|g| {
            g.threads
                .as_ref()
                .map(|_| cx.int(&g.threads, "threads", 1, 1024, 1) as usize)
        }),
        cpu_affinity: raw
            .global
            .as_ref()
            .and_then(|g| g.cpu_affinity)
            .unwrap_or(false),
        hard_stop_after: raw.global.as_ref().and_then(|g| {
            g.hard_stop_after.as_ref().map(|_| {
                cx.duration(
                    &g.hard_stop_after,
                    "hard_stop_after",
                    Duration::from_secs(30),
                )
            })
        }),
        state_file: match raw.global.as_ref().and_then(|g| g.state_file.as_ref()) {
            None => StateFile::Default,
            Some(v) if v.get_ref() == "off" => StateFile::Off,
            Some(v) if v.get_ref().is_empty() => {
                cx.err(
                    v,
                    "empty state_file",
                    Some("give a path, or \"off\" to keep no state file"),
                );
                StateFile::Default
            }
            Some(v) => StateFile::Path(PathBuf::from(v.get_ref())),
        },
    };
    let vrrp = crate::vrrp::config::validate(&cx.loc, raw.vrrp.as_ref(), &mut cx.errors);
    Config {
        source: None,
        global,
        admin,
        log,
        frontends,
        backends,
        cluster,
        vrrp,
    }
}

fn build_admin(cx: &mut Ctx<'_>, raw: Option<&S<RawAdmin>>) -> AdminConfig {
    let Some(raw) = raw else {
        return AdminConfig {
            listen: None,
            token_file: None,
            public_read: false,
        };
    };
    let r = raw.get_ref();
    let listen = match &r.listen {
        None => defaults::ADMIN_LISTEN.parse().ok(),
        Some(v) if v.get_ref() == "off" => None,
        Some(v) => cx.parse::<SocketAddr>(
            v,
            "admin listen address",
            "write IP:PORT, e.g. \"127.0.0.1:9000\", or \"off\"",
        ),
    };
    let token_file = r
        .token_file
        .as_ref()
        .map(|t| std::path::PathBuf::from(t.get_ref()));
    // The same rule `run` applies, so `check` refuses what `run` would.
    if let (Some(t), Some(path)) = (&r.token_file, &token_file) {
        if let Err(why) = super::rules::read_token_file(path) {
            cx.err(t, why, Some("the file's first line is the token: at least 16 characters, e.g. from `openssl rand -hex 24`"));
        }
    }
    if let Some(a) = listen {
        if !a.ip().is_loopback() && token_file.is_none() {
            let at = r
                .listen
                .as_ref()
                .map(|l| l.span().start)
                .unwrap_or(raw.span().start);
            cx.errors.push(cx.loc.error(
                at,
                format!("the admin listener on {a} is reachable from the network but has no token"),
                Some("add token_file = \"/etc/fulcrum/admin.token\" (changes then need Authorization: Bearer <token>), or listen on 127.0.0.1".into()),
            ));
        }
    }
    AdminConfig {
        listen,
        token_file,
        public_read: r.public_read.unwrap_or(false),
    }
}

fn build_cluster(cx: &mut Ctx<'_>, raw: Option<&RawCluster>) -> ClusterConfig {
    let mut peers = Vec::new();
    for p in raw.map(|r| r.peers.as_slice()).unwrap_or(&[]) {
        let v = p.get_ref().trim_end_matches('/');
        let ok = v
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if ok {
            peers.push(v.to_string());
        } else {
            cx.err(
                p,
                format!("bad cluster peer `{}`", p.get_ref()),
                Some("write the peer's admin URL, e.g. \"http://10.0.0.2:9000\""),
            );
        }
    }
    let store = raw
        .and_then(|r| r.store.as_ref())
        .and_then(|s| super::etcd::build_store(cx, s));
    let config = raw
        .and_then(|r| r.config.as_ref())
        .and_then(|s| super::etcd::build_config_source(cx, s));
    ClusterConfig {
        peers,
        store,
        config,
    }
}

fn known_list(backends: &BTreeMap<String, BackendConfig>) -> String {
    if backends.is_empty() {
        "no backends are defined; add a [backends.NAME] table".to_string()
    } else {
        let names: Vec<&str> = backends.keys().map(String::as_str).collect();
        format!("known backends: {}", names.join(", "))
    }
}
