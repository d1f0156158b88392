//! Hop-by-hop header removal (RFC 9110 §7.6.1) and forwarded headers.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers a client cannot make us drop by naming them in `Connection`: losing
/// them would change how the message is framed or routed, or hide the client.
fn protected(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-request-id"
    )
}

/// Remove hop-by-hop headers, including those listed in `Connection`.
/// When `keep_upgrade` is true (a protocol upgrade is being relayed), the
/// `Connection: upgrade` and `Upgrade` headers are kept.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = h.get(header::CONNECTION) {
        if conn.as_bytes().contains(&b',') || !is_common_connection_token(conn.as_bytes()) {
            let listed: Vec<HeaderName> = conn
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| !protected(n.as_str()))
                .collect();
            for n in listed {
                if keep_upgrade && n == header::UPGRADE {
                    continue;
                }
                h.remove(n);
            }
        }
    }
    let upgrade = if keep_upgrade {
        h.remove(header::UPGRADE)
    } else {
        None
    };
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if let Some(u) = upgrade {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `keep-alive` and `close` name no header, so they need no scan.
fn is_common_connection_token(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

/// True when the request asks for a protocol upgrade (WebSocket). The h2c
/// upgrade (RFC 7540 §3.2, deprecated by RFC 9113 §3.1) is declined: the
/// request is served as HTTP/1.1 and its `Upgrade` is not forwarded.
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .is_some_and(|u| !u.as_bytes().eq_ignore_ascii_case(b"h2c"))
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Append the client to `X-Forwarded-For`, set `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the host the client asked for).
pub fn add_forwarded(
    h: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut ip_buf = [0u8; 64];
    let ip = fmt_ip(client, &mut ip_buf);
    let value = match h.get(&xff) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v).ok()
        }
        _ => HeaderValue::from_bytes(ip).ok(),
    };
    if let Some(v) = value {
        h.insert(xff, v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(host) = host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
}

/// `ip` as text in `buf` (no allocation).
pub(crate) fn fmt_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // By hand: once per forwarded request, and `fmt` is ~5x slower.
        let mut n = 0;
        for (i, o) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                buf[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                buf[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + o % 10;
            n += 1;
        }
        return &buf[..n];
    }
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_ip_matches_display() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "::1",
            "fe80::1:2",
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        ips.extend((0..1000).map(|_| IpAddr::from(rng.u32(..).to_be_bytes())));
        for ip in ips {
            let mut b = [0u8; 64];
            assert_eq!(fmt_ip(ip, &mut b), ip.to_string().as_bytes());
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_standard_and_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
    }

    #[test]
    fn connection_cannot_strip_protected_headers() {
        let mut h = map(&[
            ("connection", "x-forwarded-for, host, content-length"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "a"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.contains_key("x-forwarded-for"));
        assert!(h.contains_key("host"));
        assert!(h.contains_key("content-length"));
    }

    #[test]
    fn keeps_upgrade_when_relaying() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_appends() {
        let mut h = map(&[("x-forwarded-for", "1.2.3.4")]);
        let host = HeaderValue::from_static("example.com");
        add_forwarded(&mut h, "127.0.0.9".parse().unwrap(), "http", Some(&host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 127.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "::1".parse().unwrap(), "http", None);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
    }
}
