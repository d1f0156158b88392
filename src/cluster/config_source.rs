//! The whole configuration from one etcd key
//! (`[cluster] config = { etcd = { endpoints, key } }`).
//!
//! The file given to `fulcrum run --config` is then a bootstrap: it says where
//! the key is, and it is the configuration used when the key is absent, bad or
//! unreachable at start. The key's value is a whole `fulcrum.toml`; each new
//! value is validated exactly like a file reload (errors with
//! `etcd:KEY:line:col`) and applied with `Change::Reload`. A bad value is
//! refused: every error is logged, the status shows it under `config_source`,
//! and the running configuration stays. The bootstrap's `[cluster] config`
//! is kept whatever the key says, so the source cannot switch itself off.
//! SIGHUP and `POST /api/v1/reload` re-read the key and apply it.
//!
//! They also re-read the bootstrap file's `[cluster] config`: when it changed
//! (endpoints, key, auth, TLS) the source restarts with the new settings and
//! the new key's value is applied (the running configuration stays while it
//! cannot be read or is refused); when it is gone, the source stops and the
//! file is reloaded as the configuration. A file reload that adds
//! `[cluster] config` to a node that had none starts the source. A
//! `[cluster] config` inside the key's value is ignored, with a warning.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;

use super::client::{Client, PrefixMirror};
use crate::config::types::{Config, EtcdConfig};
use crate::runtime::{Change, Runtime};

/// What the source last did, for the status API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigSourceStatus {
    /// `etcd KEY`.
    pub source: String,
    /// Whether etcd can be read now.
    pub reachable: bool,
    /// The errors of the last value refused (or why etcd cannot be read).
    pub last_error: Option<String>,
    /// The store revision at which the applied value was read.
    pub applied_revision: Option<i64>,
}

struct Source {
    runtime: Weak<Runtime>,
    cfg: EtcdConfig,
    status: Mutex<ConfigSourceStatus>,
    /// The last value applied, re-applied by SIGHUP / API reload.
    last_text: Mutex<Option<String>>,
    /// The task watching the key (aborted when the source restarts or stops).
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Source {
    fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

static SOURCES: LazyLock<Mutex<HashMap<usize, Arc<Source>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn source_of(rt: &Runtime) -> Option<Arc<Source>> {
    let all = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    let s = all.get(&(rt as *const Runtime as usize)).cloned()?;
    (s.runtime.strong_count() > 0).then_some(s)
}

/// The source's status for `rt`, when the configuration comes from etcd.
pub fn status(rt: &Runtime) -> Option<ConfigSourceStatus> {
    source_of(rt).map(|s| s.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Parse a value of the key, keeping the bootstrap's link to etcd.
fn parse(text: &str, bootstrap: &Config, key: &str) -> Result<Config, String> {
    let mut cfg = crate::config::parse_str(text, &format!("etcd:{key}")).map_err(|e| {
        for err in &e.0 {
            tracing::error!("{err}");
        }
        format!("{} error(s) in etcd:{key}: {e}", e.0.len())
    })?;
    if cfg.cluster.config.is_some() && cfg.cluster.config != bootstrap.cluster.config {
        tracing::warn!(key, "[cluster] config in the etcd value is ignored: the bootstrap file says where the configuration lives");
    }
    cfg.cluster.config = bootstrap.cluster.config.clone();
    cfg.source = bootstrap.source.clone();
    Ok(cfg)
}

/// The configuration to start with: the key's, when it can be read and is
/// valid; else the bootstrap file's (with a log line saying why).
pub async fn initial(bootstrap: Config) -> Config {
    let Some(src) = bootstrap.cluster.config.clone() else {
        return bootstrap;
    };
    let read = async {
        let opts = crate::discovery::etcd::connect_options(&src)?;
        let client = Client::connect(&opts, 0).await?;
        client.get(&src.prefix).await
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok((_, Some(kv)))) => match String::from_utf8(kv.value) {
            Ok(text) => match parse(&text, &bootstrap, &src.prefix) {
                Ok(cfg) => {
                    tracing::info!(key = %src.prefix, revision = kv.mod_revision, "configuration read from etcd");
                    return cfg;
                }
                Err(e) => tracing::error!("{e}; starting with the bootstrap file"),
            },
            Err(_) => {
                tracing::error!(key = %src.prefix, "the etcd key is not UTF-8; starting with the bootstrap file")
            }
        },
        Ok(Ok((_, None))) => {
            tracing::warn!(key = %src.prefix, "no configuration in etcd yet; starting with the bootstrap file")
        }
        Ok(Err(e)) => {
            tracing::warn!(key = %src.prefix, error = %e, "etcd unreachable; starting with the bootstrap file")
        }
        Err(_) => {
            tracing::warn!(key = %src.prefix, "etcd read timed out; starting with the bootstrap file")
        }
    }
    bootstrap
}

/// Watch the key and apply each new value (from the start revision on), when
/// `bootstrap` has `[cluster] config`; and start the source later when a file
/// reload adds `[cluster] config`.
pub fn spawn(rt: &Arc<Runtime>, bootstrap: &Config) {
    start(rt, bootstrap);
    let mut reloads = rt.watch_reloads();
    reloads.borrow_and_update();
    let weak = Arc::downgrade(rt);
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let cfg = reloads.borrow_and_update().clone();
            let Some(rt) = weak.upgrade() else { break };
            if let Some(c) = &cfg.cluster.config {
                if source_of(&rt).is_none() {
                    tracing::info!(key = %c.prefix, "[cluster] config added by the reload: the configuration now comes from etcd");
                    start(&rt, &cfg);
                }
            }
        }
    });
}

/// Register a source for `rt` from `bootstrap`'s `[cluster] config`
/// (replacing and stopping any other) and start watching its key.
fn start(rt: &Arc<Runtime>, bootstrap: &Config) -> Option<Arc<Source>> {
    let cfg = bootstrap.cluster.config.clone()?;
    let src = Arc::new(Source {
        runtime: Arc::downgrade(rt),
        status: Mutex::new(ConfigSourceStatus {
            source: format!("etcd {}", cfg.prefix),
            ..ConfigSourceStatus::default()
        }),
        cfg,
        last_text: Mutex::new(None),
        task: Mutex::new(None),
    });
    {
        let mut all = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.runtime.strong_count() > 0);
        if let Some(old) = all.insert(Arc::as_ptr(rt) as usize, src.clone()) {
            old.stop();
        }
    }
    let bootstrap = bootstrap.clone();
    let watched = src.clone();
    let task = tokio::spawn(async move {
        let src = watched;
        let opts = match crate::discovery::etcd::connect_options(&src.cfg) {
            Ok(o) => o,
            Err(e) => {
                src.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some(e);
                return;
            }
        };
        let key = src.cfg.prefix.clone();
        let mut mirror = PrefixMirror::new(opts, key.clone());
        let (tx, mut rx) = tokio::sync::watch::channel::<Option<(Option<Vec<u8>>, i64)>>(None);
        let src2 = src.clone();
        let watcher = async move {
            loop {
                let mut on = |m: &PrefixMirror| {
                    // The prefix range also covers longer keys; only ours counts.
                    let _ = tx.send(Some((m.keys.get("").cloned(), m.revision)));
                };
                let why = mirror.run_once(&mut on).await;
                {
                    let mut st = src2.status.lock().unwrap_or_else(|p| p.into_inner());
                    if st.reachable {
                        tracing::warn!(key = %src2.cfg.prefix, error = %why, "etcd unreachable; keeping the running configuration");
                    }
                    st.reachable = false;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let applier = async move {
            let mut last: Option<Vec<u8>> = None;
            while rx.changed().await.is_ok() {
                let Some((value, revision)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                src.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reachable = true;
                let Some(value) = value else {
                    continue; // no key (yet, or deleted): the running config stays
                };
                if last.as_ref() == Some(&value) {
                    continue;
                }
                last = Some(value.clone());
                let Some(rt) = src.runtime.upgrade() else {
                    return;
                };
                let text = String::from_utf8_lossy(&value).to_string();
                apply_text(&rt, &src, &bootstrap, &text, Some(revision)).await;
            }
        };
        tokio::join!(watcher, applier);
    });
    *src.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    Some(src)
}

/// Stop `rt`'s source, if any.
fn stop(rt: &Runtime) {
    let old = SOURCES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(rt as *const Runtime as usize));
    if let Some(s) = old {
        s.stop();
    }
}

async fn apply_text(
    rt: &Arc<Runtime>,
    src: &Source,
    bootstrap: &Config,
    text: &str,
    revision: Option<i64>,
) -> bool {
    let key = &src.cfg.prefix;
    let result = match parse(text, bootstrap, key) {
        Ok(cfg) => rt
            .apply(Change::Reload(Box::new(cfg)))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let mut st = src.status.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(generation) => {
            tracing::info!(key = %key, generation, "configuration from etcd applied");
            st.last_error = None;
            st.applied_revision = revision.or(st.applied_revision);
            *src.last_text.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.to_string());
            true
        }
        Err(e) => {
            tracing::error!(key = %key, "configuration from etcd refused; the running configuration stays: {e}");
            st.last_error = Some(e);
            false
        }
    }
}

/// SIGHUP / API reload when the configuration comes from etcd: re-read the
/// key and apply it. `None` when `rt` has no etcd configuration source.
pub async fn reload(rt: &Arc<Runtime>) -> Option<Result<u64, String>> {
    let mut src = source_of(rt)?;
    let mut bootstrap = Config::clone(&rt.snapshot().config);
    // The bootstrap file says where the configuration lives: follow a change.
    if let Some(path) = bootstrap.source.clone() {
        match crate::config::load_file(&path) {
            Ok(file) => match &file.cluster.config {
                None => {
                    tracing::info!(file = %path.display(), "[cluster] config removed from the bootstrap file: the configuration comes from the file again");
                    stop(rt);
                    return None;
                }
                Some(c) if *c != src.cfg => {
                    tracing::info!(file = %path.display(), key = %c.prefix, endpoints = ?c.endpoints, "[cluster] config changed in the bootstrap file: the source restarts with the new settings");
                    src = start(rt, &file)?;
                    bootstrap = file;
                }
                Some(_) => {}
            },
            Err(e) => tracing::warn!(
                file = %path.display(),
                "the bootstrap file has {} error(s), so its [cluster] config was not re-read: {e}",
                e.0.len()
            ),
        }
    }
    let read = async {
        let opts = crate::discovery::etcd::connect_options(&src.cfg)?;
        let client = Client::connect(&opts, 0).await?;
        client.get(&src.cfg.prefix).await
    };
    let (text, revision) = match read.await {
        Ok((rev, Some(kv))) => (String::from_utf8_lossy(&kv.value).to_string(), rev),
        Ok((_, None)) => return Some(Err(format!("no configuration under {}", src.cfg.prefix))),
        Err(e) => return Some(Err(format!("etcd unreachable: {e}"))),
    };
    if apply_text(rt, &src, &bootstrap, &text, Some(revision)).await {
        Some(Ok(rt.snapshot().generation))
    } else {
        let why = src
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone()
            .unwrap_or_default();
        Some(Err(why))
    }
}
