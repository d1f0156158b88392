//! Where access-log batches go: a file descriptor (stdout, stderr), syslog
//! (the `syslog` crate: RFC 3164 or 5424 over a Unix datagram socket such as
//! `/dev/log`, or UDP) or journald (`tracing-journald`'s native protocol).
//! Only the writer thread of [`super::access`] calls these, so a sink may
//! block without blocking a request.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;

use crate::config::types::{LogTarget, SyslogConfig, SyslogFormat};

/// An open access-log destination.
pub enum Sink {
    /// stdout or stderr (a duplicate of the descriptor, written unbuffered).
    Fd(File),
    Syslog(Syslog),
    Journald(tracing::Dispatch),
}

/// A connected syslog logger in one of the two formats.
pub enum Syslog {
    Rfc3164(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
    Rfc5424(syslog::Logger<syslog::LoggerBackend, syslog::Formatter5424>),
}

impl Syslog {
    /// Connect to `cfg.address`: a path is a Unix socket (datagram, or
    /// stream as the crate falls back to), anything else `HOST:PORT` over UDP.
    pub fn connect(cfg: &SyslogConfig) -> io::Result<Syslog> {
        let facility = cfg
            .facility
            .parse::<syslog::Facility>()
            .unwrap_or(syslog::Facility::LOG_LOCAL0);
        let hostname = hostname();
        let process = cfg.tag.clone();
        let pid = std::process::id();
        let err = |e: syslog::Error| io::Error::other(format!("syslog {}: {e}", cfg.address));
        Ok(match cfg.format {
            SyslogFormat::Rfc3164 => Syslog::Rfc3164(
                open(
                    &cfg.address,
                    syslog::Formatter3164 {
                        facility,
                        hostname,
                        process,
                        pid,
                    },
                )
                .map_err(err)?,
            ),
            SyslogFormat::Rfc5424 => Syslog::Rfc5424(
                open(
                    &cfg.address,
                    syslog::Formatter5424 {
                        facility,
                        hostname,
                        process,
                        pid,
                    },
                )
                .map_err(err)?,
            ),
        })
    }

    /// Send one message at `level`.
    pub fn send(&mut self, level: tracing::Level, msg: &str) -> io::Result<()> {
        use tracing::Level;
        let r = match self {
            Syslog::Rfc3164(l) => match level {
                Level::ERROR => l.err(msg),
                Level::WARN => l.warning(msg),
                Level::INFO => l.info(msg),
                _ => l.debug(msg),
            },
            Syslog::Rfc5424(l) => {
                let m = (0u32, Default::default(), msg);
                match level {
                    Level::ERROR => l.err(m),
                    Level::WARN => l.warning(m),
                    Level::INFO => l.info(m),
                    _ => l.debug(m),
                }
            }
        };
        r.map_err(|e| io::Error::other(e.to_string()))
    }

    /// Diagnostics must not block a worker on a full syslog socket: they
    /// are dropped instead (the access log's writer thread keeps blocking).
    pub fn set_nonblocking(&self) {
        let backend = match self {
            Syslog::Rfc3164(l) => &l.backend,
            Syslog::Rfc5424(l) => &l.backend,
        };
        match backend {
            syslog::LoggerBackend::Unix(s) => {
                let _ = s.set_nonblocking(true);
            }
            syslog::LoggerBackend::Udp(s, _) => {
                let _ = s.set_nonblocking(true);
            }
            _ => {}
        }
    }
}

fn open<F: Clone>(
    address: &str,
    formatter: F,
) -> syslog::Result<syslog::Logger<syslog::LoggerBackend, F>> {
    if address.starts_with('/') {
        syslog::unix_custom(formatter, address)
    } else {
        let local = if address.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        syslog::udp(formatter, local, address)
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

impl Sink {
    /// Open the access log's destination (errors name it).
    pub fn open(target: &LogTarget) -> io::Result<Sink> {
        Ok(match target {
            LogTarget::Stdout => Sink::Fd(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
            LogTarget::Stderr => Sink::Fd(File::from(io::stderr().as_fd().try_clone_to_owned()?)),
            LogTarget::Syslog(cfg) => Sink::Syslog(Syslog::connect(cfg)?),
            LogTarget::Journald => Sink::Journald(journald_dispatch()?),
        })
    }

    /// Write the batches in order; returns how many lines were lost to an
    /// error (with the first error).
    pub fn write(&mut self, batches: &[&[u8]]) -> (u64, Option<io::Error>) {
        match self {
            Sink::Fd(f) => write_all_vectored(f, batches),
            Sink::Syslog(s) => per_line(batches, |l| s.send(tracing::Level::INFO, l)),
            Sink::Journald(d) => tracing::dispatcher::with_default(d, || {
                per_line(batches, |l| {
                    tracing::info!(target: "fulcrum::access", "{l}");
                    Ok(())
                })
            }),
        }
    }
}

/// A dispatcher that sends every event to journald (used for access lines,
/// which must not reach the diagnostics subscriber).
pub fn journald_dispatch() -> io::Result<tracing::Dispatch> {
    use tracing_subscriber::layer::SubscriberExt;
    let layer = tracing_journald::layer()
        .map_err(|e| io::Error::new(e.kind(), format!("journald: {e}")))?
        .with_syslog_identifier("fulcrum".to_string());
    Ok(tracing::Dispatch::new(
        tracing_subscriber::registry().with(layer),
    ))
}

fn per_line(
    batches: &[&[u8]],
    mut send: impl FnMut(&str) -> io::Result<()>,
) -> (u64, Option<io::Error>) {
    let mut lost = 0;
    let mut first = None;
    for line in batches
        .iter()
        .flat_map(|b| b.split(|&c| c == b'\n'))
        .filter(|l| !l.is_empty())
    {
        if let Err(e) = send(&String::from_utf8_lossy(line)) {
            lost += 1;
            first.get_or_insert(e);
        }
    }
    (lost, first)
}

/// `write_vectored` until everything is written; on an error the lines not
/// yet (completely) written are counted as lost.
fn write_all_vectored(f: &mut File, batches: &[&[u8]]) -> (u64, Option<io::Error>) {
    let mut slices: Vec<IoSlice<'_>> = batches
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    let mut retries = 0;
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => {
                return (
                    count_lines(rest),
                    Some(io::Error::from(io::ErrorKind::WriteZero)),
                )
            }
            Ok(n) => {
                retries = 0;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A descriptor someone made non-blocking: wait a little, bounded.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && retries < 1000 => {
                retries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return (count_lines(rest), Some(e)),
        }
    }
    (0, None)
}

fn count_lines(rest: &[IoSlice<'_>]) -> u64 {
    rest.iter()
        .map(|s| s.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum()
}
