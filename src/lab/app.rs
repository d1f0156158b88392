//! The frontend app of the `two-tier` topology (seed 002): it answers every request by
//! calling the backend tier through its VIP, and says who answered:
//! `{"frontend": NAME, "backend": BACKEND-SERVER, "server": NAME}`.
//!
//! `GET /health` answers 200 (503 after `POST /_control/health/fail`, 200 again after
//! `POST /_control/health/ok`), like `fulcrum backend`. A small blocking server: one thread per
//! connection, one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// Serves the frontend app named `name` on `listen`, calling `backend` (the backend VIP)
/// for every request. Runs until killed.
pub fn serve(listen: SocketAddr, name: &str, backend: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    eprintln!("frontend app {name} listening on {listen}, backend tier at {backend}");
    let healthy = Arc::new(AtomicBool::new(true));
    let name: Arc<str> = Arc::from(name);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let (healthy, name) = (healthy.clone(), name.clone());
        std::thread::spawn(move || handle(stream, &name, backend, &healthy));
    }
    Ok(())
}

fn handle(mut s: TcpStream, name: &str, backend: SocketAddr, healthy: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or("/"));
    let (status, body) = match (method, path) {
        ("GET", "/health") => {
            if healthy.load(Ordering::Relaxed) {
                (200, format!(r#"{{"status":"ok","server":"{name}"}}"#))
            } else {
                (
                    503,
                    format!(r#"{{"status":"unhealthy","server":"{name}"}}"#),
                )
            }
        }
        ("POST", "/_control/health/fail") => {
            healthy.store(false, Ordering::Relaxed);
            (200, format!(r#"{{"server":"{name}","healthy":false}}"#))
        }
        ("POST", "/_control/health/ok") => {
            healthy.store(true, Ordering::Relaxed);
            (200, format!(r#"{{"server":"{name}","healthy":true}}"#))
        }
        _ => match super::probe::request(backend, Duration::from_secs(2)) {
            Some(a) => (
                200,
                format!(
                    r#"{{"frontend":"{name}","backend":"{}","backend_lb":"{}","server":"{name}"}}"#,
                    a.server.unwrap_or_default(),
                    a.lb.unwrap_or_default()
                ),
            ),
            None => (
                502,
                format!(r#"{{"frontend":"{name}","error":"backend tier did not answer"}}"#),
            ),
        },
    };
    let reason = match status {
        200 => "OK",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
