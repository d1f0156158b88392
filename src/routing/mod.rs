//! What a request is routed by, as data: the route index a frontend picks a
//! backend with, the per-client rate limiter, the sticky-cookie value naming
//! a server.
//!
//! The runtime builds these into each snapshot and the proxy reads them per
//! request, so they belong to neither: here, neither `runtime` nor `proxy`
//! imports the other to share them. (The proxy keeps its old paths,
//! `proxy::route` and `proxy::ratelimit`, as re-exports.)

pub mod ratelimit;
pub mod route;

/// The opaque sticky-cookie value naming a server: stable across reloads and
/// across the nodes of a pair, and revealing nothing about the address.
pub fn sticky_id(backend: &str, server: &str) -> String {
    let h = crate::balance::hash_key(format!("{backend}/{server}").as_bytes());
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::sticky_id;

    #[test]
    fn sticky_ids_are_stable_and_distinct() {
        assert_eq!(sticky_id("web", "web1"), sticky_id("web", "web1"));
        assert_ne!(sticky_id("web", "web1"), sticky_id("web", "web2"));
        assert_ne!(sticky_id("web", "web1"), sticky_id("api", "web1"));
    }
}
