//! Prometheus `/metrics`, encoded by the `prometheus-client` crate.
//!
//! Nothing is registered ahead of time: one [`Collector`] reads the live
//! snapshot and its atomics when a scrape arrives (like the status document),
//! so servers added or removed at run time appear and vanish with no
//! bookkeeping. The crate writes OpenMetrics text (and escapes label values);
//! a scraper that asks for it (`Accept: application/openmetrics-text`, as
//! Prometheus does) gets that as is. Everyone else gets the classic text
//! format 0.0.4 ([`CONTENT_TYPE`]), which differs only in the family name of
//! counters in `# HELP`/`# TYPE` (with `_total`) and the absent `# EOF`:
//! [`to_text_004`] makes exactly that change and nothing else.
//!
//! Cardinality is bounded by the configuration: the only labels are
//! `frontend`, `backend`, `server`, `code` (status class: 5 values), and the
//! fixed-set `state`, `result`, `le` and `version`; nothing from a request
//! (path, host, client) becomes a label. Families come in a fixed order and
//! samples sorted by frontend, backend and server name, so two scrapes of an
//! idle balancer are identical; a family with no sample is left out.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::admin::status::admin_name;
use crate::config::types::AdminState;
use crate::runtime::stats::{Histogram, DURATION_BUCKETS};
use crate::runtime::{BackendRt, FrontendRt, Runtime, ServerState};

/// Content-Type of [`render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content-Type of [`render_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample, in output order.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// A sample value: counters and most gauges stay exact integers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val {
    U(u64),
    F(f64),
}

/// Status classes in the order of [`ServerState::responses`].
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every administrative state, for the one-hot `fulcrum_server_admin_state`.
const ADMIN_STATES: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

/// Write a gauge family (nothing when `samples` is empty).
pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, Val)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples)
}

/// Write a counter family; `name` ends in `_total` (the crate adds the
/// suffix to samples itself, so it is taken off the family name here).
pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, Val)>,
) -> fmt::Result {
    let base = name.strip_suffix("_total").unwrap_or(name);
    family(enc, base, help, MetricType::Counter, samples)
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, Val)>,
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in &samples {
        let mut s = m.encode_family(labels)?;
        match (kind, *v) {
            (MetricType::Counter, Val::U(n)) => ConstCounter::new(n).encode(s)?,
            (MetricType::Counter, Val::F(f)) => ConstCounter::new(f).encode(s)?,
            (_, Val::U(n)) => s.encode_gauge(&n)?,
            (_, Val::F(f)) => s.encode_gauge(&f)?,
        }
    }
    Ok(())
}

/// Write a histogram family from [`Histogram`]s (the runtime's lock-free ones).
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, &Histogram)>,
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in &samples {
        let cumulative = h.cumulative();
        // The crate wants per-bucket counts; `_count` is the `+Inf` bucket of
        // the same read, so the two always agree even while requests finish.
        let mut buckets = Vec::with_capacity(cumulative.len());
        let mut prev = 0;
        for (i, c) in cumulative.iter().enumerate() {
            let bound = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, c.saturating_sub(prev)));
            prev = *c;
        }
        let total = cumulative.last().copied().unwrap_or(0);
        m.encode_family(labels)?.encode_histogram::<Labels>(
            h.sum_seconds(),
            total,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// Reads the runtime (and the VRRP instances) at scrape time.
struct Scrape {
    rt: Arc<Runtime>,
    vrrp: Option<crate::admin::VrrpSlot>,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let snap = self.rt.snapshot_arc();
        let mut frontends: Vec<&Arc<FrontendRt>> = snap.frontends.values().collect();
        frontends.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        // `snap.backends` is a BTreeMap: already in name order.
        let backends: Vec<&Arc<BackendRt>> = snap.backends.values().collect();
        let mut servers: Vec<(&BackendRt, &Arc<ServerState>)> = Vec::new();
        for b in &backends {
            let mut list: Vec<&Arc<ServerState>> = b.servers.iter().collect();
            list.sort_by(|x, y| x.name().cmp(y.name()));
            servers.extend(list.into_iter().map(|s| (b.as_ref(), s)));
        }
        let e = &mut enc;
        gauge(
            e,
            "fulcrum_build_info",
            "Build information; the value is always 1.",
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                Val::U(1),
            )],
        )?;
        gauge(
            e,
            "fulcrum_uptime_seconds",
            "Seconds since the load balancer started.",
            vec![(vec![], Val::F(self.rt.uptime().as_secs_f64()))],
        )?;
        gauge(
            e,
            "fulcrum_config_generation",
            "Generation of the live configuration; increases with every applied change.",
            vec![(vec![], Val::U(snap.generation))],
        )?;
        counter(
            e,
            "fulcrum_admin_auth_failures_total",
            "Admin API calls refused for a missing or wrong bearer token.",
            vec![(vec![], Val::U(super::auth::REFUSED.load(Relaxed)))],
        )?;
        counter(
            e,
            "fulcrum_log_lines_dropped_total",
            "Access-log lines dropped because the log sink was too slow, blocked or failing.",
            vec![(vec![], Val::U(crate::log::access::dropped()))],
        )?;
        counter(
            e,
            "fulcrum_worker_connections_total",
            "Client connections accepted by each proxy worker (one per `[global] threads`).",
            crate::proxy::workers::accepted()
                .into_iter()
                .enumerate()
                .map(|(i, n)| (vec![("worker", i.to_string())], Val::U(n)))
                .collect(),
        )?;
        let open = crate::proxy::workers::open();
        if !open.is_empty() {
            gauge(
                e,
                "fulcrum_worker_connections_open",
                "Client connections open on each proxy worker now (with two or more workers).",
                open.into_iter()
                    .enumerate()
                    .map(|(i, n)| (vec![("worker", i.to_string())], Val::U(n)))
                    .collect(),
            )?;
        }
        frontend_families(e, &frontends)?;
        request_families(e, &frontends, &servers)?;
        backend_families(e, &backends)?;
        discovery_families(e, &self.rt)?;
        super::metrics_server::server_families(e, &servers)?;
        process_families(e)?;
        if let Some(v) = self.vrrp.as_ref().and_then(|v| v.get()) {
            crate::vrrp::metrics::encode(e, &v.get())?;
        }
        Ok(())
    }
}

fn frontend_families(e: &mut DescriptorEncoder, frontends: &[&Arc<FrontendRt>]) -> fmt::Result {
    let per = |get: &dyn Fn(&FrontendRt) -> u64| -> Vec<(Labels, Val)> {
        frontends
            .iter()
            .map(|f| (vec![("frontend", f.config.name.clone())], Val::U(get(f))))
            .collect()
    };
    counter(
        e,
        "fulcrum_frontend_requests_total",
        "Requests (HTTP) or sessions (TCP) received by a frontend.",
        per(&|f| f.stats.requests.load(Relaxed)),
    )?;
    gauge(
        e,
        "fulcrum_frontend_connections",
        "Client connections open on a frontend now.",
        per(&|f| f.stats.connections.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_local_errors_total",
        "Requests a frontend answered itself (no route, no server, rate limit, bad request); includes denied.",
        per(&|f| f.stats.local_errors.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_denied_total",
        "Requests refused with 429 by a rate limit (HAProxy dreq).",
        per(&|f| f.stats.denied.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_tls_handshakes_total",
        "TLS handshakes completed on a frontend, full and resumed.",
        per(&|f| f.stats.tls_handshakes.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_tls_resumptions_total",
        "TLS handshakes that resumed a session (ticket or session id).",
        per(&|f| f.stats.tls_resumptions.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_tls_handshake_failures_total",
        "TLS handshakes that failed.",
        per(&|f| f.stats.tls_failures.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_client_errors_total",
        "Requests that failed by the client's fault before a response (body aborted, malformed or too slow; client gone): never counted against a server.",
        per(&|f| f.stats.client_errors.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_frontend_request_errors_total",
        "Local answers other than rate limits: no route, no usable server, bad request (HAProxy ereq).",
        per(&|f| {
            let local = f.stats.local_errors.load(Relaxed);
            local.saturating_sub(f.stats.denied.load(Relaxed))
        }),
    )
}

/// The frontends whose default backend or one of whose routes is `backend`
/// (their series of it exist from the start, zero until a request comes).
fn frontends_of<'a>(
    frontends: &'a [&'a Arc<FrontendRt>],
    backend: &'a str,
) -> impl Iterator<Item = &'a Arc<FrontendRt>> + 'a {
    frontends.iter().copied().filter(move |f| {
        f.config.backend.as_deref() == Some(backend)
            || f.config.routes.iter().any(|r| r.backend == backend)
    })
}

fn request_families(
    e: &mut DescriptorEncoder,
    frontends: &[&Arc<FrontendRt>],
    servers: &[(&BackendRt, &Arc<ServerState>)],
) -> fmt::Result {
    let mut samples = Vec::new();
    for (b, s) in servers {
        let backend = b.config.name.as_str();
        // Counted per frontend the request came in on, so a backend two
        // frontends share is split between them as the requests were.
        for fe in frontends_of(frontends, backend) {
            let counts = fe.stats.responses.get(backend, s.name());
            for (class, n) in CODE_CLASSES.iter().zip(counts) {
                samples.push((
                    vec![
                        ("frontend", fe.config.name.clone()),
                        ("backend", backend.to_string()),
                        ("server", s.name().to_string()),
                        ("code", class.to_string()),
                    ],
                    Val::U(n),
                ));
            }
        }
    }
    counter(
        e,
        "fulcrum_requests_total",
        "Responses sent to clients, by server and status class.",
        samples,
    )
}

fn backend_families(e: &mut DescriptorEncoder, backends: &[&Arc<BackendRt>]) -> fmt::Result {
    let label = |b: &BackendRt| vec![("backend", b.config.name.clone())];
    let per = |get: &dyn Fn(&BackendRt) -> u64| -> Vec<(Labels, Val)> {
        backends
            .iter()
            .map(|b| (label(b), Val::U(get(b))))
            .collect()
    };
    let hist = |get: &dyn for<'x> Fn(&'x BackendRt) -> &'x Histogram| -> Vec<(Labels, &Histogram)> {
        backends.iter().map(|b| (label(b), get(b))).collect()
    };
    histogram(
        e,
        "fulcrum_request_duration_seconds",
        "Total time from the start of a request to the end of its response, by backend (HAProxy Tt).",
        hist(&|b| &b.stats.duration),
    )?;
    histogram(
        e,
        "fulcrum_backend_connect_time_seconds",
        "Time to get a server connection (0 when reused from the pool), by backend (HAProxy Tc).",
        hist(&|b| &b.stats.connect),
    )?;
    histogram(
        e,
        "fulcrum_backend_response_time_seconds",
        "Request sent to response head received, by backend (HAProxy Tr).",
        hist(&|b| &b.stats.response),
    )?;
    histogram(
        e,
        "fulcrum_backend_queue_time_seconds",
        "Time requests waited for a server slot (every server at maxconn), by backend (HAProxy Tw).",
        hist(&|b| &b.stats.queue_wait),
    )?;
    gauge(
        e,
        "fulcrum_backend_servers_usable",
        "Servers of a backend that take new traffic now (ready, up, not ejected).",
        per(&|b| b.usable_count() as u64),
    )?;
    gauge(
        e,
        "fulcrum_backend_queue_current",
        "Requests waiting for a server slot now (HAProxy qcur).",
        per(&|b| b.stats.queued.load(Relaxed) as u64),
    )?;
    gauge(
        e,
        "fulcrum_backend_queue_max",
        "Most requests waiting for a server slot at once since start (HAProxy qmax).",
        per(&|b| b.stats.queue_max.load(Relaxed) as u64),
    )?;
    gauge(
        e,
        "fulcrum_backend_queue_limit",
        "Most requests that may wait for a server slot (max_queue, HAProxy qlimit).",
        per(&|b| b.config.max_queue as u64),
    )?;
    counter(
        e,
        "fulcrum_backend_no_server_total",
        "Requests that found no usable server in a backend.",
        per(&|b| b.stats.no_server.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_backend_retries_total",
        "Attempts retried onto another server of a backend.",
        per(&|b| b.stats.retries.load(Relaxed)),
    )?;
    counter(
        e,
        "fulcrum_backend_redispatches_total",
        "Attempts moved to another server after a failure (HAProxy wredis); every fulcrum retry is one, so this equals retries.",
        per(&|b| b.stats.retries.load(Relaxed)),
    )?;
    error_families(e, "fulcrum_backend", "a backend's servers", &|i| {
        per(&|b| b.stats.errors.get()[i])
    })
}

/// The four error-by-kind families of a backend or a server (`prefix`):
/// `sample(i)` gives the samples of [`crate::runtime::stats::ErrorCounts::get`]'s `i`-th count.
pub(crate) fn error_families(
    e: &mut DescriptorEncoder,
    prefix: &str,
    whose: &str,
    sample: &dyn Fn(usize) -> Vec<(Labels, Val)>,
) -> fmt::Result {
    let kinds = [
        (
            "connection_errors_total",
            "Attempts that could not get a connection to",
            "(refused, timeout, TLS; HAProxy econ).",
        ),
        (
            "response_errors_total",
            "Answers that were not good HTTP from",
            "(no head: closed, reset, timed out or not HTTP; or a body cut short or malformed after its head went to the client; server aborts included, as HAProxy eresp).",
        ),
        (
            "client_aborts_total",
            "Responses the client did not take to their end (closed, reset or stopped reading) from",
            "(HAProxy cli_abrt).",
        ),
        (
            "server_aborts_total",
            "Responses whose body was not sent to its end (closed, reset or silent past the response timeout) by",
            "(HAProxy srv_abrt).",
        ),
    ];
    for (i, (name, help, tail)) in kinds.iter().enumerate() {
        counter(
            e,
            &format!("{prefix}_{name}"),
            &format!("{help} {whose} {tail}"),
            sample(i),
        )?;
    }
    Ok(())
}

fn process_families(e: &mut DescriptorEncoder) -> fmt::Result {
    let p = super::process::read();
    let one = |v: Option<u64>| v.map(|n| vec![(vec![], Val::U(n))]).unwrap_or_default();
    let onef = |v: Option<f64>| v.map(|n| vec![(vec![], Val::F(n))]).unwrap_or_default();
    counter(
        e,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        onef(p.cpu_seconds),
    )?;
    gauge(
        e,
        "process_open_fds",
        "Number of open file descriptors.",
        one(p.open_fds),
    )?;
    gauge(
        e,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        one(p.max_fds),
    )?;
    gauge(
        e,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        one(p.virtual_bytes),
    )?;
    gauge(
        e,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        one(p.resident_bytes),
    )?;
    gauge(
        e,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        onef(p.start_time_seconds),
    )?;
    gauge(
        e,
        "process_threads",
        "Number of OS threads in the process.",
        one(p.threads),
    )
}

/// Discovery sources that can lose their store (etcd), and the cluster store.
fn discovery_families(e: &mut DescriptorEncoder, rt: &Runtime) -> fmt::Result {
    let sources = crate::discovery::all_of(rt);
    let label = |b: &str| vec![("backend", b.to_string())];
    gauge(
        e,
        "fulcrum_discovery_source_up",
        "1 when a backend's discovery source can read its store now; 0 while it serves the last known list (etcd only).",
        sources
            .iter()
            .filter_map(|(b, s)| s.connected.map(|c| (label(b), Val::U(u64::from(c)))))
            .collect(),
    )?;
    #[cfg(feature = "etcd")]
    gauge(
        e,
        "fulcrum_cluster_store_up",
        "1 when the shared runtime-state store ([cluster] store) can be read now; 0 while admin changes are refused.",
        crate::cluster::store::status(rt)
            .map(|s| vec![(vec![], Val::U(u64::from(s.reachable)))])
            .unwrap_or_default(),
    )?;
    gauge(
        e,
        "fulcrum_discovery_skipped_entries",
        "Entries of a discovery source's last list skipped because their value was bad.",
        sources
            .iter()
            .map(|(b, s)| (label(b), Val::U(s.skipped)))
            .collect(),
    )
}

/// The labels of a server's series.
pub(crate) fn server_labels(b: &BackendRt, s: &ServerState) -> Labels {
    vec![
        ("backend", b.config.name.clone()),
        ("server", s.name().to_string()),
    ]
}

/// One-hot admin state samples of a server.
pub(crate) fn admin_state_samples(b: &BackendRt, s: &ServerState) -> Vec<(Labels, Val)> {
    let current = s.admin();
    ADMIN_STATES
        .iter()
        .map(|state| {
            let mut l = server_labels(b, s);
            l.push(("state", admin_name(*state).to_string()));
            (l, Val::U(u64::from(*state == current)))
        })
        .collect()
}

fn encode_openmetrics(rt: &Arc<Runtime>, vrrp: Option<crate::admin::VrrpSlot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        rt: rt.clone(),
        vrrp,
    }));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode /metrics");
    }
    out
}

/// Every metric in the OpenMetrics text format (with `# EOF`).
pub fn render_openmetrics(rt: &Arc<Runtime>, vrrp: Option<crate::admin::VrrpSlot>) -> String {
    encode_openmetrics(rt, vrrp)
}

/// Every metric (VRRP excluded) in the Prometheus text format 0.0.4.
pub fn render(rt: &Arc<Runtime>) -> String {
    to_text_004(&encode_openmetrics(rt, None))
}

/// Every metric, VRRP instances included, in the Prometheus text format 0.0.4.
pub fn render_with_vrrp(rt: &Arc<Runtime>, vrrp: crate::admin::VrrpSlot) -> String {
    to_text_004(&encode_openmetrics(rt, Some(vrrp)))
}

/// OpenMetrics text as `prometheus-client` writes it → text format 0.0.4:
/// counter families are named with their `_total` in `# HELP`/`# TYPE`, and
/// `# EOF`/`# UNIT` lines go. Samples, escaping and values are untouched (the
/// two formats agree on them for the metric types used here).
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Escape a label value for the text format (backslash, double quote, line
/// feed). Kept for callers of the 0.1 API; `/metrics` itself is escaped by
/// `prometheus-client`.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_back_in_004() {
        let om = "# HELP x Xs.\n# TYPE x counter\nx_total{a=\"b\"} 1\n# HELP g G.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"b\"} 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
