//! Validation of `[backends.NAME]`: balancing, servers, timeouts, discovery, roles.

use super::*;

pub(super) fn build_discovery(cx: &mut Ctx<'_>, d: &S<RawDiscovery>) -> Option<DiscoveryConfig> {
    let r = d.get_ref();
    let sources = [
        r.file.is_some(),
        r.dns.is_some(),
        r.srv.is_some(),
        r.etcd.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        cx.err(d, "discovery needs exactly one of `file`, `dns`, `srv` or `etcd`", Some("e.g. discovery = { file = \"/etc/fulcrum/web.json\" } or { dns = \"web.internal\", port = 80 }"));
        return None;
    }
    if let Some(e) = &r.etcd {
        return crate::config::etcd::build_discovery(cx, r, e).map(DiscoveryConfig::Etcd);
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

pub(super) fn parse_algorithm(cx: &mut Ctx<'_>, v: &Option<S<String>>) -> Algorithm {
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

pub(super) fn build_backend(cx: &mut Ctx<'_>, name: &str, b: &S<RawBackend>) -> BackendConfig {
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
        if let Some(why) = crate::config::rules::server_address_problem(address) {
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
    #[allow(unused_mut)] // only etcd discovery fills in a default
    let mut discovery = r.discovery.as_ref().and_then(|d| build_discovery(cx, d));
    #[cfg(feature = "etcd")]
    if let Some(DiscoveryConfig::Etcd(e)) = &mut discovery {
        if e.prefix.is_empty() {
            e.prefix = format!("/fulcrum/backends/{name}/");
        }
    }
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

pub(super) fn build_role(cx: &mut Ctx<'_>, r: &RawBackend, health: &HealthConfig) -> RolePolicy {
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
