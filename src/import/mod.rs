//! `fulcrum import`: convert an existing haproxy.cfg, keepalived.conf or heartbeat setup
//! (ha.cf + haresources) into a fulcrum configuration, with a report of every directive.
//!
//! The parsers are hand-written: no maintained crate parses HAProxy's, keepalived's or
//! heartbeat's configuration languages, and the import needs the line of every directive
//! for the report and the comments it writes (`# haproxy.cfg:42 server web1 …`).
//! One file per source format (`haproxy*.rs`, `keepalived.rs`, `heartbeat.rs`); the
//! shared pieces are the report ([`report`]) and the TOML writer ([`emit`]).
//!
//! Server hostnames are resolved when importing by default (`--resolve`), which is what
//! HAProxy does at start without a `resolvers` section; `--dns` turns a backend whose only
//! server is a hostname into DNS discovery instead.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod emit;
pub mod haproxy;
mod haproxy_acl;
mod haproxy_be;
mod haproxy_out;
pub mod heartbeat;
pub mod keepalived;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use emit::{Src, Table};
pub use report::{Outcome, Report};

/// Inputs larger than this are refused (real configs are a few KiB).
pub const MAX_INPUT: usize = 4 * 1024 * 1024;

/// What to do with server hostnames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostnames {
    /// Resolve at import time (default; HAProxy resolves once at start too).
    Resolve,
    /// A backend whose only server is a hostname gets `discovery = { dns = … }`.
    Dns,
}

/// Name resolution used for hostnames (injected so tests never touch the network).
pub type Resolver = dyn Fn(&str) -> Option<std::net::IpAddr>;

/// The system resolver (first IPv4 address, else the first one).
pub fn system_resolver(host: &str) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

/// `fulcrum import` arguments.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// haproxy.cfg and/or keepalived.conf (recognised by their content).
    #[arg(required_unless_present = "heartbeat")]
    pub files: Vec<PathBuf>,
    /// heartbeat's ha.cf and haresources.
    #[arg(long, num_args = 2, value_names = ["HA_CF", "HARESOURCES"])]
    pub heartbeat: Vec<PathBuf>,
    /// Write the configuration here (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Exit with status 2 when any directive was not translated or only approximated.
    #[arg(long)]
    pub strict: bool,
    /// Resolve server hostnames now (the default).
    #[arg(long, conflicts_with = "dns")]
    pub resolve: bool,
    /// Turn a backend's single hostname server into DNS discovery.
    #[arg(long)]
    pub dns: bool,
}

/// One input, already read.
pub struct Input {
    /// Label used in the report and comments (the path as given).
    pub label: String,
    /// Its folder (map files, certificates).
    pub dir: PathBuf,
    /// Content.
    pub text: String,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be used at all.
    #[error("{0}")]
    Input(String),
    /// A config the source program itself would refuse.
    #[error("{0}")]
    Parse(#[from] haproxy::ParseError),
}

/// Read an input: refuses binary and huge files.
pub fn read_input(path: &Path) -> Result<Input, ImportError> {
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ImportError::Input(format!("{label}: {e}")))?;
    if meta.len() > MAX_INPUT as u64 {
        return Err(ImportError::Input(format!(
            "{label}: {} bytes is too large for a configuration file (limit {} MiB)",
            meta.len(),
            MAX_INPUT / 1024 / 1024
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| ImportError::Input(format!("{label}: {e}")))?;
    let text = check_text(&label, bytes)?;
    Ok(Input {
        label,
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        text,
    })
}

/// Refuse binary or oversized content.
pub fn check_text(label: &str, bytes: Vec<u8>) -> Result<String, ImportError> {
    if bytes.len() > MAX_INPUT {
        return Err(ImportError::Input(format!(
            "{label}: too large for a configuration file (limit {} MiB)",
            MAX_INPUT / 1024 / 1024
        )));
    }
    if bytes.contains(&0) {
        return Err(ImportError::Input(format!(
            "{label}: binary data (NUL bytes): not a configuration file"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        ImportError::Input(format!(
            "{label}: not UTF-8 text (byte {}): not a configuration file",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// What a text file looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// haproxy.cfg.
    Haproxy,
    /// keepalived.conf.
    Keepalived,
}

/// Guess the format from section keywords; None when neither.
pub fn sniff(text: &str) -> Option<Format> {
    let mut ha = 0;
    let mut ka = 0;
    for l in text.lines().take(5000) {
        let mut it = l.split_whitespace();
        let w = it.next().unwrap_or("");
        // TOML keys such as `backend = "web"` are not section headers.
        if it.next() == Some("=") || l.trim_start().starts_with('[') {
            continue;
        }
        match w {
            "global" | "defaults" | "frontend" | "backend" | "listen" => ha += 1,
            "vrrp_instance" | "vrrp_script" | "global_defs" | "virtual_server"
            | "vrrp_sync_group" => ka += 1,
            _ => {}
        }
    }
    if ka > 0 && ka >= ha {
        Some(Format::Keepalived)
    } else if ha > 0 {
        Some(Format::Haproxy)
    } else {
        None
    }
}

/// The result of an import.
pub struct Imported {
    /// The fulcrum configuration text.
    pub toml: String,
    /// What happened to every directive.
    pub report: Report,
}

/// Convert HAProxy text (with the folder map files are read from).
pub fn import_haproxy(
    input: &Input,
    hostnames: Hostnames,
    resolver: &Resolver,
    rep: &mut Report,
    tables: &mut Vec<Table>,
) -> Result<(), ImportError> {
    let parsed = haproxy::parse(&input.text, &input.label, rep)?;
    let proxies = haproxy::proxies(&parsed, rep)?;
    let mut admin: Option<(String, Src)> = None;
    let (global_maxconn, crt_base) = haproxy_be::global(&parsed.global, rep, tables, &mut admin);
    let mut cx = haproxy_out::Ctx {
        base: &input.dir,
        hostnames,
        resolver,
        rep,
        global_maxconn,
        crt_base,
    };
    let mut fe = Vec::new();
    let mut be = Vec::new();
    let mut stats_admin = None;
    for px in &proxies {
        let mut a = None;
        if haproxy_be::stats_only(px, cx.rep, &mut a) {
            stats_admin = stats_admin.or(a);
            continue;
        }
        if let Some(a) = a {
            admin = admin.or(Some(a));
        }
        haproxy_out::frontend(px, &mut cx, &mut fe);
        haproxy_be::backend(px, &mut cx, &mut be);
    }
    // Names a frontend uses but no section defines: HAProxy refuses such a config.
    let known: Vec<String> = be.iter().map(|t| t.header.clone()).collect();
    for t in &fe {
        let targets = t
            .kvs
            .iter()
            .filter(|k| k.key == "backend")
            .map(|k| k.value.clone())
            .chain(
                t.arrays
                    .iter()
                    .filter(|(k, _)| k == "routes")
                    .flat_map(|(_, v)| {
                        v.iter().filter_map(|(e, _)| {
                            e.rsplit_once("backend = ")
                                .map(|(_, b)| b.trim_end_matches(" }").to_string())
                        })
                    }),
            );
        for b in targets {
            let name: String = toml::from_str::<toml::Value>(&format!("x = {b}"))
                .ok()
                .and_then(|v| v.get("x").and_then(|x| x.as_str()).map(String::from))
                .unwrap_or_default();
            if !known.contains(&format!("backends.{}", emit::key(&name))) {
                return Err(ImportError::Input(format!(
                    "{}: {}: unable to find required backend '{name}' (HAProxy refuses this too)",
                    input.label, t.header
                )));
            }
        }
    }
    if let Some((mut addr, s)) = stats_admin.or(admin) {
        // The admin listener must not take a port a frontend listens on.
        let used = |a: &str| {
            let port = a.rsplit_once(':').map(|(_, p)| format!(":{p}\""));
            fe.iter().any(|t| {
                t.kvs.iter().any(|k| {
                    k.key == "listen" && port.as_ref().is_some_and(|p| k.value.contains(p.as_str()))
                })
            })
        };
        let mut port = 9000;
        while used(&addr) && port < 9100 {
            port += 1;
            addr = format!("127.0.0.1:{port}");
        }
        let mut t = Table::new("admin".into(), s);
        t.str("listen", &addr, Src::default());
        tables.push(t);
    }
    tables.extend(fe);
    tables.extend(be);
    Ok(())
}

/// Run a whole import from already-read inputs.
pub fn import(
    haproxy: Option<&Input>,
    keepalived: Option<&Input>,
    heartbeat: Option<(&Input, &Input)>,
    hostnames: Hostnames,
    resolver: &Resolver,
) -> Result<Imported, ImportError> {
    let mut rep = Report::default();
    let mut tables = Vec::new();
    let mut header = vec!["fulcrum configuration written by `fulcrum import`".to_string()];
    if let Some(h) = haproxy {
        header.push(format!("from {}", h.label));
        import_haproxy(h, hostnames, resolver, &mut rep, &mut tables)?;
    }
    if let Some(k) = keepalived {
        header.push(format!("from {}", k.label));
        keepalived::import(k, &mut rep, &mut tables);
    }
    if let Some((cf, res)) = heartbeat {
        header.push(format!("from {} and {}", cf.label, res.label));
        heartbeat::import(cf, res, &mut rep, &mut tables);
    }
    header.push(
        "comments name the source line each setting came from; run `fulcrum check --config` on it"
            .into(),
    );
    if haproxy.is_some() {
        rep.notes.push(match hostnames {
        Hostnames::Resolve => "server hostnames were resolved now (--resolve, the default); --dns keeps a lone hostname server as DNS discovery".into(),
        Hostnames::Dns => "a backend whose only server is a hostname became DNS discovery (--dns)".into(),
        });
    }
    Ok(Imported {
        toml: emit::render(&header, &tables),
        report: rep,
    })
}

/// `fulcrum import …`: exit 0, 1 on error, 2 with `--strict` when something was dropped.
pub fn main(args: ImportArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fulcrum import: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ImportArgs) -> Result<ExitCode, ImportError> {
    let mut ha = None;
    let mut ka = None;
    for f in &args.files {
        let input = read_input(f)?;
        match sniff(&input.text) {
            Some(Format::Haproxy) if ha.is_none() => ha = Some(input),
            Some(Format::Keepalived) if ka.is_none() => ka = Some(input),
            Some(_) => return Err(ImportError::Input(format!("{}: a second file of the same kind", input.label))),
            None => return Err(ImportError::Input(format!("{}: neither a haproxy.cfg (global/defaults/frontend/backend/listen sections) nor a keepalived.conf (vrrp_instance)", input.label))),
        }
    }
    let hb = match args.heartbeat.as_slice() {
        [cf, res] => Some((read_input(cf)?, read_input(res)?)),
        _ => None,
    };
    let hostnames = if args.dns {
        Hostnames::Dns
    } else {
        Hostnames::Resolve
    };
    let out = import(
        ha.as_ref(),
        ka.as_ref(),
        hb.as_ref().map(|(a, b)| (a, b)),
        hostnames,
        &system_resolver,
    )?;
    // The output must be a valid fulcrum config: check it the way `fulcrum check` does.
    let label = args
        .output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<output>".into());
    let valid = crate::config::parse_str(&out.toml, &label);
    match &args.output {
        Some(p) => std::fs::write(p, &out.toml)
            .map_err(|e| ImportError::Input(format!("{}: {e}", p.display())))?,
        None => print!("{}", out.toml),
    }
    eprintln!("{}", out.report);
    if let Err(errors) = valid {
        eprintln!(
            "fulcrum import: the written configuration does not pass `fulcrum check`:\n{errors}"
        );
        return Ok(ExitCode::FAILURE);
    }
    if args.strict && out.report.dropped() > 0 {
        eprintln!(
            "fulcrum import: --strict: {} directive(s) not translated or approximated",
            out.report.dropped()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// A hint for `fulcrum check` when the file is an HAProxy or keepalived config.
pub fn foreign_hint(text: &str, path: &str) -> Option<String> {
    let what = match sniff(text)? {
        Format::Haproxy => "an HAProxy configuration",
        Format::Keepalived => "a keepalived configuration",
    };
    Some(format!("this looks like {what}, not fulcrum TOML: convert it with `fulcrum import {path} -o fulcrum.toml`"))
}

#[cfg(test)]
mod tests;
