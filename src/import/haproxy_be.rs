//! HAProxy backends (and `listen` sections' server side) → fulcrum `[backends.*]`,
//! plus `global` and the stats page → `[global]` / `[admin]`.

use super::emit::{inline, q, Src, Table};
use super::haproxy::{Kind, Line, Px};
use super::haproxy_out::Ctx;
use super::report::{Outcome, Report};
use super::Hostnames;

fn src(l: &Line) -> Src {
    Src::one(l.src())
}

/// The `[backends.NAME]` table of a backend or listen section.
pub fn backend(px: &Px, cx: &mut Ctx<'_>, tables: &mut Vec<Table>) {
    if px.kind == Kind::Defaults || !px.kind.is_be() {
        return;
    }
    if px.kind == Kind::Listen && px.servers.is_empty() {
        return; // a stats-only or frontend-like listen section
    }
    let mut t = Table::new(
        format!("backends.{}", super::emit::key(&px.name)),
        src(&px.head),
    );
    if let Some(b) = &px.balance {
        let alg = b.v.split_whitespace().next().unwrap_or("");
        let (v, o) = match alg {
            "roundrobin" => (
                None,
                Outcome::Default("roundrobin is fulcrum's default".into()),
            ),
            "static-rr" => (
                None,
                Outcome::Approximated(
                    "static-rr → roundrobin (fulcrum's weights apply at once either way)".into(),
                ),
            ),
            "leastconn" | "first" | "source" => (Some(alg.to_string()), Outcome::Translated),
            "uri" => (
                Some("uri".to_string()),
                if b.v.split_whitespace().count() > 1 {
                    Outcome::Approximated(
                        "uri hashing options (len/depth/whole) are not translated".into(),
                    )
                } else {
                    Outcome::Translated
                },
            ),
            a if a.starts_with("random") => (
                Some("random".to_string()),
                if a == "random" {
                    Outcome::Translated
                } else {
                    Outcome::Approximated("random(N) draws: fulcrum picks one at random".into())
                },
            ),
            _ => (
                None,
                Outcome::Unsupported(format!("balance `{alg}`: fulcrum uses roundrobin instead")),
            ),
        };
        if let Some(v) = v {
            t.str("balance", &v, src(&b.line));
        }
        cx.rep.add(&b.line.loc, &b.line.text, o);
    }
    if let Some(r) = &px.retries {
        let v = r.v.clamp(0, 16);
        t.raw("retries", v.to_string(), src(&r.line));
        if v != r.v {
            cx.rep.add(
                &r.line.loc,
                &r.line.text,
                Outcome::Approximated("fulcrum allows 0..16 retries".into()),
            );
        } else {
            cx.rep.ok(&r.line.loc, &r.line.text);
        }
    }
    for (key, name) in [
        ("connect_timeout", "connect"),
        ("response_timeout", "server"),
        ("queue_timeout", "queue"),
    ] {
        if let Some(s) = px.timeout(name) {
            t.str(key, &s.v, src(&s.line));
            if name == "server" {
                cx.rep.add(&s.line.loc, &s.line.text, Outcome::Approximated("HAProxy's `timeout server` is an inactivity timeout; fulcrum's response_timeout bounds the time to the response head".into()));
            } else {
                cx.rep.ok(&s.line.loc, &s.line.text);
            }
        }
    }
    for (name, s) in &px.timeouts {
        if matches!(name.as_str(), "client" | "http-request" | "http-keep-alive")
            && px.kind == Kind::Backend
        {
            cx.rep.add(
                &s.line.loc,
                &s.line.text,
                Outcome::Default("applies to frontends".into()),
            );
        }
    }
    health(&mut t, px, cx);
    if let Some(c) = &px.cookie {
        let words = &c.line.words;
        if words.iter().any(|w| w == "insert") {
            t.raw("sticky", inline(&[("cookie", q(&c.v))]), src(&c.line));
            let extra: Vec<&String> = words
                .iter()
                .skip(2)
                .filter(|w| {
                    !matches!(
                        w.as_str(),
                        "insert" | "indirect" | "nocache" | "httponly" | "secure" | "preserve"
                    )
                })
                .collect();
            if extra.is_empty() {
                cx.rep.ok(&c.line.loc, &c.line.text);
            } else {
                cx.rep.add(&c.line.loc, &c.line.text, Outcome::Approximated("cookie options (domain/maxidle/maxlife/attr) are not translated; fulcrum's cookie value is an opaque server id".into()));
            }
        } else {
            cx.rep.add(&c.line.loc, &c.line.text, Outcome::Unsupported("only `cookie NAME insert` is translated (prefix/rewrite need the application's cookie)".into()));
        }
    }
    // Server-side TLS and PROXY protocol are per backend in fulcrum.
    let first_ssl = px.servers.iter().find(|s| s.v.ssl);
    if let Some(s) = first_ssl {
        let mut p = Vec::new();
        if s.v.verify == Some(false) {
            p.push(("verify", "false".to_string()));
        }
        if let Some(ca) = &s.v.ca {
            p.push(("ca", q(ca)));
        }
        if let Some(sni) = &s.v.sni {
            p.push(("sni", q(sni)));
        }
        t.raw("tls", inline(&p), src(&s.line));
    }
    if let Some(s) = px.servers.iter().find(|s| s.v.send_proxy.is_some()) {
        let v = if s.v.send_proxy == Some(2) {
            "v2"
        } else {
            "v1"
        };
        t.str("proxy_protocol", v, src(&s.line));
    }
    let mixed_ssl = first_ssl.is_some() && px.servers.iter().any(|s| !s.v.ssl);
    let mixed_pp = px
        .servers
        .iter()
        .any(|s| s.v.send_proxy != px.servers.first().and_then(|f| f.v.send_proxy));
    let mut dns_done = false;
    for s in &px.servers {
        let v = &s.v;
        let mut lost = v.lost.clone();
        if mixed_ssl {
            lost.push(
                "some servers use ssl and some not: fulcrum's backend `tls` applies to all".into(),
            );
        }
        if mixed_pp {
            lost.push(
                "send-proxy differs between servers: fulcrum's proxy_protocol applies to all"
                    .into(),
            );
        }
        let port = match v.port.or_else(|| listen_port(px)) {
            Some(p) => p,
            None => {
                cx.rep.add(&s.line.loc, &s.line.text, Outcome::Unsupported("a server without port takes the client's port in HAProxy; fulcrum needs one".into()));
                continue;
            }
        };
        if v.port.is_none() {
            lost.push(format!("no port: the listener's {port} is used"));
        }
        let ip = match v.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let dns = cx.hostnames == Hostnames::Dns || v.resolvers;
                if dns && px.servers.len() == 1 && !dns_done && cx.hostnames != Hostnames::Resolve {
                    t.raw(
                        "discovery",
                        inline(&[("dns", q(&v.host)), ("port", port.to_string())]),
                        src(&s.line),
                    );
                    dns_done = true;
                    lost.push(
                        "server name, weight and per-server options are not kept by DNS discovery"
                            .into(),
                    );
                    let o = Outcome::Approximated(lost.join("; "));
                    cx.rep.add(&s.line.loc, &s.line.text, o);
                    continue;
                }
                match (cx.resolver)(&v.host) {
                    Some(ip) => {
                        lost.push(format!(
                            "`{}` resolved to {ip} now (HAProxy resolves it at start too)",
                            v.host
                        ));
                        ip
                    }
                    None => {
                        cx.rep.add(&s.line.loc, &s.line.text, Outcome::Unsupported(format!("cannot resolve `{}` (HAProxy would refuse to start); use --dns for DNS discovery", v.host)));
                        continue;
                    }
                }
            }
        };
        let addr = std::net::SocketAddr::new(ip, port).to_string();
        let mut p = vec![("name", q(&v.name)), ("address", q(&addr))];
        match v.weight {
            Some(0) => {
                p.push(("state", q("drain")));
                lost.push("weight 0 → state drain (no new traffic)".into());
            }
            Some(w) if w != 1 => p.push(("weight", w.to_string())),
            _ => {}
        }
        if v.backup {
            p.push(("backup", "true".into()));
        }
        if let Some(m) = v.maxconn {
            if m > 0 {
                p.push(("maxconn", m.to_string()));
            }
        }
        if v.disabled {
            p.push(("state", q("maint")));
        }
        t.push("servers", inline(&p), src(&s.line));
        let only_resolved =
            lost.len() == 1 && lost.first().is_some_and(|l| l.contains("resolved to"));
        if lost.is_empty() {
            cx.rep.ok(&s.line.loc, &s.line.text);
        } else if only_resolved {
            cx.rep.ok(&s.line.loc, &s.line.text);
            cx.rep
                .notes
                .push(format!("{}: {}", s.line.loc, lost.join("; ")));
        } else {
            cx.rep.add(
                &s.line.loc,
                &s.line.text,
                Outcome::Approximated(lost.join("; ")),
            );
        }
    }
    for d in &px.default_server {
        cx.rep.ok(&d.loc, &d.text);
    }
    if !t.has("servers") && !t.has("discovery") {
        t.raw(
            "servers",
            "[]".into(),
            Src::one("no server could be translated".into()),
        );
    }
    cx.rep.ok(&px.head.loc, &px.head.text);
    tables.push(t);
}

fn listen_port(px: &Px) -> Option<u16> {
    let ports: Vec<u16> = px
        .binds
        .iter()
        .flat_map(|b| b.addrs.iter())
        .filter_map(|a| a.rsplit_once(':')?.1.parse().ok())
        .collect();
    match ports.as_slice() {
        [p] => Some(*p),
        _ => None,
    }
}

fn health(t: &mut Table, px: &Px, cx: &mut Ctx<'_>) {
    let checked: Vec<_> = px.servers.iter().filter(|s| s.v.check).collect();
    let chk_lines: Vec<&Line> = px
        .httpchk
        .iter()
        .map(|c| &c.line)
        .chain(px.expect.iter().map(|c| &c.line))
        .chain(px.tcpchk.iter().map(|c| &c.line))
        .collect();
    let Some(first) = checked.first() else {
        for l in chk_lines {
            cx.rep.add(
                &l.loc,
                &l.text,
                Outcome::Default("no server has `check`: HAProxy runs no check either".into()),
            );
        }
        if let Some(s) = px.timeout("check") {
            cx.rep.add(
                &s.line.loc,
                &s.line.text,
                Outcome::Default("no server has `check`".into()),
            );
        }
        return;
    };
    let mut p: Vec<(&str, String)> = Vec::new();
    let mut s = Src::default();
    if let Some(tc) = &px.tcpchk {
        p.push(("kind", q("tcp")));
        let (send, expect, send_hex, expect_hex) = &tc.v;
        if let Some(x) = send {
            p.push((if *send_hex { "send_hex" } else { "send" }, q(x)));
        }
        if let Some(x) = expect {
            p.push((if *expect_hex { "expect_hex" } else { "expect" }, q(x)));
        }
        s.0.push(tc.line.src());
        cx.rep.ok(&tc.line.loc, &tc.line.text);
    } else if let Some(h) = &px.httpchk {
        p.push(("kind", q("http")));
        if h.v.method != "GET" {
            p.push(("method", q(&h.v.method)));
        }
        p.push(("path", q(&h.v.uri)));
        if let Some(host) = &h.v.host {
            p.push(("host", q(host)));
        }
        s.0.push(h.line.src());
        cx.rep.ok(&h.line.loc, &h.line.text);
        if let Some(e) = &px.expect {
            let v = match e.v.parse::<u16>() {
                Ok(n) => n.to_string(),
                Err(_) => q(&e.v),
            };
            p.push(("expect_status", v));
            s.0.push(e.line.src());
        }
    } else {
        p.push(("kind", q("tcp")));
        s.0.push("servers have `check` without `option httpchk`: a TCP connect check".into());
        if let Some(e) = &px.expect {
            cx.rep.add(
                &e.line.loc,
                &e.line.text,
                Outcome::Default("http-check expect without option httpchk has no effect".into()),
            );
        }
    }
    let f = &first.v;
    if let Some(i) = &f.inter {
        p.push(("interval", q(i)));
    }
    if let Some(i) = &f.fastinter {
        p.push(("fast_interval", q(i)));
    }
    if let Some(tm) = px.timeout("check") {
        p.push(("timeout", q(&tm.v)));
        s.0.push(tm.line.src());
        cx.rep.ok(&tm.line.loc, &tm.line.text);
    }
    if let Some(r) = f.rise {
        p.push(("rise", r.to_string()));
    }
    if let Some(r) = f.fall {
        p.push(("fall", r.to_string()));
    }
    if let Some(r) = f.check_port {
        p.push(("port", r.to_string()));
    }
    if let Some(a) = &f.check_addr {
        p.push(("address", q(a)));
    }
    t.raw("health", inline(&p), s);
    // Compare effective values: an absent inter/rise/fall is HAProxy's default (2s, 2, 3).
    let eff = |s: &super::haproxy::Server| {
        (
            s.inter.clone().unwrap_or_else(|| "2s".into()),
            s.rise.unwrap_or(2),
            s.fall.unwrap_or(3),
            s.check_port,
        )
    };
    let differs = checked.iter().any(|c| eff(&c.v) != eff(f));
    let unchecked = checked.len() != px.servers.len();
    if differs || unchecked {
        let why = if unchecked {
            "some servers have no `check`: fulcrum checks every server of a backend"
        } else {
            "per-server inter/rise/fall differ: fulcrum uses the first checked server's for the backend"
        };
        cx.rep.notes.push(format!("{}: {why}", px.head.loc));
        for c in &px.servers {
            cx.rep
                .add(&c.line.loc, &c.line.text, Outcome::Approximated(why.into()));
        }
    }
}

/// `global` lines → `[global]` (and the admin listener from `stats socket`).
pub fn global(
    lines: &[Line],
    rep: &mut Report,
    tables: &mut Vec<Table>,
    admin: &mut Option<(String, Src)>,
) -> (Option<(i64, Line)>, Option<String>) {
    use Outcome::*;
    let mut t = Table::new("global".into(), Src::default());
    let mut maxconn = None;
    let mut crt_base = None;
    for l in lines {
        let o = match l.w(0) {
            "nbthread" => match l.w(1).parse::<i64>() {
                Ok(n) => {
                    t.raw("threads", n.to_string(), src(l));
                    Translated
                }
                Err(_) => Unsupported("nbthread expects a number".into()),
            },
            "maxconn" => match l.w(1).parse::<i64>() {
                Ok(n) => {
                    maxconn = Some((n, l.clone()));
                    Approximated("no process-wide limit in fulcrum: applied as each frontend's maxconn".into())
                }
                Err(_) => Unsupported("maxconn expects a number".into()),
            },
            "stats" if l.w(1) == "socket" => {
                if admin.is_none() {
                    *admin = Some(("127.0.0.1:9000".into(), src(l)));
                }
                Approximated("the runtime API is fulcrum's HTTP admin API on 127.0.0.1:9000 (`fulcrum ctl`)".into())
            }
            "stats" => Default("the admin API replaces the stats socket".into()),
            "crt-base" => {
                crt_base = Some(l.w(1).to_string());
                Translated
            }
            "daemon" | "user" | "group" | "uid" | "gid" | "chroot" | "pidfile" | "master-worker"
            | "ulimit-n" | "nbproc" | "cpu-map" | "node" | "description" | "hard-stop-after"
            | "log" | "log-send-hostname" | "log-tag" | "setenv" | "presetenv" | "resetenv"
            | "unsetenv" | "localpeer" | "quiet" | "expose-experimental-directives" | "zero-warning"
            | "server-state-file" | "server-state-base" | "lua-load" | "insecure-fork-wanted"
            | "set-dumpable" | "strict-limits" | "grace" | "close-spread-time" | "busy-polling"
            | "numa-cpu-mapping" | "spread-checks" | "max-spread-checks" | "ca-base" | "noepoll"
            | "nosplice" | "maxsslconn" | "maxconnrate" | "maxsessrate" | "maxpipes" | "mworker-max-reloads"
            | "httpclient.resolvers.prefer" | "h1-case-adjust" | "h1-case-adjust-file" => {
                Irrelevant("process management or logging: the service manager and fulcrum's own logging cover it".into())
            }
            k if k.starts_with("tune.") || k.starts_with("ssl-") || k.starts_with("ssl_") => {
                NoEquivalent(format!("`{k}`: fulcrum's buffers and TLS (rustls) settings are built in"))
            }
            k => Unsupported(format!("unknown global directive `{k}`")),
        };
        rep.add(&l.loc, &l.text, o);
    }
    if !t.kvs.is_empty() {
        tables.push(t);
    }
    (maxconn, crt_base)
}

/// A `stats enable` section becomes the admin listener (dashboard + API) when it has no
/// traffic of its own. Returns true when the section was used this way.
pub fn stats_only(px: &Px, rep: &mut Report, admin: &mut Option<(String, Src)>) -> bool {
    let Some(stats) = &px.stats else {
        return false;
    };
    let traffic = !px.servers.is_empty() || px.default_backend.is_some() || !px.rules.is_empty();
    let port = px
        .binds
        .first()
        .and_then(|b| b.addrs.first())
        .and_then(|a| a.rsplit_once(':'))
        .map(|(h, p)| (h.to_string(), p.to_string()));
    let why = "fulcrum's dashboard is the admin listener's `/` (and /api/v1, /metrics); off loopback it needs `token_file`, so it listens on loopback";
    if traffic {
        if admin.is_none() {
            *admin = Some(("127.0.0.1:9000".into(), src(stats)));
        }
        rep.add(
            &stats.loc,
            &stats.text,
            Outcome::Approximated(format!("{why}: 127.0.0.1:9000")),
        );
        return false;
    }
    let addr = match port {
        Some((h, p)) if h == "127.0.0.1" => format!("127.0.0.1:{p}"),
        Some((_, p)) => format!("127.0.0.1:{p}"),
        None => "127.0.0.1:9000".into(),
    };
    let mut s = vec![px.head.src(), stats.src()];
    for b in &px.binds {
        s.push(b.line.src());
        rep.add(&b.line.loc, &b.line.text, Outcome::Approximated(why.into()));
    }
    rep.add(&stats.loc, &stats.text, Outcome::Approximated(why.into()));
    rep.add(&px.head.loc, &px.head.text, Outcome::Translated);
    *admin = Some((addr, Src(s)));
    true
}
