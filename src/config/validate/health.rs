//! Validation of `health = {...}`: check kinds, rise/fall, intervals, expected answers, secrets.

use super::*;

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

pub(super) fn build_health(cx: &mut Ctx<'_>, h: Option<&S<RawHealth>>) -> HealthConfig {
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
pub(super) fn build_tcp_expect(cx: &mut Ctx<'_>, r: &RawHealth) -> Option<CheckKind> {
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

pub(super) fn bytes_key(
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

pub(super) fn decode_hex(s: &str) -> Option<Vec<u8>> {
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

pub(super) fn build_secret(cx: &mut Ctx<'_>, r: &RawHealth) -> Option<Secret> {
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

pub(super) fn parse_status(cx: &mut Ctx<'_>, v: &S<toml::Value>) -> StatusRange {
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
