//! Fuzz `fulcrum import` on haproxy.cfg text: arbitrary input must never panic, and an
//! accepted import must produce TOML that parses.

#![no_main]

use fulcrum::import::{check_text, import, Hostnames, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = check_text("fuzz", data.to_vec()) else { return };
    let input = Input { label: "haproxy.cfg".into(), dir: std::path::PathBuf::from("/nonexistent"), text };
    if let Ok(out) = import(Some(&input), None, None, Hostnames::Resolve, &|_| None) {
        assert!(out.toml.parse::<toml::Table>().is_ok() || out.toml.contains("# ["));
    }
});
