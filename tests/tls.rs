//! TLS termination, SNI, ALPN h2, certificate reload, redirect to https and h2c,
//! with real TLS clients (tokio-rustls, hyper) against the real binary.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

fn make_cert(dir: &Path, file: &str, names: &[&str]) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    Cert {
        cert,
        key,
        der: ck.cert.der().to_vec(),
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> Tls {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(fulcrum::tls::NoVerify::new()))
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("sni");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

fn served_cert(s: &Tls) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, serde_json::Value) {
    let req = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn tls_config(listen: SocketAddr, backend: SocketAddr, certs: &[&Cert], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect();
    format!(
        r#"
[frontends.https]
listen = ["{listen}"]
backend = "web"
tls = {{ certificates = [{}] }}
{extra}
[backends.web]
servers = [{{ name = "web1", address = "{backend}" }}]
"#,
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_and_h2_is_negotiated() {
    let dir = tempfile::tempdir().expect("tmp");
    let default = make_cert(dir.path(), "default", &["default.test"]);
    let a = make_cert(dir.path(), "a", &["a.example.com"]);
    let b = make_cert(dir.path(), "b", &["*.b.example.com"]);
    let (_be, ab) = backend("web1");
    let listen = free_addr();
    let _lb = Lb::start(&tls_config(listen, ab, &[&default, &a, &b], ""), listen);

    assert_eq!(
        served_cert(&connect(listen, "a.example.com", &[b"http/1.1"]).await),
        a.der
    );
    assert_eq!(
        served_cert(&connect(listen, "shop.b.example.com", &[b"http/1.1"]).await),
        b.der
    );
    assert_eq!(
        served_cert(&connect(listen, "unknown.test", &[b"http/1.1"]).await),
        default.der,
        "default certificate"
    );

    // HTTP/2 through ALPN, translated to HTTP/1.1 upstream.
    let s = connect(listen, "a.example.com", &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("https://a.example.com/over-h2")
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(j["server"], "web1");
    assert_eq!(j["path"], "/over-h2");
    assert_eq!(j["x_forwarded_proto"], "https");
    assert_eq!(
        j["host"], "a.example.com",
        "authority becomes Host upstream"
    );

    // HTTP/1.1 over TLS too.
    let s = connect(listen, "a.example.com", &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let (status, j) = h1_get(&mut send, "a.example.com", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(j["x_forwarded_proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn reloaded_certificate_serves_new_handshakes_while_open_connections_live() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = make_cert(dir.path(), "a", &["a.example.com"]);
    let (_be, ab) = backend("web1");
    let listen = free_addr();
    let lb = Lb::start(&tls_config(listen, ab, &[&a], ""), listen);
    let s = connect(listen, "a.example.com", &[b"http/1.1"]).await;
    assert_eq!(served_cert(&s), a.der);
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1");
    tokio::spawn(conn);
    assert_eq!(h1_get(&mut open, "a.example.com", "/").await.0, 200);

    // Renew the certificate in place and reload.
    let renewed = make_cert(dir.path(), "a", &["a.example.com"]);
    assert_ne!(renewed.der, a.der);
    lb.proc.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || lb
            .proc
            .output()
            .contains("reloaded")),
        "{}",
        lb.proc.output()
    );
    assert_eq!(
        served_cert(&connect(listen, "a.example.com", &[b"http/1.1"]).await),
        renewed.der
    );
    assert_eq!(
        h1_get(&mut open, "a.example.com", "/still-open").await.0,
        200,
        "open connection cut by the reload"
    );

    // A broken certificate on reload changes nothing.
    std::fs::write(&a.key, "not a key").expect("write");
    lb.proc.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || lb
            .proc
            .output()
            .contains("reload refused")),
        "{}",
        lb.proc.output()
    );
    assert_eq!(
        served_cert(&connect(listen, "a.example.com", &[b"http/1.1"]).await),
        renewed.der
    );
}

#[test]
fn redirect_https_and_h2c() {
    let (_be, ab) = backend("web1");
    let (plain, h2c) = (free_addr(), free_addr());
    let toml = format!(
        r#"
[frontends.plain]
listen = ["{plain}"]
backend = "web"
redirect_https = true
[frontends.h2c]
listen = ["{h2c}"]
backend = "web"
h2c = true
[backends.web]
servers = [{{ name = "web1", address = "{ab}" }}]
"#
    );
    let _lb = Lb::start(&toml, plain);
    let r = request(
        plain,
        "GET",
        "/cart?id=7",
        &[("Host", "shop.example.com:8080")],
    )
    .expect("get");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/cart?id=7")
    );
    // h2c prior knowledge on the other listener; HTTP/1.1 keeps working there too.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let tcp = TcpStream::connect(h2c).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2c");
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://{h2c}/h2c"))
            .body(Empty::<Bytes>::new())
            .expect("req");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
    });
    assert_eq!(get(h2c, "/").expect("h1 on h2c listener").status, 200);
}

#[test]
fn missing_or_mismatched_keys_are_config_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = make_cert(dir.path(), "a", &["a.example.com"]);
    let b = make_cert(dir.path(), "b", &["b.example.com"]);
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            "[frontends.https]\nlisten = [\"127.0.0.1:1\"]\nbackend = \"web\"\ntls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}/missing.pem\", key = \"{}\" }}] }}\n[backends.web]\nservers = []\n",
            a.cert.display(),
            b.key.display(),
            dir.path().display(),
            b.key.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("f.toml:4:") && err.contains("does not belong to the certificate"),
        "{err}"
    );
    assert!(err.contains("missing.pem"), "{err}");
}

/// A TLS HTTP/1.1 server on 127.0.0.1 answering "secure upstream" (runs until the runtime ends).
async fn tls_upstream(cert: &Cert) -> SocketAddr {
    use hyper::service::service_fn;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::fs::read(&cert.cert).expect("cert").as_slice())
            .filter_map(Result::ok)
            .collect();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&cert.key).expect("key").as_slice())
        .expect("pem")
        .expect("key");
    let sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"secure upstream")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_upstream_servers_verifies_by_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let up = make_cert(dir.path(), "upstream", &["backend.test"]);
    let upstream = tls_upstream(&up).await;
    let (ok, unverified, insecure) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        r#"
[frontends.ok]
listen = ["{ok}"]
backend = "verified"
[frontends.unverified]
listen = ["{unverified}"]
backend = "system_roots"
[frontends.insecure]
listen = ["{insecure}"]
backend = "no_verify"
[backends.verified]
retries = 0
tls = {{ ca = "{ca}", sni = "backend.test" }}
servers = [{{ name = "s", address = "{upstream}" }}]
[backends.system_roots]
retries = 0
passive = {{ max_fails = 0 }}
tls = {{ sni = "backend.test" }}
servers = [{{ name = "s", address = "{upstream}" }}]
[backends.no_verify]
tls = {{ verify = false }}
servers = [{{ name = "s", address = "{upstream}" }}]
"#,
        ca = up.cert.display()
    );
    let _lb = tokio::task::spawn_blocking(move || Lb::start(&toml, ok))
        .await
        .expect("start");
    let fetch =
        |addr: SocketAddr| tokio::task::spawn_blocking(move || get(addr, "/").expect("request"));
    let r = fetch(ok).await.expect("join");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "secure upstream"),
        "{r:?}"
    );
    let r = fetch(unverified).await.expect("join");
    assert_eq!(
        r.status, 502,
        "a self-signed upstream must not pass system-root verification: {r:?}"
    );
    assert!(r.body.contains("TLS handshake failed"), "{}", r.body);
    let r = fetch(insecure).await.expect("join");
    assert_eq!(r.status, 200, "{r:?}");
}
