//! Log targets: syslog (RFC 5424 over UDP, RFC 3164 over a Unix datagram
//! socket, both received by sockets this test binds), no ANSI escapes in a
//! log file, JSON diagnostics, journald's start-up error.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{backend, free_addr, get, wait_listening, Lb};

fn config(listen: SocketAddr, server: SocketAddr, log: &str) -> String {
    format!(
        "[log]\n{log}\n[frontends.www]\nlisten = [\"{listen}\"]\nbackend = \"web\"\n\
         [backends.web]\nservers = [{{ name = \"a\", address = \"{server}\" }}]\n"
    )
}

/// Datagrams received until `done` says the set is complete (bounded: 20 s).
fn receive(
    mut recv: impl FnMut(&mut [u8]) -> Option<usize>,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !done(&got) {
        if let Some(n) = recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn syslog_rfc5424_over_udp() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let at = sock.local_addr().expect("addr");
    let (_b, server) = backend("a");
    let listen = free_addr();
    let lb = Lb::start(
        &config(
            listen,
            server,
            &format!(
                "target = \"syslog\"\ndiagnostics = \"syslog\"\n\
                 syslog = {{ address = \"{at}\", facility = \"local0\", format = \"rfc5424\" }}"
            ),
        ),
        listen,
    );
    assert_eq!(get(listen, "/hello?x=1").expect("request").status, 200);
    let access = |m: &String| m.contains("www web/a") && m.contains("\"GET /hello?x=1\"");
    let got = receive(
        |b| sock.recv(b).ok(),
        |got| got.iter().any(access) && got.iter().any(|m| m.contains("ready")),
    );
    let line = got
        .iter()
        .find(|m| access(m))
        .unwrap_or_else(|| panic!("no access line in {got:?}"));
    // <PRI>1 TIMESTAMP HOST APP PID MSGID SD MSG; local0.info = 16*8+6 = 134.
    assert!(line.starts_with("<134>1 "), "{line}");
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    assert_eq!(fields.len(), 8, "{line}");
    assert!(fields[1].contains('T'), "timestamp: {line}");
    assert_eq!(fields[3], "fulcrum", "{line}");
    assert_eq!(fields[4], lb.proc.pid().to_string(), "{line}");
    let diag = got
        .iter()
        .find(|m| m.contains("ready"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(diag.starts_with("<134>1 "), "{diag}");
    assert!(!diag.contains('\x1b'), "escape codes in {diag:?}");
    // stdout carries no access line now.
    assert!(
        !lb.proc.output().contains("www web/a"),
        "{}",
        lb.proc.output()
    );
}

#[test]
fn syslog_rfc3164_over_a_unix_datagram_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.sock");
    let sock = UnixDatagram::bind(&path).expect("bind unix datagram");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let (_b, server) = backend("a");
    let listen = free_addr();
    let lb = Lb::start(
        &config(
            listen,
            server,
            &format!(
                "access = \"json\"\ntarget = \"syslog\"\n\
                 syslog = {{ address = \"{}\", facility = \"daemon\", tag = \"lb1\" }}",
                path.display()
            ),
        ),
        listen,
    );
    assert_eq!(get(listen, "/p").expect("request").status, 200);
    let got = receive(|b| sock.recv(b).ok(), |got| !got.is_empty());
    let line = got.first().unwrap_or_else(|| panic!("nothing received"));
    // <PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG; daemon.info = 3*8+6 = 30.
    assert!(line.starts_with("<30>"), "{line}");
    let tag = format!(" lb1[{}]: ", lb.proc.pid());
    let (_, msg) = line
        .split_once(&tag)
        .unwrap_or_else(|| panic!("no `{tag}` in {line}"));
    let v: serde_json::Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
    assert_eq!(v["uri"], "/p");
    assert_eq!(v["status"], 200);
    assert_eq!(v["server"], "a");
}

#[test]
fn a_log_file_has_no_escape_codes_and_json_diagnostics_parse() {
    let (_b, server) = backend("a");
    let listen = free_addr();
    // The harness sends stdout and stderr to a file; TERM says "colour
    // terminal", which must not matter when the stream is not one.
    std::env::set_var("TERM", "xterm-256color");
    let lb = Lb::start(&config(listen, server, ""), listen);
    assert_eq!(get(listen, "/").expect("request").status, 200);
    assert!(common::wait_until(Duration::from_secs(10), || lb
        .proc
        .output()
        .contains("www web/a")));
    let out = lb.proc.output();
    assert!(out.contains(" INFO "), "{out}");
    assert!(!out.contains('\x1b'), "escape codes in a log file: {out:?}");
    drop(lb);

    let listen = free_addr();
    let lb = Lb::start(
        &config(listen, server, "diagnostics_format = \"json\""),
        listen,
    );
    wait_listening(listen);
    assert!(common::wait_until(Duration::from_secs(10), || lb
        .proc
        .output()
        .contains("ready")));
    let out = lb.proc.output();
    let diag: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        diag.iter()
            .any(|v| v["level"] == "INFO" && v["fields"]["message"] == "ready"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "{out:?}");
}

#[test]
fn journald_target_without_journald_fails_at_start() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: journald runs here; this test checks the error when it does not");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        config(free_addr(), free_addr(), "target = \"journald\""),
    )
    .expect("write");
    let out = std::process::Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot open the access log") && err.contains("journald"),
        "{err}"
    );
}
