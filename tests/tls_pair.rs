//! TLS for an HA pair: a client resumes its session on the *other* fulcrum
//! instance when both read the same `ticket_keys_file` (TLS 1.3 and TLS 1.2
//! tickets), and does not with different keys. Real binaries, real rustls
//! client with its session cache, loopback only.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(fulcrum::tls::NoVerify::new()))
    .with_no_client_auth();
    // The default resumption store: an in-memory cache shared by every
    // connection made with this config, as a browser's would be.
    Arc::new(cfg)
}

/// One request over a new TLS connection; returns how the handshake went.
/// Reading the whole response also reads the server's NewSessionTicket.
async fn request(cfg: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> HandshakeKind {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("pair.test").expect("sni");
    let mut s = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    s.write_all(b"GET / HTTP/1.1\r\nHost: pair.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s.get_ref().1.handshake_kind().expect("handshake done")
}

fn config(listen: SocketAddr, backend: SocketAddr, dir: &Path, keys: &Path) -> String {
    format!(
        r#"
[log]
access = "off"

[frontends.https]
listen = ["{listen}"]
backend = "web"
tls = {{ ticket_keys_file = "{keys}", prefer_server_ciphers = true, certificates = [{{ cert = "{d}/pair.pem", key = "{d}/pair.key", ocsp_file = "{d}/pair.ocsp" }}] }}

[backends.web]
servers = [{{ name = "web1", address = "{backend}" }}]
"#,
        keys = keys.display(),
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumes_on_the_other_node_sharing_the_ticket_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let ck = rcgen::generate_simple_self_signed(vec!["pair.test".to_string()]).expect("rcgen");
    std::fs::write(dir.path().join("pair.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("pair.key"), ck.key_pair.serialize_pem()).expect("key");
    // An opaque DER SEQUENCE: stapled as is (rustls does not parse it).
    std::fs::write(dir.path().join("pair.ocsp"), [0x30, 0x03, 0x0a, 0x01, 0x00]).expect("ocsp");
    let shared = dir.path().join("shared.keys");
    std::fs::write(
        &shared,
        "# current key first\n1111111111111111111111111111111111111111111111111111111111111111\n",
    )
    .expect("keys");
    let other = dir.path().join("other.keys");
    std::fs::write(&other, format!("{}\n", "22".repeat(32))).expect("keys");

    let (_be, ba) = backend("web1");
    let (la, lb, lc) = (free_addr(), free_addr(), free_addr());
    let _a = Lb::start(&config(la, ba, dir.path(), &shared), la);
    let _b = Lb::start(&config(lb, ba, dir.path(), &shared), lb);
    let _c = Lb::start(&config(lc, ba, dir.path(), &other), lc);

    for (label, versions) in [
        ("TLS 1.3", &[&rustls::version::TLS13][..]),
        ("TLS 1.2", &[&rustls::version::TLS12][..]),
    ] {
        let cfg = client(versions);
        assert_eq!(
            request(&cfg, la).await,
            HandshakeKind::Full,
            "{label}: first visit"
        );
        // "Failover": the same client now reaches the other node.
        assert_eq!(
            request(&cfg, lb).await,
            HandshakeKind::Resumed,
            "{label}: the other node of the pair must resume the session"
        );
        let fresh = client(versions);
        assert_eq!(request(&fresh, la).await, HandshakeKind::Full);
        assert_eq!(
            request(&fresh, lc).await,
            HandshakeKind::Full,
            "{label}: a node with other keys cannot open the ticket"
        );
    }
}

#[test]
fn check_refuses_a_bad_ticket_key_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let ck = rcgen::generate_simple_self_signed(vec!["pair.test".to_string()]).expect("rcgen");
    std::fs::write(dir.path().join("pair.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("pair.key"), ck.key_pair.serialize_pem()).expect("key");
    std::fs::write(dir.path().join("pair.ocsp"), [0x30, 0x00]).expect("ocsp");
    let keys = dir.path().join("bad.keys");
    std::fs::write(&keys, "not-a-key\n").expect("keys");
    let toml = config(free_addr(), free_addr(), dir.path(), &keys);
    let file = dir.path().join("f.toml");
    std::fs::write(&file, toml).expect("write");
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("64 hex digits") && !err.contains("not-a-key"),
        "{err}"
    );
}

/// A TLS 1.2 client asking for renegotiation gets the `no_renegotiation`
/// alert at once (it used to stay queued while the server waited to read, and
/// the client hung), and the log gets no line per request. Needs `openssl`.
#[test]
fn renegotiation_gets_the_alert_and_no_log_line() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIP: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let ck = rcgen::generate_simple_self_signed(vec!["pair.test".to_string()]).expect("rcgen");
    std::fs::write(dir.path().join("pair.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("pair.key"), ck.key_pair.serialize_pem()).expect("key");
    std::fs::write(dir.path().join("pair.ocsp"), [0x30, 0x00]).expect("ocsp");
    let keys = dir.path().join("k.keys");
    std::fs::write(&keys, "33".repeat(32)).expect("keys");
    let (_be, ba) = backend("web1");
    let listen = free_addr();
    let lb = Lb::start(&config(listen, ba, dir.path(), &keys), listen);
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-msg", "-connect"])
        .arg(listen.to_string())
        .args(["-servername", "pair.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    // s_client renegotiates on a line that is just "R"; stdin stays open so
    // that only the server's answer can end the session.
    stdin.write_all(b"R\n").expect("write");
    let mut out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(std::time::Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let text = text.unwrap_or_else(|_| panic!("s_client hung: no answer to the renegotiation"));
    assert!(text.contains("no_renegotiation"), "{text}");
    assert!(
        !lb.proc.output().contains("renegotiation"),
        "{}",
        lb.proc.output()
    );
}
