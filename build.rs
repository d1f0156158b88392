//! Build script: `fulcrum --version` names the commit it was built from
//! (`git rev-parse --short HEAD`), or "unknown" outside a git checkout
//! (a source tarball, a crate download) or without git.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=FULCRUM_VERSION={version} (commit {commit})");
    println!("cargo:rustc-env=FULCRUM_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit). Worktrees keep HEAD apart from the shared refs.
    if let (Some(dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let head = PathBuf::from(&dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        let packed = PathBuf::from(&common).join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
        if let Some(r) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            let branch = PathBuf::from(&common).join(r);
            if branch.exists() {
                println!("cargo:rerun-if-changed={}", branch.display());
            }
        }
    }
}
