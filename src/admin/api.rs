//! Routing and handlers of the admin JSON API (`/api/v1/…`). Every change goes
//! through `Runtime::apply`, like reloads do. Documented in `openapi.json`.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::{respond, status, AdminState};
use crate::config::types::{AdminState as Admin, ServerConfig};
use crate::runtime::{ApplyError, Change};

type Resp = Response<Full<Bytes>>;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

fn json_resp(status: u16, v: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}

fn error(status: u16, msg: impl Into<String>) -> Resp {
    json_resp(status, &json!({ "error": msg.into() }))
}

fn apply_error(e: &ApplyError) -> Resp {
    let status = match e {
        ApplyError::UnknownBackend { .. } | ApplyError::UnknownServer { .. } => 404,
        ApplyError::Busy { .. } => 409,
        ApplyError::Invalid(_) => 400,
        ApplyError::Bind { .. } => 409,
        ApplyError::Unavailable(_) => 503,
    };
    error(status, e.to_string())
}

/// Handle one admin request from `peer`.
pub async fn handle(st: &AdminState, peer: std::net::SocketAddr, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let read_only = method == Method::GET || method == Method::HEAD;
    // The page itself carries no data; it must load to ask for the token.
    let page = read_only && path == "/";
    if let (Some(token), false) = (&st.token, page) {
        let open_read = read_only && st.public_read;
        if !open_read && !authorized(&req, token) {
            super::auth::log_refused(peer, &method, &path, &req);
            let mut r = error(
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"fulcrum\""),
            );
            return r;
        }
    }
    let by = client_label(&req);
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // HEAD is GET without a body (hyper leaves the body out).
    let routed = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    match (routed, segs.as_slice()) {
        (Method::GET, []) => respond(
            200,
            "text/html; charset=utf-8",
            include_str!("dashboard.html"),
        ),
        (Method::GET, ["metrics"]) => {
            // Prometheus asks for OpenMetrics; curl and older scrapers get 0.0.4.
            let openmetrics = req
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            // Off the control thread, like the status document (see below).
            let (rt, vrrp) = (st.rt.clone(), st.vrrp.clone());
            let rendered = tokio::task::spawn_blocking(move || {
                if openmetrics {
                    super::metrics::render_openmetrics(&rt, Some(vrrp))
                } else {
                    super::metrics::render_with_vrrp(&rt, vrrp)
                }
            })
            .await;
            let content_type = if openmetrics {
                super::metrics::OPENMETRICS_CONTENT_TYPE
            } else {
                super::metrics::CONTENT_TYPE
            };
            match rendered {
                Ok(body) => respond(200, content_type, body),
                Err(e) => error(500, format!("metrics failed: {e}")),
            }
        }
        (Method::GET, ["api", "v1", "status"]) => {
            match super::status_query::StatusQuery::parse(&query) {
                Ok(q) => {
                    // Built and serialised on a blocking thread: with 10 000
                    // servers the full document takes long enough that, on
                    // the control thread, it would hold up every other admin
                    // call and applied change meanwhile.
                    let rt = st.rt.clone();
                    let vrrp = st.vrrp_json();
                    match tokio::task::spawn_blocking(move || status::render(&rt, vrrp, &q)).await {
                        Ok(body) => respond(200, "application/json", body),
                        Err(e) => error(500, format!("status failed: {e}")),
                    }
                }
                Err(e) => error(400, e),
            }
        }
        (Method::GET, ["stats;csv"] | ["api", "v1", "stats.csv"]) => {
            let rt = st.rt.clone();
            match tokio::task::spawn_blocking(move || super::csv::render(&rt)).await {
                Ok(body) => respond(200, super::csv::CONTENT_TYPE, body),
                Err(e) => error(500, format!("stats failed: {e}")),
            }
        }
        (Method::GET, ["api", "v1", "vrrp"]) => json_resp(200, &st.vrrp_json()),
        (Method::GET, ["api", "v1", "backends", b, "servers", s]) => {
            match crate::runtime::find_server(&st.rt.snapshot(), b, s) {
                Ok(srv) => json_resp(200, &status::server_status(srv)),
                Err(e) => apply_error(&e),
            }
        }
        (Method::POST, ["api", "v1", "backends", b, "servers"]) => {
            add_server(st, b, req, &by).await
        }
        (Method::DELETE, ["api", "v1", "backends", b, "servers", s]) => {
            let force = query_flag(&query, "force");
            let change = Change::RemoveServer {
                backend: b.to_string(),
                server: s.to_string(),
                force,
            };
            match apply(st, change, &by).await {
                Ok(generation) => json_resp(
                    200,
                    &json!({ "removed": format!("{b}/{s}"), "generation": generation }),
                ),
                Err(e) => apply_error(&e),
            }
        }
        (Method::PUT | Method::POST, ["api", "v1", "backends", b, "servers", s, "state"]) => {
            set_state(st, b, s, req, &by).await
        }
        (Method::PUT | Method::POST, ["api", "v1", "backends", b, "servers", s, "weight"]) => {
            set_weight(st, b, s, req, &by).await
        }
        (Method::POST, ["api", "v1", "reload"]) => reload(st, &query, &by).await,
        (_, segs) if known_path(segs) => {
            let mut r = error(405, format!("{method} is not allowed on {path}"));
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(allowed(segs)),
            );
            r
        }
        _ => error(404, format!("no such path: {path}")),
    }
}

/// True for paths the API serves with some method (405 rather than 404 for the others).
fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        [] | ["metrics"]
            | ["stats;csv"]
            | ["api", "v1", "stats.csv"]
            | ["api", "v1", "status" | "vrrp" | "reload"]
            | ["api", "v1", "backends", _, "servers"]
            | ["api", "v1", "backends", _, "servers", _]
            | ["api", "v1", "backends", _, "servers", _, "state" | "weight"]
    )
}

/// The `Allow` header of a 405 answer on `segs` (RFC 9110 §15.5.6): the
/// methods the match in [`handle`] serves there.
fn allowed(segs: &[&str]) -> &'static str {
    match segs {
        ["api", "v1", "reload"] => "POST",
        ["api", "v1", "backends", _, "servers"] => "POST",
        ["api", "v1", "backends", _, "servers", _] => "GET, HEAD, DELETE",
        ["api", "v1", "backends", _, "servers", _, "state" | "weight"] => "PUT, POST",
        _ => "GET, HEAD",
    }
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| super::auth::bearer(v.as_bytes()))
        .is_some_and(|given| super::auth::constant_time_eq(given, token.as_bytes()))
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(error(
                    413,
                    format!("request body larger than {MAX_BODY} bytes"),
                ));
            }
            return Err(error(400, format!("cannot read request body: {e}")));
        }
    };
    serde_json::from_slice(&body).map_err(|e| error(400, format!("bad JSON: {e}")))
}

fn parse_state(s: &str) -> Option<Admin> {
    match s {
        "ready" => Some(Admin::Ready),
        "drain" => Some(Admin::Drain),
        "maint" => Some(Admin::Maint),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

async fn set_state(st: &AdminState, b: &str, s: &str, req: Request<Incoming>, by: &str) -> Resp {
    let body: StateBody = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(state) = parse_state(&body.state) else {
        return error(
            400,
            format!("unknown state `{}`: use ready, drain or maint", body.state),
        );
    };
    let change = Change::SetAdmin {
        backend: b.to_string(),
        server: s.to_string(),
        state,
    };
    after_change(st, b, s, change, by).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: i64,
}

async fn set_weight(st: &AdminState, b: &str, s: &str, req: Request<Incoming>, by: &str) -> Resp {
    let body: WeightBody = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !(1..=256).contains(&body.weight) {
        return error(
            400,
            format!(
                "weight {} is out of range; use 1..=256 (to stop traffic, drain the server)",
                body.weight
            ),
        );
    }
    let change = Change::SetWeight {
        backend: b.to_string(),
        server: s.to_string(),
        weight: body.weight as u32,
    };
    after_change(st, b, s, change, by).await
}

/// Every server change of the API goes through here: to the cluster store
/// when `[cluster] store` is set (every node applies it), else to this node.
/// `by` names the admin client for the change log.
async fn apply(st: &AdminState, change: Change, by: &str) -> Result<u64, ApplyError> {
    #[cfg(feature = "etcd")]
    return crate::cluster::store::apply(&st.rt, change, by).await;
    #[cfg(not(feature = "etcd"))]
    st.rt.apply_by(change, by).await
}

async fn after_change(st: &AdminState, b: &str, s: &str, change: Change, by: &str) -> Resp {
    match apply(st, change, by).await {
        Ok(_) => match crate::runtime::find_server(&st.rt.snapshot(), b, s) {
            Ok(srv) => json_resp(200, &status::server_status(srv)),
            Err(e) => apply_error(&e),
        },
        Err(e) => apply_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: String,
    address: String,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    maxconn: Option<u32>,
    #[serde(default)]
    state: Option<String>,
}

async fn add_server(st: &AdminState, b: &str, req: Request<Incoming>, by: &str) -> Resp {
    let body: AddBody = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !crate::config::rules::valid_name(&body.name) {
        return error(
            400,
            format!(
                "bad server name `{}`: {}",
                body.name,
                crate::config::rules::NAME_HINT
            ),
        );
    }
    let Ok(address) = body.address.parse::<std::net::SocketAddr>() else {
        return error(
            400,
            format!("bad address `{}`: write IP:PORT", body.address),
        );
    };
    if let Some(why) = crate::config::rules::server_address_problem(address) {
        return error(400, format!("bad address `{address}`: {why}"));
    }
    if st.rt.snapshot().server(b, &body.name).is_some() {
        return error(
            409,
            format!("backend `{b}` already has a server named `{}`", body.name),
        );
    }
    let weight = body.weight.unwrap_or(1);
    if !(1..=256).contains(&weight) {
        return error(400, format!("weight {weight} is out of range; use 1..=256"));
    }
    let admin = match body.state.as_deref() {
        None => Admin::Ready,
        Some(s) => match parse_state(s) {
            Some(a) => a,
            None => {
                return error(
                    400,
                    format!("unknown state `{s}`: use ready, drain or maint"),
                )
            }
        },
    };
    let server = ServerConfig {
        name: body.name.clone(),
        address,
        weight: weight as u32,
        backup: body.backup,
        maxconn: body.maxconn.filter(|m| *m > 0),
        admin,
    };
    match apply(
        st,
        Change::AddServer {
            backend: b.to_string(),
            server,
        },
        by,
    )
    .await
    {
        Ok(_) => match st.rt.snapshot().server(b, &body.name) {
            Some(srv) => json_resp(201, &status::server_status(srv)),
            None => error(500, "server vanished after being added"),
        },
        Err(e) => apply_error(&e),
    }
}

async fn reload(st: &AdminState, query: &str, by: &str) -> Resp {
    let reset = match reset_flag(query) {
        Ok(r) => r,
        Err(e) => return error(400, e),
    };
    #[cfg(feature = "etcd")]
    if let Some(r) = crate::cluster::config_source::reload(&st.rt).await {
        return match r {
            Ok(generation) => json_resp(
                200,
                &json!({ "generation": generation, "config_source": "etcd" }),
            ),
            Err(e) => json_resp(
                422,
                &json!({ "error": format!("{e}; the running configuration stays in force"), "errors": [] }),
            ),
        };
    }
    let Some(path) = st.rt.snapshot().config.source.clone() else {
        return error(
            409,
            "this instance runs without a configuration file (quick mode or demo)",
        );
    };
    match crate::config::load_file(&path) {
        Err(errors) => {
            let list: Vec<_> = errors
                .0
                .iter()
                .map(|e| json!({ "file": e.file, "line": e.line, "col": e.col, "message": e.message, "hint": e.hint, "text": e.to_string() }))
                .collect();
            tracing::error!("reload through the API refused: {} error(s)", list.len());
            json_resp(
                422,
                &json!({ "error": format!("{} has {} error(s); the running configuration stays in force", path.display(), list.len()), "errors": list }),
            )
        }
        Ok(cfg) => {
            let change = if reset {
                Change::ReloadReset(Box::new(cfg))
            } else {
                Change::Reload(Box::new(cfg))
            };
            match st.rt.apply_by(change, by).await {
                Ok(generation) => {
                    tracing::info!(
                        generation,
                        reset,
                        "reloaded {} through the API",
                        path.display()
                    );
                    json_resp(
                        200,
                        &json!({ "generation": generation, "config_file": path.display().to_string(), "reset": reset }),
                    )
                }
                Err(e) => apply_error(&e),
            }
        }
    }
}

/// True when `name`, `name=true` or `name=1` is in the query string.
/// `reset` of `POST /api/v1/reload`: absent, bare, `true`/`1` or
/// `false`/`0`, as often as given but never with another value (a typo must
/// not reload without the reset that was asked for, or with one not asked for).
fn reset_flag(query: &str) -> Result<bool, String> {
    let mut reset = None;
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        if k != "reset" {
            continue;
        }
        let this = match v {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                let v: String = v.chars().take(64).collect();
                return Err(format!("reset must be true or false, not `{v}`"));
            }
        };
        if reset.is_some_and(|r| r != this) {
            return Err("reset is given twice with different values".to_string());
        }
        reset = Some(this);
    }
    Ok(reset.unwrap_or(false))
}

fn query_flag(query: &str, name: &str) -> bool {
    query.split('&').any(|kv| {
        kv == name
            || kv
                .strip_prefix(name)
                .is_some_and(|v| v == "=true" || v == "=1")
    })
}

/// The admin client's address (put on the request by the listener), for the log.
fn client_label(req: &Request<Incoming>) -> String {
    match req.extensions().get::<super::ClientAddr>() {
        Some(a) => format!("api {}", a.0),
        None => "api".to_string(),
    }
}
