//! Validation of the etcd keys: `discovery = { etcd = { … } }` in a backend
//! and `[cluster] store = { etcd = { … } }`. Same rules as every other key:
//! every problem reported with file:line:col and a hint.

use std::path::PathBuf;

use super::raw::{RawDiscovery, RawEtcd, RawStore, S};
use super::types::{EtcdConfig, EtcdTls};
use super::validate::Ctx;

/// Default prefix of the cluster store's keys.
pub const STORE_PREFIX: &str = "/fulcrum/state/";

/// `HOST:PORT` with an optional `http://` / `https://` in front.
fn endpoint_ok(v: &str) -> bool {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .unwrap_or(v);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.chars().any(char::is_whitespace) {
        return false;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn build_etcd(cx: &mut Ctx<'_>, e: &S<RawEtcd>, default_prefix: &str) -> Option<EtcdConfig> {
    let r = e.get_ref();
    let before = cx.error_count();
    if let Some(k) = &r.key {
        cx.err(
            k,
            "`key` applies to `[cluster] config` only; discovery and the store use `prefix`",
            None,
        );
    }
    if r.endpoints.is_empty() {
        cx.err(
            e,
            "etcd needs `endpoints`",
            Some("e.g. endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]"),
        );
    }
    let mut endpoints = Vec::new();
    for ep in &r.endpoints {
        if endpoint_ok(ep.get_ref()) {
            endpoints.push(ep.get_ref().trim_end_matches('/').to_string());
        } else {
            cx.err(
                ep,
                format!("bad etcd endpoint `{}`", ep.get_ref()),
                Some("write HOST:PORT or http(s)://HOST:PORT, e.g. \"http://10.0.0.1:2379\""),
            );
        }
    }
    let prefix = match &r.prefix {
        Some(p) => {
            let v = p.get_ref();
            if !v.starts_with('/') || !v.ends_with('/') || v.len() < 2 {
                cx.err(
                    p,
                    format!("bad etcd prefix `{v}`"),
                    Some("start and end it with `/`, e.g. \"/fulcrum/backends/web/\""),
                );
            }
            v.clone()
        }
        None => default_prefix.to_string(),
    };
    match (&r.username, &r.password_file) {
        (Some(u), None) => cx.err(
            u,
            "an etcd `username` needs a `password_file`",
            Some("e.g. password_file = \"/etc/fulcrum/etcd.password\""),
        ),
        (None, Some(p)) => cx.err(p, "`password_file` needs a `username`", None),
        _ => {}
    }
    if let Some(u) = &r.username {
        if u.get_ref().is_empty() {
            cx.err(u, "empty etcd `username`", None);
        }
    }
    let tls = r.tls.as_ref().map(|t| {
        let tr = t.get_ref();
        if tr.cert.is_some() != tr.key.is_some() {
            cx.err(
                t,
                "an etcd client certificate needs both `cert` and `key`",
                Some("e.g. tls = { ca = \"ca.pem\", cert = \"client.pem\", key = \"client-key.pem\" }"),
            );
        }
        let path = |v: &Option<S<String>>| v.as_ref().map(|s| PathBuf::from(s.get_ref()));
        EtcdTls {
            ca: path(&tr.ca),
            cert: path(&tr.cert),
            key: path(&tr.key),
        }
    });
    (cx.error_count() == before).then(|| EtcdConfig {
        endpoints,
        prefix,
        username: r.username.as_ref().map(|u| u.get_ref().clone()),
        password_file: r.password_file.as_ref().map(|p| PathBuf::from(p.get_ref())),
        tls,
    })
}

/// `discovery = { etcd = { … } }`. An empty prefix is filled in by the caller
/// with `/fulcrum/backends/BACKEND/`.
pub(super) fn build_discovery(
    cx: &mut Ctx<'_>,
    d: &RawDiscovery,
    e: &S<RawEtcd>,
) -> Option<EtcdConfig> {
    for (present, key) in [
        (d.port.is_some(), "port"),
        (d.interval.is_some(), "interval"),
        (d.resolver.is_some(), "resolver"),
        (d.poll_interval.is_some(), "poll_interval"),
    ] {
        if present {
            cx.err(
                e,
                format!("`{key}` does not apply to etcd discovery (it watches)"),
                None,
            );
        }
    }
    build_etcd(cx, e, "")
}

/// `[cluster] store = { etcd = { … } }` (prefix default `/fulcrum/state/`).
pub(super) fn build_store(cx: &mut Ctx<'_>, s: &S<RawStore>) -> Option<EtcdConfig> {
    match &s.get_ref().etcd {
        Some(e) => build_etcd(cx, e, STORE_PREFIX),
        None => {
            cx.err(
                s,
                "`store` needs `etcd`",
                Some("e.g. store = { etcd = { endpoints = [\"http://10.0.0.1:2379\"] } }"),
            );
            None
        }
    }
}

/// `[cluster] config = { etcd = { endpoints, key, … } }`: the key goes in
/// `prefix` of the result.
pub(super) fn build_config_source(cx: &mut Ctx<'_>, s: &S<RawStore>) -> Option<EtcdConfig> {
    let Some(e) = &s.get_ref().etcd else {
        cx.err(
            s,
            "`config` needs `etcd`",
            Some("e.g. config = { etcd = { endpoints = [\"http://10.0.0.1:2379\"], key = \"/fulcrum/config/lb\" } }"),
        );
        return None;
    };
    let r = e.get_ref();
    if let Some(p) = &r.prefix {
        cx.err(
            p,
            "`[cluster] config` reads one `key`, not a `prefix`",
            None,
        );
    }
    let Some(key) = &r.key else {
        cx.err(
            e,
            "`[cluster] config` needs the `key` holding the configuration",
            Some("e.g. key = \"/fulcrum/config/lb\""),
        );
        return None;
    };
    if !key.get_ref().starts_with('/') || key.get_ref().ends_with('/') {
        cx.err(
            key,
            format!("bad etcd key `{}`", key.get_ref()),
            Some("e.g. \"/fulcrum/config/lb\""),
        );
    }
    // Same checks as the others, with `key` set aside.
    let raw = RawEtcd {
        endpoints: r.endpoints.clone(),
        prefix: None,
        key: None,
        username: r.username.clone(),
        password_file: r.password_file.clone(),
        tls: r.tls.clone(),
    };
    let spanned = S::new(e.span(), raw);
    let mut cfg = build_etcd(cx, &spanned, "/")?;
    cfg.prefix = key.get_ref().clone();
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::endpoint_ok;

    #[test]
    fn endpoints() {
        for ok in [
            "127.0.0.1:2379",
            "http://h:1",
            "https://etcd.internal:2379/",
        ] {
            assert!(endpoint_ok(ok), "{ok}");
        }
        for bad in ["", "h", "http://h", "h:0", "h:99999", "http://h:1/x", ":1"] {
            assert!(!endpoint_ok(bad), "{bad}");
        }
    }
}
