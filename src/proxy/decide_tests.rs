//! `decide` over a table of requests: no socket, no task, a fixed clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::balance::Balancer;
use crate::runtime::{RouteRt, ServerState};

const CONFIG: &str = r#"
[frontends.www]
listen = ["127.0.0.1:1"]
backend = "web"
trusted_proxies = ["10.0.0.0/8"]
max_body_bytes = 100
routes = [
  { host = "api.example.com", backend = "api", rate_limit = { rate = 1, per = "1h", burst = 1 } },
  { host = "*.example.com", path_prefix = "/s/", backend = "sticky" },
  { path_prefix = "/h/", backend = "hashed" },
]

[frontends.redir]
listen = ["127.0.0.1:2"]
backend = "web"
redirect_https = true

[frontends.tcp]
mode = "tcp"
listen = ["127.0.0.1:3"]
backend = "hashed"

[backends.web]
servers = [{ name = "w", address = "127.0.0.1:9" }]
[backends.api]
servers = [{ name = "a", address = "127.0.0.1:9" }]
[backends.sticky]
sticky = { cookie = "SRV" }
servers = [{ name = "s0", address = "127.0.0.1:9" }, { name = "s1", address = "127.0.0.1:10" }]
[backends.hashed]
balance = "source"
servers = [{ name = "h", address = "127.0.0.1:9" }]
"#;

/// The frontends of `CONFIG`, built as a snapshot builds them (servers up).
fn frontends() -> BTreeMap<String, FrontendRt> {
    let config = crate::config::parse_str(CONFIG, "t.toml").expect("valid config");
    let epoch = Instant::now();
    let backends: BTreeMap<String, Arc<BackendRt>> = config
        .backends
        .iter()
        .map(|(name, bc)| {
            let servers = bc
                .servers
                .iter()
                .map(|s| Arc::new(ServerState::new(name, s, epoch, true)))
                .collect();
            let n = bc.servers.len();
            let b = BackendRt {
                name: Arc::from(name.as_str()),
                config: bc.clone(),
                tls: None,
                sticky_ids: bc
                    .servers
                    .iter()
                    .map(|s| edge::sticky_id(name, &s.name))
                    .collect(),
                stats: Default::default(),
                balancer: Balancer::new(bc.balance, &vec![1; n]),
                servers,
            };
            (name.clone(), Arc::new(b))
        })
        .collect();
    config
        .frontends
        .iter()
        .map(|(name, fc)| {
            let routes = fc
                .routes
                .iter()
                .map(|r| RouteRt {
                    route: r.clone(),
                    backend: backends[&r.backend].clone(),
                    limiter: r
                        .rate_limit
                        .as_ref()
                        .map(|rl| Arc::new(crate::proxy::ratelimit::RateLimiter::new(rl))),
                })
                .collect();
            let fe = FrontendRt {
                config: fc.clone(),
                tls: None,
                stats: Default::default(),
                routes,
                default: fc.backend.as_ref().map(|b| backends[b].clone()),
                limiter: None,
            };
            (name.clone(), fe)
        })
        .collect()
}

/// A request's headers as a list (what the relay has, roughly).
struct List(Vec<(&'static str, String)>);

impl Headers for List {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
    fn forwarded_for(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|(_, v)| v.as_bytes())
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// What a decision comes to, in a form a table can hold.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Answer(u16, &'static str),
    Forward {
        backend: &'static str,
        client: &'static str,
        hashed: bool,
        id: &'static str,
        sticky: Option<usize>,
    },
}

fn run(
    fe: Option<&FrontendRt>,
    kind: Kind,
    host: Option<&str>,
    target: &str,
    cl: Option<u64>,
    peer: &str,
    headers: &List,
) -> (Out, Decision) {
    let path = target.split('?').next().unwrap_or("");
    let facts = RequestFacts {
        kind,
        refused: None,
        host,
        path,
        path_and_query: target,
        content_length: cl,
        peer: peer.parse::<IpAddr>().expect("ip"),
        headers,
        now: Instant::now(),
    };
    let d = decide(fe, &facts);
    let out = match &d {
        Decision::Answer(a) => Out::Answer(a.status.as_u16(), leak(&a.why)),
        Decision::Forward(f) => Out::Forward {
            backend: leak(&f.backend.name),
            client: leak(&f.client_ip.to_string()),
            hashed: f.hash.is_some(),
            id: match f.request_id {
                RequestId::Off => "off",
                RequestId::Given => "given",
                RequestId::New(_) => "new",
            },
            sticky: f.sticky,
        },
    };
    (out, d)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn fwd(
    backend: &'static str,
    client: &'static str,
    hashed: bool,
    id: &'static str,
    sticky: Option<usize>,
) -> Out {
    Out::Forward {
        backend,
        client,
        hashed,
        id,
        sticky,
    }
}

/// frontend, kind, host, target, content length, peer, headers, expected.
type Row<'a> = (
    Option<&'a FrontendRt>,
    Kind,
    Option<&'a str>,
    &'a str,
    Option<u64>,
    &'a str,
    List,
    Out,
);

#[test]
fn the_request_table() {
    let fes = frontends();
    let www = Some(&fes["www"]);
    let sticky_s1 = edge::sticky_id("sticky", "s1");
    let none = List(vec![]);
    let h = |v: Vec<(&'static str, String)>| List(v);
    let http = Kind::Http;
    #[rustfmt::skip]
    let table: Vec<Row<'_>> = vec![
        // A frontend removed by a reload.
        (None, http, Some("x"), "/", None, "1.2.3.4", h(vec![]), Out::Answer(503, "this frontend is being removed")),
        // Default backend; a new request id.
        (www, http, Some("www.other.org"), "/", None, "1.2.3.4", h(vec![]), fwd("web", "1.2.3.4", false, "new", None)),
        // The client's id is kept.
        (www, http, None, "/", None, "1.2.3.4", h(vec![("X-Request-Id", "abc".into())]), fwd("web", "1.2.3.4", false, "given", None)),
        // Exact host with port and case.
        (www, http, Some("API.example.com:8080"), "/x", None, "1.2.3.4", h(vec![]), fwd("api", "1.2.3.4", false, "new", None)),
        // Its route's rate limit (burst 1 per hour, same client): the second is refused.
        (www, http, Some("api.example.com"), "/x", None, "1.2.3.4", h(vec![]), Out::Answer(429, "rate limit exceeded; slow down")),
        // …but another client passes.
        (www, http, Some("api.example.com"), "/x", None, "1.2.3.5", h(vec![]), fwd("api", "1.2.3.5", false, "new", None)),
        // Behind a trusted proxy the forwarded address is the client (and is the rate key).
        (www, http, Some("api.example.com"), "/x", None, "10.0.0.1", h(vec![("x-forwarded-for", "1.2.3.4".into())]), Out::Answer(429, "rate limit exceeded; slow down")),
        (www, http, Some("api.example.com"), "/x", None, "10.0.0.1", h(vec![("x-forwarded-for", "9.9.9.9, 10.0.0.2".into())]), fwd("api", "9.9.9.9", false, "new", None)),
        // An untrusted peer's X-Forwarded-For is ignored.
        (www, http, Some("www.other.org"), "/", None, "8.8.8.8", h(vec![("x-forwarded-for", "9.9.9.9".into())]), fwd("web", "8.8.8.8", false, "new", None)),
        // Wildcard + path: the sticky cookie names s1; a bad cookie names none.
        (www, http, Some("a.example.com"), "/s/1", None, "1.2.3.4", h(vec![("cookie", format!("x=1; SRV={sticky_s1}"))]), fwd("sticky", "1.2.3.4", false, "new", Some(1))),
        (www, http, Some("a.example.com"), "/s/1", None, "1.2.3.4", h(vec![("cookie", "SRV=nope".into())]), fwd("sticky", "1.2.3.4", false, "new", None)),
        // Wildcard host, other path: the default.
        (www, http, Some("a.example.com"), "/t", None, "1.2.3.4", h(vec![]), fwd("web", "1.2.3.4", false, "new", None)),
        // A `source`-balanced backend gets a key.
        (www, http, None, "/h/1?q", None, "1.2.3.4", h(vec![]), fwd("hashed", "1.2.3.4", true, "new", None)),
        // A declared body beyond max_body_bytes.
        (www, http, None, "/", Some(101), "1.2.3.4", h(vec![]), Out::Answer(413, "request body larger than 100 bytes")),
        (www, http, None, "/", Some(100), "1.2.3.4", h(vec![]), fwd("web", "1.2.3.4", false, "new", None)),
        // Redirects.
        (Some(&fes["redir"]), http, Some("a.org:80"), "/p?q=1", None, "1.2.3.4", h(vec![]), Out::Answer(301, "moved to https://a.org/p?q=1")),
        (Some(&fes["redir"]), http, None, "/p", None, "1.2.3.4", h(vec![]), Out::Answer(400, "a request without Host cannot be redirected to https")),
        // TCP: the default backend, the client's address as the key, no request id.
        (Some(&fes["tcp"]), Kind::Tcp, None, "", None, "1.2.3.4", h(vec![]), fwd("hashed", "1.2.3.4", true, "off", None)),
    ];
    let _ = none;
    for (i, (fe, kind, host, target, cl, peer, headers, want)) in table.into_iter().enumerate() {
        let (got, _) = run(fe, kind, host, target, cl, peer, &headers);
        assert_eq!(got, want, "row {i}: {host:?} {target}");
    }
    // Counted the same whatever the transport: every request on a live
    // frontend, local errors for the answers that are errors.
    let w = &fes["www"].stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(w.requests.load(Relaxed), 14);
    assert_eq!(w.local_errors.load(Relaxed), 3, "two 429s and a 413");
    let r = &fes["redir"].stats;
    assert_eq!(
        (r.requests.load(Relaxed), r.local_errors.load(Relaxed)),
        (2, 1)
    );
}

#[test]
fn redirect_location_and_answer_fields() {
    let fes = frontends();
    let (_, d) = run(
        Some(&fes["redir"]),
        Kind::Http,
        Some("[::1]:80"),
        "",
        None,
        "::1",
        &List(vec![]),
    );
    let Decision::Answer(a) = d else {
        panic!("an answer")
    };
    assert_eq!(a.location.as_deref(), Some("https://[::1]/"));
    assert!(!a.error);
    let (_, d) = run(
        Some(&fes["www"]),
        Kind::Http,
        Some("api.example.com"),
        "/",
        None,
        "7.7.7.7",
        &List(vec![]),
    );
    assert!(matches!(d, Decision::Forward(_)));
    let (_, d) = run(
        Some(&fes["www"]),
        Kind::Http,
        Some("api.example.com"),
        "/",
        None,
        "7.7.7.7",
        &List(vec![]),
    );
    let Decision::Answer(a) = d else {
        panic!("an answer")
    };
    assert_eq!(a.retry_after, Some(3600));
    assert_eq!(a.backend.as_deref(), Some("api"));
}
