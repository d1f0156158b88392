//! `[log]` and `[log.syslog]`: raw → typed, every error at file:line:col.

use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::raw::{RawLog, RawSyslog};
use super::types::{
    AccessLog, DiagFormat, DiagTarget, LogConfig, LogTarget, SyslogConfig, SyslogFormat,
};

/// Smallest and largest `[log] buffer`.
const MIN_BUFFER: u64 = 64 * 1024;
const MAX_BUFFER: u64 = 1 << 30;

struct Cx<'a, 'b> {
    loc: &'a Locator<'b>,
    errors: &'a mut Vec<ConfigError>,
}

impl Cx<'_, '_> {
    fn err<T>(&mut self, at: &Spanned<T>, msg: String, hint: &str) {
        self.errors
            .push(self.loc.error(at.span().start, msg, Some(hint.to_string())));
    }

    /// One of `choices` (the first is the default when absent).
    fn choice(
        &mut self,
        v: Option<&Spanned<String>>,
        what: &str,
        choices: &[&'static str],
    ) -> &'static str {
        let Some(v) = v else { return choices[0] };
        match choices.iter().find(|c| **c == v.get_ref().as_str()) {
            Some(c) => c,
            None => {
                let list: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                self.err(
                    v,
                    format!("unknown {what} `{}`", v.get_ref()),
                    &format!("use {}", list.join(", ")),
                );
                choices[0]
            }
        }
    }
}

/// Build `[log]`; problems go to `errors`.
pub(super) fn build_log(
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
    raw: Option<&RawLog>,
) -> LogConfig {
    let mut cx = Cx { loc, errors };
    let mut cfg = LogConfig::default();
    let Some(raw) = raw else { return cfg };
    cfg.access = match cx.choice(
        raw.access.as_ref(),
        "access log format",
        &["text", "json", "off"],
    ) {
        "json" => AccessLog::Json,
        "off" => AccessLog::Off,
        _ => AccessLog::Text,
    };
    let syslog = build_syslog(&mut cx, raw.syslog.as_ref());
    cfg.target = match cx.choice(
        raw.target.as_ref(),
        "access log target",
        &["stdout", "stderr", "syslog", "journald"],
    ) {
        "stderr" => LogTarget::Stderr,
        "syslog" => LogTarget::Syslog(syslog.clone()),
        "journald" => LogTarget::Journald,
        _ => LogTarget::Stdout,
    };
    cfg.diagnostics = match cx.choice(
        raw.diagnostics.as_ref(),
        "diagnostics target",
        &["stderr", "stdout", "syslog", "journald"],
    ) {
        "stdout" => DiagTarget::Stdout,
        "syslog" => DiagTarget::Syslog(syslog),
        "journald" => DiagTarget::Journald,
        _ => DiagTarget::Stderr,
    };
    cfg.diagnostics_format = match cx.choice(
        raw.diagnostics_format.as_ref(),
        "diagnostics format",
        &["text", "json"],
    ) {
        "json" => DiagFormat::Json,
        _ => DiagFormat::Text,
    };
    if let Some(b) = &raw.buffer {
        let parsed = match b.get_ref() {
            toml::Value::Integer(n) => u64::try_from(*n).ok(),
            toml::Value::String(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if (MIN_BUFFER..=MAX_BUFFER).contains(&n) => cfg.buffer = n as usize,
            Some(_) => cx.err(
                b,
                "`buffer` is out of range".to_string(),
                "use a size from \"64KiB\" to \"1GiB\"",
            ),
            None => cx.err(
                b,
                format!("bad size `{}`", b.get_ref()),
                "use bytes or a size such as \"4MiB\", \"512KiB\", \"1GiB\"",
            ),
        }
    }
    cfg
}

fn build_syslog(cx: &mut Cx<'_, '_>, raw: Option<&Spanned<RawSyslog>>) -> SyslogConfig {
    let mut cfg = SyslogConfig {
        address: "/dev/log".to_string(),
        facility: "local0".to_string(),
        format: SyslogFormat::Rfc3164,
        tag: "fulcrum".to_string(),
    };
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return cfg;
    };
    if let Some(a) = &raw.address {
        let s = a.get_ref();
        let ok = s.starts_with('/') || s.parse::<std::net::SocketAddr>().is_ok();
        if ok {
            cfg.address = s.clone();
        } else {
            cx.err(
                a,
                format!("bad syslog address `{s}`"),
                "use a Unix socket path such as \"/dev/log\" or IP:PORT for UDP, e.g. \"127.0.0.1:514\"",
            );
        }
    }
    if let Some(f) = &raw.facility {
        let name = f.get_ref().to_ascii_lowercase();
        if name.parse::<syslog::Facility>().is_ok() {
            cfg.facility = name;
        } else {
            cx.err(
                f,
                format!("unknown syslog facility `{}`", f.get_ref()),
                "use kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp or local0..local7",
            );
        }
    }
    cfg.format = match cx.choice(
        raw.format.as_ref(),
        "syslog format",
        &["rfc3164", "rfc5424"],
    ) {
        "rfc5424" => SyslogFormat::Rfc5424,
        _ => SyslogFormat::Rfc3164,
    };
    if let Some(t) = &raw.tag {
        let s = t.get_ref();
        if !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|c| c.is_ascii_graphic() && c != b'[' && c != b':')
        {
            cfg.tag = s.clone();
        } else {
            cx.err(
                t,
                format!("bad syslog tag `{s}`"),
                "use 1 to 32 printable ASCII characters, without spaces, '[' or ':'",
            );
        }
    }
    cfg
}

/// `"4MiB"`, `"512KiB"`, `"1GiB"`, `"65536"` (also `KB`/`MB`/`GB`/`k`/`M`/`G`
/// as binary multiples, as HAProxy's `bufsize` users write them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("4 MiB"), Some(4 << 20));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("4XB"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn log_section() {
        let cfg = crate::config::parse_str(
            "[log]\naccess = \"json\"\ntarget = \"syslog\"\nbuffer = \"8MiB\"\ndiagnostics_format = \"json\"\n[log.syslog]\naddress = \"127.0.0.1:5514\"\nfacility = \"local3\"\nformat = \"rfc5424\"\n",
            "t.toml",
        )
        .map_err(|e| e.to_string());
        let Ok(cfg) = cfg else { panic!("{cfg:?}") };
        assert_eq!(cfg.log.access, AccessLog::Json);
        assert_eq!(cfg.log.buffer, 8 << 20);
        assert_eq!(cfg.log.diagnostics_format, DiagFormat::Json);
        let LogTarget::Syslog(s) = &cfg.log.target else {
            panic!("{:?}", cfg.log.target)
        };
        assert_eq!(s.address, "127.0.0.1:5514");
        assert_eq!(s.facility, "local3");
        assert_eq!(s.format, SyslogFormat::Rfc5424);
    }

    #[test]
    fn log_errors_have_positions() {
        let e = crate::config::parse_str(
            "[log]\ntarget = \"file\"\nbuffer = \"1KiB\"\n[log.syslog]\naddress = \"nowhere\"\nfacility = \"local9\"\n",
            "t.toml",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("t.toml:2:10: error: unknown access log target `file`"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:3:10: error: `buffer` is out of range"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:5:11: error: bad syslog address `nowhere`"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:6:12: error: unknown syslog facility `local9`"),
            "{e}"
        );
    }
}
