//! Loopback pieces shared by the lab's drills and the integration tests (`tests/common` is
//! built on them): free ports, bounded polls on a condition, waiting for a listener, and
//! whether a process (by PID) is still running.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free loopback address: bound to port 0, then released (the kernel does not hand the
/// same port out again at once).
pub fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Calls `f` every `every` until it returns true (then true) or `limit` has passed (then
/// false). `f` runs at least once, and once more at the deadline.
pub fn poll(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// Waits (at most `limit`) until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    poll(limit, Duration::from_millis(20), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// Whether process `pid` is running: it exists and is not a zombie (exited, not yet reaped).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The command name is in parentheses and may hold anything: the state follows the
        // last ')'.
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_stops_at_the_condition_or_the_limit() {
        let mut n = 0;
        assert!(poll(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        assert_eq!(n, 3);
        let mut calls = 0;
        assert!(!poll(Duration::ZERO, Duration::from_millis(1), || {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1, "a zero limit still tries once");
    }

    #[test]
    fn a_listener_is_found_and_a_closed_port_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(wait_listening(addr, Duration::from_secs(5)));
        drop(l);
        assert!(!wait_listening(addr, Duration::ZERO));
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!pid_alive(pid));
    }
}
