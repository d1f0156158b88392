//! Fuzz the PROXY protocol parser: arbitrary bytes must never panic, and an accepted
//! header must never claim more bytes than it was given.

#![no_main]

use fulcrum::proxy::proxy_protocol::{parse, ParseError, V1_MAX_LEN, V2_FIXED_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok((header, used)) => {
            assert!(used > 0 && used <= data.len());
            // The header alone must parse the same way.
            assert_eq!(parse(&data[..used]), Ok((header, used)));
        }
        Err(ParseError::Incomplete) => {
            assert!(data.len() < V1_MAX_LEN.max(V2_FIXED_LEN + usize::from(u16::MAX)));
        }
        Err(ParseError::NotProxy | ParseError::Invalid(_)) => {}
    }
});
