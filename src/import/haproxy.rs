//! `haproxy.cfg` → fulcrum: tokenizer, sections, `defaults` inheritance and directives.
//!
//! Hand-written: no crate parses HAProxy's configuration language, and the import needs
//! every line's number for the report anyway. The tokenizer follows HAProxy's rules
//! (`#` comments, `\` escapes, "double" quotes with escapes, 'single' quotes literal).
//! Each proxy section is read into a [`Px`] by applying first the directives of the
//! `defaults` section it inherits from, then its own; [`super::haproxy_out`] turns the
//! proxies into fulcrum tables and [`super::haproxy_acl`] turns ACL conditions into routes.

use super::haproxy_acl::{parse_cond, Cond};
use super::report::{Loc, Outcome, Report};

/// One directive line, split into words.
#[derive(Debug, Clone)]
pub struct Line {
    /// Where it is.
    pub loc: Loc,
    /// Words after unquoting and unescaping.
    pub words: Vec<String>,
    /// The line as written (trimmed), for comments and the report.
    pub text: String,
}

impl Line {
    /// Word `i`, or "".
    pub fn w(&self, i: usize) -> &str {
        self.words.get(i).map(String::as_str).unwrap_or("")
    }
    /// `file:line text`, the comment written above what this line became.
    pub fn src(&self) -> String {
        format!("{} {}", self.loc, self.text)
    }
}

/// A config HAProxy itself would refuse, at its line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct ParseError {
    /// Where.
    pub loc: Loc,
    /// What is wrong.
    pub message: String,
}

/// Split one line into words the way HAProxy does.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                } else {
                    cur.push(c);
                }
                continue;
            }
            Some(_) => {
                if c == '"' {
                    quote = None;
                    continue;
                }
                if c == '\\' {
                    unescape(&mut chars, &mut cur);
                    continue;
                }
                cur.push(c);
                continue;
            }
            None => {}
        }
        match c {
            ' ' | '\t' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' => break,
            '"' | '\'' => {
                quote = Some(c);
                in_word = true;
            }
            '\\' => {
                unescape(&mut chars, &mut cur);
                in_word = true;
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unmatched quote ({q})"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, cur: &mut String) {
    match chars.next() {
        Some('r') => cur.push('\r'),
        Some('n') => cur.push('\n'),
        Some('t') => cur.push('\t'),
        Some('x') => {
            let hex: String = chars.by_ref().take(2).collect();
            match u8::from_str_radix(&hex, 16) {
                Ok(b) => cur.push(char::from(b)),
                Err(_) => {
                    cur.push_str("\\x");
                    cur.push_str(&hex);
                }
            }
        }
        Some(other) => cur.push(other),
        None => cur.push('\\'),
    }
}

/// The kind of a proxy section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `defaults`.
    Defaults,
    /// `frontend`.
    Frontend,
    /// `backend`.
    Backend,
    /// `listen`: a frontend and a backend of the same name.
    Listen,
}

impl Kind {
    /// Accepts traffic.
    pub fn is_fe(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen | Kind::Defaults)
    }
    /// Has servers.
    pub fn is_be(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen | Kind::Defaults)
    }
}

/// A section with its directive lines.
#[derive(Debug, Clone)]
pub struct Section {
    /// Kind.
    pub kind: Kind,
    /// Name ("" for an unnamed `defaults`).
    pub name: String,
    /// `from NAME` (named defaults, HAProxy 2.4+).
    pub from: Option<String>,
    /// The header line.
    pub head: Line,
    /// Directives.
    pub lines: Vec<Line>,
    /// The defaults section it inherits from (index into the defaults list).
    pub defaults: Option<usize>,
}

/// Everything read from one haproxy.cfg.
#[derive(Debug, Default)]
pub struct Parsed {
    /// `global` lines.
    pub global: Vec<Line>,
    /// `defaults` sections in file order.
    pub defaults: Vec<Section>,
    /// frontend / backend / listen sections in file order.
    pub proxies: Vec<Section>,
}

const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
    "namespace_list",
];

/// Split the file into sections; lines of unknown sections go to the report.
pub fn parse(text: &str, file: &str, rep: &mut Report) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    enum Cur {
        None,
        Global,
        Defaults,
        Proxy,
        Other(String),
    }
    let mut cur = Cur::None;
    for (i, raw) in text.lines().enumerate() {
        let loc = Loc {
            file: file.to_string(),
            line: i + 1,
        };
        let words = tokenize(raw).map_err(|m| ParseError {
            loc: loc.clone(),
            message: m,
        })?;
        if words.is_empty() {
            continue;
        }
        let line = Line {
            loc: loc.clone(),
            words,
            text: raw.trim().to_string(),
        };
        let kw = line.w(0).to_string();
        match kw.as_str() {
            "global" => {
                cur = Cur::Global;
                rep.ok(&loc, &line.text);
                continue;
            }
            "defaults" | "frontend" | "backend" | "listen" => {
                let kind = match kw.as_str() {
                    "defaults" => Kind::Defaults,
                    "frontend" => Kind::Frontend,
                    "backend" => Kind::Backend,
                    _ => Kind::Listen,
                };
                let mut name = line.w(1).to_string();
                let mut rest = 2;
                if kind == Kind::Defaults && name == "from" {
                    name.clear();
                    rest = 1;
                }
                if kind != Kind::Defaults && name.is_empty() {
                    return Err(ParseError {
                        loc,
                        message: format!("'{kw}' expects a name"),
                    });
                }
                let mut from = None;
                if line.w(rest) == "from" {
                    from = Some(line.w(rest + 1).to_string());
                    rest += 2;
                }
                if kind == Kind::Listen && !line.w(rest).is_empty() {
                    // Old style `listen NAME ADDR:PORT` (seed 004): the address is a bind.
                    let bind = Line {
                        loc: loc.clone(),
                        words: vec!["bind".into(), line.w(rest).to_string()],
                        text: line.text.clone(),
                    };
                    push_section(&mut p, kind, name, from, line.clone());
                    if let Some(s) = p.proxies.last_mut() {
                        s.lines.push(bind);
                    }
                } else {
                    push_section(&mut p, kind, name, from, line.clone());
                }
                rep.ok(&loc, &line.text);
                cur = if kind == Kind::Defaults {
                    Cur::Defaults
                } else {
                    Cur::Proxy
                };
                continue;
            }
            k if OTHER_SECTIONS.contains(&k) => {
                rep.add(
                    &loc,
                    &line.text,
                    Outcome::NoEquivalent(format!(
                        "`{k}` sections have no fulcrum equivalent; their lines are skipped"
                    )),
                );
                cur = Cur::Other(k.to_string());
                continue;
            }
            _ => {}
        }
        match &cur {
            Cur::None => rep.add(
                &loc,
                &line.text,
                Outcome::Unsupported("directive outside any section".into()),
            ),
            Cur::Global => p.global.push(line),
            Cur::Defaults => {
                if let Some(s) = p.defaults.last_mut() {
                    s.lines.push(line);
                }
            }
            Cur::Proxy => {
                if let Some(s) = p.proxies.last_mut() {
                    s.lines.push(line);
                }
            }
            Cur::Other(k) => rep.add(
                &loc,
                &line.text,
                Outcome::NoEquivalent(format!("inside a `{k}` section")),
            ),
        }
    }
    Ok(p)
}

fn push_section(p: &mut Parsed, kind: Kind, name: String, from: Option<String>, head: Line) {
    // A proxy inherits from `from NAME`, else from the last defaults section above it.
    let defaults = match &from {
        Some(f) => p.defaults.iter().rposition(|d| &d.name == f),
        None => p.defaults.len().checked_sub(1),
    };
    let s = Section {
        kind,
        name,
        from,
        head,
        lines: Vec::new(),
        defaults,
    };
    if kind == Kind::Defaults {
        p.defaults.push(s);
    } else {
        p.proxies.push(s);
    }
}

/// A setting with the line it came from.
#[derive(Debug, Clone)]
pub struct Set<T> {
    /// The value.
    pub v: T,
    /// The source line.
    pub line: Line,
}

/// `bind` address and its options.
#[derive(Debug, Clone)]
pub struct Bind {
    /// `IP:PORT` for fulcrum.
    pub addrs: Vec<String>,
    /// `ssl` was given.
    pub ssl: bool,
    /// `crt` files or directories.
    pub crts: Vec<String>,
    /// ALPN offers h2.
    pub h2: bool,
    /// `accept-proxy`.
    pub accept_proxy: bool,
    /// `ssl-min-ver`.
    pub min_ver: Option<String>,
    /// The line.
    pub line: Line,
}

/// One `server` line, after `default-server`.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Name.
    pub name: String,
    /// Host or IP as written.
    pub host: String,
    /// Port, when given.
    pub port: Option<u16>,
    /// `check`.
    pub check: bool,
    /// `inter`, `fastinter` (fulcrum durations).
    pub inter: Option<String>,
    /// `fastinter`.
    pub fastinter: Option<String>,
    /// `rise`.
    pub rise: Option<i64>,
    /// `fall`.
    pub fall: Option<i64>,
    /// `weight`.
    pub weight: Option<i64>,
    /// `maxconn`.
    pub maxconn: Option<i64>,
    /// `backup`.
    pub backup: bool,
    /// `disabled`.
    pub disabled: bool,
    /// `ssl`.
    pub ssl: bool,
    /// `verify none` → false.
    pub verify: Option<bool>,
    /// `ca-file`.
    pub ca: Option<String>,
    /// `sni str(NAME)`.
    pub sni: Option<String>,
    /// `send-proxy` (1) / `send-proxy-v2` (2).
    pub send_proxy: Option<u8>,
    /// `port` of the check.
    pub check_port: Option<i64>,
    /// `addr` of the check.
    pub check_addr: Option<String>,
    /// `resolvers` given (runtime DNS in HAProxy).
    pub resolvers: bool,
    /// What could not be translated on this line.
    pub lost: Vec<String>,
}

/// TCP check: (send, expect, send is hex, expect is hex).
pub type TcpChk = (Option<String>, Option<String>, bool, bool);

/// HTTP check settings.
#[derive(Debug, Clone, Default)]
pub struct HttpChk {
    /// Method.
    pub method: String,
    /// URI.
    pub uri: String,
    /// Host header, if any.
    pub host: Option<String>,
}

/// `use_backend NAME if COND`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Target (or a `%[...]` expression).
    pub backend: String,
    /// Condition (None = always).
    pub cond: Option<Cond>,
    /// The line.
    pub line: Line,
}

/// A header rule (`http-request set-header …`).
#[derive(Debug, Clone)]
pub struct HdrRule {
    /// "set", "add" or "del".
    pub op: String,
    /// Header name.
    pub name: String,
    /// fulcrum value template.
    pub value: Option<String>,
    /// Only on TLS (Some(true)) or plain (Some(false)) listeners.
    pub ssl: Option<bool>,
    /// The line.
    pub line: Line,
}

/// One proxy section with its inherited settings.
#[derive(Debug, Clone)]
pub struct Px {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Header line.
    pub head: Line,
    /// `mode`.
    pub mode: Option<Set<String>>,
    /// `bind`s.
    pub binds: Vec<Bind>,
    /// `default_backend`.
    pub default_backend: Option<Set<String>>,
    /// `use_backend` rules in order.
    pub rules: Vec<Rule>,
    /// `acl` lines, by name, in order.
    pub acls: Vec<Line>,
    /// timeouts (fulcrum durations), by HAProxy name.
    pub timeouts: Vec<(String, Set<String>)>,
    /// `retries`.
    pub retries: Option<Set<i64>>,
    /// `balance`.
    pub balance: Option<Set<String>>,
    /// `cookie NAME insert`.
    pub cookie: Option<Set<String>>,
    /// `option httpchk`.
    pub httpchk: Option<Set<HttpChk>>,
    /// `http-check expect status`.
    pub expect: Option<Set<String>>,
    /// `option tcp-check` / redis-check etc.: (send, expect), hex flags.
    pub tcpchk: Option<Set<TcpChk>>,
    /// `default-server` words.
    pub default_server: Vec<Line>,
    /// Servers.
    pub servers: Vec<Set<Server>>,
    /// `redirect scheme https`: (code, only on plain (Some(false)) / TLS / both).
    pub redirect: Option<Set<(u16, Option<bool>)>>,
    /// Request header rules.
    pub req_hdr: Vec<HdrRule>,
    /// Response header rules.
    pub resp_hdr: Vec<HdrRule>,
    /// `stats enable` / `stats uri`.
    pub stats: Option<Line>,
    /// `maxconn`.
    pub maxconn: Option<Set<i64>>,
}

impl Px {
    fn new(kind: Kind, name: &str, head: Line) -> Px {
        Px {
            kind,
            name: name.to_string(),
            head,
            mode: None,
            binds: Vec::new(),
            default_backend: None,
            rules: Vec::new(),
            acls: Vec::new(),
            timeouts: Vec::new(),
            retries: None,
            balance: None,
            cookie: None,
            httpchk: None,
            expect: None,
            tcpchk: None,
            default_server: Vec::new(),
            servers: Vec::new(),
            redirect: None,
            req_hdr: Vec::new(),
            resp_hdr: Vec::new(),
            stats: None,
            maxconn: None,
        }
    }

    /// A timeout by HAProxy name.
    pub fn timeout(&self, name: &str) -> Option<&Set<String>> {
        self.timeouts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// "http" or "tcp" (HAProxy's default is tcp).
    pub fn mode(&self) -> &str {
        self.mode.as_ref().map(|m| m.v.as_str()).unwrap_or("tcp")
    }
}

/// Build every proxy with its inheritance applied.
pub fn proxies(p: &Parsed, rep: &mut Report) -> Result<Vec<Px>, ParseError> {
    let mut out = Vec::new();
    for d in &p.defaults {
        // Defaults lines are reported where they are used; unused ones still get an entry.
        for l in &d.lines {
            rep.add(
                &l.loc,
                &l.text,
                Outcome::NoEquivalent("a defaults line no translated section used".into()),
            );
        }
    }
    for s in &p.proxies {
        let mut px = Px::new(s.kind, &s.name, s.head.clone());
        if let Some(f) = &s.from {
            if s.defaults.is_none() {
                return Err(ParseError {
                    loc: s.head.loc.clone(),
                    message: format!("no defaults section named '{f}'"),
                });
            }
        }
        if let Some(d) = s.defaults.and_then(|i| p.defaults.get(i)) {
            for l in &d.lines {
                apply(&mut px, l, true, rep)?;
            }
        }
        for l in &s.lines {
            apply(&mut px, l, false, rep)?;
        }
        out.push(px);
    }
    Ok(out)
}

/// HAProxy time (`5000`, `5s`, `1m`, `1d`) → fulcrum duration text.
pub fn time(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" | "ms" => format!("{n}ms"),
        "us" => format!("{n}us"),
        "s" => format!("{n}s"),
        "m" => format!("{n}m"),
        "h" => format!("{n}h"),
        "d" => format!("{}h", n.checked_mul(24)?),
        _ => return None,
    })
}

fn int(l: &Line, i: usize) -> Result<i64, ParseError> {
    l.w(i).parse().map_err(|_| ParseError {
        loc: l.loc.clone(),
        message: format!("'{}' expects an integer, got '{}'", l.w(0), l.w(i)),
    })
}

fn perr(l: &Line, m: impl Into<String>) -> ParseError {
    ParseError {
        loc: l.loc.clone(),
        message: m.into(),
    }
}

fn set<T>(v: T, l: &Line) -> Option<Set<T>> {
    Some(Set { v, line: l.clone() })
}

fn apply(px: &mut Px, l: &Line, from_defaults: bool, rep: &mut Report) -> Result<(), ParseError> {
    use Outcome::*;
    let fe = px.kind.is_fe();
    let be = px.kind.is_be();
    let kw = l.w(0);
    let o: Outcome = match kw {
        "mode" => match l.w(1) {
            "http" | "tcp" => {
                px.mode = set(l.w(1).to_string(), l);
                Translated
            }
            "health" => Unsupported("mode health is not supported".into()),
            other => return Err(perr(l, format!("unknown proxy mode '{other}'"))),
        },
        "bind" if fe => {
            // An address fulcrum cannot listen on (unix socket, `${VAR}`, a name) is
            // reported; the section keeps its other binds.
            match super::haproxy_out::parse_bind(l) {
                Ok(b) => {
                    px.binds.push(b);
                    return Ok(()); // reported when emitted
                }
                Err(m) if l.w(1).is_empty() => return Err(perr(l, m)),
                Err(m) => Unsupported(m),
            }
        }
        "default_backend" if fe => {
            px.default_backend = set(l.w(1).to_string(), l);
            Translated
        }
        "use_backend" if fe => {
            let cond = match l.w(2) {
                "" => None,
                "if" | "unless" => Some(parse_cond(&l.words[2..]).map_err(|m| perr(l, m))?),
                other => {
                    return Err(perr(
                        l,
                        format!("use_backend: expected 'if' or 'unless', got '{other}'"),
                    ))
                }
            };
            px.rules.push(Rule {
                backend: l.w(1).to_string(),
                cond,
                line: l.clone(),
            });
            return Ok(()); // reported when emitted
        }
        "acl" => {
            if l.w(1).is_empty() || l.w(2).is_empty() {
                return Err(perr(l, "'acl' expects a name and a criterion"));
            }
            px.acls.push(l.clone());
            return Ok(()); // reported when used
        }
        "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => {
            let (name, val) = match kw {
                "contimeout" => ("connect", l.w(1)),
                "clitimeout" => ("client", l.w(1)),
                "srvtimeout" => ("server", l.w(1)),
                _ => (l.w(1), l.w(2)),
            };
            let Some(d) = time(val) else {
                return Err(perr(l, format!("timeout {name}: bad time '{val}'")));
            };
            px.timeouts.push((
                name.to_string(),
                Set {
                    v: d,
                    line: l.clone(),
                },
            ));
            return Ok(()); // reported when emitted
        }
        "retries" if be => {
            px.retries = set(int(l, 1)?, l);
            return Ok(());
        }
        "balance" if be => {
            px.balance = set(l.words[1..].join(" "), l);
            return Ok(());
        }
        "cookie" if be => {
            px.cookie = set(l.w(1).to_string(), l);
            return Ok(());
        }
        "default-server" if be => {
            px.default_server.push(l.clone());
            return Ok(());
        }
        "server" if be => {
            let s =
                super::haproxy_out::parse_server(l, &px.default_server).map_err(|m| perr(l, m))?;
            px.servers.push(Set {
                v: s,
                line: l.clone(),
            });
            return Ok(());
        }
        "option" | "no" => return option(px, l, rep),
        "http-check" if be => http_check(px, l),
        "tcp-check" if be => tcp_check(px, l),
        "redirect" if fe => {
            // A translated redirect is reported when emitted (its status code may differ).
            let o = redirect(px, l, 1);
            if o != Translated {
                rep.add(&l.loc, &l.text, o);
            }
            return Ok(());
        }
        "http-request" | "http-response" => {
            let o = http_rule(px, l);
            if o != Translated || l.w(1) != "redirect" {
                rep.add(&l.loc, &l.text, o);
            }
            return Ok(());
        }
        "stats" => return stats(px, l, rep),
        "maxconn" if fe => {
            px.maxconn = set(int(l, 1)?, l);
            Translated
        }
        "log" | "log-format" | "log-tag" | "capture" | "unique-id-format" | "unique-id-header"
        | "description" | "id" | "log-format-sd" | "error-log-format" => {
            Irrelevant("logging: fulcrum writes its own access log (`[log] access`)".into())
        }
        "errorfile" | "errorloc" | "errorloc302" | "errorloc303" | "errorfiles" => {
            NoEquivalent("fulcrum answers errors with its own short bodies".into())
        }
        "compression" => NoEquivalent("fulcrum does not compress responses".into()),
        "fullconn" | "hash-type" | "hash-balance-factor" => {
            NoEquivalent(format!("`{kw}` has no fulcrum equivalent"))
        }
        "stick-table"
        | "stick"
        | "tcp-request"
        | "tcp-response"
        | "filter"
        | "monitor-uri"
        | "monitor"
        | "rate-limit"
        | "http-reuse"
        | "http-send-name-header"
        | "source"
        | "dispatch"
        | "persist"
        | "force-persist"
        | "ignore-persist"
        | "email-alert"
        | "external-check"
        | "server-template"
        | "dynamic-cookie-key"
        | "http-after-response"
        | "http-error"
        | "declare"
        | "load-server-state-from-file"
        | "server-state-file-name" => Unsupported(format!("`{kw}` is not supported by the import")),
        "bind" | "default_backend" | "use_backend" | "redirect" | "maxconn" => {
            NoEquivalent(format!("`{kw}` does not apply to a backend section"))
        }
        "retries" | "balance" | "cookie" | "server" | "default-server" | "http-check"
        | "tcp-check" => Default(format!("`{kw}` does not apply to a frontend section")),
        "enabled" => Default("sections are enabled by default".into()),
        "disabled" => Unsupported("disabled sections are not supported".into()),
        _ => Unsupported(format!("unknown directive `{kw}`")),
    };
    let _ = from_defaults;
    rep.add(&l.loc, &l.text, o);
    Ok(())
}

fn option(px: &mut Px, l: &Line, rep: &mut Report) -> Result<(), ParseError> {
    use Outcome::*;
    let neg = l.w(0) == "no";
    let (name, args) = if neg {
        (l.w(2), l.words.get(3..).unwrap_or(&[]))
    } else {
        (l.w(1), l.words.get(2..).unwrap_or(&[]))
    };
    let be = px.kind.is_be();
    let o = match name {
        "httpchk" if be => {
            let (method, uri, host) = match args.len() {
                0 => ("OPTIONS".to_string(), "/".to_string(), None),
                1 => ("OPTIONS".to_string(), args[0].clone(), None),
                _ => {
                    let method = args[0].clone();
                    let uri = args[1].clone();
                    // Old style: `option httpchk GET /p HTTP/1.1\r\nHost:\ www`.
                    let host = args.get(2).and_then(|v| {
                        v.split("\r\n").skip(1).find_map(|h| {
                            let (k, val) = h.split_once(':')?;
                            k.trim().eq_ignore_ascii_case("host").then(|| val.trim().to_string())
                        })
                    });
                    (method, uri, host)
                }
            };
            px.httpchk = set(HttpChk { method, uri, host }, l);
            return Ok(());
        }
        "tcp-check" if be => {
            if px.tcpchk.is_none() {
                px.tcpchk = set((None, None, false, false), l);
            }
            return Ok(());
        }
        "redis-check" if be => {
            px.tcpchk = set((Some("PING\r\n".into()), Some("+PONG".into()), false, false), l);
            return Ok(());
        }
        "ssl-hello-chk" | "mysql-check" | "pgsql-check" | "smtpchk" | "ldap-check"
        | "spop-check" => Approximated(format!(
            "`option {name}`: fulcrum checks with a TCP connect instead (`kind = \"postgres\"` needs credentials)"
        )),
        "forwardfor" => Default("fulcrum always appends X-Forwarded-For (and sets X-Forwarded-Proto/-Host)".into()),
        "redispatch" => Default("fulcrum retries failed connections on other servers".into()),
        "httplog" | "tcplog" | "dontlognull" | "log-health-checks" | "dontlog-normal"
        | "log-separate-errors" | "httpslog" | "logasap" => {
            Irrelevant("logging: fulcrum writes its own access log".into())
        }
        "http-server-close" | "http-keep-alive" | "httpclose" | "forceclose"
        | "http-pretend-keepalive" | "abortonclose" | "splice-auto" | "splice-request"
        | "splice-response" | "tcpka" | "clitcpka" | "srvtcpka" | "contstats"
        | "socket-stats" | "http-buffer-request" | "prefer-last-server" | "tcp-smart-accept"
        | "tcp-smart-connect" | "http-no-delay" | "nolinger" | "allbackups"
        | "http-use-htx" | "independent-streams" | "checkcache" => Default(format!(
            "fulcrum manages connections itself (keep-alive to both sides, pooled upstreams); `option {name}` is not needed"
        )),
        "accept-invalid-http-request" | "accept-invalid-http-response" => {
            NoEquivalent("fulcrum's HTTP parsing is strict".into())
        }
        "transparent" | "originalto" | "http_proxy" | "persist" | "external-check"
        | "disable-h2-upgrade" | "h1-case-adjust-bogus-client" | "h1-case-adjust-bogus-server"
        | "idle-close-on-response" | "spop-check-bogus" => {
            Unsupported(format!("`option {name}` is not supported"))
        }
        _ => Unsupported(format!("`option {name}` is not supported")),
    };
    rep.add(&l.loc, &l.text, o);
    Ok(())
}

fn http_check(px: &mut Px, l: &Line) -> Outcome {
    use Outcome::*;
    match l.w(1) {
        "expect" => {
            let neg = l.w(2) == "!";
            let (what, val) = if neg {
                (l.w(3), l.w(4))
            } else {
                (l.w(2), l.w(3))
            };
            match (neg, what) {
                (false, "status") => {
                    // fulcrum takes one status or a range; HAProxy also takes lists.
                    let ok = |x: &str| x.len() == 3 && x.bytes().all(|b| b.is_ascii_digit());
                    let valid = ok(val) || val.split_once('-').is_some_and(|(a, b)| ok(a) && ok(b));
                    if !valid {
                        return Unsupported(format!(
                            "`expect status {val}`: fulcrum takes one status or a range (200-399)"
                        ));
                    }
                    px.expect = set(val.to_string(), l);
                    Translated
                }
                (false, "rstatus") => {
                    let v = match val {
                        "^2" | "^2.." | "^2[0-9][0-9]" | "2[0-9][0-9]" => "2xx",
                        "^3" | "^3.." => "3xx",
                        "^[23]" => "200-399",
                        _ => {
                            return Unsupported(
                                "only simple `rstatus` patterns (^2, ^[23]) are translated".into(),
                            )
                        }
                    };
                    px.expect = set(v.to_string(), l);
                    Translated
                }
                _ => Unsupported(format!(
                    "`http-check expect {what}`: fulcrum checks the status only"
                )),
            }
        }
        "send" => {
            let mut chk = px.httpchk.as_ref().map(|s| s.v.clone()).unwrap_or(HttpChk {
                method: "OPTIONS".into(),
                uri: "/".into(),
                host: None,
            });
            let mut i = 2;
            while i < l.words.len() {
                match l.w(i) {
                    "meth" => chk.method = l.w(i + 1).to_string(),
                    "uri" => chk.uri = l.w(i + 1).to_string(),
                    "hdr" => {
                        if l.w(i + 1).eq_ignore_ascii_case("host") {
                            chk.host = Some(l.w(i + 2).to_string());
                        }
                        i += 1;
                    }
                    "ver" => {}
                    _ => {
                        return Unsupported(
                            "`http-check send` with a body or unknown options".into(),
                        )
                    }
                }
                i += 2;
            }
            px.httpchk = set(chk, l);
            Translated
        }
        "disable-on-404" | "send-state" => NoEquivalent(format!("`http-check {}`", l.w(1))),
        "connect" => Default("the check connects to the server".into()),
        _ => Unsupported(format!("`http-check {}`", l.w(1))),
    }
}

fn tcp_check(px: &mut Px, l: &Line) -> Outcome {
    use Outcome::*;
    let mut cur = px
        .tcpchk
        .take()
        .map(|s| s.v)
        .unwrap_or((None, None, false, false));
    let o = match l.w(1) {
        "connect" if l.words.len() == 2 => Default("the check connects to the server".into()),
        "send" | "send-lf" if cur.0.is_none() => {
            cur.0 = Some(l.w(2).to_string());
            Translated
        }
        "send-binary" if cur.0.is_none() => {
            cur.0 = Some(l.w(2).to_string());
            cur.2 = true;
            Translated
        }
        "expect" if cur.1.is_none() && matches!(l.w(2), "string" | "binary") => {
            cur.1 = Some(l.w(3).to_string());
            cur.3 = l.w(2) == "binary";
            Translated
        }
        "comment" => Irrelevant("a comment".into()),
        _ => Unsupported("fulcrum's TCP check does one send and one expect (substring)".into()),
    };
    px.tcpchk = set(cur, l);
    o
}

/// `redirect scheme https [code N] [if|unless COND]`, starting at word `at`.
fn redirect(px: &mut Px, l: &Line, at: usize) -> Outcome {
    use Outcome::*;
    if l.w(at) != "scheme" || !l.w(at + 1).eq_ignore_ascii_case("https") {
        return Unsupported("only `redirect scheme https` is translated".into());
    }
    let mut code = 302;
    let mut i = at + 2;
    while i < l.words.len() {
        match l.w(i) {
            "code" => {
                code = l.w(i + 1).parse().unwrap_or(302);
                i += 2;
            }
            "drop-query" | "append-slash" | "ignore-empty" => i += 1,
            "if" | "unless" => break,
            _ => i += 1,
        }
    }
    let ssl = match ssl_only(&l.words[i.min(l.words.len())..]) {
        Ok(s) => s,
        Err(m) => return Unsupported(m),
    };
    px.redirect = set((code, ssl), l);
    Translated
}

/// A condition that only tests `ssl_fc`: Some(true) = only on TLS, Some(false) = only on
/// plain listeners, None = always. Anything else cannot be evaluated when importing.
fn ssl_only(cond: &[String]) -> Result<Option<bool>, String> {
    if cond.is_empty() {
        return Ok(None);
    }
    let unless = cond.first().map(String::as_str) == Some("unless");
    let body: Vec<&str> = cond.iter().skip(1).map(String::as_str).collect();
    let pos = match body.as_slice() {
        ["{", "ssl_fc", "}"] | ["ssl_fc"] => true,
        ["!", "{", "ssl_fc", "}"] | ["!{", "ssl_fc", "}"] | ["!ssl_fc"] => false,
        _ => return Err("only conditions on `ssl_fc` are translated here".into()),
    };
    Ok(Some(pos != unless))
}

fn http_rule(px: &mut Px, l: &Line) -> Outcome {
    use Outcome::*;
    let req = l.w(0) == "http-request";
    let act = l.w(1);
    if req && act == "redirect" {
        if !px.kind.is_fe() {
            return Unsupported("redirects in backends are not translated".into());
        }
        return redirect(px, l, 2);
    }
    let (op, name, value, rest) = match act {
        "set-header" | "add-header" => (&act[..3], l.w(2), Some(l.w(3)), 4),
        "del-header" => ("del", l.w(2), None, 3),
        _ => return Unsupported(format!("`{} {act}` is not translated", l.w(0))),
    };
    if !px.kind.is_fe() {
        return Unsupported(
            "fulcrum's header rules belong to frontends; this one is in a backend".into(),
        );
    }
    let mut rest_words: &[String] = l.words.get(rest..).unwrap_or(&[]);
    if act == "del-header" && rest_words.first().map(String::as_str) == Some("-m") {
        if rest_words.get(1).map(String::as_str) != Some("str") {
            return Unsupported("del-header with a match method other than str".into());
        }
        rest_words = rest_words.get(2..).unwrap_or(&[]);
    }
    let ssl = match ssl_only(rest_words) {
        Ok(s) => s,
        Err(m) => return Unsupported(m),
    };
    let value = match value.map(log_format) {
        Some(Err(m)) => return Unsupported(m),
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let rule = HdrRule {
        op: op.to_string(),
        name: name.to_string(),
        value,
        ssl,
        line: l.clone(),
    };
    if req {
        px.req_hdr.push(rule);
    } else {
        px.resp_hdr.push(rule);
    }
    Translated
}

/// HAProxy log-format value → fulcrum template (`%[src]` → `{client_ip}`).
fn log_format(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("%%") {
            out.push('%');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%[src]") {
            out.push_str("{client_ip}");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%ci") {
            out.push_str("{client_ip}");
            rest = t;
        } else if let Some(t) = tail
            .strip_prefix("%[unique-id]")
            .or_else(|| tail.strip_prefix("%ID"))
        {
            out.push_str("{request_id}");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%f") {
            out.push_str("{frontend}");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%b") {
            out.push_str("{backend}");
            rest = t;
        } else {
            return Err(format!(
                "the value `{v}` uses HAProxy sample expressions fulcrum cannot evaluate"
            ));
        }
    }
    out.push_str(rest);
    if out.contains('{')
        && !out.contains("{client_ip}")
        && !out.contains("{request_id}")
        && !out.contains("{frontend}")
        && !out.contains("{backend}")
    {
        return Err(format!(
            "the value `{v}` contains braces fulcrum would read as a placeholder"
        ));
    }
    Ok(out)
}

fn stats(px: &mut Px, l: &Line, rep: &mut Report) -> Result<(), ParseError> {
    use Outcome::*;
    let o = match l.w(1) {
        "enable" | "uri" if px.stats.is_none() => {
            px.stats = Some(l.clone());
            return Ok(()); // reported when emitted
        }
        "enable" | "uri" => Approximated("fulcrum's dashboard is at the admin listener's `/`".into()),
        "auth" | "realm" | "http-request" => Approximated(
            "fulcrum's admin API uses a bearer token (`[admin] token_file`), not basic auth".into(),
        ),
        "refresh" => Default("the dashboard refreshes every second".into()),
        "hide-version" | "show-legends" | "show-node" | "show-desc" | "show-modules" => {
            Irrelevant("dashboard cosmetics".into())
        }
        "admin" => Default("the dashboard's Drain/Ready/Maint buttons are always there (token-protected off loopback)".into()),
        "scope" => NoEquivalent("the dashboard shows every proxy".into()),
        "socket" | "timeout" | "maxconn" | "bind-process" => {
            Default("the admin API replaces the stats socket".into())
        }
        _ => Unsupported(format!("`stats {}`", l.w(1))),
    };
    rep.add(&l.loc, &l.text, o);
    Ok(())
}
