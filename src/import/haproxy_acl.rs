//! HAProxy ACL conditions → fulcrum routes.
//!
//! fulcrum routes match a host (exact, or `*.suffix`) and/or a path prefix, first match
//! wins — the same order HAProxy evaluates `use_backend`. A condition is turned into
//! disjunctive normal form; each AND-term may test at most one host ACL and one path ACL
//! (their values are OR-ed, so the term becomes the cross product of routes). `ssl_fc`
//! is known per listener when importing, so it is evaluated statically. Anything else —
//! negated host/path tests, other fetches — is reported as not translated.

use std::path::Path;

use super::haproxy::{Line, Px};

/// One test inside a condition.
#[derive(Debug, Clone)]
pub struct Term {
    /// Prefixed with `!`.
    pub neg: bool,
    /// A named ACL, or the words of an anonymous `{ … }` one.
    pub acl: AclRef,
}

/// A reference to an ACL.
#[derive(Debug, Clone)]
pub enum AclRef {
    /// `acl NAME …` lines.
    Named(String),
    /// `{ fetch [flags] values }`.
    Anon(Vec<String>),
}

/// A parsed `if`/`unless` condition in DNF: OR of AND-terms.
#[derive(Debug, Clone)]
pub struct Cond {
    /// `unless`.
    pub unless: bool,
    /// OR of ANDs.
    pub terms: Vec<Vec<Term>>,
}

/// Parse `if|unless a b || !c { hdr(host) x }` (the words from `if` on).
pub fn parse_cond(words: &[String]) -> Result<Cond, String> {
    let unless = words.first().map(String::as_str) == Some("unless");
    let mut terms = vec![Vec::new()];
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let w = w.as_str();
        if w == "||" || w == "or" {
            terms.push(Vec::new());
            i += 1;
            continue;
        }
        let (neg, w) = match w.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, w),
        };
        let w = if w.is_empty() {
            i += 1;
            match words.get(i) {
                Some(n) => n.as_str(),
                None => return Err("'!' at the end of the condition".into()),
            }
        } else {
            w
        };
        let acl = if w == "{" {
            let start = i + 1;
            let end = words
                .get(start..)
                .unwrap_or_default()
                .iter()
                .position(|x| x == "}")
                .map(|p| start + p)
                .ok_or("missing '}' in an anonymous ACL")?;
            let v = words.get(start..end).unwrap_or_default().to_vec();
            if v.is_empty() {
                return Err("empty anonymous ACL".into());
            }
            i = end;
            AclRef::Anon(v)
        } else {
            AclRef::Named(w.to_string())
        };
        if let Some(t) = terms.last_mut() {
            t.push(Term { neg, acl });
        }
        i += 1;
    }
    if terms.iter().any(Vec::is_empty) {
        return Err("empty condition (or a dangling '||')".into());
    }
    Ok(Cond { unless, terms })
}

/// What one ACL value can match, in fulcrum's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// Host pattern: exact name or `*.suffix`.
    Host(String),
    /// Path prefix.
    Path(String),
    /// TLS listener or not.
    Ssl(bool),
    /// Always / never true.
    Bool(bool),
}

/// A resolved ACL: its atoms (OR-ed) and what is approximate about them.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The atoms.
    pub atoms: Vec<Atom>,
    /// Approximations to report.
    pub approx: Vec<String>,
}

/// Reads pattern and map files (`-f FILE`, `map(FILE)`), relative to the cfg's folder.
pub fn read_list(base: &Path, file: &str) -> Result<Vec<(String, String)>, String> {
    let p = Path::new(file);
    let text = std::fs::read_to_string(p)
        .or_else(|_| std::fs::read_to_string(base.join(p.file_name().unwrap_or_default())))
        .or_else(|_| std::fs::read_to_string(base.join(p)))
        .map_err(|e| format!("cannot read {file}: {e}"))?;
    if text.len() > super::MAX_INPUT {
        return Err(format!("{file} is too large"));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut it = l.splitn(2, char::is_whitespace);
            let k = it.next().unwrap_or("").to_string();
            let v = it.next().unwrap_or("").trim().to_string();
            (k, v)
        })
        .collect())
}

/// Resolve one ACL reference in `px`.
pub fn resolve(px: &Px, acl: &AclRef, base: &Path) -> Result<(Resolved, Vec<Line>), String> {
    let mut r = Resolved::default();
    let mut used = Vec::new();
    match acl {
        AclRef::Anon(words) => criterion(words, base, &mut r)?,
        AclRef::Named(name) => {
            let lines: Vec<&Line> = px.acls.iter().filter(|l| l.w(1) == name).collect();
            if lines.is_empty() {
                return match name.as_str() {
                    "TRUE" => Ok((atoms1(Atom::Bool(true)), used)),
                    "FALSE" => Ok((atoms1(Atom::Bool(false)), used)),
                    "HTTP" => Ok((atoms1(Atom::Bool(px.mode() == "http")), used)),
                    _ => Err(format!("ACL `{name}` is not declared in this section")),
                };
            }
            for l in lines {
                criterion(l.words.get(2..).unwrap_or_default(), base, &mut r)?;
                used.push(l.clone());
            }
        }
    }
    Ok((r, used))
}

fn atoms1(a: Atom) -> Resolved {
    Resolved {
        atoms: vec![a],
        approx: Vec::new(),
    }
}

/// `fetch [-i] [-m METHOD] [-f FILE] [--] values…`.
fn criterion(words: &[String], base: &Path, r: &mut Resolved) -> Result<(), String> {
    let Some(fetch) = words.first() else {
        return Err("empty ACL".into());
    };
    let mut ci = false;
    let mut method: Option<String> = None;
    let mut values: Vec<String> = Vec::new();
    let mut i = 1;
    while let Some(w) = words.get(i) {
        match w.as_str() {
            "-i" => ci = true,
            "-m" => {
                method = words.get(i + 1).cloned();
                i += 1;
            }
            "-f" => {
                let f = words.get(i + 1).ok_or("-f needs a file")?;
                values.extend(read_list(base, f)?.into_iter().map(|(k, _)| k));
                i += 1;
            }
            "-n" | "-u" => {}
            "--" => {
                values.extend(words.get(i + 1..).unwrap_or_default().iter().cloned());
                break;
            }
            v => values.push(v.to_string()),
        }
        i += 1;
    }
    let f = fetch.to_ascii_lowercase();
    let (base_fetch, convs) = match f.split_once(',') {
        Some((b, c)) => (b.to_string(), c.to_string()),
        None => (f.clone(), String::new()),
    };
    if !convs.is_empty() && convs != "lower" {
        return Err(format!("converters `{convs}` are not translated"));
    }
    let suffix_method = |prefix: &str| -> Option<&'static str> {
        let rest = base_fetch.strip_prefix(prefix)?;
        Some(match rest {
            "(host)" | "(host,-1)" | "(host,1)" => "str",
            "_beg(host)" => "beg",
            "_end(host)" => "end",
            "_dom(host)" => "dom",
            "_sub(host)" => "sub",
            "_reg(host)" => "reg",
            _ => return None,
        })
    };
    if let Some(m) = suffix_method("hdr").or_else(|| suffix_method("req.hdr")) {
        let m = method.as_deref().unwrap_or(m);
        if !ci && convs.is_empty() {
            r.approx.push(
                "HAProxy compares this host case-sensitively without -i; fulcrum ignores case"
                    .into(),
            );
        }
        for v in values {
            let v = v.to_ascii_lowercase();
            if v.contains(':') {
                return Err(format!(
                    "host pattern `{v}` with a port: fulcrum matches the name without port"
                ));
            }
            if v.contains('*') {
                return Err(format!(
                    "host pattern `{v}` contains `*`, which HAProxy matches literally"
                ));
            }
            match m {
                "str" => r.atoms.push(Atom::Host(v)),
                "dom" => {
                    let d = v.trim_matches('.').to_string();
                    r.atoms.push(Atom::Host(d.clone()));
                    r.atoms.push(Atom::Host(format!("*.{d}")));
                    r.approx.push(format!("hdr_dom also matches `{d}` in the middle of a name (x.{d}.org); fulcrum only as the whole name or its suffix"));
                }
                "end" => {
                    if let Some(s) = v.strip_prefix('.') {
                        r.atoms.push(Atom::Host(format!("*.{s}")));
                    } else {
                        r.atoms.push(Atom::Host(v.clone()));
                        r.atoms.push(Atom::Host(format!("*.{v}")));
                        r.approx.push(format!(
                            "hdr_end `{v}` also matches `x{v}`; fulcrum matches `{v}` and `*.{v}`"
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "host match `{m}`: fulcrum matches hosts exactly or by `*.suffix` only"
                    ))
                }
            }
        }
        return Ok(());
    }
    let path_m = match base_fetch.as_str() {
        "path_beg" => Some("beg"),
        "url_beg" => Some("url_beg"),
        "path" => Some("str"),
        "path_end" | "path_sub" | "path_reg" | "path_dir" | "path_dom" | "url_sub" | "url_reg" => {
            Some("other")
        }
        _ => None,
    };
    if let Some(pm) = path_m {
        let pm = match (pm, method.as_deref()) {
            (_, Some("beg")) => "beg",
            (p, None) => p,
            _ => "other",
        };
        if pm != "beg" && pm != "url_beg" {
            return Err(format!(
                "`{fetch}` {}: fulcrum routes by path prefix only",
                method.unwrap_or_default()
            ));
        }
        if ci {
            r.approx
                .push("path match with -i: fulcrum compares path prefixes case-sensitively".into());
        }
        if pm == "url_beg" {
            r.approx.push(
                "url_beg is matched against the path (the same for origin-form requests)".into(),
            );
        }
        for v in values {
            if !v.starts_with('/') {
                return Err(format!("path prefix `{v}` does not start with /"));
            }
            r.atoms.push(Atom::Path(v));
        }
        return Ok(());
    }
    match base_fetch.as_str() {
        "ssl_fc" if values.is_empty() => r.atoms.push(Atom::Ssl(true)),
        "always_true" => r.atoms.push(Atom::Bool(true)),
        "always_false" => r.atoms.push(Atom::Bool(false)),
        _ => {
            return Err(format!(
                "fetch `{fetch}` is not translated (fulcrum routes by host and path prefix)"
            ))
        }
    }
    Ok(())
}

/// One fulcrum route (before the backend is attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Host pattern.
    pub host: Option<String>,
    /// Path prefix.
    pub path: Option<String>,
}

/// What a condition becomes on a listener that is TLS (`ssl`) or not.
#[derive(Debug, Default)]
pub struct Routes {
    /// Routes, in order. Empty with `always` false: never matches here.
    pub routes: Vec<RouteMatch>,
    /// The condition is always true on this listener (a catch-all).
    pub always: bool,
    /// Approximations.
    pub approx: Vec<String>,
    /// ACL lines used.
    pub used: Vec<Line>,
}

/// Turn a condition into routes for a listener.
pub fn routes(px: &Px, cond: Option<&Cond>, ssl: bool, base: &Path) -> Result<Routes, String> {
    let mut out = Routes::default();
    let Some(cond) = cond else {
        out.always = true;
        return Ok(out);
    };
    let mut terms = cond.terms.clone();
    if cond.unless {
        // unless A  ==  if !A ; only single tests can be negated into a route-free form.
        match terms.as_slice() {
            [t] if t.len() == 1 => {
                if let Some(x) = terms.first_mut().and_then(|t| t.first_mut()) {
                    x.neg = !x.neg;
                }
            }
            _ => return Err("`unless` with a compound condition is not translated".into()),
        }
    }
    for term in &terms {
        let mut hosts: Option<Vec<String>> = None;
        let mut paths: Option<Vec<String>> = None;
        let mut feasible = true;
        for t in term {
            let (res, used) = resolve(px, &t.acl, base)?;
            out.used.extend(used);
            out.approx.extend(res.approx);
            let all_host = res.atoms.iter().all(|a| matches!(a, Atom::Host(_)));
            let all_path = res.atoms.iter().all(|a| matches!(a, Atom::Path(_)));
            if res.atoms.is_empty() {
                // An ACL without values never matches.
                feasible = t.neg;
                continue;
            }
            if let [Atom::Ssl(b)] | [Atom::Bool(b)] = res.atoms.as_slice() {
                let is_ssl = matches!(res.atoms.first(), Some(Atom::Ssl(_)));
                let val = if is_ssl { *b == ssl } else { *b };
                if val == t.neg {
                    feasible = false;
                }
                continue;
            }
            if t.neg {
                return Err(
                    "negated host or path tests cannot be expressed as fulcrum routes".into(),
                );
            }
            let vals: Vec<String> = res
                .atoms
                .iter()
                .map(|a| match a {
                    Atom::Host(h) | Atom::Path(h) => h.clone(),
                    _ => String::new(),
                })
                .collect();
            let slot = if all_host {
                &mut hosts
            } else if all_path {
                &mut paths
            } else {
                return Err("an ACL mixing host and path tests is not translated".into());
            };
            match slot {
                Some(prev) if *prev != vals => return Err(
                    "two different host (or path) tests in one AND cannot be expressed as routes"
                        .into(),
                ),
                _ => *slot = Some(vals),
            }
        }
        if !feasible {
            continue;
        }
        if hosts.is_none() && paths.is_none() {
            out.always = true;
            break;
        }
        let hs: Vec<Option<String>> = hosts
            .map(|v| v.into_iter().map(Some).collect())
            .unwrap_or(vec![None]);
        let ps: Vec<Option<String>> = paths
            .map(|v| v.into_iter().map(Some).collect())
            .unwrap_or(vec![None]);
        for h in &hs {
            for p in &ps {
                let m = RouteMatch {
                    host: h.clone(),
                    path: p.clone(),
                };
                if !out.routes.contains(&m) {
                    out.routes.push(m);
                }
            }
        }
    }
    out.approx.sort();
    out.approx.dedup();
    Ok(out)
}

/// Routes to backends, the default backend, approximations.
pub type MapRoutes = (Vec<(RouteMatch, String)>, Option<String>, Vec<String>);

/// `%[req.hdr(host),lower,map(FILE[,DEFAULT])]` → (routes to backends, default backend).
pub fn map_rule(expr: &str, base: &Path) -> Result<MapRoutes, String> {
    let inner = expr
        .strip_prefix("%[")
        .and_then(|e| e.strip_suffix(']'))
        .ok_or("dynamic backend names are translated only as %[fetch,map(FILE)]")?;
    let (fetch, rest) = inner
        .split_once(',')
        .ok_or("a dynamic backend without map() is not translated")?;
    let fetch = fetch.to_ascii_lowercase();
    let is_host = matches!(
        fetch.as_str(),
        "req.hdr(host)" | "hdr(host)" | "req.fhdr(host)"
    );
    let is_path = matches!(fetch.as_str(), "path" | "base");
    if !is_host && !is_path {
        return Err(format!(
            "fetch `{fetch}` in a dynamic backend is not translated"
        ));
    }
    let mut rest = rest;
    let mut approx = Vec::new();
    if let Some(r) = rest.strip_prefix("lower,") {
        rest = r;
    } else if is_host {
        approx.push(
            "HAProxy maps the host case-sensitively without `lower`; fulcrum ignores case".into(),
        );
    }
    let open = rest.find('(').ok_or("map converter without arguments")?;
    let conv = rest.get(..open).unwrap_or_default();
    let args = rest
        .get(open + 1..)
        .unwrap_or_default()
        .strip_suffix(')')
        .ok_or("unbalanced map(...)")?;
    let (file, default) = match args.split_once(',') {
        Some((f, d)) => (f, Some(d.to_string())),
        None => (args, None),
    };
    let entries = read_list(base, file)?;
    let mut out = Vec::new();
    for (k, v) in entries {
        let k = if is_host { k.to_ascii_lowercase() } else { k };
        let ms: Vec<RouteMatch> = match (conv, is_host) {
            ("map" | "map_str", true) => vec![RouteMatch {
                host: Some(k),
                path: None,
            }],
            ("map_dom", true) => {
                approx.push("map_dom also matches names in the middle; fulcrum matches the name or its suffix".into());
                vec![
                    RouteMatch {
                        host: Some(k.clone()),
                        path: None,
                    },
                    RouteMatch {
                        host: Some(format!("*.{k}")),
                        path: None,
                    },
                ]
            }
            ("map_end", true) if k.starts_with('.') => {
                vec![RouteMatch {
                    host: Some(format!("*{k}")),
                    path: None,
                }]
            }
            ("map_beg", false) if k.starts_with('/') && fetch == "path" => {
                vec![RouteMatch {
                    host: None,
                    path: Some(k),
                }]
            }
            _ => return Err(format!("`{conv}` on `{fetch}` is not translated")),
        };
        for m in ms {
            out.push((m, v.clone()));
        }
    }
    approx.sort();
    approx.dedup();
    Ok((out, default, approx))
}
