//! PROXY protocol through the real binary: accepted on a listener (the client
//! address becomes the one in the header) and sent to servers (TCP and HTTP).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use fulcrum::proxy::proxy_protocol::{encode_v2, parse, ProxyAddrs};

#[test]
fn accepted_header_names_the_client() {
    let (_b, a) = backend("web1");
    let (trusting, untrusting) = (free_addr(), free_addr());
    let toml = format!(
        r#"
[frontends.behind_lb]
listen = ["{trusting}"]
backend = "web"
accept_proxy = true
trusted_proxies = ["127.0.0.0/8"]
[frontends.strict]
listen = ["{untrusting}"]
backend = "web"
accept_proxy = true
trusted_proxies = ["192.0.2.0/24"]
[backends.web]
servers = [{{ name = "web1", address = "{a}" }}]
"#
    );
    let _lb = Lb::start(&toml, trusting);
    let req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let v1 = raw(
        trusting,
        format!("PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n{req}").as_bytes(),
    );
    let r = parse_response(v1.as_bytes()).expect("response");
    assert_eq!(r.json()["x_forwarded_for"], "203.0.113.5", "{v1}");
    let mut v2 = encode_v2(
        "[2001:db8::7]:4444".parse().expect("addr"),
        "[2001:db8::1]:80".parse().expect("addr"),
    );
    v2.extend_from_slice(req.as_bytes());
    let r = parse_response(raw(trusting, &v2).as_bytes()).expect("response");
    assert_eq!(r.json()["x_forwarded_for"], "2001:db8::7");
    // Missing header: dropped.
    assert_eq!(raw(trusting, req.as_bytes()), "");
    // A peer outside trusted_proxies may not claim an address: dropped.
    assert_eq!(
        raw(
            untrusting,
            format!("PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n{req}").as_bytes()
        ),
        ""
    );
}

/// A server that reads a PROXY header, then answers with the source it named.
fn header_echo_server(http: bool) -> (SocketAddr, std::thread::JoinHandle<Vec<SocketAddr>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let Ok((mut s, _)) = l.accept() else { break };
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let src = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Ok((h, used)) = parse(&buf) {
                    // In HTTP mode, answer only once the request head is in.
                    let rest = buf.get(used..).unwrap_or(&[]);
                    if http && !rest.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    break match h.addrs {
                        ProxyAddrs::Tcp { src, .. } => Some(src),
                        ProxyAddrs::Unknown => None,
                    };
                }
            };
            let Some(src) = src else { continue };
            seen.push(src);
            let body = src.to_string();
            let reply = if http {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                body
            };
            let _ = s.write_all(reply.as_bytes());
        }
        seen
    });
    (addr, h)
}

#[test]
fn header_is_sent_to_servers_in_tcp_and_http_mode() {
    let (tcp_srv, tcp_seen) = header_echo_server(false);
    let (http_srv, http_seen) = header_echo_server(true);
    let (tcp_fe, http_fe) = (free_addr(), free_addr());
    let toml = format!(
        r#"
[frontends.tcp]
mode = "tcp"
listen = ["{tcp_fe}"]
backend = "tcp"
[frontends.http]
listen = ["{http_fe}"]
backend = "http"
[backends.tcp]
proxy_protocol = "v2"
servers = [{{ name = "s", address = "{tcp_srv}" }}]
[backends.http]
proxy_protocol = "v1"
servers = [{{ name = "s", address = "{http_srv}" }}]
"#
    );
    // Wait on the HTTP frontend: a probe of the TCP one would reach the echo
    // server. Both are bound by the same configuration apply.
    let _lb = Lb::start(&toml, http_fe);
    for _ in 0..2 {
        let mut c = TcpStream::connect(tcp_fe).expect("connect");
        let me = c.local_addr().expect("addr");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = String::new();
        let _ = c.read_to_string(&mut got);
        assert_eq!(
            got,
            me.to_string(),
            "TCP mode: the server must see the client's own address"
        );
    }
    for _ in 0..2 {
        let r = get(http_fe, "/").expect("http");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.starts_with("127.0.0.1:"), "{}", r.body);
    }
    assert_eq!(tcp_seen.join().expect("join").len(), 2);
    // Two requests, two connections: a connection carrying a client's header is never reused for another.
    assert_eq!(http_seen.join().expect("join").len(), 2);
}
