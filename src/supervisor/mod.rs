//! The supervisor: what runs on top of the runtime's state. It owns the
//! listeners, the health checkers and the discovery tasks ([`tasks`], which
//! the runtime tells of every applied change through [`crate::runtime::Tasks`]) and
//! the VRRP instances ([`Vrrp`], re-applied on every reload).
//!
//! The layering: `runtime` holds state only (snapshot, per-server state,
//! desired state, a pure build/diff) and imports neither the proxy nor the
//! tasks; the proxy, health checks and discovery read and change that state;
//! the supervisor imports them all and starts and stops their tasks.

pub mod checks;
pub mod tasks;

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::types::Config;
use crate::runtime::{ApplyError, Runtime};
use crate::vrrp::config::VrrpConfig;

/// Start the runtime with `config` and the supervisor's tasks following it:
/// listeners bound, health checks and discovery running.
pub async fn start(config: Config) -> Result<Arc<Runtime>, ApplyError> {
    Runtime::start(config, Box::new(tasks::Tasks::default())).await
}

/// The VRRP instances, re-applied whenever the runtime applies a reload
/// (SIGHUP, the admin API, etcd): a task owns them and follows
/// [`Runtime::watch_reloads`].
pub struct Vrrp {
    status: crate::vrrp::VrrpStatus,
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

impl Vrrp {
    /// Start the instances of `cfg` (after the listeners are bound, so a node
    /// never claims a VIP it cannot serve); `track.frontends` asks `rt`.
    pub async fn start(rt: &Arc<Runtime>, cfg: &VrrpConfig) -> std::io::Result<Vrrp> {
        let mut reloads = rt.watch_reloads();
        reloads.borrow_and_update();
        let mut vrrp =
            crate::vrrp::Vrrp::start(cfg, Some(crate::vrrp::frontends_probe(rt.clone()))).await?;
        let status = vrrp.status();
        let (stop, mut stop_rx) = oneshot::channel();
        let weak = Arc::downgrade(rt);
        let done = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    changed = reloads.changed() => {
                        let rt = match (changed, weak.upgrade()) {
                            (Ok(()), Some(rt)) => rt,
                            // The runtime is gone: nothing more to follow.
                            _ => {
                                let _ = (&mut stop_rx).await;
                                break;
                            }
                        };
                        let cfg = reloads.borrow_and_update().clone();
                        vrrp.reconcile(&cfg.vrrp, Some(crate::vrrp::frontends_probe(rt)))
                            .await;
                    }
                }
            }
            vrrp.shutdown().await;
        });
        Ok(Vrrp { status, stop, done })
    }

    /// A cloneable status view for the admin API.
    pub fn status(&self) -> crate::vrrp::VrrpStatus {
        self.status.clone()
    }

    /// Graceful stop of every instance: masters hand their VIPs over first.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::types::{AdminState, ServerConfig};
    use crate::runtime::{find_server, Change};

    const CONFIG: &str = r#"
[frontends.www]
listen = ["127.0.0.1:0"]
backend = "web"

[backends.web]
servers = [{ name = "a", address = "127.0.0.1:1" }, { name = "b", address = "127.0.0.1:2" }]
"#;

    #[tokio::test]
    async fn servers_leaving_the_configuration_are_retired_and_the_rest_kept() {
        let config = crate::config::parse_str(CONFIG, "t.toml").expect("valid config");
        let rt = super::start(config.clone()).await.expect("starts");
        let bound = rt.bound_addresses().await;
        assert_eq!(
            bound.len(),
            1,
            "the supervisor bound the listener: {bound:?}"
        );
        let snap = rt.snapshot_arc();
        let a = find_server(&snap, "web", "a").expect("a").clone();
        let b = find_server(&snap, "web", "b").expect("b").clone();

        rt.apply(Change::RemoveServer {
            backend: "web".into(),
            server: "a".into(),
            force: false,
        })
        .await
        .expect("removed");
        assert!(a.is_retired(), "a left the configuration");
        assert!(!b.is_retired());
        let b_now = find_server(&rt.snapshot(), "web", "b").expect("b").clone();
        assert!(Arc::ptr_eq(&b, &b_now), "b kept its live state");

        // Added again: a new identity, not the retired one.
        rt.apply(Change::AddServer {
            backend: "web".into(),
            server: ServerConfig {
                name: "a".into(),
                address: "127.0.0.1:1".parse().expect("address"),
                weight: 1,
                backup: false,
                maxconn: None,
                admin: AdminState::Ready,
            },
        })
        .await
        .expect("added");
        let a_again = find_server(&rt.snapshot(), "web", "a").expect("a").clone();
        assert_ne!(a_again.id(), a.id());
        assert!(!a_again.is_retired());

        // A reload without the backend's server b retires it; a (kept by the API) stays.
        let mut fewer = config.clone();
        if let Some(web) = fewer.backends.get_mut("web") {
            web.servers.retain(|s| s.name != "b");
        }
        rt.apply(Change::Reload(Box::new(fewer)))
            .await
            .expect("reloaded");
        assert!(b.is_retired(), "b left with the reload");
        let a_kept = find_server(&rt.snapshot(), "web", "a").expect("a").clone();
        assert!(Arc::ptr_eq(&a_again, &a_kept) && !a_kept.is_retired());
        rt.shutdown(std::time::Duration::from_secs(1)).await;
    }
}
