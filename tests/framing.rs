//! Strict framing (`proxy::strict`) is the same on the relay and on the hyper
//! path, `normalize_path` changes routing only when asked for, and the
//! target's authority wins over `Host` (absolute-form over HTTP/1.1,
//! `:authority` over HTTP/2).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn status_of(resp: &str) -> Option<u16> {
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// Requests refused alike whichever path serves the frontend.
const REFUSED: &[(&str, &str, u16)] = &[
    ("two Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (
        "gzip, chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "chunked twice",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("target not a path", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
];

#[test]
fn relay_and_hyper_path_refuse_alike() {
    let (_b, web) = backend("web");
    let relay = free_addr();
    let hyper = free_addr();
    // h2c forces the hyper path for every request of its frontend.
    let toml = format!(
        r#"
[frontends.relay]
listen = ["{relay}"]
backend = "web"
[frontends.hyper]
listen = ["{hyper}"]
backend = "web"
h2c = true
[backends.web]
servers = [{{ name = "web", address = "{web}" }}]
"#
    );
    let lb = Lb::start(&toml, relay);
    wait_listening(hyper);
    for (name, req, status) in REFUSED {
        for addr in [relay, hyper] {
            let resp = raw(addr, req.as_bytes());
            assert_eq!(status_of(&resp), Some(*status), "{name} on {addr}: {resp}");
        }
    }
    // CONNECT leaves a line in the access log (written off the request
    // path, so it may come a moment later).
    assert!(
        wait_until(Duration::from_secs(10), || lb
            .proc
            .output()
            .contains("CONNECT")),
        "{}",
        lb.proc.output()
    );
    // A GET's chunked body reaches the server (it used to be dropped).
    for addr in [relay, hyper] {
        let resp = raw(
            addr,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        assert!(resp.contains("\"body_bytes\":5"), "{addr}: {resp}");
    }
}

/// RFC 9110 §2.5: a later HTTP/1.x minor version is served as HTTP/1.1, on
/// both paths and on every request of a keep-alive connection (the hyper
/// path answered 400); a later major version on an HTTP/1 connection is
/// answered 505 and the connection closed, as nginx does (it was 400;
/// HAProxy 2.6 forwards it as 1.1).
#[test]
fn request_line_versions_alike_on_both_paths() {
    let (_b, web) = backend("web");
    let relay = free_addr();
    let hyper = free_addr();
    let toml = format!(
        r#"
[frontends.relay]
listen = ["{relay}"]
backend = "web"
[frontends.hyper]
listen = ["{hyper}"]
backend = "web"
h2c = true
[backends.web]
servers = [{{ name = "web", address = "{web}" }}]
"#
    );
    let _lb = Lb::start(&toml, relay);
    wait_listening(hyper);
    for addr in [relay, hyper] {
        let resp = raw(
            addr,
            b"GET / HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&resp), Some(200), "1.2 on {addr}: {resp}");
        assert!(resp.starts_with("HTTP/1.1 "), "{resp}");
        for v in ["2.0", "3.0", "9.9"] {
            let req = format!("GET / HTTP/{v}\r\nHost: a\r\n\r\n");
            // `raw` reads to the end: the connection was closed after the answer.
            let resp = raw(addr, req.as_bytes());
            assert_eq!(status_of(&resp), Some(505), "{v} on {addr}: {resp}");
            assert!(
                resp.to_ascii_lowercase().contains("connection: close"),
                "{resp}"
            );
        }
        // One write, three requests: a body that looks like a request line
        // is body, a chunked body is followed to its end, and the request
        // after each is still read as 1.1.
        let resp = raw(
            addr,
            b"POST /a HTTP/1.2\r\nHost: a\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.2\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET /c HTTP/1.3\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(resp.matches("HTTP/1.1 200").count(), 3, "{addr}: {resp}");
        for (path, bytes) in [("/a", 18), ("/b", 5), ("/c", 0)] {
            assert!(
                resp.contains(&format!("\"path\":\"{path}\"")),
                "{path} on {addr}: {resp}"
            );
            assert!(
                resp.contains(&format!("\"body_bytes\":{bytes}")),
                "{path} on {addr}: {resp}"
            );
        }
    }
}

#[test]
fn normalize_path_routes_the_normalised_path() {
    let (_w, web) = backend("web");
    let (_a, admin) = backend("admin");
    let plain = free_addr();
    let norm = free_addr();
    let toml = format!(
        r#"
[frontends.plain]
listen = ["{plain}"]
backend = "web"
routes = [{{ path_prefix = "/admin/", backend = "admin" }}]
[frontends.norm]
listen = ["{norm}"]
backend = "web"
normalize_path = true
routes = [{{ path_prefix = "/admin/", backend = "admin" }}]
[backends.web]
servers = [{{ name = "web", address = "{web}" }}]
[backends.admin]
servers = [{{ name = "admin", address = "{admin}" }}]
"#
    );
    let _lb = Lb::start(&toml, plain);
    wait_listening(norm);
    for path in ["/x/../admin/", "//admin/", "/%61dmin/", "/./admin/"] {
        let r = get(plain, path).expect("plain");
        assert_eq!(r.server(), "web", "{path} as sent: {r:?}");
        let r = get(norm, path).expect("norm");
        assert_eq!(r.server(), "admin", "{path} normalised: {r:?}");
        assert_eq!(
            r.json()["path"],
            "/admin/",
            "{path}: the server sees the normalised path"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targets_authority_wins_over_host() {
    let (_w, web) = tokio::task::spawn_blocking(|| backend("web"))
        .await
        .unwrap();
    let (_a, api) = tokio::task::spawn_blocking(|| backend("api"))
        .await
        .unwrap();
    let listen = free_addr();
    let toml = format!(
        r#"
[frontends.www]
listen = ["{listen}"]
backend = "web"
h2c = true
routes = [{{ host = "api.example", backend = "api" }}]
[backends.web]
servers = [{{ name = "web", address = "{web}" }}]
[backends.api]
servers = [{{ name = "api", address = "{api}" }}]
"#
    );
    let _lb = tokio::task::spawn_blocking(move || Lb::start(&toml, listen))
        .await
        .unwrap();
    // HTTP/1.1 absolute-form: routed on the target, Host rewritten to it.
    let resp = tokio::task::spawn_blocking(move || {
        raw(
            listen,
            b"GET http://api.example/p HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(resp.contains("\"server\":\"api\""), "{resp}");
    // HTTP/2: :authority over host.
    let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://api.example/p")
        .header("host", "www.example")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"server\":\"api\""), "{body}");
}
