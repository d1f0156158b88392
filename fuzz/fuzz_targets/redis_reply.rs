//! Fuzz the RESP2 reply parser used by the `redis` health check. Nothing may
//! panic; a complete reply reports a length inside the input, and parsing a
//! longer buffer that starts with the same reply gives the same answer.

#![no_main]

use fulcrum::health::redis::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Done(reply, n) => {
            assert!(n > 0 && n <= data.len());
            let prefix = data.get(..n).unwrap_or_default();
            assert_eq!(parse(prefix), Parsed::Done(reply, n));
        }
        Parsed::Incomplete => {
            // A prefix of an incomplete reply is incomplete too (or invalid
            // at a byte it already had).
            let half = data.get(..data.len() / 2).unwrap_or_default();
            assert!(!matches!(parse(half), Parsed::Done(..)));
        }
        Parsed::Invalid(why) => assert!(!why.is_empty()),
    }
});
