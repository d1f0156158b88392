//! Fuzz the admin API as a client can reach it: a request (method, path
//! built from the API's segments and fuzz bytes, query, JSON body — from
//! templates with fuzz values, or raw) sent over HTTP to a real admin
//! listener on loopback, in front of a running runtime with two backends.
//!
//! Invariants, beyond no panic and no hang: an answer always comes; it is
//! never a 5xx (bad input is the client's: 4xx), and every JSON answer
//! parses. Before each input the runtime goes back to the file's state
//! (`reload --reset`), so an input's outcome does not depend on the ones
//! before it.

#![no_main]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fulcrum::runtime::{Change, Runtime};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::Bytes;

const HANG: Duration = Duration::from_secs(10);

struct Harness {
    rt: tokio::runtime::Runtime,
    admin: SocketAddr,
    proxy: Arc<Runtime>,
    config: fulcrum::config::types::Config,
}

fn free_port() -> SocketAddr {
    common::free_addr().expect("free port")
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        common::abort_on_panic();
        let rt = common::runtime();
        let dir = std::env::temp_dir().join(format!("fulcrum-fuzz-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("fulcrum.toml");
        let (front, admin) = (free_port(), free_port());
        let text = format!(
            r#"
[global]
threads = 1
[log]
access = "off"
[admin]
listen = "{admin}"
[frontends.f]
listen = ["{front}"]
backend = "web"
[backends.web]
servers = [
  {{ name = "w1", address = "127.0.0.1:9" }},
  {{ name = "w2", address = "127.0.0.1:9", weight = 3 }},
]
[backends.db]
balance = "leastconn"
servers = [ {{ name = "d1", address = "127.0.0.1:9" }} ]
"#
        );
        std::fs::write(&path, text).expect("write config");
        let config = fulcrum::config::load_file(&path).expect("config");
        let (proxy, admin) = rt.block_on(async {
            let proxy = fulcrum::supervisor::start(config.clone()).await.expect("start");
            let slot: fulcrum::admin::VrrpSlot = Arc::default();
            let admin = fulcrum::admin::start(proxy.clone(), &config.admin, slot)
                .await
                .expect("admin")
                .unwrap_or(admin);
            (proxy, admin)
        });
        Harness {
            rt,
            admin,
            proxy,
            config,
        }
    })
}

/// A short string of fuzz bytes that can sit in a request line.
fn word(d: &mut Bytes) -> String {
    let n = d.byte() as usize % 12;
    d.take(n)
        .iter()
        .map(|&b| match b {
            0x21..=0x7e if b != b'?' && b != b'#' && b != b'/' => b as char,
            _ => '%',
        })
        .collect()
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
const BACKENDS: &[&str] = &["web", "db", "nope", "..", "."];
const SERVERS: &[&str] = &["w1", "w2", "d1", "new1", "..", ".", "w1 "];
const QUERIES: &[&str] = &[
    "",
    "?compact=1",
    "?backend=web",
    "?state=down",
    "?state=bogus",
    "?limit=1&offset=1",
    "?limit=-1",
    "?force=1",
    "?reset",
    "?backend=",
];

fn request(data: &[u8]) -> Vec<u8> {
    let mut d = Bytes(data);
    let method = METHODS[d.byte() as usize % METHODS.len()];
    let pick = |d: &mut Bytes, list: &[&str]| -> String {
        let i = d.byte() as usize;
        if i % 8 == 7 {
            word(d)
        } else {
            list[i % list.len()].to_string()
        }
    };
    let b = pick(&mut d, BACKENDS);
    let s = pick(&mut d, SERVERS);
    let path = match d.byte() % 12 {
        0 => "/".to_string(),
        1 => "/metrics".into(),
        2 => "/api/v1/status".into(),
        3 => "/api/v1/stats.csv".into(),
        4 => "/api/v1/vrrp".into(),
        5 => format!("/api/v1/backends/{b}/servers"),
        6 => format!("/api/v1/backends/{b}/servers/{s}"),
        7 => format!("/api/v1/backends/{b}/servers/{s}/state"),
        8 => format!("/api/v1/backends/{b}/servers/{s}/weight"),
        9 => "/api/v1/reload".into(),
        10 => "/stats;csv".into(),
        _ => format!("/{}/{}", word(&mut d), word(&mut d)),
    };
    let query = QUERIES[d.byte() as usize % QUERIES.len()];
    let body: Vec<u8> = match d.byte() % 8 {
        0 => Vec::new(),
        1 => format!("{{\"state\":\"{}\"}}", ["ready", "drain", "maint", "up", ""][d.byte() as usize % 5]).into_bytes(),
        2 => format!("{{\"weight\":{}}}", (d.byte() as i64 - 64) * 5).into_bytes(),
        3 => format!(
            "{{\"name\":\"{}\",\"address\":\"{}\",\"weight\":{},\"backup\":{}}}",
            pick(&mut d, SERVERS),
            ["127.0.0.1:8081", "0.0.0.0:0", "255.255.255.255:80", "224.0.0.1:80", "[::1]:80", "x"]
                [d.byte() as usize % 6],
            d.byte() as i64 - 8,
            d.byte() % 2 == 0
        )
        .into_bytes(),
        _ => d.rest().to_vec(),
    };
    let mut out = format!(
        "{method} {path}{query} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let req = request(data);
    let admin = h.admin;
    let answer = h.rt.block_on(async { tokio::time::timeout(HANG, async {
        h.proxy
            .apply(Change::ReloadReset(Box::new(h.config.clone())))
            .await
            .expect("reset to the file's state");
        let mut c = TcpStream::connect(admin).await.expect("admin listener");
        c.write_all(&req).await.expect("send");
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp).await;
        resp
    }).await });
    let Ok(resp) = answer else {
        panic!("hang: no answer within {HANG:?}");
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = r.parse(&resp) else {
        panic!("no complete answer: {:?}", String::from_utf8_lossy(&resp));
    };
    let status = r.code.unwrap_or(0);
    assert!(
        (200..500).contains(&status),
        "status {status} for {:?}: {:?}",
        String::from_utf8_lossy(&req),
        String::from_utf8_lossy(&resp)
    );
    let json = r.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-type") && h.value.starts_with(b"application/json")
    });
    let chunked = r.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if json && !chunked && !req.starts_with(b"HEAD ") {
        let body = &resp[head..];
        assert!(
            serde_json::from_slice::<serde_json::Value>(body).is_ok(),
            "a JSON answer does not parse: {:?}",
            String::from_utf8_lossy(body)
        );
    }
});
