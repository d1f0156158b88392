//! Every ```toml block of README.md is a configuration `fulcrum check` accepts.
//!
//! The rule, kept simple so it stays honest: each block is a **complete**
//! configuration, copied as shown. The only rewrite is of files it names:
//! fulcrum reads some of them while validating (TLS certificates and keys,
//! the admin token, TLS ticket keys, OCSP responses), and `/etc` is not ours
//! to write, so every quoted path under `/etc/` is moved into a scratch
//! directory where the test creates what the file kind needs:
//!
//! - `X.pem` + `X.key`: a self-signed certificate and its key (one pair per `X`);
//! - `*.token`: a 32-character admin token;
//! - `*.keys` (TLS ticket keys): a generated key file;
//! - `*.ocsp` / `*.der` (OCSP response): a few opaque bytes;
//! - anything else (inventories, password files) is left absent: fulcrum
//!   reads those at run time, not in `check`.
//!
//! A block that cannot stand alone (a fragment meant to be merged) must not be
//! tagged `toml`: tag it `text`, or complete it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The ```toml blocks of `text`: (line of the opening fence, body).
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```toml") => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if fence.starts_with("```") => out.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(current.is_none(), "README.md ends inside a ```toml block");
    out
}

/// Every quoted absolute path under /etc/ in `body`.
fn etc_paths(body: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for piece in body.split('"').skip(1).step_by(2) {
        if piece.starts_with("/etc/") {
            paths.insert(piece.to_string());
        }
    }
    paths
}

/// Create in `root` what `path` (re-rooted) must hold for `fulcrum check`.
fn materialise(root: &Path, path: &str) {
    let target = root.join(path.trim_start_matches('/'));
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let ext = target.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "pem" | "key" => {
            let pem = target.with_extension("pem");
            let key = target.with_extension("key");
            if pem.exists() && key.exists() {
                return;
            }
            let ck =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
            std::fs::write(&pem, ck.cert.pem()).expect("write cert");
            std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
        }
        "token" => std::fs::write(&target, "readme-test-token-0123456789abcdef\n").expect("token"),
        "keys" => {
            // Ticket key file: hex lines of 32 bytes each (see README "TLS for an HA pair").
            let line = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
            std::fs::write(&target, line).expect("ticket keys")
        }
        "ocsp" | "der" => std::fs::write(&target, [0x30, 0x03, 0x0a, 0x01, 0x00]).expect("ocsp"),
        _ => {}
    }
}

#[test]
fn every_toml_block_in_the_readme_passes_fulcrum_check() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let blocks = toml_blocks(&readme);
    assert!(blocks.len() >= 4, "found only {} toml blocks", blocks.len());
    let mut failures = Vec::new();
    for (line, body) in &blocks {
        let dir = tempfile::tempdir().expect("tmp");
        let mut text = body.clone();
        for p in etc_paths(body) {
            materialise(dir.path(), &p);
            let moved = dir.path().join(p.trim_start_matches('/'));
            text = text.replace(&format!("\"{p}\""), &format!("\"{}\"", moved.display()));
        }
        // Sanity: the block is TOML at all (the README once had inline tables broken over lines).
        if let Err(e) = text.parse::<toml::Table>() {
            failures.push(format!("README.md:{line}: not valid TOML: {e}"));
            continue;
        }
        let file = dir.path().join("block.toml");
        std::fs::write(&file, &text).expect("write block");
        let out = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .expect("run fulcrum check");
        if !out.status.success() {
            failures.push(format!(
                "README.md:{line}: fulcrum check refused the block:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_block_scanner_finds_blocks_and_paths() {
    let text = "a\n```toml\nx = \"/etc/ssl/a.pem\"\n```\n```sh\nno\n```\n  ```toml\ny = 1\n  ```\n";
    let b = toml_blocks(text);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].0, 2);
    assert_eq!(
        etc_paths(&b[0].1).into_iter().collect::<Vec<_>>(),
        ["/etc/ssl/a.pem"]
    );
}
