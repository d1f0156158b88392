//! HAProxy-compatible CSV statistics (`/stats;csv`, `/api/v1/stats.csv`).
//!
//! The columns are HAProxy's `show stat` columns 0–50 in HAProxy's order
//! (`pxname` … `srv_abrt`), header line starting with `# `, one row per
//! frontend (`svname` = `FRONTEND`), per server, and per backend (`BACKEND`),
//! so tools written for HAProxy's CSV (by column name or by position) read it.
//! A figure fulcrum does not have is left empty, as HAProxy does for
//! columns that do not apply. Names cannot hold commas or quotes (config
//! rules), so no field needs quoting.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::runtime::{BackendRt, Runtime, ServerState};

/// HAProxy's `show stat` columns 0–50.
pub const COLUMNS: [&str; 51] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
];

/// Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// One row under construction: column name → value.
struct Row(Vec<String>);

impl Row {
    fn new(px: &str, sv: &str, kind: u8) -> Row {
        let mut r = Row(vec![String::new(); COLUMNS.len()]);
        r.set("pxname", px);
        r.set("svname", sv);
        r.set("pid", 1);
        r.set("type", kind);
        r
    }
    fn set(&mut self, col: &str, v: impl ToString) {
        if let Some(i) = COLUMNS.iter().position(|c| *c == col) {
            if let Some(slot) = self.0.get_mut(i) {
                *slot = v.to_string();
            }
        }
    }
}

fn server_row(b: &BackendRt, s: &ServerState, sid: usize) -> Row {
    let mut r = Row::new(&b.config.name, s.name(), 2);
    let (bin, bout) = s.bytes();
    let resp = s.responses();
    r.set("qcur", 0);
    r.set("qmax", 0);
    r.set("scur", s.active());
    r.set("smax", s.history.active_max.load(Relaxed));
    if let Some(m) = s.maxconn() {
        r.set("slim", m);
    }
    r.set("stot", s.total());
    r.set("bin", bin);
    r.set("bout", bout);
    let [econ, eresp, cli_abrt, srv_abrt] = s.errors.get();
    r.set("econ", econ);
    r.set("eresp", eresp);
    r.set("cli_abrt", cli_abrt);
    r.set("srv_abrt", srv_abrt);
    let [wretr, wredis] = s.errors.retried();
    r.set("wretr", wretr);
    r.set("wredis", wredis);
    let status = match (s.admin(), s.is_up()) {
        (crate::config::types::AdminState::Maint, _) => "MAINT",
        (crate::config::types::AdminState::Drain, true) => "DRAIN",
        (_, true) => "UP",
        (_, false) => "DOWN",
    };
    r.set("status", status);
    r.set("weight", s.weight());
    r.set("act", u8::from(!s.is_backup()));
    r.set("bck", u8::from(s.is_backup()));
    let (_, failed) = s.check_counts();
    r.set("chkfail", failed);
    r.set("chkdown", s.history.went_down.load(Relaxed));
    r.set("lastchg", s.seconds_since_change() as u64);
    r.set("downtime", s.downtime_seconds() as u64);
    r.set("sid", sid);
    r.set("lbtot", s.total());
    r.set("rate", s.request_rate().round() as u64);
    r.set("rate_max", s.request_rate_max().round() as u64);
    if let Some(c) = s.last_check() {
        r.set("check_status", if c.ok { "L7OK" } else { "L7STS" });
        r.set("check_duration", c.latency.as_millis());
    }
    for (col, n) in ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"]
        .iter()
        .zip(resp)
    {
        r.set(col, n);
    }
    r.set("hrsp_other", 0);
    r
}

/// Render every frontend, server and backend as HAProxy CSV.
pub fn render(rt: &Arc<Runtime>) -> String {
    let snap = rt.snapshot_arc();
    let mut out = String::from("# ");
    out.push_str(&COLUMNS.join(","));
    out.push_str(",\n");
    let mut rows = Vec::new();
    let mut frontends: Vec<_> = snap.frontends.values().collect();
    frontends.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    for (iid, f) in frontends.iter().enumerate() {
        let st = &f.stats;
        let mut r = Row::new(&f.config.name, "FRONTEND", 0);
        let local = st.local_errors.load(Relaxed);
        let denied = st.denied.load(Relaxed);
        r.set("scur", st.connections.load(Relaxed));
        if let Some(m) = f.config.maxconn {
            r.set("slim", m);
        }
        r.set("stot", st.requests.load(Relaxed));
        r.set("dreq", denied);
        r.set("ereq", local.saturating_sub(denied));
        r.set("status", "OPEN");
        r.set("iid", iid + 1);
        r.set("req_tot", st.requests.load(Relaxed));
        rows.push(r);
    }
    for (i, b) in snap.backends.values().enumerate() {
        let mut list: Vec<&Arc<ServerState>> = b.servers.iter().collect();
        list.sort_by(|x, y| x.name().cmp(y.name()));
        let mut agg = Row::new(&b.config.name, "BACKEND", 1);
        let (mut scur, mut stot, mut bin, mut bout, mut rate) = (0u64, 0, 0, 0, 0.0);
        let mut resp = [0u64; 5];
        for (sid, s) in list.iter().enumerate() {
            let mut r = server_row(b, s, sid + 1);
            r.set("iid", i + 1);
            rows.push(r);
            scur += u64::from(s.active());
            stot += s.total();
            let (x, y) = s.bytes();
            bin += x;
            bout += y;
            rate += s.request_rate();
            for (a, n) in resp.iter_mut().zip(s.responses()) {
                *a += n;
            }
        }
        agg.set("qcur", b.stats.queued.load(Relaxed));
        agg.set("qmax", b.stats.queue_max.load(Relaxed));
        agg.set("scur", scur);
        agg.set("stot", stot);
        agg.set("bin", bin);
        agg.set("bout", bout);
        // The backend's own sums: they keep what removed servers counted.
        let [econ, eresp, cli_abrt, srv_abrt] = b.stats.errors.get();
        agg.set("econ", econ);
        agg.set("eresp", eresp);
        agg.set("cli_abrt", cli_abrt);
        agg.set("srv_abrt", srv_abrt);
        agg.set("wretr", b.stats.retries.load(Relaxed));
        agg.set("wredis", b.stats.retries.load(Relaxed));
        agg.set("status", if b.usable_count() > 0 { "UP" } else { "DOWN" });
        agg.set("act", b.servers.iter().filter(|s| !s.is_backup()).count());
        agg.set("bck", b.servers.iter().filter(|s| s.is_backup()).count());
        agg.set("qlimit", b.config.max_queue);
        agg.set("iid", i + 1);
        agg.set("lbtot", stot);
        agg.set("rate", rate.round() as u64);
        for (col, n) in ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"]
            .iter()
            .zip(resp)
        {
            agg.set(col, n);
        }
        rows.push(agg);
    }
    for r in rows {
        let _ = writeln!(out, "{},", r.0.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_haproxys() {
        assert_eq!(COLUMNS[0], "pxname");
        assert_eq!(COLUMNS[17], "status");
        assert_eq!(COLUMNS[32], "type");
        assert_eq!(COLUMNS[50], "srv_abrt");
    }
}
