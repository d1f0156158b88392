//! Fuzz the config loader: arbitrary text through the TOML layer and
//! `validate()`. Nothing may panic; an accepted config is valid again when
//! re-checked, and every refusal carries at least one positioned error.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match fulcrum::config::parse_str(text, "fuzz.toml") {
        Ok(_) => {
            // Deterministic: the same text is accepted again.
            assert!(fulcrum::config::parse_str(text, "fuzz.toml").is_ok());
        }
        Err(errs) => {
            assert!(!errs.0.is_empty(), "a refusal without an error");
            for e in &errs.0 {
                assert_eq!(e.file, "fuzz.toml");
                assert!(!e.message.is_empty());
            }
        }
    }
});
