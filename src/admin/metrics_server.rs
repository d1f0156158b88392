//! The per-server families of `/metrics` (see [`super::metrics`] for the
//! encoding and the cardinality rules): state, load, traffic, errors,
//! health-check history.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;

use super::metrics::{admin_state_samples, counter, gauge, server_labels, Labels, Val};
use crate::runtime::{BackendRt, ServerState};

type Servers<'a> = [(&'a BackendRt, &'a Arc<ServerState>)];

/// Encode every per-server family for `servers` (sorted by backend, then name).
pub(crate) fn server_families(e: &mut DescriptorEncoder, servers: &Servers) -> fmt::Result {
    let per = |get: &dyn Fn(&ServerState) -> Val| -> Vec<(Labels, Val)> {
        servers
            .iter()
            .map(|(b, s)| (server_labels(b, s), get(s)))
            .collect()
    };
    let flag = |on: bool| Val::U(u64::from(on));
    gauge(
        e,
        "fulcrum_server_up",
        "1 when a server passes its active health checks (or has none), else 0.",
        per(&|s| flag(s.is_up())),
    )?;
    gauge(
        e,
        "fulcrum_server_usable",
        "1 when a server takes new traffic now (ready, up, not ejected), else 0.",
        per(&|s| flag(s.is_usable())),
    )?;
    gauge(
        e,
        "fulcrum_server_ejected",
        "1 while passive health keeps a server out after failed requests, else 0.",
        per(&|s| flag(s.is_ejected())),
    )?;
    gauge(
        e,
        "fulcrum_server_admin_state",
        "Administrative state of a server: 1 for the current one of ready, drain and maint.",
        servers
            .iter()
            .flat_map(|(b, s)| admin_state_samples(b, s))
            .collect(),
    )?;
    gauge(
        e,
        "fulcrum_server_weight",
        "Balancing weight of a server.",
        per(&|s| Val::U(u64::from(s.weight()))),
    )?;
    gauge(
        e,
        "fulcrum_server_active_connections",
        "Requests (HTTP) or connections (TCP) in flight to a server now (HAProxy scur).",
        per(&|s| Val::U(u64::from(s.active()))),
    )?;
    gauge(
        e,
        "fulcrum_server_active_connections_max",
        "Most requests or connections in flight to a server at once since start (HAProxy smax).",
        per(&|s| Val::U(u64::from(s.history.active_max.load(Relaxed)))),
    )?;
    gauge(
        e,
        "fulcrum_server_maxconn",
        "Concurrency limit of a server (maxconn, HAProxy slim); 0 = unlimited.",
        per(&|s| Val::U(u64::from(s.maxconn().unwrap_or(0)))),
    )?;
    gauge(
        e,
        "fulcrum_server_request_rate",
        "Requests per second to a server over the last sampling period (HAProxy rate).",
        per(&|s| Val::F(s.request_rate())),
    )?;
    gauge(
        e,
        "fulcrum_server_request_rate_max",
        "Highest sampled request rate of a server since start (HAProxy rate_max).",
        per(&|s| Val::F(s.request_rate_max())),
    )?;
    counter(
        e,
        "fulcrum_server_connections_total",
        "Requests (HTTP) or connections (TCP) sent to a server.",
        per(&|s| Val::U(s.total())),
    )?;
    counter(
        e,
        "fulcrum_server_failures_total",
        "Requests to a server that failed (connect error, reset, timeout).",
        per(&|s| Val::U(s.failures())),
    )?;
    super::metrics::error_families(e, "fulcrum_server", "a server", &|i| {
        per(&|s| Val::U(s.errors.get()[i]))
    })?;
    counter(
        e,
        "fulcrum_server_retries_total",
        "Requests that failed on a server and were tried again (HAProxy wretr).",
        per(&|s| Val::U(s.errors.retried()[0])),
    )?;
    counter(
        e,
        "fulcrum_server_redispatches_total",
        "Requests that failed on a server and were tried again on another one (HAProxy wredis).",
        per(&|s| Val::U(s.errors.retried()[1])),
    )?;
    counter(
        e,
        "fulcrum_server_connection_reuses_total",
        "Requests sent on an idle keep-alive connection taken from the pool (HAProxy reuse).",
        per(&|s| Val::U(s.reused())),
    )?;
    counter(
        e,
        "fulcrum_server_bytes_in_total",
        "Bytes relayed from clients to a server: request heads and bodies.",
        per(&|s| Val::U(s.bytes().0)),
    )?;
    counter(
        e,
        "fulcrum_server_bytes_out_total",
        "Bytes relayed from a server to clients.",
        per(&|s| Val::U(s.bytes().1)),
    )?;
    counter(
        e,
        "fulcrum_server_check_down_transitions_total",
        "Times a server went from up to down (HAProxy chkdown).",
        per(&|s| Val::U(s.history.went_down.load(Relaxed))),
    )?;
    counter(
        e,
        "fulcrum_server_check_up_transitions_total",
        "Times a server went from down to up.",
        per(&|s| Val::U(s.history.went_up.load(Relaxed))),
    )?;
    gauge(
        e,
        "fulcrum_server_last_change_seconds",
        "Seconds since a server last went up or down (since start when it never changed; HAProxy lastchg).",
        per(&|s| Val::F(s.seconds_since_change())),
    )?;
    counter(
        e,
        "fulcrum_server_downtime_seconds_total",
        "Total seconds a server has been down since start (HAProxy downtime).",
        per(&|s| Val::F(s.downtime_seconds())),
    )?;
    gauge(
        e,
        "fulcrum_server_check_duration_seconds",
        "How long the latest active health check of a server took.",
        servers
            .iter()
            .filter_map(|(b, s)| {
                s.last_check()
                    .map(|c| (server_labels(b, s), Val::F(c.latency.as_secs_f64())))
            })
            .collect(),
    )?;
    // Servers of a backend without active checks have no series here.
    let mut samples = Vec::new();
    for (b, s) in servers
        .iter()
        .filter(|(b, _)| b.config.health.check.is_some())
    {
        let (ok, failed) = s.check_counts();
        for (result, n) in [("ok", ok), ("fail", failed)] {
            let mut l = server_labels(b, s);
            l.push(("result", result.to_string()));
            samples.push((l, Val::U(n)));
        }
    }
    counter(
        e,
        "fulcrum_health_checks_total",
        "Active health checks run against a server, by result.",
        samples,
    )
}
