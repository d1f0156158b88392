//! Routing and handlers of the admin JSON API (`/api/v1/…`). Every change goes
//! through `Runtime::apply`, like reloads do. Documented in `openapi.yaml`.

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
        ApplyError::UnknownBackend(_) | ApplyError::UnknownServer(..) => 404,
        ApplyError::Busy { .. } => 409,
        ApplyError::Invalid(_) => 400,
        ApplyError::Bind { .. } => 409,
        ApplyError::Unavailable(_) => 503,
    };
    error(status, e.to_string())
}

/// Handle one admin request.
pub async fn handle(st: &AdminState, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let read_only = method == Method::GET || method == Method::HEAD;
    // The page itself carries no data; it must load to ask for the token.
    let page = read_only && path == "/";
    if let (Some(token), false) = (&st.token, page) {
        let open_read = read_only && st.public_read;
        if !open_read && !authorized(&req, token) {
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
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, []) => respond(
            200,
            "text/html; charset=utf-8",
            include_str!("dashboard.html"),
        ),
        (Method::GET, ["metrics"]) => respond(
            200,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(&st.rt),
        ),
        (Method::GET, ["api", "v1", "status"]) => {
            json_resp(200, &status::status(&st.rt, st.vrrp_json()))
        }
        (Method::GET, ["api", "v1", "vrrp"]) => json_resp(200, &st.vrrp_json()),
        (Method::GET, ["api", "v1", "backends", b, "servers", s]) => {
            match st.rt.snapshot().server(b, s) {
                Some(srv) => json_resp(200, &status::server_status(srv)),
                None => error(404, format!("unknown server `{b}/{s}`")),
            }
        }
        (Method::POST, ["api", "v1", "backends", b, "servers"]) => add_server(st, b, req).await,
        (Method::DELETE, ["api", "v1", "backends", b, "servers", s]) => {
            let force = query
                .split('&')
                .any(|kv| kv == "force" || kv == "force=true" || kv == "force=1");
            let change = Change::RemoveServer {
                backend: b.to_string(),
                server: s.to_string(),
                force,
            };
            match apply(st, change).await {
                Ok(generation) => json_resp(
                    200,
                    &json!({ "removed": format!("{b}/{s}"), "generation": generation }),
                ),
                Err(e) => apply_error(&e),
            }
        }
        (Method::PUT | Method::POST, ["api", "v1", "backends", b, "servers", s, "state"]) => {
            set_state(st, b, s, req).await
        }
        (Method::PUT | Method::POST, ["api", "v1", "backends", b, "servers", s, "weight"]) => {
            set_weight(st, b, s, req).await
        }
        (Method::POST, ["api", "v1", "reload"]) => reload(st).await,
        (_, segs) if known_path(segs) => error(405, format!("{method} is not allowed on {path}")),
        _ => error(404, format!("no such path: {path}")),
    }
}

/// True for paths the API serves with some method (405 rather than 404 for the others).
fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        [] | ["metrics"]
            | ["api", "v1", "status" | "vrrp" | "reload"]
            | ["api", "v1", "backends", _, "servers"]
            | ["api", "v1", "backends", _, "servers", _]
            | ["api", "v1", "backends", _, "servers", _, "state" | "weight"]
    )
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(v) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return false;
    };
    let Ok(v) = v.to_str() else { return false };
    let Some(given) = v.strip_prefix("Bearer ") else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Compare without an early exit, so response timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn set_state(st: &AdminState, b: &str, s: &str, req: Request<Incoming>) -> Resp {
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
    after_change(st, b, s, change).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: i64,
}

async fn set_weight(st: &AdminState, b: &str, s: &str, req: Request<Incoming>) -> Resp {
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
    after_change(st, b, s, change).await
}

/// Every server change of the API goes through here: to the cluster store
/// when `[cluster] store` is set (every node applies it), else to this node.
async fn apply(st: &AdminState, change: Change) -> Result<u64, ApplyError> {
    #[cfg(feature = "etcd")]
    return crate::cluster::store::apply(&st.rt, change).await;
    #[cfg(not(feature = "etcd"))]
    st.rt.apply(change).await
}

async fn after_change(st: &AdminState, b: &str, s: &str, change: Change) -> Resp {
    match apply(st, change).await {
        Ok(_) => match st.rt.snapshot().server(b, s) {
            Some(srv) => json_resp(200, &status::server_status(srv)),
            None => error(404, format!("unknown server `{b}/{s}`")),
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

async fn add_server(st: &AdminState, b: &str, req: Request<Incoming>) -> Resp {
    let body: AddBody = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return error(
            400,
            format!(
                "bad server name `{}`: use letters, digits, '-', '_' and '.'",
                body.name
            ),
        );
    }
    let Ok(address) = body.address.parse() else {
        return error(
            400,
            format!("bad address `{}`: write IP:PORT", body.address),
        );
    };
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

async fn reload(st: &AdminState) -> Resp {
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
        Ok(cfg) => match st.rt.apply(Change::Reload(Box::new(cfg))).await {
            Ok(generation) => {
                tracing::info!(generation, "reloaded {} through the API", path.display());
                json_resp(
                    200,
                    &json!({ "generation": generation, "config_file": path.display().to_string() }),
                )
            }
            Err(e) => apply_error(&e),
        },
    }
}
