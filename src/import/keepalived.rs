//! keepalived.conf → `[vrrp.instances.*]`.
//!
//! keepalived's syntax is statements of words, one per line, with `{ … }` blocks;
//! `#` and `!` start comments. Parsed into a small tree, then each `vrrp_instance`
//! becomes a fulcrum instance; `vrrp_script`s become `track` (one checking haproxy
//! becomes `frontends = true`: fulcrum knows itself whether its frontends can serve).

use super::emit::{inline, q, Src, Table};
use super::report::{Loc, Outcome, Report};
use super::Input;

/// One statement: words, and children when it opens a block.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where.
    pub loc: Loc,
    /// Words (first is the keyword).
    pub words: Vec<String>,
    /// Block content.
    pub children: Vec<Node>,
    /// The line as written.
    pub text: String,
}

impl Node {
    fn w(&self, i: usize) -> &str {
        self.words.get(i).map(String::as_str).unwrap_or("")
    }
    fn src(&self) -> String {
        format!("{} {}", self.loc, self.text)
    }
}

/// Parse into top-level statements; unbalanced braces are tolerated (reported).
pub fn parse(text: &str, file: &str, rep: &mut Report) -> Vec<Node> {
    let mut stack: Vec<Node> = vec![Node {
        loc: Loc {
            file: file.into(),
            line: 0,
        },
        words: vec![],
        children: vec![],
        text: String::new(),
    }];
    for (i, raw) in text.lines().enumerate() {
        let loc = Loc {
            file: file.to_string(),
            line: i + 1,
        };
        let mut words: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut inq = false;
        let flush = |cur: &mut String, words: &mut Vec<String>| {
            if !cur.is_empty() {
                words.push(std::mem::take(cur));
            }
        };
        let mut tokens: Vec<String> = Vec::new();
        for c in raw.chars() {
            if inq {
                if c == '"' {
                    inq = false
                } else {
                    cur.push(c)
                }
                continue;
            }
            match c {
                '"' => inq = true,
                '#' | '!' if cur.is_empty() => break,
                '{' | '}' => {
                    flush(&mut cur, &mut words);
                    tokens.append(&mut words);
                    tokens.push(c.to_string());
                }
                c if c.is_whitespace() => flush(&mut cur, &mut words),
                _ => cur.push(c),
            }
        }
        flush(&mut cur, &mut words);
        tokens.append(&mut words);
        let mut stmt: Vec<String> = Vec::new();
        for t in tokens {
            match t.as_str() {
                "{" => {
                    stack.push(Node {
                        loc: loc.clone(),
                        words: std::mem::take(&mut stmt),
                        children: vec![],
                        text: raw.trim().into(),
                    });
                }
                "}" => {
                    if !stmt.is_empty() {
                        if let Some(top) = stack.last_mut() {
                            top.children.push(Node {
                                loc: loc.clone(),
                                words: std::mem::take(&mut stmt),
                                children: vec![],
                                text: raw.trim().into(),
                            });
                        }
                    }
                    if stack.len() > 1 {
                        if let Some(done) = stack.pop() {
                            if let Some(top) = stack.last_mut() {
                                top.children.push(done);
                            }
                        }
                    } else {
                        rep.add(&loc, raw, Outcome::Unsupported("unbalanced `}`".into()));
                    }
                }
                _ => stmt.push(t),
            }
        }
        if !stmt.is_empty() {
            if let Some(top) = stack.last_mut() {
                top.children.push(Node {
                    loc: loc.clone(),
                    words: stmt,
                    children: vec![],
                    text: raw.trim().into(),
                });
            }
        }
    }
    while stack.len() > 1 {
        if let Some(done) = stack.pop() {
            rep.add(
                &done.loc,
                &done.text,
                Outcome::Unsupported("block not closed with `}`".into()),
            );
            if let Some(top) = stack.last_mut() {
                top.children.push(done);
            }
        }
    }
    stack.pop().map(|n| n.children).unwrap_or_default()
}

/// keepalived seconds ("1", "0.5") → fulcrum duration.
fn secs(v: &str) -> Option<String> {
    let f: f64 = v.parse().ok()?;
    if !(0.0..=86400.0).contains(&f) {
        return None;
    }
    let ms = (f * 1000.0).round() as u64;
    Some(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

struct Script {
    cmd: String,
    interval: Option<String>,
    weight: i64,
    node: Node,
}

/// Import every vrrp_instance.
pub fn import(input: &Input, rep: &mut Report, tables: &mut Vec<Table>) {
    let nodes = parse(&input.text, &input.label, rep);
    let mut version = None;
    let mut scripts: Vec<(String, Script)> = Vec::new();
    for n in &nodes {
        match n.w(0) {
            "global_defs" => {
                rep.ok(&n.loc, &n.text);
                for c in &n.children {
                    let o = match c.w(0) {
                        "vrrp_version" => {
                            version = c.w(1).parse::<u8>().ok();
                            Outcome::Translated
                        }
                        "router_id" | "notification_email" | "notification_email_from" | "smtp_server" | "smtp_connect_timeout" | "enable_script_security" | "script_user" | "lvs_id" | "max_auto_priority" => Outcome::Irrelevant("node naming, mail alerts or script security: not needed by fulcrum".into()),
                        "vrrp_garp_master_delay" | "vrrp_garp_master_repeat" => Outcome::Approximated("set per instance in fulcrum (garp_master_delay/garp_master_repeat)".into()),
                        "vrrp_skip_check_adv_addr" | "vrrp_strict" | "vrrp_garp_interval" | "vrrp_gna_interval" => Outcome::NoEquivalent(format!("`{}`", c.w(0))),
                        k => Outcome::Unsupported(format!("unknown global_defs `{k}`")),
                    };
                    rep.add(&c.loc, &c.text, o);
                }
            }
            "vrrp_script" => {
                let mut s = Script {
                    cmd: String::new(),
                    interval: None,
                    weight: 0,
                    node: n.clone(),
                };
                for c in &n.children {
                    let o = match c.w(0) {
                        "script" => {
                            s.cmd = c.words.get(1..).unwrap_or_default().join(" ");
                            Outcome::Translated
                        }
                        "interval" => {
                            s.interval = secs(c.w(1));
                            Outcome::Translated
                        }
                        "weight" => {
                            s.weight = c.w(1).parse().unwrap_or(0);
                            Outcome::Translated
                        }
                        "fall" | "rise" => {
                            Outcome::Approximated("fulcrum counts one failed run".into())
                        }
                        "timeout" => Outcome::Approximated("fulcrum's script timeout is 5s".into()),
                        "user" | "init_fail" => {
                            Outcome::Irrelevant("script execution details".into())
                        }
                        k => Outcome::Unsupported(format!("`{k}` in vrrp_script")),
                    };
                    rep.add(&c.loc, &c.text, o);
                }
                rep.ok(&n.loc, &n.text);
                scripts.push((n.w(1).to_string(), s));
            }
            "vrrp_instance" => {}
            "include" => rep.add(
                &n.loc,
                &n.text,
                Outcome::Unsupported(
                    "include files are not followed: import them separately".into(),
                ),
            ),
            "virtual_server" | "virtual_server_group" | "real_server" => rep.add(
                &n.loc,
                &n.text,
                Outcome::NoEquivalent(
                    "LVS virtual servers: use fulcrum frontends/backends (import the haproxy.cfg)"
                        .into(),
                ),
            ),
            "vrrp_sync_group" => rep.add(
                &n.loc,
                &n.text,
                Outcome::Unsupported(
                    "sync groups: fulcrum instances fail over independently".into(),
                ),
            ),
            k => rep.add(
                &n.loc,
                &n.text,
                Outcome::Unsupported(format!("unknown block `{k}`")),
            ),
        }
    }
    for n in nodes.iter().filter(|n| n.w(0) == "vrrp_instance") {
        instance(n, version, &scripts, rep, tables);
    }
}

fn instance(
    n: &Node,
    version: Option<u8>,
    scripts: &[(String, Script)],
    rep: &mut Report,
    tables: &mut Vec<Table>,
) {
    use Outcome::*;
    let name = if n.w(1).is_empty() { "VI_1" } else { n.w(1) };
    let mut t = Table::new(
        format!("vrrp.instances.{}", super::emit::key(name)),
        Src::one(n.src()),
    );
    rep.ok(&n.loc, &n.text);
    let mut vips = Vec::new();
    let mut vip_src = Vec::new();
    let mut preempt = true;
    let mut track_w: Option<i64> = None;
    let mut frontends = false;
    let mut script: Option<(String, Option<String>)> = None;
    let mut ifaces = Vec::new();
    let mut track_src = Vec::new();
    let mut notify: Vec<(&str, String)> = Vec::new();
    let mut notify_src = Vec::new();
    let mut has_version = false;
    for c in &n.children {
        let v = c.w(1);
        let o = match c.w(0) {
            "state" => Default(format!(
                "fulcrum elects by priority (state {v} only sets the start state in keepalived)"
            )),
            "interface" => {
                t.str("interface", v, Src::one(c.src()));
                Translated
            }
            "virtual_router_id" => {
                t.raw(
                    "vrid",
                    v.parse::<i64>().unwrap_or(0).to_string(),
                    Src::one(c.src()),
                );
                Translated
            }
            "priority" => {
                t.raw(
                    "priority",
                    v.parse::<i64>().unwrap_or(100).to_string(),
                    Src::one(c.src()),
                );
                Translated
            }
            "advert_int" => match secs(v) {
                Some(d) => {
                    t.str("advert_interval", &d, Src::one(c.src()));
                    Translated
                }
                None => Unsupported("bad advert_int".into()),
            },
            "version" | "vrrp_version" => {
                has_version = true;
                t.raw(
                    "version",
                    v.parse::<i64>().unwrap_or(2).to_string(),
                    Src::one(c.src()),
                );
                Translated
            }
            "nopreempt" => {
                preempt = false;
                t.raw("preempt", "false".into(), Src::one(c.src()));
                Translated
            }
            "preempt" => Default("preempting is the default".into()),
            "preempt_delay" => match secs(v) {
                Some(d) => {
                    t.str("preempt_delay", &d, Src::one(c.src()));
                    Translated
                }
                None => Unsupported("bad preempt_delay".into()),
            },
            "authentication" => {
                let ty = c
                    .children
                    .iter()
                    .find(|x| x.w(0) == "auth_type")
                    .map(|x| x.w(1).to_string())
                    .unwrap_or_default();
                let pass = c
                    .children
                    .iter()
                    .find(|x| x.w(0) == "auth_pass")
                    .map(|x| x.w(1).to_string());
                for x in &c.children {
                    rep.ok(&x.loc, &x.text);
                }
                match (ty.as_str(), pass) {
                    ("PASS", Some(p)) => {
                        // keepalived sends at most 8 bytes of the password.
                        let p: String = p.chars().take(8).collect();
                        t.str("auth_pass", &p, Src::one(c.src()));
                        Translated
                    }
                    ("AH", _) => Unsupported("auth_type AH is not supported".into()),
                    _ => Unsupported("authentication without auth_type PASS and auth_pass".into()),
                }
            }
            "unicast_src_ip" => {
                t.str("unicast_src", v, Src::one(c.src()));
                Translated
            }
            "unicast_peer" => {
                let peers: Vec<String> = c.children.iter().map(|x| q(x.w(0))).collect();
                for x in &c.children {
                    rep.ok(&x.loc, &x.text);
                }
                t.raw(
                    "unicast_peers",
                    format!("[{}]", peers.join(", ")),
                    Src::one(c.src()),
                );
                Translated
            }
            "virtual_ipaddress" => {
                for x in &c.children {
                    let a = x.w(0);
                    if a.contains(':') {
                        rep.add(
                            &x.loc,
                            &x.text,
                            Unsupported("IPv6 virtual addresses are not supported".into()),
                        );
                        continue;
                    }
                    let a = if a.contains('/') {
                        a.to_string()
                    } else {
                        format!("{a}/32")
                    };
                    vips.push(q(&a));
                    vip_src.push(x.src());
                    if x.words.len() > 1 {
                        rep.add(&x.loc, &x.text, Approximated("dev/label/brd options: fulcrum adds the address to the instance's interface".into()));
                    } else {
                        rep.ok(&x.loc, &x.text);
                    }
                }
                Translated
            }
            "virtual_ipaddress_excluded" | "virtual_routes" | "virtual_rules" => {
                Unsupported(format!("`{}`", c.w(0)))
            }
            "track_script" => {
                for x in &c.children {
                    let nm = x.w(0);
                    let over = x
                        .words
                        .iter()
                        .position(|w| w == "weight")
                        .and_then(|i| x.words.get(i + 1))
                        .and_then(|w| w.parse::<i64>().ok());
                    match scripts.iter().find(|(s, _)| s == nm) {
                        Some((_, s)) => {
                            let w = over.unwrap_or(s.weight);
                            let o = merge_weight(&mut track_w, w);
                            if s.cmd.contains("haproxy") {
                                frontends = true;
                                track_src.push(format!("{} (script `{}` checks haproxy: fulcrum tracks its own frontends instead)", s.node.src(), s.cmd));
                            } else if script.is_none() {
                                script = Some((s.cmd.clone(), s.interval.clone()));
                                track_src.push(s.node.src());
                            } else {
                                rep.add(
                                    &x.loc,
                                    &x.text,
                                    Unsupported("fulcrum tracks one script per instance".into()),
                                );
                                continue;
                            }
                            rep.add(&x.loc, &x.text, o);
                        }
                        None => rep.add(
                            &x.loc,
                            &x.text,
                            Unsupported(format!("no vrrp_script named `{nm}`")),
                        ),
                    }
                }
                Translated
            }
            "track_interface" => {
                for x in &c.children {
                    let w = x
                        .words
                        .iter()
                        .position(|w| w == "weight")
                        .and_then(|i| x.words.get(i + 1))
                        .and_then(|w| w.parse::<i64>().ok())
                        .unwrap_or(0);
                    let o = merge_weight(&mut track_w, w);
                    ifaces.push(q(x.w(0)));
                    track_src.push(x.src());
                    rep.add(&x.loc, &x.text, o);
                }
                Translated
            }
            "notify_master" | "notify_backup" | "notify_fault" => {
                notify.push((
                    c.w(0).get(7..).unwrap_or_default(),
                    c.words.get(1..).unwrap_or_default().join(" "),
                ));
                notify_src.push(c.src());
                Translated
            }
            "notify" | "notify_stop" => {
                Unsupported("fulcrum runs notify_master/backup/fault hooks (state in $1)".into())
            }
            "garp_master_delay" => match secs(v) {
                Some(d) => {
                    t.str("garp_master_delay", &d, Src::one(c.src()));
                    Translated
                }
                None => Unsupported("bad delay".into()),
            },
            "garp_master_repeat" => {
                t.raw(
                    "garp_master_repeat",
                    v.parse::<i64>().unwrap_or(5).to_string(),
                    Src::one(c.src()),
                );
                Translated
            }
            "smtp_alert"
            | "debug"
            | "dont_track_primary"
            | "garp_master_refresh"
            | "lvs_sync_daemon_interface"
            | "mcast_src_ip"
            | "skip_check_adv_addr" => NoEquivalent(format!("`{}`", c.w(0))),
            k => Unsupported(format!("unknown vrrp_instance setting `{k}`")),
        };
        rep.add(&c.loc, &c.text, o);
    }
    if !has_version {
        if let Some(v) = version {
            t.raw(
                "version",
                v.to_string(),
                Src::one("global_defs vrrp_version".into()),
            );
        } else {
            t.raw(
                "version",
                "2".into(),
                Src::one("keepalived's default VRRP version".into()),
            );
        }
    }
    t.raw(
        "virtual_ips",
        format!("[{}]", vips.join(", ")),
        Src(vip_src),
    );
    let _ = preempt;
    if frontends || script.is_some() || !ifaces.is_empty() {
        let mut p: Vec<(&str, String)> = Vec::new();
        if frontends {
            p.push(("frontends", "true".into()));
        }
        if !ifaces.is_empty() {
            p.push(("interfaces", format!("[{}]", ifaces.join(", "))));
        }
        if let Some((cmd, iv)) = &script {
            p.push(("script", q(cmd)));
            if let Some(iv) = iv {
                p.push(("script_interval", q(iv)));
            }
        }
        match track_w {
            Some(w) if w != 0 => p.push(("weight", w.clamp(-254, 254).to_string())),
            _ => p.push(("weight", q("fault"))),
        }
        t.raw("track", inline(&p), Src(track_src));
    }
    if !notify.is_empty() {
        let p: Vec<(&str, String)> = notify.iter().map(|(k, v)| (*k, q(v))).collect();
        t.raw("notify", inline(&p), Src(notify_src));
    }
    tables.push(t);
}

fn merge_weight(cur: &mut Option<i64>, w: i64) -> Outcome {
    match cur {
        None => {
            *cur = Some(w);
            Outcome::Translated
        }
        Some(c) if *c == w => Outcome::Translated,
        Some(c) => Outcome::Approximated(format!(
            "fulcrum applies one weight to all tracked conditions: {c} (not {w})"
        )),
    }
}
