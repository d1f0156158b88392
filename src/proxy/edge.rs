//! Per-request edge policy: the client address behind trusted proxies,
//! request ids, header rules with variables, and sticky-session cookies.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::types::{Cidr, HeaderRules};

/// The client's address: the peer, or — when the peer is a trusted proxy —
/// the right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    client_ip_from(
        peer,
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes()),
        trusted,
    )
}

/// [`client_ip`] over the raw `X-Forwarded-For` values, in arrival order.
pub fn client_ip_from<'a>(
    peer: IpAddr,
    xff: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for v in xff.rev() {
        let Ok(s) = std::str::from_utf8(v) else {
            return client;
        };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// The key a rate limiter counts a request under: the value of the
/// configured header (via `header`), else the client address.
pub fn rate_key<'a>(
    key: &crate::config::types::RateKey,
    client_ip: IpAddr,
    header: impl FnOnce(&str) -> Option<&'a [u8]>,
) -> Vec<u8> {
    let by_header = match key {
        crate::config::types::RateKey::ClientIp => None,
        crate::config::types::RateKey::Header(name) => header(name),
    };
    match (by_header, client_ip) {
        (Some(v), _) => v.to_vec(),
        (None, IpAddr::V4(v4)) => v4.octets().to_vec(),
        (None, IpAddr::V6(v6)) => v6.octets().to_vec(),
    }
}

/// A new random request id: 32 hex digits.
pub fn new_request_id() -> String {
    let mut b = [0u8; 32];
    write_request_id(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// Fill `out` with a new random request id (32 lowercase hex digits).
pub fn write_request_id(out: &mut [u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    for (i, o) in out.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let shift = 60 - 4 * (i % 16);
        *o = HEX[((word >> shift) & 0xf) as usize];
    }
}

/// Values the header-rule variables expand to.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    pub frontend: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
}

fn expand(template: &str, v: &Vars<'_>) -> String {
    if !template.contains('{') {
        return template.to_string();
    }
    template
        .replace("{client_ip}", &v.client_ip.to_string())
        .replace("{request_id}", v.request_id)
        .replace("{frontend}", v.frontend)
        .replace("{backend}", v.backend)
        .replace("{server}", v.server)
}

/// Apply header rules: remove, then set, then add.
pub fn apply_rules(h: &mut HeaderMap, rules: &HeaderRules, vars: &Vars<'_>) {
    for name in &rules.remove {
        h.remove(name.as_str());
    }
    for (name, value) in &rules.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&expand(value, vars)),
        ) {
            h.insert(n, v);
        }
    }
    for (name, value) in &rules.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&expand(value, vars)),
        ) {
            h.append(n, v);
        }
    }
}

pub use crate::routing::sticky_id;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn find_cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Remove cookie `name` from the request (HAProxy `indirect`: the server never sees it).
pub fn strip_cookie(h: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map(|(k, _)| k) != Some(name))
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.5"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &[]),
            peer,
            "no trusted proxies: the peer"
        );
        let t = [cidr("10.0.0.0/8")];
        assert_eq!(
            client_ip(peer, &h, &t),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_ip(untrusted, &h, &t),
            untrusted,
            "an untrusted peer cannot claim an address"
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("garbage, 10.0.0.5"),
        );
        assert_eq!(
            client_ip(peer, &h, &t),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn rules_and_variables() {
        let mut h = HeaderMap::new();
        h.insert("x-powered-by", HeaderValue::from_static("php"));
        h.insert("x-env", HeaderValue::from_static("old"));
        let rules = HeaderRules {
            remove: vec!["x-powered-by".into()],
            set: vec![
                ("x-env".into(), "prod".into()),
                ("x-client".into(), "{client_ip} via {frontend}".into()),
            ],
            add: vec![("x-trace".into(), "{request_id}@{server}".into())],
        };
        let vars = Vars {
            client_ip: "127.0.0.1".parse().unwrap(),
            request_id: "abc",
            frontend: "www",
            backend: "web",
            server: "web1",
        };
        apply_rules(&mut h, &rules, &vars);
        assert!(h.get("x-powered-by").is_none());
        assert_eq!(h.get("x-env").unwrap(), "prod");
        assert_eq!(h.get("x-client").unwrap(), "127.0.0.1 via www");
        assert_eq!(h.get("x-trace").unwrap(), "abc@web1");
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=abc; b=2"),
        );
        assert_eq!(find_cookie(&h, "SRV"), Some("abc"));
        assert_eq!(find_cookie(&h, "zzz"), None);
        strip_cookie(&mut h, "SRV");
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("SRV=abc"));
        strip_cookie(&mut only, "SRV");
        assert!(only.get(header::COOKIE).is_none());
        assert_eq!(sticky_id("web", "web1"), sticky_id("web", "web1"));
        assert_ne!(sticky_id("web", "web1"), sticky_id("web", "web2"));
        assert_eq!(new_request_id().len(), 32);
    }
}
