//! `haproxy.cfg` → fulcrum: tokenizer, sections, `defaults` inheritance and directives.
//!
//! Hand-written: no crate parses HAProxy's configuration language, and the import needs
//! every line's number for the report anyway. The tokenizer follows HAProxy's rules
//! (`#` comments, `\` escapes, "double" quotes with escapes, 'single' quotes literal).
//! Each proxy section is read into a [`Px`] by applying first the directives of the
//! `defaults` section it inherits from, then its own; [`super::haproxy_out`] turns the
//! proxies into fulcrum tables and [`super::haproxy_acl`] turns ACL conditions into routes.

use super::haproxy_acl::Cond;
use super::report::{Loc, Outcome, Report};

#[path = "haproxy_directives.rs"]
mod directives;

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
                // Proxy headers are reported by the emitters: a section may not be written.
                if kind == Kind::Defaults {
                    rep.ok(&loc, &line.text);
                }
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
    for (i, s) in p.proxies.iter().enumerate() {
        // HAProxy refuses two proxies of one name that share a side (a
        // `frontend web` and a `backend web` may coexist): found by
        // fuzz/import_haproxy, whose output then declared a table twice.
        let sides = |k: Kind| (k != Kind::Backend, k != Kind::Frontend);
        let (fe, be) = sides(s.kind);
        if let Some(first) = p.proxies.iter().take(i).find(|o| {
            let (ofe, obe) = sides(o.kind);
            o.name == s.name && ((fe && ofe) || (be && obe))
        }) {
            return Err(ParseError {
                loc: s.head.loc.clone(),
                message: format!(
                    "proxy '{}' has the same name as another one declared at {}",
                    s.name, first.head.loc
                ),
            });
        }
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
                directives::apply(&mut px, l, rep)?;
            }
        }
        for l in &s.lines {
            directives::apply(&mut px, l, rep)?;
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
