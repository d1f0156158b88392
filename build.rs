//! Build script: `fulcrum --version` names the commit it was built from
//! (`git rev-parse --short HEAD`), or "unknown" outside a git checkout
//! (a source tarball, a crate download) or without git.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=FULCRUM_VERSION={version} (commit {commit})");
    println!("cargo:rustc-env=FULCRUM_COMMIT={commit}");
    // Rebuild when HEAD moves (a worktree's .git is a file; both are fine to
    // watch, and a missing path only means "no git here").
    for p in [".git/HEAD", ".git/index", ".git"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
