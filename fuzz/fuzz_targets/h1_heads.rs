//! Fuzz the HTTP/1.1 relay's parsers: request and response heads and the
//! chunked-body scanner. Arbitrary bytes must never panic; every range a head
//! reports lies inside the input; the scanner gives the same answer whether
//! the bytes arrive at once or split in two.

#![no_main]

use fulcrum::proxy::h1::{ChunkScanner, Parsed, ReqHead, RespHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut req = ReqHead::default();
    if let Parsed::Complete(n) = req.parse(data, 100) {
        assert!(n <= data.len());
        assert!(req.method.end <= n && req.target.end <= n);
        for f in &req.fields {
            assert!(f.name.end <= n && f.value.end <= n);
        }
    }
    for head_request in [false, true] {
        let mut resp = RespHead::default();
        if let Ok(Some(n)) = resp.parse(data, head_request) {
            assert!(n <= data.len());
            assert!(resp.status_line.end <= n);
            for f in &resp.fields {
                assert!(f.name.end <= n && f.value.end <= n);
                let _ = resp.forwards(data, f);
            }
        }
    }
    let mut whole = ChunkScanner::default();
    let one = whole.scan(data);
    if let Ok(n) = one {
        assert!(n <= data.len());
        assert!(whole.is_done() || n == data.len());
    }
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut split = ChunkScanner::default();
    let two = split.scan(&data[..cut]).and_then(|a| {
        if split.is_done() {
            Ok(a)
        } else {
            split.scan(&data[cut..]).map(|b| a + b)
        }
    });
    match (one, two) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(whole.is_done(), split.is_done());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("one piece {a:?}, two pieces {b:?}"),
    }
});
