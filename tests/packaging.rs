//! What the package ships: the default /etc/fulcrum/fulcrum.toml passes
//! `fulcrum check`, the systemd unit says what the README promises, the man
//! page renders, and `--version` names the commit.

mod common;

use std::path::Path;
use std::process::Command;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn the_packaged_config_passes_check() {
    let out = Command::new(common::bin())
        .args(["check", "--config"])
        .arg(repo("dist/fulcrum.toml"))
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_is_type_notify_hardened_and_reloads() {
    let unit = std::fs::read_to_string(repo("dist/fulcrum.service")).expect("unit file");
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW",
        "ReadWritePaths=",
        "ExecStart=/usr/bin/fulcrum run --config /etc/fulcrum/fulcrum.toml",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "no {line:?} in the unit"
        );
    }
}

#[test]
fn man_page_renders_every_subcommand() {
    let out = Command::new(common::bin())
        .arg("man")
        .output()
        .expect("run man");
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH fulcrum 1"), "{page}");
    for sub in ["run", "check", "ctl", "upgrade", "lab"] {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
    // The packaged copy exists (regenerate with `fulcrum man > dist/fulcrum.1`).
    let shipped = std::fs::read_to_string(repo("dist/fulcrum.1")).expect("dist/fulcrum.1");
    assert!(shipped.contains(".TH fulcrum 1"));
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(common::bin())
        .arg("--version")
        .output()
        .expect("run");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("fulcrum 0."), "{v}");
    assert!(v.contains("(commit "), "{v}");
}
