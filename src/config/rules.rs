//! Rules shared by every place a name, a server address or the admin token
//! enters fulcrum: the configuration file, inventory files, DNS discovery and
//! the admin API. One function per rule, so `fulcrum check`, `fulcrum run`,
//! reloads and API calls cannot disagree (they once did: `check` accepted a
//! token file `run` refused, and the API took `..` as a server name).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// True for a frontend, backend or server name: 1–64 of letters, digits, `-`,
/// `_` and `.`, and not `.` or `..`. Those two are path segments that browsers,
/// curl and URL normalisation remove, so `/api/v1/backends/web/servers/..`
/// could never reach the server; every other name is one URL path segment as is.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The hint shown with a refused name.
pub const NAME_HINT: &str =
    "names use letters, digits, '-', '_' and '.' (at most 64), and are not \".\" or \"..\"";

/// Why `addr` cannot be a server's address (something one connects to), or
/// `None` when it can: port 0, the unspecified address (`0.0.0.0`, `::`), the
/// IPv4 broadcast address and multicast groups (224.0.0.0/4, ff00::/8) are
/// not unicast destinations.
pub fn server_address_problem(addr: SocketAddr) -> Option<&'static str> {
    if addr.port() == 0 {
        return Some("port 0 cannot be connected to");
    }
    // `::ffff:a.b.c.d` is the IPv4 address to the kernel.
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    };
    if ip.is_unspecified() {
        return Some("the unspecified address is not a server");
    }
    if ip.is_multicast() {
        return Some("a multicast group is not a server");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some("the broadcast address is not a server");
        }
    }
    None
}

/// Read an admin token file: its first line, trimmed, at least
/// [`MIN_TOKEN_LEN`] characters. The error says why, never what the file holds.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read admin token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "admin token in {} is too short (at least {MIN_TOKEN_LEN} characters)",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_not_names() {
        for bad in ["", ".", "..", "a/b", "a b", "é", "%2e"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for ok in ["web1", "a.b", "...", ".hidden", "x_y-z", "10.0.0.1"] {
            assert!(valid_name(ok), "{ok:?}");
        }
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn only_unicast_addresses_with_a_port_are_servers() {
        for bad in [
            "0.0.0.0:0",
            "0.0.0.0:80",
            "127.0.0.1:0",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "239.255.255.250:1900",
            "[::]:80",
            "[ff02::1]:80",
            "[::ffff:224.0.0.1]:80",
        ] {
            let a: SocketAddr = bad.parse().unwrap();
            assert!(server_address_problem(a).is_some(), "{bad}");
        }
        for ok in [
            "127.0.0.1:80",
            "10.0.0.255:80",
            "[::1]:8080",
            "192.168.50.11:443",
        ] {
            let a: SocketAddr = ok.parse().unwrap();
            assert_eq!(server_address_problem(a), None, "{ok}");
        }
    }
}
