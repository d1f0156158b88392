//! Validation of `[frontends.NAME]`: listen addresses, routes, headers, limits, edge policy.

use super::*;

pub(super) fn build_frontend(
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

pub(super) fn parse_cidr(cx: &mut Ctx<'_>, v: &S<String>) -> Option<Cidr> {
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

pub(super) fn valid_header_name(n: &str) -> bool {
    http::HeaderName::from_bytes(n.as_bytes()).is_ok()
}

pub(super) fn build_header_rules(cx: &mut Ctx<'_>, h: &S<RawHeaderRules>) -> HeaderRules {
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
pub(super) fn unknown_variable(v: &str) -> Option<String> {
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

pub(super) fn build_rate_limit(cx: &mut Ctx<'_>, rl: &S<RawRateLimit>) -> Option<RateLimit> {
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

pub(super) fn parse_host(cx: &mut Ctx<'_>, h: &S<String>) -> Option<HostMatch> {
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
