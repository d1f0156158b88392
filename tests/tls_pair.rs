//! TLS for an HA pair: a client resumes its session on the *other* fulcrum
//! instance when both read the same `ticket_keys_file` (TLS 1.3 and TLS 1.2
//! tickets), and does not with different keys. Real binaries, real rustls
//! client with its session cache, loopback only — and the same across a
//! real VRRP failover of the lab's classic pair, in network namespaces the
//! test creates and removes (`tests/common/vrrp.rs`; needs root and `ip`).

mod common;
use common::vrrp as vrrp_lab;

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

/// One node of the TLS pair: a TLS frontend on port 443 of every address
/// (the VIP included) in front of the node's `fulcrum backend`, VRRP as in
/// the classic pair drills, the ticket keys in `keys`.
fn start_tls_node(lab: &mut vrrp_lab::Lab, node: &str, priority: u8, keys: &Path) {
    use std::process::{Command, Stdio};
    lab.start_backend(node, "127.0.0.1", vrrp_lab::BACKEND_PORT);
    let d = lab.dir.path().to_path_buf();
    let text = format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"

[log]
access = "off"

[frontends.https]
listen = ["0.0.0.0:443"]
backend = "app"
tls = {{ ticket_keys_file = "{keys}", certificates = [{{ cert = "{d}/pair.pem", key = "{d}/pair.key" }}] }}

[backends.app]
servers = [{{ name = "{node}", address = "127.0.0.1:{port}" }}]

[vrrp.instances.vip]
interface = "eth0"
vrid = 51
priority = {priority}
version = 3
advert_interval = "{interval}ms"
virtual_ips = ["{vip}/24"]
preempt = true
"#,
        admin = vrrp_lab::ADMIN_PORT,
        keys = keys.display(),
        d = d.display(),
        port = vrrp_lab::BACKEND_PORT,
        interval = vrrp_lab::INTERVAL.as_millis(),
        vip = vrrp_lab::VIP,
    );
    let n = lab.nodes.len();
    let config = d.join(format!("{node}-tls-{n}.toml"));
    std::fs::write(&config, text).expect("write config");
    let log = d.join(format!("{node}-{n}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns(node),
            &vrrp_lab::bin(),
            "run",
            "--config",
        ])
        .arg(&config)
        .env("FULCRUM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn fulcrum");
    lab.nodes.push((node.to_string(), Some(child), log));
}

/// From the client namespace, HTTPS requests to the VIP with `cfg` (and its
/// session cache) until node `want` answers one (bounded: 20 s); how that
/// exchange's handshake went.
fn vip_exchange(
    lab: &vrrp_lab::Lab,
    cfg: &Arc<rustls::ClientConfig>,
    want: &'static str,
) -> HandshakeKind {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let cfg = cfg.clone();
    let to = SocketAddr::from((vrrp_lab::VIP, 443));
    let got = vrrp_lab::in_netns(&lab.ns("c"), move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            let once = || -> Result<(String, Option<HandshakeKind>), String> {
                let name = ServerName::try_from("pair.test").map_err(|e| e.to_string())?;
                let mut conn =
                    rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
                let mut sock =
                    std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200))
                        .map_err(|e| format!("connect: {e}"))?;
                let t = Some(Duration::from_secs(2));
                sock.set_read_timeout(t).map_err(|e| e.to_string())?;
                sock.set_write_timeout(t).map_err(|e| e.to_string())?;
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                tls.write_all(b"GET / HTTP/1.1\r\nHost: pair.test\r\nConnection: close\r\n\r\n")
                    .map_err(|e| format!("TLS/write: {e}"))?;
                let mut buf = Vec::new();
                // The server may close without close_notify: what was read counts.
                let _ = tls.read_to_end(&mut buf);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if !text.starts_with("HTTP/1.1 200") {
                    return Err(format!("answer: {text:?}"));
                }
                let server = text
                    .split_once("\"server\":\"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(n, _)| n.to_string())
                    .unwrap_or_default();
                Ok((server, conn.handshake_kind()))
            };
            match once() {
                Ok((server, Some(kind))) if server == want => return Ok(kind),
                Ok((server, kind)) => last = format!("answered by {server:?} ({kind:?})"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(last)
    })
    .join();
    match got {
        Ok(Ok(Ok(kind))) => kind,
        other => panic!(
            "node {want} never answered over TLS: {other:?}\n{}",
            lab.logs()
        ),
    }
}

/// The value of `fulcrum_frontend_tls_resumptions_total` on `node`'s /metrics.
fn resumptions_on(lab: &vrrp_lab::Lab, node: &str) -> f64 {
    use std::time::Duration;
    let to = SocketAddr::from(([127, 0, 0, 1], vrrp_lab::ADMIN_PORT));
    let text = vrrp_lab::in_netns(&lab.ns(node), move || {
        vrrp_lab::http(to, "GET", "/metrics", Duration::from_secs(2))
    })
    .join()
    .ok()
    .and_then(Result::ok)
    .flatten()
    .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("fulcrum_frontend_tls_resumptions_total{frontend=\"https\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resumption counter on {node}: {text}"))
}

/// The classic pair with TLS: a client gets its sessions (TLS 1.3 and 1.2
/// tickets) from the master, the master is killed, VRRP moves the VIP to
/// the backup, and the client resumes both sessions there (the new master
/// counts the resumptions too). Then the old master comes back with other
/// ticket keys and preempts: the same client cannot resume on it.
#[test]
fn sessions_resume_on_the_new_master_after_a_vrrp_failover() {
    use std::time::Duration;
    let _serial = vrrp_lab::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = match vrrp_lab::Lab::new("tls", vrrp_lab::Opts::v3(true, false)) {
        Ok(l) => l,
        Err(why) => {
            println!("SKIP: TLS failover drill needs network namespaces: {why}");
            return;
        }
    };
    let d = lab.dir.path().to_path_buf();
    let ck = rcgen::generate_simple_self_signed(vec!["pair.test".to_string()]).expect("rcgen");
    std::fs::write(d.join("pair.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(d.join("pair.key"), ck.key_pair.serialize_pem()).expect("key");
    let shared = d.join("shared.keys");
    std::fs::write(&shared, format!("{}\n", "11".repeat(32))).expect("keys");
    let other = d.join("other.keys");
    std::fs::write(&other, format!("{}\n", "22".repeat(32))).expect("keys");

    start_tls_node(&mut lab, "a", 101, &shared);
    assert!(
        lab.wait_vip("a", Duration::from_secs(10)),
        "A never became master\n{}",
        lab.logs()
    );
    start_tls_node(&mut lab, "b", 100, &shared);
    let ns_b = lab.ns("b");
    assert!(
        wait_until(Duration::from_secs(10), || {
            vrrp_lab::admin_get(&ns_b, "/api/v1/vrrp")
                .is_some_and(|s| s.contains("\"state\":\"backup\""))
        }),
        "B never became backup\n{}",
        lab.logs()
    );
    let versions = [
        ("TLS 1.3", &[&rustls::version::TLS13][..]),
        ("TLS 1.2", &[&rustls::version::TLS12][..]),
    ];
    let clients: Vec<_> = versions.iter().map(|(l, v)| (*l, client(v))).collect();
    for (label, cfg) in &clients {
        assert_eq!(
            vip_exchange(&lab, cfg, "a"),
            HandshakeKind::Full,
            "{label}: first visit, on the master"
        );
    }

    lab.signal("a", libc::SIGKILL);
    assert!(lab.wait_exit("a", Duration::from_secs(5)).is_some());
    // A crashed, so its interface keeps the VIP: wait for B to hold it too
    // (B's gratuitous ARP sends the client to B).
    assert!(
        wait_until(Duration::from_secs(10), || lab.has_vip("b")),
        "B did not take the VIP\n{}",
        lab.logs()
    );
    for (label, cfg) in &clients {
        assert_eq!(
            vip_exchange(&lab, cfg, "b"),
            HandshakeKind::Resumed,
            "{label}: the new master must resume the session the old one issued\n{}",
            lab.logs()
        );
    }
    let resumed = resumptions_on(&lab, "b");
    assert!(resumed >= 2.0, "B counted {resumed} resumptions");
    println!("failover A -> B: both sessions resumed on B (B counts {resumed} resumptions)");

    // A comes back with keys of its own and preempts: no resumption there.
    start_tls_node(&mut lab, "a", 101, &other);
    assert!(
        lab.wait_vip("a", Duration::from_secs(10)),
        "A did not take the VIP back\n{}",
        lab.logs()
    );
    for (label, cfg) in &clients {
        assert_eq!(
            vip_exchange(&lab, cfg, "a"),
            HandshakeKind::Full,
            "{label}: a master with other ticket keys cannot resume the session"
        );
    }
}
