//! Pieces the networked fuzz targets (`h1_relay`, `admin_api`) share. Free ports come from
//! `fulcrum::lab::local`, the same helper `tests/common` is built on.

#![allow(dead_code)]

pub use fulcrum::lab::local::free_addr;

/// A panic in any task (not only the fuzzed closure) is a finding: abort, so libFuzzer
/// sees it and keeps the input.
pub fn abort_on_panic() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        std::process::abort();
    }));
}

/// The one current-thread runtime a target's servers and its client run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Reads the input as a script, byte by byte (0 once it is used up).
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
        self.0 = rest;
        b
    }
    /// At most `n` bytes (fewer when the input ends).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a.to_vec()
    }
    /// What is left.
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}
