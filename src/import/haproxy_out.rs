//! HAProxy proxies → fulcrum `[frontends.*]`, `[backends.*]` and `[admin]` tables.

use std::path::Path;

use super::emit::{inline, q, Src, Table};
use super::haproxy::{Bind, Kind, Line, Px, Server};
use super::haproxy_acl::{map_rule, routes, RouteMatch};
use super::report::{Outcome, Report};
use super::{Hostnames, Resolver};

/// Import context shared by the emitters.
pub struct Ctx<'a> {
    /// Folder of the haproxy.cfg (map and pattern files, certificates).
    pub base: &'a Path,
    /// What to do with server hostnames.
    pub hostnames: Hostnames,
    /// Name resolution (injected for tests).
    pub resolver: &'a Resolver,
    /// The report.
    pub rep: &'a mut Report,
    /// `global maxconn`.
    pub global_maxconn: Option<(i64, Line)>,
    /// `crt-base`.
    pub crt_base: Option<String>,
}

fn src(l: &Line) -> Src {
    Src::one(l.src())
}

/// Parse `bind ADDR[,ADDR] [options]`.
pub fn parse_bind(l: &Line) -> Result<Bind, String> {
    let spec = l.w(1);
    if spec.is_empty() {
        return Err("'bind' expects an address".into());
    }
    let mut addrs = Vec::new();
    for a in spec.split(',') {
        addrs.push(bind_addr(a)?);
    }
    let mut b = Bind {
        addrs,
        ssl: false,
        crts: Vec::new(),
        h2: false,
        accept_proxy: false,
        min_ver: None,
        line: l.clone(),
    };
    let mut i = 2;
    while i < l.words.len() {
        match l.w(i) {
            "ssl" => b.ssl = true,
            "crt" => {
                b.crts.push(l.w(i + 1).to_string());
                i += 1;
            }
            "alpn" => {
                b.h2 = l.w(i + 1).split(',').any(|p| p == "h2");
                i += 1;
            }
            "accept-proxy" => b.accept_proxy = true,
            "ssl-min-ver" => {
                b.min_ver = Some(l.w(i + 1).to_string());
                i += 1;
            }
            // Options with one argument we accept and ignore.
            "ca-file" | "ciphers" | "ciphersuites" | "curves" | "ecdhe" | "name" | "process"
            | "thread" | "maxconn" | "backlog" | "interface" | "mss" | "verify" | "crt-list"
            | "ssl-max-ver" | "npn" | "level" | "mode" | "user" | "group" | "id" | "nice"
            | "tcp-ut" | "crl-file" | "sigalgs" | "client-sigalgs" | "namespace"
            | "severity-output" | "gid" | "uid" | "proto" | "ca-ignore-err" | "crt-ignore-err" => {
                i += 1
            }
            _ => {}
        }
        i += 1;
    }
    Ok(b)
}

fn bind_addr(a: &str) -> Result<String, String> {
    let a = a.strip_prefix("ipv4@").unwrap_or(a);
    let a6 = a.strip_prefix("ipv6@");
    let a = a6.unwrap_or(a);
    if a.starts_with('/') || a.contains('@') {
        return Err(format!(
            "bind address `{a}`: only IP:PORT listeners can be imported"
        ));
    }
    let (host, port) = a
        .rsplit_once(':')
        .ok_or(format!("bind address `{a}` has no port"))?;
    if port.contains('-') {
        return Err(format!("port range `{port}` is not supported"));
    }
    let port: u16 = port.parse().map_err(|_| format!("bad port `{port}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "" | "*" | "0.0.0.0" => {
            if a6.is_some() {
                "[::]".to_string()
            } else {
                "0.0.0.0".to_string()
            }
        }
        "::" => "[::]".to_string(),
        h => match h.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            Ok(v4) => v4.to_string(),
            Err(_) => return Err(format!("bind address `{h}` is not an IP address")),
        },
    };
    Ok(format!("{ip}:{port}"))
}

/// Parse `server NAME ADDR[:PORT] [options]` after `default-server` lines.
pub fn parse_server(l: &Line, defaults: &[Line]) -> Result<Server, String> {
    let mut s = Server {
        name: l.w(1).to_string(),
        ..Server::default()
    };
    let addr = l.w(2);
    if s.name.is_empty() || addr.is_empty() {
        return Err("'server' expects a name and an address".into());
    }
    let addr = addr
        .strip_prefix("ipv4@")
        .or_else(|| addr.strip_prefix("ipv6@"))
        .unwrap_or(addr);
    if addr.starts_with('/') || addr.contains('@') || addr.contains("${") {
        s.lost
            .push(format!("address `{addr}` is not IP:PORT or host:PORT"));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once(']').unwrap_or((rest, ""));
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else if addr.matches(':').count() > 1 {
        (addr.to_string(), "")
    } else {
        match addr.split_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (addr.to_string(), ""),
        }
    };
    s.host = host;
    if !port.is_empty() {
        if port.starts_with('+') || port.starts_with('-') {
            s.lost.push("port offsets (+N/-N) are not supported".into());
        } else {
            s.port = Some(port.parse().map_err(|_| format!("invalid port '{port}'"))?);
        }
    }
    for d in defaults {
        server_opts(&mut s, d.words.get(1..).unwrap_or_default())?;
    }
    server_opts(&mut s, l.words.get(3..).unwrap_or_default())?;
    Ok(s)
}

fn server_opts(s: &mut Server, w: &[String]) -> Result<(), String> {
    let mut i = 0;
    let word = |i: usize| w.get(i).map_or("", String::as_str);
    let arg = |i: usize| {
        w.get(i + 1)
            .cloned()
            .ok_or(format!("'{}' expects an argument", word(i)))
    };
    let num = |i: usize| -> Result<i64, String> {
        arg(i)?
            .parse()
            .map_err(|_| format!("'{}' expects an integer", word(i)))
    };
    while let Some(k) = w.get(i) {
        let k = k.as_str();
        let mut takes = true;
        match k {
            "check" => {
                s.check = true;
                takes = false
            }
            "no-check" => {
                s.check = false;
                takes = false
            }
            "backup" => {
                s.backup = true;
                takes = false
            }
            "no-backup" => {
                s.backup = false;
                takes = false
            }
            "disabled" => {
                s.disabled = true;
                takes = false
            }
            "enabled" => {
                s.disabled = false;
                takes = false
            }
            "ssl" => {
                s.ssl = true;
                takes = false
            }
            "no-ssl" => {
                s.ssl = false;
                takes = false
            }
            "send-proxy" => {
                s.send_proxy = Some(1);
                takes = false
            }
            "send-proxy-v2" => {
                s.send_proxy = Some(2);
                takes = false
            }
            "no-send-proxy" | "no-send-proxy-v2" => {
                s.send_proxy = None;
                takes = false
            }
            "inter" => s.inter = Some(super::haproxy::time(&arg(i)?).ok_or("bad time for inter")?),
            "fastinter" => {
                s.fastinter = Some(super::haproxy::time(&arg(i)?).ok_or("bad time for fastinter")?)
            }
            "rise" => s.rise = Some(num(i)?),
            "fall" => s.fall = Some(num(i)?),
            "weight" => {
                let v = num(i)?;
                if !(0..=256).contains(&v) {
                    return Err(format!("weight {v} is out of range (0..256)"));
                }
                s.weight = Some(v);
            }
            "maxconn" => s.maxconn = Some(num(i)?),
            "port" => s.check_port = Some(num(i)?),
            "addr" => s.check_addr = Some(arg(i)?),
            "verify" => s.verify = Some(arg(i)? != "none"),
            "ca-file" => s.ca = Some(arg(i)?),
            "sni" => {
                let v = arg(i)?;
                match v.strip_prefix("str(").and_then(|x| x.strip_suffix(')')) {
                    Some(n) => s.sni = Some(n.to_string()),
                    None => s
                        .lost
                        .push(format!("sni `{v}`: only str(NAME) is translated")),
                }
            }
            "resolvers" => {
                s.resolvers = true;
                arg(i)?;
            }
            "cookie"
            | "id"
            | "resolve-prefer"
            | "init-addr"
            | "on-marked-down"
            | "on-marked-up"
            | "on-error"
            | "error-limit"
            | "observe"
            | "check-sni"
            | "alpn"
            | "check-alpn"
            | "proto"
            | "check-proto"
            | "pool-max-conn"
            | "pool-purge-delay"
            | "pool-low-conn"
            | "max-reuse"
            | "tcp-ut"
            | "ciphers"
            | "ciphersuites"
            | "ssl-min-ver"
            | "ssl-max-ver"
            | "downinter"
            | "slowstart"
            | "agent-port"
            | "agent-inter"
            | "agent-send"
            | "agent-addr"
            | "minconn"
            | "maxqueue"
            | "source"
            | "namespace"
            | "crt"
            | "crl-file"
            | "track"
            | "redir"
            | "usesrc"
            | "ws"
            | "sigalgs"
            | "curves"
            | "resolve-net"
            | "resolve-opts"
            | "set-proxy-v2-tlv-fmt"
            | "log-proto"
            | "shard"
            | "guid"
            | "hash-key"
            | "npn"
            | "proxy-v2-options"
            | "client-sigalgs"
            | "init-state" => {
                arg(i)?;
                if !matches!(
                    k,
                    "cookie"
                        | "id"
                        | "init-addr"
                        | "resolve-prefer"
                        | "alpn"
                        | "check-alpn"
                        | "pool-max-conn"
                        | "pool-purge-delay"
                        | "ssl-min-ver"
                        | "ciphers"
                        | "check-sni"
                        | "on-marked-down"
                ) {
                    s.lost.push(format!("`{k}` has no fulcrum equivalent"));
                }
            }
            _ => {
                takes = false;
                if !matches!(
                    k,
                    "check-ssl"
                        | "non-stick"
                        | "no-verifyhost"
                        | "tfo"
                        | "no-tfo"
                        | "allow-0rtt"
                        | "check-send-proxy"
                        | "no-sslv3"
                        | "no-tlsv10"
                        | "no-tlsv11"
                        | "force-tlsv12"
                        | "force-tlsv13"
                        | "no-tls-tickets"
                        | "agent-check"
                        | "stick"
                ) {
                    s.lost.push(format!("unknown server option `{k}`"))
                } else if k == "agent-check" {
                    s.lost.push("agent checks are not supported".into())
                }
            }
        }
        i += if takes { 2 } else { 1 };
    }
    Ok(())
}

/// The `[frontends.*]` tables for one frontend or listen section.
pub fn frontend(px: &Px, cx: &mut Ctx<'_>, tables: &mut Vec<Table>) {
    if px.kind == Kind::Defaults || !px.kind.is_fe() {
        return;
    }
    for (name, t) in &px.timeouts {
        let o = match name.as_str() {
            "client" | "http-request" => continue,
            "http-keep-alive" => Outcome::Approximated(
                "fulcrum bounds keep-alive idle time by client_header_timeout".into(),
            ),
            "tunnel" | "client-fin" | "server-fin" | "tarpit" => {
                Outcome::NoEquivalent(format!("`timeout {name}` has no fulcrum equivalent"))
            }
            "connect" | "server" | "queue" | "check" if px.kind == Kind::Frontend => {
                Outcome::Default("applies to backends".into())
            }
            "connect" | "server" | "queue" | "check" => continue,
            _ => Outcome::Unsupported(format!("unknown timeout `{name}`")),
        };
        cx.rep.add(&t.line.loc, &t.line.text, o);
    }
    let target_default = px
        .default_backend
        .as_ref()
        .map(|d| d.v.clone())
        .or_else(|| (px.kind == Kind::Listen && !px.servers.is_empty()).then(|| px.name.clone()));
    if px.binds.is_empty() {
        cx.rep.add(
            &px.head.loc,
            &px.head.text,
            Outcome::NoEquivalent(
                "a frontend without `bind` lines listens nowhere; not written".into(),
            ),
        );
        return;
    }
    let plain: Vec<&Bind> = px.binds.iter().filter(|b| !b.ssl).collect();
    let tls: Vec<&Bind> = px.binds.iter().filter(|b| b.ssl).collect();
    let both = !plain.is_empty() && !tls.is_empty();
    for (ssl, binds) in [(false, plain), (true, tls)] {
        if binds.is_empty() {
            continue;
        }
        let name = if both && ssl {
            format!("{}-tls", px.name)
        } else {
            px.name.clone()
        };
        let mut head = vec![px.head.src()];
        if both {
            head.push(format!(
                "split: fulcrum's `tls` is per frontend, so the {} listeners are frontend `{name}`",
                if ssl { "TLS" } else { "plain" }
            ));
        }
        let mut t = Table::new(format!("frontends.{}", super::emit::key(&name)), Src(head));
        match &px.mode {
            Some(m) if m.v == "tcp" => t.str("mode", "tcp", src(&m.line)),
            Some(_) => {}
            None => t.str(
                "mode",
                "tcp",
                Src::one("HAProxy's default mode is tcp (no `mode` line)".into()),
            ),
        }
        let http = px.mode() == "http";
        let listen: Vec<String> = binds
            .iter()
            .flat_map(|b| b.addrs.iter().map(|a| q(a)))
            .collect();
        let bsrc = Src(binds.iter().map(|b| b.line.src()).collect());
        t.raw("listen", format!("[{}]", listen.join(", ")), bsrc);
        for b in &binds {
            cx.rep.ok(&b.line.loc, &b.line.text);
        }
        if ssl {
            tls_table(&mut t, &binds, cx);
        }
        if binds.iter().any(|b| b.accept_proxy) {
            t.raw("accept_proxy", "true".into(), Src::default());
            t.raw(
                "trusted_proxies",
                "[\"0.0.0.0/0\", \"::/0\"]".into(),
                Src::one("HAProxy's accept-proxy trusts every peer; narrow this".into()),
            );
        }
        if let Some(r) = &px.redirect {
            if r.v.1.is_none_or(|only| only == ssl) && http {
                t.raw("redirect_https", "true".into(), src(&r.line));
                if r.v.0 != 301 {
                    cx.rep.add(
                        &r.line.loc,
                        &r.line.text,
                        Outcome::Approximated(format!(
                            "fulcrum redirects with 301; HAProxy answered {}",
                            r.v.0
                        )),
                    );
                } else {
                    cx.rep.ok(&r.line.loc, &r.line.text);
                }
            }
        }
        for (k, name) in [
            ("client_idle_timeout", "client"),
            ("client_header_timeout", "http-request"),
        ] {
            if let Some(s) = px.timeout(name) {
                if k == "client_header_timeout" && !http {
                    continue;
                }
                t.str(k, &s.v, src(&s.line));
                cx.rep.ok(&s.line.loc, &s.line.text);
            }
        }
        if let Some(m) = &px.maxconn {
            t.raw("maxconn", m.v.to_string(), src(&m.line));
        } else if let Some((m, l)) = &cx.global_maxconn {
            t.raw("maxconn", m.to_string(), src(l));
        }
        header_rules(&mut t, px, ssl, http, cx);
        // Routing.
        let mut default = target_default.clone();
        let mut catch_all = false;
        for r in &px.rules {
            if catch_all {
                cx.rep.add(
                    &r.line.loc,
                    &r.line.text,
                    Outcome::Default(
                        "unreachable: an earlier rule always matches (also in HAProxy)".into(),
                    ),
                );
                continue;
            }
            if !http {
                if r.cond.is_none() {
                    default = Some(r.backend.clone());
                    catch_all = true;
                    cx.rep.ok(&r.line.loc, &r.line.text);
                } else {
                    cx.rep.add(&r.line.loc, &r.line.text, Outcome::Unsupported("conditional use_backend in tcp mode (e.g. req.ssl_sni) is not translated".into()));
                }
                continue;
            }
            if r.backend.starts_with("%[") {
                match map_rule(&r.backend, cx.base) {
                    Ok((routes, dflt, approx)) => {
                        for (m, be) in routes {
                            t.push("routes", route(&m, &be), src(&r.line));
                        }
                        if let Some(d) = dflt {
                            default = Some(d);
                            catch_all = true;
                        }
                        report_approx(cx.rep, &r.line, approx);
                    }
                    Err(e) => cx
                        .rep
                        .add(&r.line.loc, &r.line.text, Outcome::Unsupported(e)),
                }
                continue;
            }
            match routes(px, r.cond.as_ref(), ssl, cx.base) {
                Ok(rs) => {
                    let mut s = vec![r.line.src()];
                    s.extend(rs.used.iter().map(Line::src));
                    for m in &rs.routes {
                        t.push("routes", route(m, &r.backend), Src(s.clone()));
                    }
                    if rs.always {
                        default = Some(r.backend.clone());
                        catch_all = true;
                    }
                    for u in &rs.used {
                        cx.rep.ok(&u.loc, &u.text);
                    }
                    report_approx(cx.rep, &r.line, rs.approx);
                }
                Err(e) => {
                    cx.rep.add(
                        &r.line.loc,
                        &r.line.text,
                        Outcome::Unsupported(format!(
                            "{e}; requests it matched go to the next rule or the default backend"
                        )),
                    );
                }
            }
        }
        for a in &px.acls {
            cx.rep.add(
                &a.loc,
                &a.text,
                Outcome::NoEquivalent("ACL not used by a translated rule".into()),
            );
        }
        match default {
            Some(d) => {
                let s = px
                    .default_backend
                    .as_ref()
                    .map(|d| src(&d.line))
                    .unwrap_or_default();
                t.str("backend", &d, s);
            }
            None if t.has("routes") => {}
            None => {
                cx.rep.add(&px.head.loc, &px.head.text, Outcome::Unsupported("no default_backend and no translatable use_backend: fulcrum needs one; frontend not written".into()));
                continue;
            }
        }
        cx.rep.ok(&px.head.loc, &px.head.text);
        tables.push(t);
    }
}

fn report_approx(rep: &mut Report, l: &Line, approx: Vec<String>) {
    if approx.is_empty() {
        rep.ok(&l.loc, &l.text);
    } else {
        rep.add(&l.loc, &l.text, Outcome::Approximated(approx.join("; ")));
    }
}

fn route(m: &RouteMatch, backend: &str) -> String {
    let mut p = Vec::new();
    if let Some(h) = &m.host {
        p.push(("host", q(h)));
    }
    if let Some(x) = &m.path {
        p.push(("path_prefix", q(x)));
    }
    p.push(("backend", q(backend)));
    inline(&p)
}

fn tls_table(t: &mut Table, binds: &[&Bind], cx: &mut Ctx<'_>) {
    let mut certs = Vec::new();
    let mut missing = Vec::new();
    for b in binds {
        for c in &b.crts {
            let mut path = std::path::PathBuf::from(c);
            if path.is_relative() {
                if let Some(base) = &cx.crt_base {
                    path = Path::new(base).join(path);
                }
            }
            if path.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        !matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("key" | "ocsp" | "issuer" | "sctl")
                        )
                    })
                    .collect();
                files.sort();
                for f in files {
                    certs.push(cert_pair(&f));
                }
            } else if path.is_file() {
                certs.push(cert_pair(&path));
            } else {
                missing.push(path.display().to_string());
            }
        }
    }
    if certs.is_empty() && missing.is_empty() {
        cx.rep.notes.push(format!(
            "{}: `ssl` without `crt` cannot be translated",
            t.header
        ));
        t.disabled = true;
        return;
    }
    if !missing.is_empty() {
        t.disabled = true;
        t.src.0.push(format!("written commented out: certificate {} not found when importing; uncomment once it exists", missing.join(", ")));
        for b in binds {
            cx.rep.add(&b.line.loc, &b.line.text, Outcome::Unsupported(format!("certificate {} not found at import time: the frontend is written commented out", missing.join(", "))));
        }
        for m in &missing {
            certs.push(inline(&[("cert", q(m)), ("key", q(m))]));
        }
    }
    let mut parts = vec![("certificates", format!("[{}]", certs.join(", ")))];
    if binds.iter().any(|b| b.h2) {
        parts.push(("http2", "true".into()));
    }
    if let Some(v) = binds.iter().find_map(|b| b.min_ver.clone()) {
        match v.as_str() {
            "TLSv1.3" => parts.push(("min_version", q("1.3"))),
            "TLSv1.2" => {}
            _ => cx.rep.notes.push(format!(
                "ssl-min-ver {v}: fulcrum supports TLS 1.2 and 1.3 only"
            )),
        }
    }
    t.raw(
        "tls",
        inline(&parts),
        Src::one("HAProxy's combined PEM holds certificate and key: the same file for both".into()),
    );
}

fn cert_pair(p: &Path) -> String {
    let c = p.display().to_string();
    // HAProxy also loads the key from FILE.key when the PEM has none.
    let side = p.with_extension("key");
    let key = if side.is_file() && !pem_has_key(p) {
        side.display().to_string()
    } else {
        c.clone()
    };
    inline(&[("cert", q(&c)), ("key", q(&key))])
}

fn pem_has_key(p: &Path) -> bool {
    std::fs::read_to_string(p)
        .map(|t| t.contains("PRIVATE KEY"))
        .unwrap_or(true)
}

fn header_rules(t: &mut Table, px: &Px, ssl: bool, http: bool, cx: &mut Ctx<'_>) {
    for (key, rules) in [
        ("request_headers", &px.req_hdr),
        ("response_headers", &px.resp_hdr),
    ] {
        let mut remove = Vec::new();
        let mut set = Vec::new();
        let mut add = Vec::new();
        let mut s = Vec::new();
        for r in rules.iter().filter(|r| r.ssl.is_none_or(|x| x == ssl)) {
            if !http {
                cx.rep.add(
                    &r.line.loc,
                    &r.line.text,
                    Outcome::NoEquivalent("header rules in tcp mode do nothing".into()),
                );
                continue;
            }
            let lname = r.name.to_ascii_lowercase();
            if key == "request_headers"
                && lname == "x-forwarded-proto"
                && r.value.as_deref() == Some(if ssl { "https" } else { "http" })
            {
                cx.rep.add(
                    &r.line.loc,
                    &r.line.text,
                    Outcome::Default("fulcrum sets X-Forwarded-Proto itself".into()),
                );
                continue;
            }
            let v = r.value.clone().unwrap_or_default();
            match r.op.as_str() {
                "del" => remove.push(q(&r.name)),
                "set" => set.push((r.name.clone(), q(&v))),
                _ => add.push((r.name.clone(), q(&v))),
            }
            s.push(r.line.src());
            cx.rep.ok(&r.line.loc, &r.line.text);
        }
        if remove.is_empty() && set.is_empty() && add.is_empty() {
            continue;
        }
        let mut parts: Vec<(&str, String)> = Vec::new();
        if !remove.is_empty() {
            parts.push(("remove", format!("[{}]", remove.join(", "))));
        }
        let tbl = |v: &[(String, String)]| {
            let pairs: Vec<(&str, String)> =
                v.iter().map(|(k, x)| (k.as_str(), x.clone())).collect();
            inline(&pairs)
        };
        if !set.is_empty() {
            parts.push(("set", tbl(&set)));
        }
        if !add.is_empty() {
            parts.push(("add", tbl(&add)));
        }
        t.raw(key, inline(&parts), Src(s));
    }
}
