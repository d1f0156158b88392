//! Prometheus `/metrics`: every counter of the running load balancer in the
//! text exposition format (version 0.0.4), built from one snapshot load plus
//! the per-server atomics, like the status document.
//!
//! Families come in a fixed order, each with its `# HELP` and `# TYPE` once,
//! and their samples sorted by frontend, backend and server name, so two
//! scrapes of an idle balancer are byte-identical. A family with no sample
//! (no frontends yet, no active checks) is left out whole.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::admin::status::admin_name;
use crate::config::types::AdminState;
use crate::runtime::stats::DURATION_BUCKETS;
use crate::runtime::{BackendRt, FrontendRt, Runtime, ServerState, Snapshot};

/// Content-Type to serve [`render`]'s output with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A backend with its servers sorted by name.
type BackendServers<'a> = (&'a BackendRt, Vec<&'a Arc<ServerState>>);

/// Status classes in the order of [`ServerState::responses`].
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every administrative state, for the one-hot `fulcrum_server_admin_state`.
const ADMIN_STATES: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

/// Render every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render(rt: &Runtime) -> String {
    let snap = rt.snapshot_arc();
    let mut frontends: Vec<&Arc<FrontendRt>> = snap.frontends.values().collect();
    frontends.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    // `snap.backends` is a BTreeMap: already in name order.
    let backends: Vec<&Arc<BackendRt>> = snap.backends.values().collect();
    let servers: Vec<BackendServers> = backends
        .iter()
        .map(|b| {
            let mut list: Vec<&Arc<ServerState>> = b.servers.iter().collect();
            list.sort_by(|x, y| x.name().cmp(y.name()));
            (b.as_ref(), list)
        })
        .collect();

    let mut out = Exposition::default();
    process_families(&mut out, rt, &snap);
    frontend_families(&mut out, &frontends);
    request_families(&mut out, &snap, &frontends, &servers);
    backend_families(&mut out, &backends);
    discovery_families(&mut out, rt);
    server_families(&mut out, &servers);
    out.text
}

fn process_families(out: &mut Exposition, rt: &Runtime, snap: &Snapshot) {
    out.family(
        "fulcrum_build_info",
        Kind::Gauge,
        "Build information; the value is always 1.",
        vec![Sample::new(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            Value::Int(1),
        )],
    );
    out.family(
        "fulcrum_uptime_seconds",
        Kind::Gauge,
        "Seconds since the load balancer started.",
        vec![Sample::new(vec![], Value::Float(rt.uptime().as_secs_f64()))],
    );
    out.family(
        "fulcrum_config_generation",
        Kind::Gauge,
        "Generation of the live configuration; increases with every applied change.",
        vec![Sample::new(vec![], Value::Int(snap.generation))],
    );
}

fn frontend_families(out: &mut Exposition, frontends: &[&Arc<FrontendRt>]) {
    let per_frontend = |get: &dyn Fn(&FrontendRt) -> u64| -> Vec<Sample> {
        frontends
            .iter()
            .map(|f| {
                Sample::new(
                    vec![("frontend", f.config.name.clone())],
                    Value::Int(get(f)),
                )
            })
            .collect()
    };
    out.family(
        "fulcrum_frontend_requests_total",
        Kind::Counter,
        "Requests (HTTP) or sessions (TCP) received by a frontend.",
        per_frontend(&|f| f.stats.requests.load(Relaxed)),
    );
    out.family(
        "fulcrum_frontend_connections",
        Kind::Gauge,
        "Client connections open on a frontend now.",
        per_frontend(&|f| f.stats.connections.load(Relaxed)),
    );
    out.family(
        "fulcrum_frontend_local_errors_total",
        Kind::Counter,
        "Requests a frontend answered itself because no route or no server matched.",
        per_frontend(&|f| f.stats.local_errors.load(Relaxed)),
    );
}

/// The frontend a backend's request series are labelled with.
///
/// Responses are counted per server, not per (frontend, server) pair, so a
/// backend reached from several frontends cannot be split between them. Rather
/// than invent a split, every series of a backend carries one frontend: the
/// first one by name whose default backend or one of whose routes points at it.
/// A backend no frontend references gets `frontend=""`.
fn frontend_of<'a>(frontends: &[&'a Arc<FrontendRt>], backend: &str) -> &'a str {
    frontends
        .iter()
        .find(|f| {
            f.config.backend.as_deref() == Some(backend)
                || f.config.routes.iter().any(|r| r.backend == backend)
        })
        .map_or("", |f| f.config.name.as_str())
}

fn request_families(
    out: &mut Exposition,
    snap: &Snapshot,
    frontends: &[&Arc<FrontendRt>],
    servers: &[BackendServers],
) {
    let mut samples = Vec::new();
    for (b, list) in servers {
        let backend = b.config.name.as_str();
        let frontend = frontend_of(frontends, backend);
        for s in list {
            for (class, n) in CODE_CLASSES.iter().zip(s.responses()) {
                samples.push(Sample::new(
                    vec![
                        ("frontend", frontend.to_string()),
                        ("backend", backend.to_string()),
                        ("server", s.name().to_string()),
                        ("code", class.to_string()),
                    ],
                    Value::Int(n),
                ));
            }
        }
    }
    out.family(
        "fulcrum_requests_total",
        Kind::Counter,
        "Responses sent to clients, by server and status class.",
        samples,
    );

    let mut samples = Vec::new();
    for b in snap.backends.values() {
        let h = &b.stats.duration;
        let cumulative = h.cumulative();
        let label = |le: String| vec![("backend", b.config.name.clone()), ("le", le)];
        for (bound, n) in DURATION_BUCKETS.iter().zip(&cumulative) {
            samples.push(Sample::suffixed(
                "_bucket",
                label(format_float(*bound)),
                Value::Int(*n),
            ));
        }
        // `_count` is the `+Inf` bucket of the same read rather than the
        // separate counter, so the two always agree even while requests finish.
        let total = cumulative.last().copied().unwrap_or_else(|| h.count());
        samples.push(Sample::suffixed(
            "_bucket",
            label("+Inf".to_string()),
            Value::Int(total),
        ));
        let backend = vec![("backend", b.config.name.clone())];
        samples.push(Sample::suffixed(
            "_sum",
            backend.clone(),
            Value::Float(h.sum_seconds()),
        ));
        samples.push(Sample::suffixed("_count", backend, Value::Int(total)));
    }
    out.family(
        "fulcrum_request_duration_seconds",
        Kind::Histogram,
        "Time from the start of a request to the end of its response, by backend.",
        samples,
    );
}

fn backend_families(out: &mut Exposition, backends: &[&Arc<BackendRt>]) {
    let per_backend = |get: &dyn Fn(&BackendRt) -> u64| -> Vec<Sample> {
        backends
            .iter()
            .map(|b| Sample::new(vec![("backend", b.config.name.clone())], Value::Int(get(b))))
            .collect()
    };
    out.family(
        "fulcrum_backend_servers_usable",
        Kind::Gauge,
        "Servers of a backend that take new traffic now (ready, up, not ejected).",
        per_backend(&|b| b.usable_count() as u64),
    );
    out.family(
        "fulcrum_backend_no_server_total",
        Kind::Counter,
        "Requests that found no usable server in a backend.",
        per_backend(&|b| b.stats.no_server.load(Relaxed)),
    );
    out.family(
        "fulcrum_backend_retries_total",
        Kind::Counter,
        "Attempts retried onto another server of a backend.",
        per_backend(&|b| b.stats.retries.load(Relaxed)),
    );
}

/// Discovery sources: whether each can read its store (etcd), and how many
/// entries of its last list were skipped as bad.
fn discovery_families(out: &mut Exposition, rt: &Runtime) {
    let sources = crate::discovery::all_of(rt);
    let label = |b: &str| vec![("backend", b.to_string())];
    out.family(
        "fulcrum_discovery_source_up",
        Kind::Gauge,
        "1 when a backend's discovery source can read its store now; 0 while it serves the last known list (etcd only).",
        sources
            .iter()
            .filter_map(|(b, s)| s.connected.map(|c| Sample::new(label(b), Value::Int(u64::from(c)))))
            .collect(),
    );
    #[cfg(feature = "etcd")]
    out.family(
        "fulcrum_cluster_store_up",
        Kind::Gauge,
        "1 when the shared runtime-state store ([cluster] store) can be read now; 0 while admin changes are refused.",
        crate::cluster::store::status(rt)
            .map(|s| vec![Sample::new(vec![], Value::Int(u64::from(s.reachable)))])
            .unwrap_or_default(),
    );
    out.family(
        "fulcrum_discovery_skipped_entries",
        Kind::Gauge,
        "Entries of a discovery source's last list skipped because their value was bad.",
        sources
            .iter()
            .map(|(b, s)| Sample::new(label(b), Value::Int(s.skipped)))
            .collect(),
    );
}

fn server_families(out: &mut Exposition, servers: &[BackendServers]) {
    let labels = |b: &BackendRt, s: &ServerState| {
        vec![
            ("backend", b.config.name.clone()),
            ("server", s.name().to_string()),
        ]
    };
    let per_server = |get: &dyn Fn(&ServerState) -> Value| -> Vec<Sample> {
        servers
            .iter()
            .flat_map(|(b, list)| list.iter().map(move |s| (b, s)))
            .map(|(b, s)| Sample::new(labels(b, s), get(s)))
            .collect()
    };
    let flag = |on: bool| Value::Int(u64::from(on));

    out.family(
        "fulcrum_server_up",
        Kind::Gauge,
        "1 when a server passes its active health checks (or has none), else 0.",
        per_server(&|s| flag(s.is_up())),
    );
    out.family(
        "fulcrum_server_usable",
        Kind::Gauge,
        "1 when a server takes new traffic now (ready, up, not ejected), else 0.",
        per_server(&|s| flag(s.is_usable())),
    );
    out.family(
        "fulcrum_server_ejected",
        Kind::Gauge,
        "1 while passive health keeps a server out after failed requests, else 0.",
        per_server(&|s| flag(s.is_ejected())),
    );

    let mut samples = Vec::new();
    for (b, list) in servers {
        for s in list {
            let current = s.admin();
            for state in ADMIN_STATES {
                let mut l = labels(b, s);
                l.push(("state", admin_name(state).to_string()));
                samples.push(Sample::new(l, flag(state == current)));
            }
        }
    }
    out.family(
        "fulcrum_server_admin_state",
        Kind::Gauge,
        "Administrative state of a server: 1 for the current one of ready, drain and maint.",
        samples,
    );

    out.family(
        "fulcrum_server_weight",
        Kind::Gauge,
        "Balancing weight of a server.",
        per_server(&|s| Value::Int(u64::from(s.weight()))),
    );
    out.family(
        "fulcrum_server_active_connections",
        Kind::Gauge,
        "Requests (HTTP) or connections (TCP) in flight to a server now.",
        per_server(&|s| Value::Int(u64::from(s.active()))),
    );
    out.family(
        "fulcrum_server_connections_total",
        Kind::Counter,
        "Requests (HTTP) or connections (TCP) sent to a server.",
        per_server(&|s| Value::Int(s.total())),
    );
    out.family(
        "fulcrum_server_failures_total",
        Kind::Counter,
        "Requests to a server that failed (connect error, reset, timeout).",
        per_server(&|s| Value::Int(s.failures())),
    );
    out.family(
        "fulcrum_server_bytes_in_total",
        Kind::Counter,
        "Bytes relayed from clients to a server.",
        per_server(&|s| Value::Int(s.bytes().0)),
    );
    out.family(
        "fulcrum_server_bytes_out_total",
        Kind::Counter,
        "Bytes relayed from a server to clients.",
        per_server(&|s| Value::Int(s.bytes().1)),
    );

    let mut samples = Vec::new();
    for (b, list) in servers {
        for s in list {
            if let Some(c) = s.last_check() {
                samples.push(Sample::new(
                    labels(b, s),
                    Value::Float(c.latency.as_secs_f64()),
                ));
            }
        }
    }
    out.family(
        "fulcrum_server_check_duration_seconds",
        Kind::Gauge,
        "How long the latest active health check of a server took.",
        samples,
    );

    let mut samples = Vec::new();
    // Servers of a backend without active checks have no series here.
    for (b, list) in servers
        .iter()
        .filter(|(b, _)| b.config.health.check.is_some())
    {
        for s in list {
            let (ok, failed) = s.check_counts();
            for (result, n) in [("ok", ok), ("fail", failed)] {
                let mut l = labels(b, s);
                l.push(("result", result.to_string()));
                samples.push(Sample::new(l, Value::Int(n)));
            }
        }
    }
    out.family(
        "fulcrum_health_checks_total",
        Kind::Counter,
        "Active health checks run against a server, by result.",
        samples,
    );
}

/// Escape a label value for the text format: backslash, double quote and
/// line feed become `\\`, `\"` and `\n`.
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

/// Escape a `# HELP` text: only backslash and line feed are special there.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the text format spells it (`+Inf`, `-Inf`, `NaN`, else decimal).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        v.to_string()
    }
}

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: counters stay exact integers, the rest are floats.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One line of a family: an optional name suffix (`_bucket`, `_sum`, `_count`),
/// its labels in output order, and its value.
#[derive(Debug)]
struct Sample {
    suffix: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Value,
}

impl Sample {
    fn new(labels: Vec<(&'static str, String)>, value: Value) -> Self {
        Self::suffixed("", labels, value)
    }

    fn suffixed(suffix: &'static str, labels: Vec<(&'static str, String)>, value: Value) -> Self {
        Sample {
            suffix,
            labels,
            value,
        }
    }
}

/// The text being built.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Append one family: HELP, TYPE, then its samples. Nothing when empty.
    fn family(&mut self, name: &str, kind: Kind, help: &str, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        let t = &mut self.text;
        t.push_str("# HELP ");
        t.push_str(name);
        t.push(' ');
        t.push_str(&escape_help(help));
        t.push_str("\n# TYPE ");
        t.push_str(name);
        t.push(' ');
        t.push_str(kind.as_str());
        t.push('\n');
        for s in samples {
            t.push_str(name);
            t.push_str(s.suffix);
            if !s.labels.is_empty() {
                t.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        t.push(',');
                    }
                    t.push_str(k);
                    t.push_str("=\"");
                    t.push_str(&escape_label_value(v));
                    t.push('"');
                }
                t.push('}');
            }
            t.push(' ');
            match s.value {
                Value::Int(n) => t.push_str(&n.to_string()),
                Value::Float(f) => t.push_str(&format_float(f)),
            }
            t.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("api.v1"), "api.v1");
        assert_eq!(
            escape_label_value("a\\b\"c\nd"),
            "a\\\\b\\\"c\\nd".to_string()
        );
    }

    #[test]
    fn help_keeps_quotes() {
        assert_eq!(escape_help("say \"hi\"\\\n"), "say \"hi\"\\\\\\n");
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.0025), "0.0025");
        assert_eq!(format_float(10.0), "10");
    }

    #[test]
    fn family_layout() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Xs.", vec![]);
        assert_eq!(e.text, "");
        e.family(
            "x_total",
            Kind::Counter,
            "Xs.",
            vec![
                Sample::new(vec![("b", "q\"".to_string())], Value::Int(3)),
                Sample::new(vec![], Value::Float(0.5)),
            ],
        );
        assert_eq!(
            e.text,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{b=\"q\\\"\"} 3\nx_total 0.5\n"
        );
    }
}
