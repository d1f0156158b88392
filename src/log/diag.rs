//! Diagnostics: the `tracing` subscriber `fulcrum` installs at start.
//!
//! Colours (ANSI escapes) only when the stream is a terminal and `NO_COLOR`
//! is unset or empty (<https://no-color.org>): a file, a pipe or journald
//! never gets escape codes. Targets: stderr (default), stdout, syslog (the
//! `syslog` crate; one message per event, severity from the level) and
//! journald (`tracing-journald`, structured fields kept). `FULCRUM_LOG`
//! sets the filter (`info` by default).

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::sink::Syslog;
use crate::config::types::{DiagFormat, DiagTarget};

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Whether a stream that is (or is not) a terminal gets colours.
pub fn colours(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn filter() -> EnvFilter {
    // rustls logs a WARN for every renegotiation request it refuses (with a
    // no_renegotiation alert): any client could fill the log, so its own
    // lines are kept to errors unless FULCRUM_LOG asks for them.
    EnvFilter::try_from_env("FULCRUM_LOG").unwrap_or_else(|_| EnvFilter::new("info,rustls=error"))
}

/// Install the diagnostics subscriber (once; later calls do nothing).
pub fn init(target: &DiagTarget, format: DiagFormat) -> io::Result<()> {
    let json = format == DiagFormat::Json;
    let layer: Boxed = match target {
        DiagTarget::Stderr => fmt_layer(io::stderr, colours(io::stderr().is_terminal()), json),
        DiagTarget::Stdout => fmt_layer(io::stdout, colours(io::stdout().is_terminal()), json),
        DiagTarget::Syslog(cfg) => {
            let s = Syslog::connect(cfg)?;
            s.set_nonblocking();
            let make = SyslogMake(Arc::new(Mutex::new(s)));
            // syslog stamps the time itself.
            let l = tracing_subscriber::fmt::layer()
                .with_writer(make)
                .with_ansi(false)
                .with_target(false)
                .without_time();
            if json {
                l.json().boxed()
            } else {
                l.boxed()
            }
        }
        DiagTarget::Journald => tracing_journald::layer()
            .map_err(|e| io::Error::new(e.kind(), format!("journald: {e}")))?
            .with_syslog_identifier("fulcrum".to_string())
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter()))
        .try_init();
    Ok(())
}

fn fmt_layer<W>(w: W, ansi: bool, json: bool) -> Boxed
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let l = tracing_subscriber::fmt::layer()
        .with_writer(w)
        .with_ansi(ansi)
        .with_target(false);
    if json {
        l.json().boxed()
    } else {
        l.boxed()
    }
}

/// Hands each formatted event to syslog as one message.
struct SyslogMake(Arc<Mutex<Syslog>>);

impl<'a> MakeWriter<'a> for SyslogMake {
    type Writer = SyslogEvent<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogEvent {
            to: &self.0,
            level: tracing::Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        SyslogEvent {
            to: &self.0,
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// One event's text, sent when the formatter drops the writer.
struct SyslogEvent<'a> {
    to: &'a Mutex<Syslog>,
    level: tracing::Level,
    buf: Vec<u8>,
}

impl Write for SyslogEvent<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogEvent<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        if let Ok(mut s) = self.to.lock() {
            // A full socket drops the event (non-blocking): never stall a worker.
            let _ = s.send(self.level, text);
        }
    }
}
