//! Routes found by index, not by scan.
//!
//! A frontend's `routes` are tried in order and the first whose host and
//! path both match wins (the config's contract). Scanning them costs a
//! comparison per route per request — 10 000 exact-host routes made a
//! request to the last one five times dearer than one to the first. The
//! index answers the same question in time independent of the number of
//! routes, built once per snapshot:
//!
//! * routes without a host go in one bucket that every request consults;
//! * exact hosts in a hash map from the lower-case name to a bucket;
//! * wildcards (`*.example.com`, stored as the suffix `.example.com`) in a
//!   hash map from the suffix: a host is looked up by each of its label
//!   suffixes (`a.b.example.com` → `.b.example.com`, `.example.com`, `.com`),
//!   as many lookups as it has dots, whatever the number of wildcards;
//! * inside a bucket, path prefixes in a byte trie: walking the request's
//!   path through it visits every prefix that some route of the bucket has.
//!
//! **First match is kept.** Each candidate carries its route's position;
//! every bucket yields the smallest position among its routes whose path
//! prefix matches, and the smallest of those wins. So position decides among
//! all candidates, never specificity: an earlier `*.example.com` route beats
//! a later `api.example.com` one, and an earlier `/` prefix beats a later
//! `/api` one, exactly as the linear scan did (and as HAProxy's
//! `use_backend` lines are evaluated in order). Two rules never tie, since
//! no two routes share a position.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::types::HostMatch;

/// Buckets with at most this many routes are scanned rather than walked as
/// a trie: a few `starts_with` are cheaper than the trie's pointer chasing.
const SCAN_MAX: usize = 8;

/// The index over one frontend's routes (positions into its route list).
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Routes without a host condition.
    any_host: Bucket,
    /// Exact hosts, lower-case, without a trailing dot.
    exact: HashMap<Box<str>, Bucket>,
    /// Wildcard suffixes (`.example.com`), lower-case.
    suffix: HashMap<Box<str>, Bucket>,
    /// The longest suffix key (no host tail longer than it is looked up).
    max_suffix: usize,
}

impl RouteIndex {
    /// Index routes given, in order, as (host condition, path prefix).
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (Option<&'a HostMatch>, Option<&'a str>)>,
    ) -> Self {
        let mut any: Vec<(u32, &str)> = Vec::new();
        let mut exact: HashMap<Box<str>, Vec<(u32, &str)>> = HashMap::new();
        let mut suffix: HashMap<Box<str>, Vec<(u32, &str)>> = HashMap::new();
        for (i, (host, prefix)) in routes.into_iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            let entry = (i, prefix.unwrap_or(""));
            match host {
                None => any.push(entry),
                Some(HostMatch::Exact(h)) => {
                    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
                    exact.entry(h.into()).or_default().push(entry);
                }
                Some(HostMatch::Suffix(s)) => {
                    suffix
                        .entry(s.to_ascii_lowercase().into())
                        .or_default()
                        .push(entry);
                }
            }
        }
        let max_suffix = suffix.keys().map(|k| k.len()).max().unwrap_or(0);
        RouteIndex {
            any_host: Bucket::build(&any),
            exact: exact
                .into_iter()
                .map(|(k, v)| (k, Bucket::build(&v)))
                .collect(),
            suffix: suffix
                .into_iter()
                .map(|(k, v)| (k, Bucket::build(&v)))
                .collect(),
            max_suffix,
        }
    }

    /// The position of the first route matching `host` (port already
    /// stripped; any case, trailing dot allowed) and `path`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let path = path.as_bytes();
        let mut best = self.any_host.first(path);
        if let Some(host) = host {
            let host = host.strip_suffix('.').unwrap_or(host);
            let host = lower(host);
            let host = host.as_ref();
            if let Some(b) = self.exact.get(host) {
                best = min(best, b.first(path));
            }
            if !self.suffix.is_empty() {
                // Every tail that starts at a dot past the first byte: the
                // host is longer than the suffix, as `*.` needs one label.
                for (p, _) in host.match_indices('.').filter(|&(p, _)| p > 0) {
                    let tail = &host[p..];
                    if tail.len() > self.max_suffix {
                        continue;
                    }
                    if let Some(b) = self.suffix.get(tail) {
                        best = min(best, b.first(path));
                    }
                }
            }
        }
        best.map(|i| i as usize)
    }
}

/// The host in lower case, borrowed when it already is.
fn lower(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn min(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The routes sharing one host condition, by path prefix.
#[derive(Debug, Default)]
enum Bucket {
    #[default]
    Empty,
    /// Few routes: (position, prefix) in position order.
    Scan(Vec<(u32, Box<[u8]>)>),
    /// Many routes: a trie of their prefixes.
    Trie(Trie),
}

impl Bucket {
    fn build(routes: &[(u32, &str)]) -> Self {
        match routes.len() {
            0 => Bucket::Empty,
            n if n <= SCAN_MAX => Bucket::Scan(
                routes
                    .iter()
                    .map(|&(i, p)| (i, p.as_bytes().into()))
                    .collect(),
            ),
            _ => {
                let mut t = Trie::default();
                for &(i, p) in routes {
                    t.insert(p.as_bytes(), i);
                }
                Bucket::Trie(t)
            }
        }
    }

    /// The smallest position whose prefix starts `path`.
    fn first(&self, path: &[u8]) -> Option<u32> {
        match self {
            Bucket::Empty => None,
            // In position order: the first hit is the smallest.
            Bucket::Scan(v) => v.iter().find(|(_, p)| path.starts_with(p)).map(|&(i, _)| i),
            Bucket::Trie(t) => t.first(path),
        }
    }
}

/// A byte trie of path prefixes; each node keeps the smallest position of
/// the routes whose prefix ends there.
#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Smallest position of a route whose prefix ends at this node.
    here: Option<u32>,
    /// Children by next byte, sorted by byte.
    next: Vec<(u8, u32)>,
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], pos: u32) {
        let mut at = 0usize;
        for &b in prefix {
            let Some(node) = self.nodes.get(at) else {
                return;
            };
            at = match node.next.binary_search_by_key(&b, |&(k, _)| k) {
                Ok(j) => node.next.get(j).map_or(0, |&(_, n)| n as usize),
                Err(j) => {
                    let new = self.nodes.len();
                    self.nodes.push(Node::default());
                    if let Some(node) = self.nodes.get_mut(at) {
                        node.next.insert(j, (b, new as u32));
                    }
                    new
                }
            };
        }
        if let Some(node) = self.nodes.get_mut(at) {
            node.here = min(node.here, Some(pos));
        }
    }

    fn first(&self, path: &[u8]) -> Option<u32> {
        let mut node = self.nodes.first()?;
        let mut best = node.here;
        for &b in path {
            let Ok(j) = node.next.binary_search_by_key(&b, |&(k, _)| k) else {
                break;
            };
            let Some(next) = node
                .next
                .get(j)
                .and_then(|&(_, n)| self.nodes.get(n as usize))
            else {
                break;
            };
            node = next;
            best = min(best, node.here);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linear first-match scan the index replaces (the old
    /// `FrontendRt::route`, host already without port).
    fn scan(
        routes: &[(Option<HostMatch>, Option<String>)],
        host: Option<&str>,
        path: &str,
    ) -> Option<usize> {
        let matches = |m: &HostMatch, h: &str| {
            let h = h.strip_suffix('.').unwrap_or(h);
            match m {
                HostMatch::Exact(e) => h.eq_ignore_ascii_case(e),
                HostMatch::Suffix(s) => {
                    h.len() > s.len()
                        && h.get(h.len() - s.len()..)
                            .is_some_and(|t| t.eq_ignore_ascii_case(s))
                }
            }
        };
        routes.iter().position(|(hm, p)| {
            hm.as_ref()
                .is_none_or(|m| host.is_some_and(|h| matches(m, h)))
                && p.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
        })
    }

    fn index(routes: &[(Option<HostMatch>, Option<String>)]) -> RouteIndex {
        RouteIndex::build(routes.iter().map(|(h, p)| (h.as_ref(), p.as_deref())))
    }

    #[test]
    fn position_decides_not_specificity() {
        let routes = vec![
            (
                Some(HostMatch::Suffix(".example.com".into())),
                Some("/api".into()),
            ),
            (Some(HostMatch::Exact("api.example.com".into())), None),
            (None, Some("/".into())),
            (
                Some(HostMatch::Exact("api.example.com".into())),
                Some("/api/v2".into()),
            ),
        ];
        let ix = index(&routes);
        assert_eq!(ix.lookup(Some("api.example.com"), "/api/v2/x"), Some(0));
        assert_eq!(ix.lookup(Some("API.Example.com."), "/other"), Some(1));
        assert_eq!(ix.lookup(Some("www.example.com"), "/other"), Some(2));
        assert_eq!(ix.lookup(None, "/x"), Some(2));
        assert_eq!(ix.lookup(None, "x"), None);
        assert_eq!(
            ix.lookup(Some("example.com"), "/api"),
            Some(2),
            "a wildcard needs a label"
        );
    }

    /// Random tables from a small alphabet of hosts and prefixes (so that
    /// routes overlap a lot), random requests: the index answers what the
    /// scan answers. Seeded, so a failure reproduces.
    #[test]
    fn index_agrees_with_the_scan_on_random_tables() {
        const HOSTS: [&str; 6] = ["a.com", "b.a.com", "x.b.a.com", "c.org", "a.b.c.org", "com"];
        const PATHS: [&str; 8] = ["", "/", "/a", "/ab", "/a/b", "/b", "/abc", "/a/"];
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = rng.usize(0..40);
            let routes: Vec<(Option<HostMatch>, Option<String>)> = (0..n)
                .map(|_| {
                    let h = HOSTS[rng.usize(..HOSTS.len())];
                    let host = match rng.u8(0..3) {
                        0 => None,
                        1 => Some(HostMatch::Exact(h.into())),
                        _ => Some(HostMatch::Suffix(format!(".{h}"))),
                    };
                    let path = rng
                        .bool()
                        .then(|| PATHS[rng.usize(..PATHS.len())].to_string());
                    (host, path)
                })
                .collect();
            let ix = index(&routes);
            for _ in 0..200 {
                let host = match rng.u8(0..4) {
                    0 => None,
                    1 => Some(HOSTS[rng.usize(..HOSTS.len())].to_ascii_uppercase()),
                    2 => Some(format!("{}.", HOSTS[rng.usize(..HOSTS.len())])),
                    _ => Some(HOSTS[rng.usize(..HOSTS.len())].to_string()),
                };
                let path = format!(
                    "{}{}",
                    PATHS[rng.usize(..PATHS.len())],
                    PATHS[rng.usize(..PATHS.len())]
                );
                assert_eq!(
                    ix.lookup(host.as_deref(), &path),
                    scan(&routes, host.as_deref(), &path),
                    "seed {seed}: host {host:?} path {path:?} routes {routes:?}"
                );
            }
        }
    }

    #[test]
    fn ten_thousand_exact_hosts() {
        let routes: Vec<_> = (0..10_000)
            .map(|i| (Some(HostMatch::Exact(format!("h{i}.example.com"))), None))
            .collect();
        let ix = index(&routes);
        assert_eq!(ix.lookup(Some("h9999.example.com"), "/"), Some(9999));
        assert_eq!(
            ix.lookup(Some("h0.example.com:80"), "/"),
            None,
            "the port is stripped before"
        );
        assert_eq!(ix.lookup(Some("nope.example.com"), "/"), None);
    }
}
