//! The probe client: bounded HTTP requests to the VIP from the client namespace at a fixed
//! rate, and what they show (failures, the longest outage, who answered over time).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::netns;

/// Sends one HTTP/1.1 request with `Connection: close`; the whole response text, or `None`
/// on any error or timeout.
pub fn http(to: SocketAddr, method: &str, path: &str, timeout: Duration) -> Option<String> {
    // A short connect timeout keeps the measurement fine-grained: during an outage the SYN
    // is lost and would otherwise be retried only after a second.
    http_with(to, method, path, Duration::from_millis(100), timeout)
}

/// [`http`] with its own connect timeout.
pub fn http_with(
    to: SocketAddr,
    method: &str,
    path: &str,
    connect: Duration,
    timeout: Duration,
) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&to, connect).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vip\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// One bounded client request to an address: `Some` answer, or `None` when it failed.
pub type RequestFn = fn(SocketAddr, Duration) -> Option<Answer>;

/// A successful answer through the VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The load balancer (response header `X-Lab-LB`).
    pub lb: Option<String>,
    /// The app server (`"server"` in its JSON).
    pub server: Option<String>,
}

/// One request to `to`; `Some` only for a 200 answer.
pub fn request(to: SocketAddr, timeout: Duration) -> Option<Answer> {
    answer_of(&http(to, "GET", "/", timeout)?)
}

/// The answer in a whole response text; `Some` only for a 200 answer.
pub fn answer_of(text: &str) -> Option<Answer> {
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (head, body) = text.split_once("\r\n\r\n")?;
    let lb = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(super::topology::LB_HEADER)
            .then(|| v.trim().to_string())
    });
    let field = |key: &str| {
        body.split_once(&format!("\"{key}\":\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_string())
    };
    // two-tier: the frontend app names the backend app server that answered it.
    let server = match (field("server"), field("backend")) {
        (Some(s), Some(b)) => Some(format!("{s}→{b}")),
        (s, _) => s,
    };
    Some(Answer { lb, server })
}

/// One probe request: when it started and ended (ms since the probe began) and its answer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Start, ms since the probe began.
    pub start_ms: f64,
    /// End, ms since the probe began.
    pub end_ms: f64,
    /// The answer, `None` when the request failed.
    pub answer: Option<Answer>,
}

/// A running probe: requests the VIP every `rate` until stopped or `limit` has passed.
pub struct Probe {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
    /// When the probe began.
    pub t0: Instant,
}

impl Probe {
    /// Starts probing `to` from namespace `ns` with `request` (HTTP: [`request`]).
    pub fn start(
        ns: &str,
        to: SocketAddr,
        request: RequestFn,
        rate: Duration,
        limit: Duration,
    ) -> Probe {
        Probe::launch(Some(ns), to, request, rate, limit)
    }

    /// As [`Probe::start`], from this process's own namespace (loopback drills and tests).
    pub fn start_here(
        to: SocketAddr,
        request: RequestFn,
        rate: Duration,
        limit: Duration,
    ) -> Probe {
        Probe::launch(None, to, request, rate, limit)
    }

    fn launch(
        ns: Option<&str>,
        to: SocketAddr,
        request: RequestFn,
        rate: Duration,
        limit: Duration,
    ) -> Probe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let (out, s) = (samples.clone(), stop.clone());
        let body = move || run(&out, &s, t0, to, request, rate, limit);
        let thread = match ns {
            Some(ns) => netns::in_netns(ns, body),
            None => std::thread::spawn(move || {
                body();
                Ok(())
            }),
        };
        Probe {
            samples,
            stop,
            thread: Some(thread),
            t0,
        }
    }

    /// The samples so far (the probe keeps running).
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Milliseconds since the probe began.
    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// Waits until the probe has run `limit` (or was stopped) and returns every sample, or
    /// why the probe could not run (e.g. the client namespace is gone).
    pub fn finish(mut self) -> anyhow::Result<Vec<Sample>> {
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("the probe could not run: {e}"),
                Err(_) => anyhow::bail!("the probe thread panicked"),
            }
        }
        Ok(self.samples.lock().map(|v| v.clone()).unwrap_or_default())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probe loop: one request every `rate` (a late one starts the next at once) until
/// `stop` or `limit` since `t0`.
fn run(
    out: &Mutex<Vec<Sample>>,
    stop: &AtomicBool,
    t0: Instant,
    to: SocketAddr,
    request: RequestFn,
    rate: Duration,
    limit: Duration,
) {
    let ms = |i: Instant| (i - t0).as_secs_f64() * 1000.0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
        let start = Instant::now();
        let answer = request(to, Duration::from_millis(1000));
        let sample = Sample {
            start_ms: ms(start),
            end_ms: ms(Instant::now()),
            answer,
        };
        if let Ok(mut v) = out.lock() {
            v.push(sample);
        }
        next += rate;
        let now = Instant::now();
        if next > now {
            // The probe's pace: the pause between two requests is the scenario.
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// A stretch of consecutive samples answered by the same load balancer (or failing).
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// `lb1`, `lb2`, or `FAILED`.
    pub lb: String,
    /// Start of the first request, ms.
    pub from_ms: u64,
    /// End of the last request, ms.
    pub to_ms: u64,
    /// Requests in the stretch.
    pub requests: usize,
    /// Answers per app server in the stretch.
    pub servers: BTreeMap<String, usize>,
}

/// What the probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub sent: usize,
    /// Requests that failed (no 200 answer in time).
    pub failed: usize,
    /// The longest run of failed requests, as client-visible outage: from the last success
    /// before it to the first success after it (0 when nothing failed).
    pub outage_ms: u64,
    /// Failed requests in that longest run.
    pub longest_failure_run: usize,
    /// The longest time between two consecutive successful answers.
    pub longest_gap_ms: u64,
    /// Answers per app server.
    pub servers: BTreeMap<String, usize>,
    /// Answers per load balancer.
    pub lbs: BTreeMap<String, usize>,
    /// Who answered over time, by load balancer.
    pub timeline: Vec<Segment>,
    /// Answers per app server (and failures) in each [`BUCKET_MS`] window.
    pub buckets: Vec<Bucket>,
}

/// Width of a [`Bucket`], ms.
pub const BUCKET_MS: u64 = 500;

/// Who answered in one window of the probe.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Window start, ms.
    pub from_ms: u64,
    /// Failed requests started in the window.
    pub failed: usize,
    /// Answers per app server.
    pub servers: BTreeMap<String, usize>,
}

/// Summarises `samples`.
pub fn summarize(samples: &[Sample]) -> Summary {
    let mut s = Summary {
        sent: samples.len(),
        failed: 0,
        outage_ms: 0,
        longest_failure_run: 0,
        longest_gap_ms: 0,
        servers: BTreeMap::new(),
        lbs: BTreeMap::new(),
        timeline: Vec::new(),
        buckets: Vec::new(),
    };
    let mut last_ok: Option<f64> = None;
    let mut run = 0usize;
    let mut run_start: Option<f64> = None;
    for x in samples {
        match &x.answer {
            Some(a) => {
                if let Some(l) = last_ok {
                    s.longest_gap_ms = s.longest_gap_ms.max((x.end_ms - l) as u64);
                }
                if run > 0 {
                    // The outage began at the last success (or at the first failure's start).
                    let began = last_ok.or(run_start).unwrap_or(x.start_ms);
                    let length = (x.end_ms - began) as u64;
                    if length > s.outage_ms {
                        s.outage_ms = length;
                        s.longest_failure_run = run;
                    }
                }
                run = 0;
                run_start = None;
                last_ok = Some(x.end_ms);
                let server = a.server.clone().unwrap_or_else(|| "?".into());
                let lb = a.lb.clone().unwrap_or_else(|| "?".into());
                *s.servers.entry(server).or_default() += 1;
                *s.lbs.entry(lb).or_default() += 1;
            }
            None => {
                s.failed += 1;
                if run == 0 {
                    run_start = Some(x.start_ms);
                }
                run += 1;
            }
        }
        let lb = match &x.answer {
            Some(a) => a.lb.clone().unwrap_or_else(|| "?".into()),
            None => "FAILED".into(),
        };
        match s.timeline.last_mut() {
            Some(seg) if seg.lb == lb => {
                seg.to_ms = x.end_ms as u64;
                seg.requests += 1;
            }
            _ => s.timeline.push(Segment {
                lb,
                from_ms: x.start_ms as u64,
                to_ms: x.end_ms as u64,
                requests: 1,
                servers: BTreeMap::new(),
            }),
        }
        let from_ms = (x.start_ms.max(0.0) as u64) / BUCKET_MS * BUCKET_MS;
        if s.buckets.last().is_none_or(|b| b.from_ms != from_ms) {
            s.buckets.push(Bucket {
                from_ms,
                failed: 0,
                servers: BTreeMap::new(),
            });
        }
        if let Some(b) = s.buckets.last_mut() {
            match &x.answer {
                Some(a) => {
                    let server = a.server.clone().unwrap_or_else(|| "?".into());
                    *b.servers.entry(server).or_default() += 1;
                }
                None => b.failed += 1,
            }
        }
        if let (Some(seg), Some(a)) = (s.timeline.last_mut(), &x.answer) {
            let server = a.server.clone().unwrap_or_else(|| "?".into());
            *seg.servers.entry(server).or_default() += 1;
        }
    }
    if run > 0 {
        // Still failing at the end: the outage lasts until the last sample.
        let began = last_ok.or(run_start).unwrap_or(0.0);
        let end = samples.last().map_or(began, |x| x.end_ms);
        let length = (end - began) as u64;
        if length > s.outage_ms {
            s.outage_ms = length;
            s.longest_failure_run = run;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: f64, lb: &str, server: &str) -> Sample {
        Sample {
            start_ms: t,
            end_ms: t + 1.0,
            answer: Some(Answer {
                lb: Some(lb.into()),
                server: Some(server.into()),
            }),
        }
    }

    fn fail(t: f64) -> Sample {
        Sample {
            start_ms: t,
            end_ms: t + 100.0,
            answer: None,
        }
    }

    #[test]
    fn outage_is_measured_between_successes() {
        let v = vec![
            ok(0.0, "lb1", "app1"),
            ok(20.0, "lb1", "app2"),
            fail(40.0),
            fail(140.0),
            ok(240.0, "lb2", "app1"),
            ok(260.0, "lb2", "app2"),
        ];
        let s = summarize(&v);
        assert_eq!((s.sent, s.failed), (6, 2));
        assert_eq!(s.outage_ms, 220);
        assert_eq!(s.longest_failure_run, 2);
        assert_eq!(s.timeline.len(), 3);
        assert_eq!(s.timeline[1].lb, "FAILED");
        assert_eq!(s.lbs.get("lb2"), Some(&2));
    }

    #[test]
    fn a_probe_from_this_namespace_records_who_answered() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let to = l.local_addr().expect("addr");
        // Answers the first five connections, then closes its listener.
        let server = std::thread::spawn(move || {
            for c in l.incoming().take(5) {
                let Ok(mut c) = c else { continue };
                // The whole request, so closing leaves nothing unread (no reset).
                let (mut got, mut b) = (Vec::new(), [0u8; 1024]);
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(n) if n > 0 => got.extend_from_slice(b.get(..n).unwrap_or_default()),
                        _ => break,
                    }
                }
                let body = r#"{"server":"app1"}"#;
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nX-Lab-LB: lb1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let probe = Probe::start_here(
            to,
            request,
            Duration::from_millis(5),
            Duration::from_secs(30),
        );
        let made_five =
            super::super::local::poll(Duration::from_secs(30), Duration::from_millis(5), || {
                probe.samples().len() >= 5
            });
        let samples = probe.samples();
        drop(probe);
        if made_five {
            // It has served its five connections.
            let _ = server.join();
        }
        assert!(made_five, "the probe made five requests: {samples:?}");
        let want = Answer {
            lb: Some("lb1".into()),
            server: Some("app1".into()),
        };
        for x in samples.iter().take(5) {
            assert_eq!(x.answer.as_ref(), Some(&want), "{samples:?}");
        }
    }

    #[test]
    fn no_failure_no_outage() {
        let v = vec![ok(0.0, "lb1", "app1"), ok(20.0, "lb1", "app2")];
        let s = summarize(&v);
        assert_eq!((s.failed, s.outage_ms, s.longest_gap_ms), (0, 0, 20));
    }
}
