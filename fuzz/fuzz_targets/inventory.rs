//! Fuzz the inventory-file parser (discovery `file`): arbitrary text as JSON,
//! TOML and guessed format. Nothing may panic; every server accepted has a
//! non-empty name and a weight in 1..=256.

#![no_main]

use fulcrum::discovery::inventory::{parse, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Json, Format::Toml, Format::Guess] {
        match parse(text, "inventory", format) {
            Ok(servers) => {
                for s in &servers {
                    assert!(!s.name.is_empty());
                    assert!((1..=256).contains(&s.weight), "weight {}", s.weight);
                }
            }
            Err(errs) => assert!(!errs.is_empty(), "a refusal without an error"),
        }
    }
});
