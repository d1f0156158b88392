//! The directives of HAProxy proxy sections (and `defaults`), applied one line at a time
//! to a [`Px`]. Lines whose outcome depends on how they are emitted (binds, timeouts,
//! servers, rules) are reported by the emitters in `haproxy_out.rs` / `haproxy_be.rs`.

use super::super::haproxy_acl::parse_cond;
use super::super::report::{Outcome, Report};
use super::{time, HdrRule, HttpChk, Line, ParseError, Px, Rule, Set};

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

pub(super) fn apply(px: &mut Px, l: &Line, rep: &mut Report) -> Result<(), ParseError> {
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
            match super::super::haproxy_out::parse_bind(l) {
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
                "if" | "unless" => {
                    Some(parse_cond(l.words.get(2..).unwrap_or_default()).map_err(|m| perr(l, m))?)
                }
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
            px.balance = set(l.words.get(1..).unwrap_or_default().join(" "), l);
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
            let s = super::super::haproxy_out::parse_server(l, &px.default_server)
                .map_err(|m| perr(l, m))?;
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
            let (method, uri, host) = match args {
                [] => ("OPTIONS".to_string(), "/".to_string(), None),
                [uri] => ("OPTIONS".to_string(), uri.clone(), None),
                [method, uri, ..] => {
                    let (method, uri) = (method.clone(), uri.clone());
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
    let ssl = match ssl_only(l.words.get(i..).unwrap_or_default()) {
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
        "set-header" => ("set", l.w(2), Some(l.w(3)), 4),
        "add-header" => ("add", l.w(2), Some(l.w(3)), 4),
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
        let (head, tail) = rest.split_at_checked(i).unwrap_or((rest, ""));
        out.push_str(head);
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
