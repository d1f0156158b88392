//! Differential test: every request of `tests/differential/corpus.toml` goes
//! raw through fulcrum and through HAProxy (Debian's package), each in front
//! of its own raw origin that records exactly the bytes it receives and
//! answers a fixed response. Per case, the client-visible verdict (statuses,
//! or a close) and the normalised bytes the origin received are compared; a
//! difference not listed as `intended_difference` in the corpus fails, and
//! fulcrum's verdict must always be the corpus's `expect`.
//!
//! Without `haproxy` installed the comparison is skipped (with a printed
//! reason) and only fulcrum's expected verdicts are checked. Set
//! `DIFFERENTIAL_PRINT=1` to print every case's outcomes side by side.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::origin::*;
use common::*;

#[derive(serde::Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    request: String,
    /// `[marker, n]`: the marker in `request` stands for n copies of "a".
    repeat: Option<(String, usize)>,
    expect: String,
    intended_difference: Option<String>,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        match &self.repeat {
            Some((marker, n)) => self.request.replace(marker, &"a".repeat(*n)).into_bytes(),
            None => self.request.clone().into_bytes(),
        }
    }
}

/// What one proxy made of one case.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    verdict: String,
    /// Each upstream connection's request, normalised (see `normalise`).
    origin: Vec<String>,
}

// ---------------------------------------------------------------------------
// HAProxy.

struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_installed() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_haproxy(listen: SocketAddr, origin: SocketAddr) -> Haproxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 200\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 3s\n  \
             timeout server 3s\n  timeout http-request 2s\n\
             frontend fe\n  bind {listen}\n  default_backend be\n\
             backend be\n  server o1 {origin}\n"
        ),
    )
    .expect("write haproxy.cfg");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn haproxy");
    wait_listening(listen);
    Haproxy { child, _dir: dir }
}

fn run(cases: &[Case], proxy: SocketAddr, origin: &Origin) -> Vec<Outcome> {
    cases
        .iter()
        .map(|c| {
            let _ = origin.take();
            let verdict = client(proxy, &c.bytes());
            // A connection that got no byte carried no request.
            let origin = origin
                .take()
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| normalise(r))
                .collect();
            Outcome { verdict, origin }
        })
        .collect()
}

#[test]
fn corpus_through_fulcrum_and_haproxy() {
    let text = include_str!("differential/corpus.toml");
    let corpus: Corpus = toml::from_str(text).expect("corpus.toml");
    assert!(corpus.case.len() >= 80, "the corpus has 80+ cases");

    let f_origin = Origin::start();
    let listen = free_addr();
    let _lb = Lb::start(&proxy_config(listen, f_origin.addr), listen);

    let haproxy = haproxy_installed();
    if !haproxy {
        println!("SKIP comparison: haproxy is not installed (only fulcrum's verdicts are checked)");
    }
    let h_origin = Origin::start();
    let h_listen = free_addr();
    let _hap = haproxy.then(|| start_haproxy(h_listen, h_origin.addr));

    let (f, h) = std::thread::scope(|s| {
        let f = s.spawn(|| run(&corpus.case, listen, &f_origin));
        let h = s.spawn(|| haproxy.then(|| run(&corpus.case, h_listen, &h_origin)));
        (f.join().unwrap(), h.join().unwrap())
    });

    let print = std::env::var_os("DIFFERENTIAL_PRINT").is_some();
    let mut failures = Vec::new();
    for (i, c) in corpus.case.iter().enumerate() {
        let fo = &f[i];
        if print {
            println!("== {}\n  fulcrum: {:?}", c.name, fo);
            if let Some(h) = &h {
                println!("  haproxy: {:?}", h[i]);
            }
        }
        if fo.verdict != c.expect {
            failures.push(format!(
                "{}: fulcrum answered {:?}, the corpus expects {:?}",
                c.name, fo.verdict, c.expect
            ));
        }
        let Some(h) = &h else { continue };
        let ho = &h[i];
        let differs = fo != ho;
        match (&c.intended_difference, differs) {
            (None, true) => failures.push(format!(
                "{}: unlisted difference\n  fulcrum: {fo:?}\n  haproxy: {ho:?}",
                c.name
            )),
            (Some(_), false) => println!(
                "note: {} is listed as an intended difference but both agree",
                c.name
            ),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        corpus.case.len(),
        failures.join("\n")
    );
}
