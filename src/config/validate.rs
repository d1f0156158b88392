//! `validate()`: raw spanned config → typed [`Config`], collecting every error
//! with its position and a hint instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::duration::parse_duration;
use super::error::{ConfigError, Locator};
use super::raw::*;
use super::types::*;

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

struct Ctx<'a> {
    loc: Locator<'a>,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err<T>(&mut self, at: &S<T>, msg: impl Into<String>, hint: Option<&str>) {
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
            let msg = e.message().trim().to_string();
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
        hard_stop_after: raw.global.as_ref().and_then(|g| {
            g.hard_stop_after.as_ref().map(|_| {
                cx.duration(
                    &g.hard_stop_after,
                    "hard_stop_after",
                    Duration::from_secs(30),
                )
            })
        }),
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
    ClusterConfig { peers }
}

fn build_discovery(cx: &mut Ctx<'_>, d: &S<RawDiscovery>) -> Option<DiscoveryConfig> {
    let r = d.get_ref();
    let sources = [r.file.is_some(), r.dns.is_some(), r.srv.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if sources != 1 {
        cx.err(d, "discovery needs exactly one of `file`, `dns` or `srv`", Some("e.g. discovery = { file = \"/etc/fulcrum/web.json\" } or { dns = \"web.internal\", port = 80 }"));
        return None;
    }
    if let Some(f) = &r.file {
        for (present, key) in [
            (r.port.is_some(), "port"),
            (r.interval.is_some(), "interval"),
            (r.resolver.is_some(), "resolver"),
        ] {
            if present {
                cx.err(
                    d,
                    format!("`{key}` applies to DNS discovery, not to `file`"),
                    None,
                );
            }
        }
        let poll = cx.duration(
            &r.poll_interval,
            "poll_interval",
            Duration::from_millis(500),
        );
        return Some(DiscoveryConfig::File {
            path: std::path::PathBuf::from(f.get_ref()),
            poll,
        });
    }
    if r.poll_interval.is_some() {
        cx.err(
            d,
            "`poll_interval` applies to file discovery; DNS uses `interval`",
            None,
        );
    }
    let (name, record) = match (&r.dns, &r.srv) {
        (Some(n), _) => (n, DnsRecord::A),
        (_, Some(n)) => (n, DnsRecord::Srv),
        _ => return None,
    };
    if name.get_ref().is_empty() || name.get_ref().chars().any(|c| c.is_whitespace()) {
        cx.err(name, format!("bad DNS name `{}`", name.get_ref()), None);
    }
    let port = r
        .port
        .as_ref()
        .map(|_| cx.int(&r.port, "port", 1, 65535, 80) as u16);
    if record == DnsRecord::A && port.is_none() {
        cx.err(
            d,
            "DNS A/AAAA discovery needs a `port`",
            Some("e.g. discovery = { dns = \"web.internal\", port = 80 }"),
        );
    }
    let interval = cx.duration(&r.interval, "interval", Duration::from_secs(5));
    let resolver = r.resolver.as_ref().and_then(|v| {
        cx.parse::<SocketAddr>(
            v,
            "resolver address",
            "write IP:PORT, e.g. \"127.0.0.1:53\"",
        )
    });
    Some(DiscoveryConfig::Dns {
        name: name.get_ref().clone(),
        record,
        port,
        interval,
        resolver,
    })
}

fn known_list(backends: &BTreeMap<String, BackendConfig>) -> String {
    if backends.is_empty() {
        "no backends are defined; add a [backends.NAME] table".to_string()
    } else {
        let names: Vec<&str> = backends.keys().map(String::as_str).collect();
        format!("known backends: {}", names.join(", "))
    }
}

fn build_frontend(
    cx: &mut Ctx<'_>,
    name: &str,
    f: &S<RawFrontend>,
    backends: &BTreeMap<String, BackendConfig>,
    seen_listen: &mut HashMap<SocketAddr, String>,
) -> FrontendConfig {
    let r = f.get_ref();
    let mode = match &r.mode {
        None => Mode::Http,
        Some(m) => match m.get_ref().as_str() {
            "http" => Mode::Http,
            "tcp" => Mode::Tcp,
            other => {
                cx.err(
                    m,
                    format!("unknown mode `{other}`"),
                    Some("use \"http\" or \"tcp\""),
                );
                Mode::Http
            }
        },
    };
    let mut listen = Vec::new();
    if r.listen.get_ref().is_empty() {
        cx.err(
            &r.listen,
            format!("frontend `{name}` listens nowhere"),
            Some("add an address: listen = [\"0.0.0.0:80\"]"),
        );
    }
    for l in r.listen.get_ref() {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => {
                if let Some(other) = seen_listen.get(&a) {
                    let msg = format!("listen address {a} is already used by {other}");
                    cx.err(
                        l,
                        msg,
                        Some("each address:port can be bound by one frontend only"),
                    );
                } else {
                    seen_listen.insert(a, format!("frontend `{name}`"));
                }
                listen.push(a);
            }
            Err(_) => cx.err(
                l,
                format!("bad listen address `{}`", l.get_ref()),
                Some("write IP:PORT, e.g. \"0.0.0.0:80\" or \"[::]:443\""),
            ),
        }
    }
    let check_backend = |cx: &mut Ctx<'_>, b: &S<String>| {
        if !backends.contains_key(b.get_ref()) {
            cx.err(
                b,
                format!("unknown backend `{}`", b.get_ref()),
                Some(&known_list(backends)),
            );
        }
    };
    if let Some(b) = &r.backend {
        check_backend(cx, b);
    }
    let mut routes = Vec::new();
    for route in &r.routes {
        let rr = route.get_ref();
        check_backend(cx, &rr.backend);
        if rr.host.is_none() && rr.path_prefix.is_none() {
            cx.err(
                route,
                "a route needs `host`, `path_prefix` or both",
                Some("e.g. { host = \"api.example.com\", backend = \"api\" }"),
            );
        }
        if mode == Mode::Tcp {
            cx.err(
                route,
                "routes need mode = \"http\"",
                Some("a TCP frontend sends everything to its `backend`"),
            );
        }
        let host = rr.host.as_ref().and_then(|h| parse_host(cx, h));
        let path_prefix = rr.path_prefix.as_ref().map(|p| {
            if !p.get_ref().starts_with('/') {
                cx.err(
                    p,
                    format!("path_prefix `{}` must start with '/'", p.get_ref()),
                    None,
                );
            }
            p.get_ref().clone()
        });
        let rate_limit = rr.rate_limit.as_ref().and_then(|r| build_rate_limit(cx, r));
        routes.push(Route {
            host,
            path_prefix,
            backend: rr.backend.get_ref().clone(),
            rate_limit,
        });
    }
    if r.backend.is_none() && routes.is_empty() {
        cx.err(
            f,
            format!("frontend `{name}` has no backend and no routes"),
            Some("add backend = \"NAME\""),
        );
    }
    let tls = r.tls.as_ref().and_then(|t| build_tls(cx, t, mode));
    let redirect_https = match &r.redirect_https {
        None => None,
        Some(v) => match v.get_ref() {
            toml::Value::Boolean(false) => None,
            toml::Value::Boolean(true) => Some(RedirectHttps { port: None }),
            toml::Value::Integer(p) if (1..=65535).contains(p) => Some(RedirectHttps {
                port: if *p == 443 { None } else { Some(*p as u16) },
            }),
            _ => {
                cx.err(
                    v,
                    "bad redirect_https",
                    Some("use true (redirect to port 443) or the https port, e.g. 8443"),
                );
                None
            }
        },
    };
    if redirect_https.is_some() && tls.is_some() {
        cx.err(
            f,
            "redirect_https on a TLS frontend would redirect to itself",
            Some("put redirect_https on the plain-HTTP frontend"),
        );
    }
    let max_header_bytes = cx.int(
        &r.max_header_bytes,
        "max_header_bytes",
        8192,
        1 << 20,
        defaults::MAX_HEADER_BYTES as i64,
    ) as usize;
    let mut fe = default_frontend(
        name,
        mode,
        listen,
        r.backend.as_ref().map(|b| b.get_ref().clone()),
    );
    fe.routes = routes;
    fe.timeouts = FrontendTimeouts {
        client_header: cx.duration(
            &r.client_header_timeout,
            "client_header_timeout",
            defaults::CLIENT_HEADER_TIMEOUT,
        ),
        client_idle: cx.duration(
            &r.client_idle_timeout,
            "client_idle_timeout",
            defaults::CLIENT_IDLE_TIMEOUT,
        ),
    };
    fe.max_header_bytes = max_header_bytes;
    fe.tls = tls;
    fe.h2c = r.h2c.unwrap_or(false);
    fe.normalize_path = r.normalize_path.unwrap_or(false);
    if let Some(h) = &r.http2 {
        fe.http2 = http2_limits(cx, h.get_ref());
    }
    fe.redirect_https = redirect_https;
    fe.max_body_bytes = r
        .max_body_bytes
        .as_ref()
        .map(|_| cx.int(&r.max_body_bytes, "max_body_bytes", 0, i64::MAX, 0) as u64);
    fe.max_headers = cx.int(
        &r.max_headers,
        "max_headers",
        1,
        10_000,
        defaults::MAX_HEADERS as i64,
    ) as usize;
    fe.request_id = r.request_id.unwrap_or(true);
    fe.request_headers = r
        .request_headers
        .as_ref()
        .map(|h| build_header_rules(cx, h))
        .unwrap_or_default();
    fe.response_headers = r
        .response_headers
        .as_ref()
        .map(|h| build_header_rules(cx, h))
        .unwrap_or_default();
    fe.rate_limit = r
        .rate_limit
        .as_ref()
        .and_then(|rl| build_rate_limit(cx, rl));
    fe.trusted_proxies = r
        .trusted_proxies
        .iter()
        .filter_map(|c| parse_cidr(cx, c))
        .collect();
    fe.accept_proxy = r.accept_proxy.unwrap_or(false);
    fe.maxconn = r
        .maxconn
        .as_ref()
        .map(|_| cx.int(&r.maxconn, "maxconn", 1, 10_000_000, 1) as u32);
    if mode == Mode::Tcp
        && (fe.rate_limit.is_some()
            || !fe.request_headers.is_empty()
            || !fe.response_headers.is_empty())
    {
        cx.err(f, "rate_limit and header rules need mode = \"http\"", None);
    }
    fe
}

fn parse_cidr(cx: &mut Ctx<'_>, v: &S<String>) -> Option<Cidr> {
    let text = v.get_ref().trim();
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, p.parse::<u8>().ok()),
        None => (text, None),
    };
    let parsed = ip.parse::<IpAddr>().ok().and_then(|addr| {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix {
            None if !text.contains('/') => Some(Cidr { addr, prefix: max }),
            Some(p) if p <= max => Some(Cidr { addr, prefix: p }),
            _ => None,
        }
    });
    if parsed.is_none() {
        cx.err(
            v,
            format!("bad network `{text}`"),
            Some("write an address or a CIDR network, e.g. \"10.0.0.0/8\" or \"127.0.0.1\""),
        );
    }
    parsed
}

fn valid_header_name(n: &str) -> bool {
    http::HeaderName::from_bytes(n.as_bytes()).is_ok()
}

fn build_header_rules(cx: &mut Ctx<'_>, h: &S<RawHeaderRules>) -> HeaderRules {
    let r = h.get_ref();
    let mut out = HeaderRules::default();
    for n in &r.remove {
        if valid_header_name(n.get_ref()) {
            out.remove.push(n.get_ref().to_ascii_lowercase());
        } else {
            cx.err(n, format!("bad header name `{}`", n.get_ref()), None);
        }
    }
    for (list, target) in [(&r.set, &mut out.set), (&r.add, &mut out.add)] {
        for (name, value) in list {
            if !valid_header_name(name) {
                cx.err(value, format!("bad header name `{name}`"), None);
                continue;
            }
            let v = value.get_ref();
            if v.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                cx.err(value, "header values cannot contain CR, LF or NUL", None);
                continue;
            }
            if let Some(bad) = unknown_variable(v) {
                cx.err(
                    value,
                    format!("unknown variable `{{{bad}}}`"),
                    Some("use {client_ip}, {request_id}, {frontend}, {backend} or {server}"),
                );
                continue;
            }
            target.push((name.to_ascii_lowercase(), v.clone()));
        }
    }
    out
}

/// The first `{name}` in `v` that is not a known variable.
fn unknown_variable(v: &str) -> Option<String> {
    let mut rest = v;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let j = after.find('}')?;
        let name = &after[..j];
        if !matches!(
            name,
            "client_ip" | "request_id" | "frontend" | "backend" | "server"
        ) {
            return Some(name.to_string());
        }
        rest = &after[j + 1..];
    }
    None
}

fn build_rate_limit(cx: &mut Ctx<'_>, rl: &S<RawRateLimit>) -> Option<RateLimit> {
    let r = rl.get_ref();
    let rate = *r.rate.get_ref();
    if !(rate > 0.0 && rate.is_finite()) {
        cx.err(
            &r.rate,
            "rate must be a positive number of requests",
            Some("e.g. rate_limit = { rate = 10, per = \"1s\", burst = 20 }"),
        );
        return None;
    }
    let per = cx.duration(&r.per, "per", Duration::from_secs(1));
    let burst = cx.int(&r.burst, "burst", 1, 1_000_000, rate.ceil().max(1.0) as i64) as u32;
    let key = match &r.key {
        None => RateKey::ClientIp,
        Some(k) if k.get_ref() == "ip" => RateKey::ClientIp,
        Some(k) => match k.get_ref().strip_prefix("header:") {
            Some(h) if valid_header_name(h) => RateKey::Header(h.to_ascii_lowercase()),
            _ => {
                cx.err(
                    k,
                    format!("bad rate-limit key `{}`", k.get_ref()),
                    Some("use \"ip\" or \"header:X-Api-Key\""),
                );
                RateKey::ClientIp
            }
        },
    };
    let max_clients = cx.int(
        &r.max_clients,
        "max_clients",
        16,
        100_000_000,
        defaults::RATE_MAX_CLIENTS as i64,
    ) as usize;
    Some(RateLimit {
        rate,
        per,
        burst,
        key,
        max_clients,
    })
}

fn build_tls(cx: &mut Ctx<'_>, t: &S<RawTls>, mode: Mode) -> Option<TlsConfig> {
    let r = t.get_ref();
    if mode == Mode::Tcp {
        cx.err(
            t,
            "TLS termination needs mode = \"http\"",
            Some("for TLS pass-through use mode = \"tcp\" without `tls`"),
        );
        return None;
    }
    if r.certificates.get_ref().is_empty() {
        cx.err(
            &r.certificates,
            "no certificate given",
            Some("certificates = [{ cert = \"/etc/ssl/site.pem\", key = \"/etc/ssl/site.key\" }]"),
        );
        return None;
    }
    let mut certificates = Vec::new();
    for c in r.certificates.get_ref() {
        let pair = CertPair {
            cert: std::path::PathBuf::from(c.get_ref().cert.get_ref()),
            key: std::path::PathBuf::from(c.get_ref().key.get_ref()),
            ocsp_file: c.get_ref().ocsp_file.as_ref().map(|o| o.get_ref().into()),
        };
        if let (Some(o), Some(path)) = (&c.get_ref().ocsp_file, &pair.ocsp_file) {
            if let Err(e) = crate::tls::read_ocsp(path) {
                cx.err(
                    o,
                    e.to_string(),
                    Some("a DER OCSP response, e.g. from `openssl ocsp -respout FILE`"),
                );
            }
        }
        // Load now, so `fulcrum check` and a reload report a missing or
        // mismatched key at its place in the file.
        if let Err(e) = crate::tls::load_pair(&pair.cert, &pair.key) {
            let at = match &e {
                crate::tls::TlsError::NoKey { .. } | crate::tls::TlsError::BadKey { .. } => {
                    &c.get_ref().key
                }
                _ => &c.get_ref().cert,
            };
            cx.err(
                at,
                e.to_string(),
                Some("PEM files: the certificate chain (leaf first) and its private key"),
            );
        }
        certificates.push(pair);
    }
    let min_version = match &r.min_version {
        None => TlsVersion::V1_2,
        Some(v) => match v.get_ref().as_str() {
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            other => {
                cx.err(
                    v,
                    format!("unsupported TLS version `{other}`"),
                    Some("use \"1.2\" or \"1.3\""),
                );
                TlsVersion::V1_2
            }
        },
    };
    Some(TlsConfig {
        certificates,
        min_version,
        http2: r.http2.unwrap_or(true),
        ticket_keys_file: r.ticket_keys_file.as_ref().and_then(|t| {
            let path = std::path::PathBuf::from(t.get_ref());
            match crate::tls::tickets::SharedTicketer::from_file(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    cx.err(
                        t,
                        e,
                        Some("one key per line: 64 hex digits, e.g. from `openssl rand -hex 32`"),
                    );
                    None
                }
            }
        }),
        prefer_server_ciphers: r.prefer_server_ciphers.unwrap_or(false),
    })
}

fn parse_host(cx: &mut Ctx<'_>, h: &S<String>) -> Option<HostMatch> {
    let s = h.get_ref().trim().to_ascii_lowercase();
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if let Some(rest) = s.strip_prefix("*.") {
        if rest.split('.').all(ok_label) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if s.split('.').all(ok_label) {
        return Some(HostMatch::Exact(s));
    }
    cx.err(h, format!("bad host pattern `{}`", h.get_ref()), Some("use an exact name (\"api.example.com\") or a wildcard (\"*.example.com\"), without port"));
    None
}

fn parse_algorithm(cx: &mut Ctx<'_>, v: &Option<S<String>>) -> Algorithm {
    let Some(v) = v else {
        return Algorithm::RoundRobin;
    };
    match v.get_ref().as_str() {
        "roundrobin" => Algorithm::RoundRobin,
        "leastconn" => Algorithm::LeastConn,
        "random" => Algorithm::Random,
        "source" => Algorithm::Source,
        "uri" => Algorithm::Uri,
        "first" => Algorithm::First,
        other => {
            cx.err(
                v,
                format!("unknown balance algorithm `{other}`"),
                Some("use roundrobin, leastconn, random, source, uri or first"),
            );
            Algorithm::RoundRobin
        }
    }
}

fn build_backend(cx: &mut Ctx<'_>, name: &str, b: &S<RawBackend>) -> BackendConfig {
    let r = b.get_ref();
    let balance = parse_algorithm(cx, &r.balance);
    let retries = cx.int(&r.retries, "retries", 0, 16, defaults::RETRIES as i64) as u32;
    let timeouts = BackendTimeouts {
        connect: cx.duration(
            &r.connect_timeout,
            "connect_timeout",
            defaults::CONNECT_TIMEOUT,
        ),
        response: cx.duration(
            &r.response_timeout,
            "response_timeout",
            defaults::RESPONSE_TIMEOUT,
        ),
        pool_idle: cx.duration(
            &r.pool_idle_timeout,
            "pool_idle_timeout",
            defaults::POOL_IDLE_TIMEOUT,
        ),
    };
    let pool_max_idle = cx.int(
        &r.pool_max_idle,
        "pool_max_idle",
        0,
        100_000,
        defaults::POOL_MAX_IDLE as i64,
    ) as usize;
    let health = build_health(cx, r.health.as_ref());
    let passive = match &r.passive {
        None => PassiveConfig {
            max_fails: defaults::MAX_FAILS,
            fail_timeout: defaults::FAIL_TIMEOUT,
        },
        Some(p) => {
            let p = p.get_ref();
            PassiveConfig {
                max_fails: cx.int(
                    &p.max_fails,
                    "max_fails",
                    0,
                    1000,
                    defaults::MAX_FAILS as i64,
                ) as u32,
                fail_timeout: cx.duration(&p.fail_timeout, "fail_timeout", defaults::FAIL_TIMEOUT),
            }
        }
    };
    let mut servers = Vec::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    for s in &r.servers {
        let sr = s.get_ref();
        let sname = sr.name.get_ref().clone();
        if !valid_name(&sname) {
            cx.err(
                &sr.name,
                format!("bad server name `{sname}`"),
                Some(NAME_HINT),
            );
        }
        if names.insert(sname.clone(), ()).is_some() {
            cx.err(
                &sr.name,
                format!("server `{sname}` appears twice in backend `{name}`"),
                Some("server names are unique within a backend"),
            );
        }
        let address = cx
            .parse::<SocketAddr>(
                &sr.address,
                "server address",
                "write IP:PORT, e.g. \"192.168.50.11:80\"",
            )
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        if let Some(why) = super::rules::server_address_problem(address) {
            if sr.address.get_ref().parse::<SocketAddr>().is_ok() {
                cx.err(
                    &sr.address,
                    format!("bad server address `{address}`: {why}"),
                    Some("write the unicast IP:PORT the server listens on"),
                );
            }
        }
        let weight = match &sr.weight {
            Some(w) if *w.get_ref() == 0 => {
                cx.err(w, "weight 0 would never receive traffic", Some("use 1..=256; to stop traffic to a server set state = \"drain\" or \"maint\""));
                1
            }
            w => cx.int(w, "weight", 1, 256, 1) as u32,
        };
        let maxconn = sr
            .maxconn
            .as_ref()
            .map(|_| cx.int(&sr.maxconn, "maxconn", 1, 1_000_000, 1) as u32);
        let admin = match &sr.state {
            None => AdminState::Ready,
            Some(v) => match v.get_ref().as_str() {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                other => {
                    cx.err(
                        v,
                        format!("unknown server state `{other}`"),
                        Some("use \"ready\", \"drain\" or \"maint\""),
                    );
                    AdminState::Ready
                }
            },
        };
        servers.push(ServerConfig {
            name: sname,
            address,
            weight,
            backup: sr.backup.unwrap_or(false),
            maxconn,
            admin,
        });
    }
    let discovery = r.discovery.as_ref().and_then(|d| build_discovery(cx, d));
    let sticky = r.sticky.as_ref().and_then(|st| {
        let c = &st.get_ref().cookie;
        let ok = !c.get_ref().is_empty()
            && c.get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Some(Sticky {
                cookie: c.get_ref().clone(),
            })
        } else {
            cx.err(
                c,
                format!("bad cookie name `{}`", c.get_ref()),
                Some("letters, digits, '_' and '-', e.g. \"SRV\""),
            );
            None
        }
    });
    let role = build_role(cx, r, &health);
    BackendConfig {
        name: name.to_string(),
        balance,
        retries,
        timeouts,
        pool_max_idle,
        health,
        passive,
        servers,
        discovery,
        sticky,
        queue_timeout: cx.duration(&r.queue_timeout, "queue_timeout", defaults::QUEUE_TIMEOUT),
        max_queue: cx.int(
            &r.max_queue,
            "max_queue",
            0,
            1_000_000,
            defaults::MAX_QUEUE as i64,
        ) as usize,
        role,
        http2: r.http2.unwrap_or(false),
        proxy_protocol: match &r.proxy_protocol {
            None => None,
            Some(v) => match v.get_ref().as_str() {
                "v1" => Some(ProxyVersion::V1),
                "v2" => Some(ProxyVersion::V2),
                other => {
                    cx.err(
                        v,
                        format!("unknown PROXY protocol version `{other}`"),
                        Some("use \"v1\" or \"v2\""),
                    );
                    None
                }
            },
        },
        tls: r.tls.as_ref().map(|t| {
            let t = t.get_ref();
            if let Some(ca) = &t.ca {
                if let Err(e) = std::fs::metadata(ca.get_ref()) {
                    cx.err(
                        ca,
                        format!("cannot read CA file {}: {e}", ca.get_ref()),
                        None,
                    );
                }
            }
            UpstreamTls {
                verify: t.verify.unwrap_or(true),
                ca: t.ca.as_ref().map(|c| std::path::PathBuf::from(c.get_ref())),
                sni: t.sni.as_ref().map(|v| v.get_ref().clone()),
            }
        }),
    }
}

/// The check timeout when none is set: the interval, but at least
/// [`defaults::CHECK_TIMEOUT_FLOOR`] (a 20 ms interval must not fail checks
/// because a loaded machine answered in 25 ms) and at most
/// [`defaults::CHECK_TIMEOUT_CEILING`]. Checks of one server never overlap:
/// the next starts `interval` after the previous one ended.
pub fn default_check_timeout(interval: Duration) -> Duration {
    interval.clamp(
        defaults::CHECK_TIMEOUT_FLOOR,
        defaults::CHECK_TIMEOUT_CEILING,
    )
}

fn build_health(cx: &mut Ctx<'_>, h: Option<&S<RawHealth>>) -> HealthConfig {
    let default_off = HealthConfig {
        check: None,
        interval: defaults::CHECK_INTERVAL,
        fast_interval: defaults::CHECK_INTERVAL / 4,
        timeout: defaults::CHECK_INTERVAL,
        rise: defaults::RISE,
        fall: defaults::FALL,
        port: None,
        address: None,
    };
    let Some(h) = h else { return default_off };
    let r = h.get_ref();
    let interval = cx.duration(&r.interval, "interval", defaults::CHECK_INTERVAL);
    let fast_default = (interval / 4).max(Duration::from_millis(10)).min(interval);
    let fast_interval = cx.duration(&r.fast_interval, "fast_interval", fast_default);
    let timeout = cx.duration(&r.timeout, "timeout", default_check_timeout(interval));
    let rise = cx.int(&r.rise, "rise", 1, 1000, defaults::RISE as i64) as u32;
    let fall = cx.int(&r.fall, "fall", 1, 1000, defaults::FALL as i64) as u32;
    let port = r
        .port
        .as_ref()
        .map(|_| cx.int(&r.port, "port", 1, 65535, 1) as u16);
    let address = r.address.as_ref().and_then(|a| {
        cx.parse::<IpAddr>(
            a,
            "check address",
            "write an IP address without port; use `port` for the port",
        )
    });
    let kind = r.kind.get_ref().as_str();
    // Keys that only make sense for some kinds: an error elsewhere, so a
    // misplaced key is never silently ignored.
    let scoped: [(&str, bool, &[&str]); 12] = [
        ("method", r.method.is_some(), &["http"]),
        ("path", r.path.is_some(), &["http"]),
        ("host", r.host.is_some(), &["http"]),
        ("expect_status", r.expect_status.is_some(), &["http"]),
        ("send", r.send.is_some(), &["tcp"]),
        ("send_hex", r.send_hex.is_some(), &["tcp"]),
        ("expect", r.expect.is_some(), &["tcp"]),
        ("expect_hex", r.expect_hex.is_some(), &["tcp"]),
        ("user", r.user.is_some(), &["postgres", "redis"]),
        ("password", r.password.is_some(), &["postgres", "redis"]),
        (
            "password_file",
            r.password_file.is_some(),
            &["postgres", "redis"],
        ),
        ("database", r.database.is_some(), &["postgres"]),
    ];
    let known = matches!(kind, "none" | "tcp" | "http" | "postgres" | "redis");
    for (key, present, kinds) in scoped {
        if present && known && !kinds.contains(&kind) {
            let list = kinds
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            cx.err(h, format!("`{key}` only applies to kind = {list}"), None);
        }
    }
    let check = match kind {
        "none" => None,
        "tcp" => build_tcp_expect(cx, r),
        "http" => {
            let method = r
                .method
                .as_ref()
                .map(|m| m.get_ref().clone())
                .unwrap_or_else(|| "GET".into());
            if let Some(m) = &r.method {
                if m.get_ref().is_empty() || !m.get_ref().chars().all(|c| c.is_ascii_uppercase()) {
                    cx.err(
                        m,
                        format!("bad HTTP method `{}`", m.get_ref()),
                        Some("e.g. \"GET\", \"HEAD\", \"OPTIONS\""),
                    );
                }
            }
            let path = r
                .path
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_else(|| "/".into());
            if let Some(p) = &r.path {
                if !p.get_ref().starts_with('/')
                    || p.get_ref()
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    cx.err(
                        p,
                        format!("bad check path `{}`", p.get_ref()),
                        Some("an absolute path without spaces, e.g. \"/health\""),
                    );
                }
            }
            let host = r.host.as_ref().map(|v| v.get_ref().clone());
            if let Some(hv) = &r.host {
                if hv
                    .get_ref()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
                {
                    cx.err(hv, "bad check Host header", None);
                }
            }
            let expect = match &r.expect_status {
                None => StatusRange { min: 200, max: 399 },
                Some(v) => parse_status(cx, v),
            };
            Some(CheckKind::Http {
                method,
                path,
                host,
                expect,
            })
        }
        "postgres" => {
            let user = match &r.user {
                Some(u) if !u.get_ref().is_empty() => u.get_ref().clone(),
                Some(u) => {
                    cx.err(u, "`user` must not be empty", None);
                    String::new()
                }
                None => {
                    cx.err(
                        h,
                        "a postgres check needs `user`",
                        Some("e.g. user = \"fulcrum\", password_file = \"/etc/fulcrum/pg.pass\""),
                    );
                    String::new()
                }
            };
            let database = r
                .database
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_else(|| "postgres".into());
            Some(CheckKind::Postgres(PostgresCheck {
                user,
                password: build_secret(cx, r),
                database,
            }))
        }
        "redis" => Some(CheckKind::Redis(RedisCheck {
            user: r.user.as_ref().map(|u| u.get_ref().clone()),
            password: build_secret(cx, r),
        })),
        other => {
            cx.err(
                &r.kind,
                format!("unknown health check kind `{other}`"),
                Some("use \"http\", \"tcp\", \"postgres\", \"redis\" or \"none\""),
            );
            None
        }
    };
    HealthConfig {
        check,
        interval,
        fast_interval,
        timeout,
        rise,
        fall,
        port,
        address,
    }
}

/// `send`/`expect` (text, with \r \n \t \\ escapes already done by TOML)
/// or their `_hex` forms; plain `kind = "tcp"` without them is a connect check.
fn build_tcp_expect(cx: &mut Ctx<'_>, r: &RawHealth) -> Option<CheckKind> {
    let send = bytes_key(cx, &r.send, &r.send_hex, "send");
    let expect = bytes_key(cx, &r.expect, &r.expect_hex, "expect");
    if let (Some(e), Some(v)) = (&expect, r.expect.as_ref().or(r.expect_hex.as_ref())) {
        if e.is_empty() || e.len() > MAX_EXPECT_BYTES {
            cx.err(
                v,
                format!("`expect` must be 1 to {MAX_EXPECT_BYTES} bytes"),
                None,
            );
        }
    }
    if let (Some(b), Some(v)) = (&send, r.send.as_ref().or(r.send_hex.as_ref())) {
        if b.is_empty() {
            cx.err(v, "`send` must not be empty", None);
        }
    }
    if send.is_none() && expect.is_none() {
        Some(CheckKind::Tcp)
    } else {
        Some(CheckKind::TcpExpect { send, expect })
    }
}

/// Largest `expect` pattern: the check reads at most a few KiB.
const MAX_EXPECT_BYTES: usize = 1024;

fn bytes_key(
    cx: &mut Ctx<'_>,
    text: &Option<S<String>>,
    hex: &Option<S<String>>,
    key: &str,
) -> Option<Vec<u8>> {
    match (text, hex) {
        (Some(t), Some(_)) => {
            cx.err(
                t,
                format!("give either `{key}` or `{key}_hex`, not both"),
                None,
            );
            None
        }
        (Some(t), None) => Some(t.get_ref().as_bytes().to_vec()),
        (None, Some(h)) => match decode_hex(h.get_ref()) {
            Some(b) => Some(b),
            None => {
                cx.err(
                    h,
                    format!("bad hex in `{key}_hex`"),
                    Some("pairs of hex digits, spaces allowed: \"50 49 4e 47 0d 0a\""),
                );
                None
            }
        },
        (None, None) => None,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let hi = *p.first()?;
            let lo = *p.get(1)?;
            let v = |c: u8| (c as char).to_digit(16);
            Some((v(hi)? * 16 + v(lo)?) as u8)
        })
        .collect()
}

fn build_secret(cx: &mut Ctx<'_>, r: &RawHealth) -> Option<Secret> {
    match (&r.password, &r.password_file) {
        (Some(p), Some(_)) => {
            cx.err(
                p,
                "give either `password` or `password_file`, not both",
                None,
            );
            None
        }
        (Some(p), None) => Some(Secret::Inline(p.get_ref().clone())),
        // Read at every check, not here: a secret mounted after start-up or
        // rotated later is picked up, and a missing file is the check's reason.
        (None, Some(f)) if f.get_ref().is_empty() => {
            cx.err(f, "`password_file` must not be empty", None);
            None
        }
        (None, Some(f)) => Some(Secret::File(std::path::PathBuf::from(f.get_ref()))),
        (None, None) => None,
    }
}

fn build_role(cx: &mut Ctx<'_>, r: &RawBackend, health: &HealthConfig) -> RolePolicy {
    let want = match &r.role {
        None => RoleFilter::Any,
        Some(v) => match v.get_ref().as_str() {
            "any" => RoleFilter::Any,
            "primary" => RoleFilter::Primary,
            "standby" => RoleFilter::Standby,
            other => {
                cx.err(
                    v,
                    format!("unknown role `{other}`"),
                    Some("use \"primary\", \"standby\" or \"any\""),
                );
                RoleFilter::Any
            }
        },
    };
    if let Some(v) = &r.role {
        let reports = health.check.as_ref().is_some_and(CheckKind::reports_role);
        if want != RoleFilter::Any && !reports {
            cx.err(
                v,
                format!(
                    "role = \"{}\" needs a health check that reports roles",
                    v.get_ref()
                ),
                Some(
                    "add health = { kind = \"postgres\", user = \"...\" } or { kind = \"redis\" }",
                ),
            );
        }
    }
    let on_change = match &r.on_role_change {
        None => OnRoleChange::Close,
        Some(v) => {
            if want == RoleFilter::Any {
                cx.err(
                    v,
                    "`on_role_change` only applies with role = \"primary\" or \"standby\"",
                    None,
                );
            }
            match v.get_ref().as_str() {
                "close" => OnRoleChange::Close,
                "keep" => OnRoleChange::Keep,
                other => {
                    cx.err(
                        v,
                        format!("unknown on_role_change `{other}`"),
                        Some("use \"close\" or \"keep\""),
                    );
                    OnRoleChange::Close
                }
            }
        }
    };
    RolePolicy { want, on_change }
}

fn parse_status(cx: &mut Ctx<'_>, v: &S<toml::Value>) -> StatusRange {
    let fallback = StatusRange { min: 200, max: 399 };
    let range = match v.get_ref() {
        toml::Value::Integer(n) if (100..=599).contains(n) => Some(StatusRange {
            min: *n as u16,
            max: *n as u16,
        }),
        toml::Value::String(s) => {
            let s = s.trim();
            if s.len() == 3 && s.ends_with("xx") {
                s[..1]
                    .parse::<u16>()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .map(|d| StatusRange {
                        min: d * 100,
                        max: d * 100 + 99,
                    })
            } else if let Some((a, b)) = s.split_once('-') {
                match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b))
                        if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b =>
                    {
                        Some(StatusRange { min: a, max: b })
                    }
                    _ => None,
                }
            } else {
                s.parse::<u16>()
                    .ok()
                    .filter(|n| (100..=599).contains(n))
                    .map(|n| StatusRange { min: n, max: n })
            }
        }
        _ => None,
    };
    range.unwrap_or_else(|| {
        cx.err(
            v,
            "bad expect_status",
            Some("use a status (200), a range (\"200-399\") or a class (\"2xx\")"),
        );
        fallback
    })
}

/// `http2 = { … }` of a frontend; every key optional (see `Http2Limits`).
fn http2_limits(cx: &mut Ctx, r: &RawHttp2) -> Http2Limits {
    let d = Http2Limits::default();
    // Windows: RFC 9113 §6.9.2 allows at most 2^31-1; below 16 KiB a stream
    // cannot carry one full frame.
    let window_max = (1i64 << 31) - 1;
    Http2Limits {
        max_concurrent_streams: cx.int(
            &r.max_concurrent_streams,
            "max_concurrent_streams",
            1,
            10_000,
            i64::from(d.max_concurrent_streams),
        ) as u32,
        stream_window: cx.int(
            &r.stream_window,
            "stream_window",
            16_384,
            window_max,
            i64::from(d.stream_window),
        ) as u32,
        connection_window: cx.int(
            &r.connection_window,
            "connection_window",
            65_535,
            window_max,
            i64::from(d.connection_window),
        ) as u32,
        max_send_buffer: cx.int(
            &r.max_send_buffer,
            "max_send_buffer",
            16_384,
            1 << 30,
            d.max_send_buffer as i64,
        ) as usize,
        max_pending_resets: cx.int(
            &r.max_pending_resets,
            "max_pending_resets",
            1,
            100_000,
            d.max_pending_resets as i64,
        ) as usize,
    }
}
