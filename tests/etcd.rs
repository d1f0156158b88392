//! etcd discovery and `fulcrum register` against a real 3-member etcd
//! cluster on loopback ports (Debian's `etcd-server` and `etcd-client`;
//! `.ci/run` installs them). Each test starts its own cluster in a tempdir
//! and kills its members by PID when done. Without `etcd`/`etcdctl` the tests
//! print why and pass.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{backend, free_addr, get, wait_until, Lb, Load};

const ETCD: &str = "/usr/bin/etcd";

fn tools() -> Option<(PathBuf, PathBuf)> {
    let etcd = PathBuf::from(ETCD);
    let ctl = ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match (etcd.exists(), ctl) {
        (true, Some(ctl)) => Some((etcd, ctl)),
        _ => {
            eprintln!("skipped: etcd and etcdctl are not installed (apt-get install etcd-server etcd-client)");
            None
        }
    }
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A 3-member etcd cluster on loopback, killed on drop.
struct Cluster {
    etcd: PathBuf,
    ctl: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    /// `--user` for etcdctl once auth is enabled.
    user: Option<String>,
}

impl Cluster {
    fn start(etcd: PathBuf, ctl: PathBuf) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_addr(),
                peer: free_addr(),
                child: None,
            })
            .collect();
        let mut c = Cluster {
            etcd,
            ctl,
            dir,
            members,
            user: None,
        };
        for i in 0..3 {
            c.spawn(i, "new");
        }
        assert!(
            wait_until(Duration::from_secs(30), || c
                .ctl(&["endpoint", "health"])
                .is_some()
                && c.ctl(&["put", "/probe", "1"]).is_some()),
            "etcd cluster did not become healthy"
        );
        c
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("log file");
        let child = Command::new(&self.etcd)
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://{}", m.client))
            .arg(format!("--advertise-client-urls=http://{}", m.client))
            .arg(format!("--listen-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-advertise-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=fulcrum-test")
            .args(["--heartbeat-interval=50", "--election-timeout=500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Kill member `i` (SIGKILL, by PID through its handle).
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data dir.
    fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
    }

    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoints_toml(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("\"http://{}\"", m.client))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Run etcdctl against the live members; stdout on success.
    fn ctl(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(&self.ctl);
        if let Some(u) = &self.user {
            cmd.arg(format!("--user={u}"));
        }
        let out = cmd
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn must(&self, args: &[&str]) -> String {
        let mut last = None;
        for _ in 0..20 {
            if let Some(o) = self.ctl(args) {
                return o;
            }
            last = Some(());
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("etcdctl {args:?} failed ({last:?})");
    }

    /// `etcdctl lease grant TTL` → the lease id (hex).
    fn lease(&self, ttl: u32) -> String {
        let out = self.must(&["lease", "grant", &ttl.to_string()]);
        // "lease 694d77aa9e38260f granted with TTL(3s)"
        out.split_whitespace().nth(1).expect("lease id").to_string()
    }

    fn keep_alive(&self, lease: &str) -> Child {
        Command::new(&self.ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .args(["lease", "keep-alive", lease])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl keep-alive")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// An etcdctl child (keep-alive) killed on drop.
struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(listen: SocketAddr, admin: SocketAddr, cluster: &Cluster) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[frontends.web]
listen = ["{listen}"]
backend = "web"

[backends.web]
retries = 2
discovery = {{ etcd = {{ endpoints = [{eps}], prefix = "/fulcrum/backends/web/" }} }}
"#,
        eps = cluster.endpoints_toml()
    )
}

fn status(admin: SocketAddr) -> serde_json::Value {
    get(admin, "/api/v1/status")
        .map(|r| r.json())
        .unwrap_or(serde_json::Value::Null)
}

fn backend_status(admin: SocketAddr) -> serde_json::Value {
    status(admin)["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "web").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// (name, admin state) of every server of backend `web`.
fn servers(admin: SocketAddr) -> Vec<(String, String)> {
    let b = backend_status(admin);
    let mut v: Vec<(String, String)> = b["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("").to_string(),
                        s["admin"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn names(admin: SocketAddr) -> Vec<String> {
    servers(admin).into_iter().map(|(n, _)| n).collect()
}

fn value(addr: SocketAddr, extra: &str) -> String {
    format!(r#"{{"address":"{addr}"{extra}}}"#)
}

fn lb(cluster: &Cluster) -> (Lb, SocketAddr, SocketAddr) {
    let listen = free_addr();
    let admin = free_addr();
    let lb = Lb::start(&config(listen, admin, cluster), listen);
    common::wait_listening(admin);
    (lb, listen, admin)
}

#[test]
fn etcdctl_registration_lease_expiry_drain_and_bad_values() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (_lb, listen, admin) = lb(&cluster);

    // Registration the way an app box's unit would do it with etcdctl.
    let l1 = cluster.lease(2);
    let keep = Kid(cluster.keep_alive(&l1));
    cluster.must(&[
        "put",
        &format!("--lease={l1}"),
        "/fulcrum/backends/web/web1",
        &value(a1, r#","weight":1,"metadata":{"az":"a"}"#),
    ]);
    cluster.must(&["put", "/fulcrum/backends/web/web2", &value(a2, "")]);
    // A bad value is skipped and counted; the others stay.
    cluster.must(&["put", "/fulcrum/backends/web/broken", "{not json"]);
    assert!(
        wait_until(Duration::from_secs(10), || names(admin) == ["web1", "web2"]),
        "servers: {:?}",
        servers(admin)
    );
    assert!(wait_until(Duration::from_secs(5), || {
        let d = &backend_status(admin)["discovery"];
        d["skipped"] == 1 && d["store_reachable"] == true
    }));
    let seen: std::collections::HashSet<String> = (0..20)
        .filter_map(|_| get(listen, "/").ok().map(|r| r.server()))
        .collect();
    assert!(seen.contains("web1") && seen.contains("web2"), "{seen:?}");

    // A drain written to etcd: web2 gets no new requests.
    cluster.must(&[
        "put",
        "/fulcrum/backends/web/web2",
        &value(a2, r#","state":"drain""#),
    ]);
    assert!(wait_until(Duration::from_secs(10), || servers(admin)
        .contains(&("web2".into(), "drain".into()))));
    for _ in 0..10 {
        assert_eq!(get(listen, "/").expect("request").server(), "web1");
    }
    cluster.must(&["put", "/fulcrum/backends/web/web2", &value(a2, "")]);

    // The box dies: its keep-alive stops, the lease expires, the server goes;
    // a request in flight on it finishes.
    // Four slow requests at once: round robin puts two on web1, still in
    // flight when its lease (2 s) expires.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                get(listen, "/slow?ms=4000")
                    .map(|r| (r.status, r.server()))
                    .unwrap_or((0, String::new()))
            })
        })
        .collect();
    common::wait_backend_active(admin, "web", 4);
    drop(keep);
    assert!(
        wait_until(Duration::from_secs(15), || names(admin) == ["web2"]),
        "web1 still there after its lease expired: {:?}",
        servers(admin)
    );
    let done: Vec<(u16, String)> = slow
        .into_iter()
        .map(|t| t.join().expect("slow request"))
        .collect();
    assert!(done.iter().all(|(s, _)| *s == 200), "{done:?}");
    assert!(done.iter().any(|(_, n)| n == "web1"), "{done:?}");
    for _ in 0..10 {
        assert_eq!(get(listen, "/").expect("request").server(), "web2");
    }
}

#[test]
fn fulcrum_register_keeps_a_lease_and_revokes_it_on_sigterm() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_lb, listen, admin) = lb(&cluster);
    let log = cluster.dir.path().join("register.log");
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let mut reg = Kid(Command::new(common::bin())
        .args([
            "register",
            "--etcd",
            &cluster.endpoints(),
            "--backend",
            "web",
            "--address",
            &a1.to_string(),
            "--name",
            "app1",
            "--weight",
            "3",
            // Long: the key must go at SIGTERM, not by expiry.
            "--ttl",
            "60s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn register"));
    assert!(
        wait_until(Duration::from_secs(10), || names(admin) == ["app1"]),
        "servers: {:?}; register log: {}",
        servers(admin),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(get(listen, "/").expect("request").server(), "web1");
    let kv = cluster.must(&["get", "/fulcrum/backends/web/app1"]);
    assert!(kv.contains("\"weight\":3"), "{kv}");
    // The key is bound to a lease.
    let lease_line = cluster.must(&["get", "/fulcrum/backends/web/app1", "-w", "json"]);
    assert!(lease_line.contains("\"lease\""), "{lease_line}");

    unsafe {
        libc::kill(reg.0.id() as i32, libc::SIGTERM);
    }
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(reg.0.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "register did not exit on SIGTERM");
    assert!(
        wait_until(Duration::from_secs(10), || names(admin).is_empty()),
        "app1 still there after its lease was revoked: {:?}",
        servers(admin)
    );
    assert!(cluster
        .must(&["get", "--prefix", "/fulcrum/backends/web/"])
        .trim()
        .is_empty());
}

#[test]
fn two_nodes_see_a_drain_and_a_restarted_node_catches_up() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    cluster.must(&["put", "/fulcrum/backends/web/web1", &value(a1, "")]);
    cluster.must(&["put", "/fulcrum/backends/web/web2", &value(a2, "")]);
    let (_n1, _l1, admin1) = lb(&cluster);
    let (n2, _l2, admin2) = lb(&cluster);
    for admin in [admin1, admin2] {
        assert!(wait_until(Duration::from_secs(10), || names(admin) == ["web1", "web2"]));
    }
    cluster.must(&[
        "put",
        "/fulcrum/backends/web/web1",
        &value(a1, r#","state":"drain""#),
    ]);
    for admin in [admin1, admin2] {
        assert!(
            wait_until(Duration::from_secs(10), || servers(admin)
                .contains(&("web1".into(), "drain".into()))),
            "{:?}",
            servers(admin)
        );
    }

    // Node 2 goes down; changes happen meanwhile; it comes back and has them.
    let config2 = std::fs::read_to_string(n2.config_path()).expect("config");
    drop(n2);
    cluster.must(&["del", "/fulcrum/backends/web/web2"]);
    let (_b3, a3) = backend("web3");
    cluster.must(&[
        "put",
        "/fulcrum/backends/web/web3",
        &value(a3, r#","state":"maint""#),
    ]);
    assert!(wait_until(Duration::from_secs(10), || names(admin1)
        == ["web1", "web3"]));
    let listen2 = config2
        .lines()
        .find_map(|l| l.strip_prefix("listen = [\""))
        .and_then(|l| l.strip_suffix("\"]"))
        .and_then(|l| l.parse::<SocketAddr>().ok())
        .expect("listen address in config");
    let _n2 = Lb::start(&config2, listen2);
    let expect = vec![
        ("web1".to_string(), "drain".to_string()),
        ("web3".to_string(), "maint".to_string()),
    ];
    assert!(
        wait_until(Duration::from_secs(10), || servers(admin2) == expect),
        "restarted node: {:?}",
        servers(admin2)
    );
}

#[test]
fn serving_continues_when_etcd_members_die_and_quorum_is_lost() {
    let Some((etcd, ctl)) = tools() else { return };
    let mut cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    cluster.must(&["put", "/fulcrum/backends/web/web1", &value(a1, "")]);
    cluster.must(&["put", "/fulcrum/backends/web/web2", &value(a2, "")]);
    let (_lb, listen, admin) = lb(&cluster);
    assert!(wait_until(Duration::from_secs(10), || names(admin) == ["web1", "web2"]));
    let load = Load::start(listen, 2, 20_000);
    load.wait_more(50);

    // One member dies: the cluster keeps quorum; a change still arrives.
    cluster.kill(0);
    load.wait_more(50);
    cluster.must(&[
        "put",
        "/fulcrum/backends/web/web2",
        &value(a2, r#","weight":5"#),
    ]);
    assert!(wait_until(Duration::from_secs(15), || {
        backend_status(admin)["servers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "web2" && s["weight"] == 5))
    }));

    // A second one dies: no quorum. Serving goes on with the last known
    // servers, and the status says the store is unreachable.
    cluster.kill(1);
    assert!(
        wait_until(Duration::from_secs(30), || backend_status(admin)
            ["discovery"]["store_reachable"]
            == false),
        "discovery: {}",
        backend_status(admin)["discovery"]
    );
    load.wait_more(100);
    assert_eq!(names(admin), ["web1", "web2"]);
    let metrics = get(admin, "/metrics").expect("metrics").body;
    assert!(
        metrics.contains("fulcrum_discovery_source_up{backend=\"web\"} 0"),
        "{metrics}"
    );

    // Quorum returns: the source resyncs and applies what changed.
    cluster.restart(0);
    cluster.restart(1);
    cluster.must(&["del", "/fulcrum/backends/web/web1"]);
    assert!(
        wait_until(Duration::from_secs(30), || names(admin) == ["web2"]
            && backend_status(admin)["discovery"]["store_reachable"] == true),
        "after quorum returned: {:?} {}",
        servers(admin),
        backend_status(admin)["discovery"]
    );
    load.wait_more(50);
    let (ok, failed) = load.finish();
    assert_eq!(
        failed, 0,
        "failed requests while etcd members died ({ok} ok)"
    );
}

fn store_config(
    listen: SocketAddr,
    admin: SocketAddr,
    cluster: &Cluster,
    a1: SocketAddr,
    a2: SocketAddr,
) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[cluster]
store = {{ etcd = {{ endpoints = [{eps}] }} }}

[frontends.web]
listen = ["{listen}"]
backend = "web"

[backends.web]
servers = [
  {{ name = "web1", address = "{a1}" }},
  {{ name = "web2", address = "{a2}" }},
]
"#,
        eps = cluster.endpoints_toml()
    )
}

fn weight_of(admin: SocketAddr, name: &str) -> Option<u64> {
    backend_status(admin)["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["weight"]
        .as_u64()
}

#[test]
fn cluster_store_applies_admin_changes_on_every_node_and_a_returning_node_catches_up() {
    let Some((etcd, ctl)) = tools() else { return };
    let mut cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (_b3, a3) = backend("web3");
    let nodes: Vec<(SocketAddr, SocketAddr)> = (0..2).map(|_| (free_addr(), free_addr())).collect();
    let start = |i: usize, cluster: &Cluster| {
        let (listen, admin) = nodes[i];
        let lb = Lb::start(&store_config(listen, admin, cluster, a1, a2), listen);
        common::wait_listening(admin);
        lb
    };
    let n1 = start(0, &cluster);
    let n2 = start(1, &cluster);
    let (admin1, admin2) = (nodes[0].1, nodes[1].1);
    let url1 = format!("http://{admin1}");
    assert!(wait_until(Duration::from_secs(10), || {
        status(admin1)["cluster_store"]["reachable"] == true
            && status(admin2)["cluster_store"]["reachable"] == true
    }));

    // `ctl drain` against one node: both apply it, and it is in etcd.
    let (code, out) = common::ctl(&["--admin", &url1, "drain", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    for admin in [admin1, admin2] {
        assert!(
            wait_until(Duration::from_secs(10), || servers(admin)
                .contains(&("web1".into(), "drain".into()))),
            "{:?}",
            servers(admin)
        );
    }
    assert!(cluster
        .must(&["get", "/fulcrum/state/web/web1"])
        .contains("\"drain\""));

    // Node 2 is down while the weight changes and a server is added.
    drop(n2);
    let (code, out) = common::ctl(&["--admin", &url1, "weight", "web/web2", "7"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = common::ctl(&["--admin", &url1, "add", "web", "web3", &a3.to_string()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(weight_of(admin1, "web2"), Some(7));
    let n2 = start(1, &cluster);
    assert!(
        wait_until(Duration::from_secs(10), || weight_of(admin2, "web2")
            == Some(7)
            && names(admin2) == ["web1", "web2", "web3"]
            && servers(admin2).contains(&("web1".into(), "drain".into()))),
        "returning node: {:?} weight {:?}",
        servers(admin2),
        weight_of(admin2, "web2")
    );

    // Removal goes everywhere too.
    let (code, out) = common::ctl(&["--admin", &url1, "remove", "web/web3"]);
    assert_eq!(code, 0, "{out}");
    for admin in [admin1, admin2] {
        assert!(wait_until(Duration::from_secs(10), || names(admin) == ["web1", "web2"]));
    }

    // Without quorum a change is refused (503) and applied nowhere; the
    // nodes keep serving.
    cluster.kill(0);
    cluster.kill(1);
    assert!(wait_until(Duration::from_secs(30), || status(admin1)
        ["cluster_store"]["reachable"]
        == false));
    let r = common::send(
        admin1,
        "PUT",
        "/api/v1/backends/web/servers/web2/state",
        &[],
        r#"{"state":"maint"}"#,
    )
    .expect("request");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(servers(admin1).contains(&("web2".into(), "ready".into())));
    assert_eq!(get(nodes[0].0, "/").expect("serving").status, 200);
    drop((n1, n2));
}

fn config_with(
    listen: SocketAddr,
    admin: SocketAddr,
    cluster: &Cluster,
    server: SocketAddr,
) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[cluster]
config = {{ etcd = {{ endpoints = [{eps}], key = "/fulcrum/config/lb" }} }}

[frontends.web]
listen = ["{listen}"]
backend = "web"

[backends.web]
servers = [ {{ name = "only", address = "{server}" }} ]
"#,
        eps = cluster.endpoints_toml()
    )
}

#[test]
fn configuration_from_etcd_is_validated_like_a_reload() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
    // No key yet: the bootstrap file's configuration serves.
    let lb = Lb::start(&config_with(listen, admin, &cluster, a1), listen);
    common::wait_listening(admin);
    assert_eq!(get(listen, "/").expect("request").server(), "web1");

    // A valid configuration under the key replaces it.
    cluster.must(&[
        "put",
        "/fulcrum/config/lb",
        &config_with(listen, admin, &cluster, a2),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || get(listen, "/")
            .map(|r| r.server() == "web2")
            .unwrap_or(false)),
        "config_source: {}",
        status(admin)["config_source"]
    );

    // A bad one is refused with file:line:col and the running one stays.
    // (A second `[backends.web]` table: a TOML error.)
    let bad = config_with(listen, admin, &cluster, a1) + "\n[backends.web]\nretries = \"many\"\n";
    cluster.must(&["put", "/fulcrum/config/lb", &bad]);
    assert!(
        wait_until(Duration::from_secs(10), || status(admin)["config_source"]
            ["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("etcd:/fulcrum/config/lb:"))),
        "config_source: {}",
        status(admin)["config_source"]
    );
    for _ in 0..5 {
        assert_eq!(get(listen, "/").expect("request").server(), "web2");
    }

    // A restarted node starts from the key's value, not from its file.
    cluster.must(&[
        "put",
        "/fulcrum/config/lb",
        &config_with(listen, admin, &cluster, a2),
    ]);
    assert!(wait_until(Duration::from_secs(10), || status(admin)
        ["config_source"]["last_error"]
        .is_null()));
    let path = lb.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).expect("bootstrap");
    drop(lb);
    let _lb = Lb::start(&text, listen);
    assert_eq!(get(listen, "/").expect("request").server(), "web2");
}

#[test]
fn discovery_logs_in_with_a_user_and_password() {
    let Some((etcd, ctl)) = tools() else { return };
    let mut cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    cluster.must(&["user", "add", "root:s3cret-pass"]);
    cluster.must(&["auth", "enable"]);
    cluster.user = Some("root:s3cret-pass".into());
    cluster.must(&["put", "/fulcrum/backends/web/web1", &value(a1, "")]);
    let pass = cluster.dir.path().join("etcd.pass");
    std::fs::write(&pass, "s3cret-pass\n").expect("password file");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(listen, admin, &cluster).replace(
        "prefix = \"/fulcrum/backends/web/\"",
        &format!(
            "prefix = \"/fulcrum/backends/web/\", username = \"root\", password_file = \"{}\"",
            pass.display()
        ),
    );
    let _lb = Lb::start(&cfg, listen);
    common::wait_listening(admin);
    assert!(
        wait_until(Duration::from_secs(10), || names(admin) == ["web1"]),
        "discovery: {}",
        backend_status(admin)["discovery"]
    );
    assert_eq!(get(listen, "/").expect("request").server(), "web1");
}

/// CA, server (127.0.0.1) and client certificates as PEM files in `dir`.
fn tls_files(dir: &std::path::Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let sk = KeyPair::generate().expect("server key");
    let server = sp.signed_by(&sk, &ca, &ca_key).expect("server cert");
    let cp = CertificateParams::new(vec!["fulcrum".to_string()]).expect("client params");
    let ck = KeyPair::generate().expect("client key");
    let client = cp.signed_by(&ck, &ca, &ca_key).expect("client cert");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server-key.pem", sk.serialize_pem()),
        ("client.pem", client.pem()),
        ("client-key.pem", ck.serialize_pem()),
    ];
    files.map(|(name, text)| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    })
}

#[test]
fn discovery_over_tls_with_a_client_certificate() {
    let Some((etcd, ctl)) = tools() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, ccert, ckey] = tls_files(dir.path());
    let (client, peer) = (free_addr(), free_addr());
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
    let _etcd = Kid(Command::new(&etcd)
        .arg("--name=tls0")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls=https://{client}"))
        .arg(format!("--advertise-client-urls=https://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=tls0=http://{peer}"))
        .arg(format!("--cert-file={}", cert.display()))
        .arg(format!("--key-file={}", key.display()))
        .arg(format!("--trusted-ca-file={}", ca.display()))
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn etcd"));
    let etcdctl = |args: &[&str]| -> bool {
        Command::new(&ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{client}"))
            .arg(format!("--cacert={}", ca.display()))
            .arg(format!("--cert={}", ccert.display()))
            .arg(format!("--key={}", ckey.display()))
            .arg("--dial-timeout=2s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let (_b1, a1) = backend("web1");
    assert!(
        wait_until(Duration::from_secs(20), || etcdctl(&[
            "put",
            "/fulcrum/backends/web/web1",
            &value(a1, "")
        ])),
        "TLS etcd did not come up"
    );
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[frontends.web]
listen = ["{listen}"]
backend = "web"

[backends.web]
discovery = {{ etcd = {{ endpoints = ["{client}"], tls = {{ ca = "{ca}", cert = "{ccert}", key = "{ckey}" }} }} }}
"#,
        ca = ca.display(),
        ccert = ccert.display(),
        ckey = ckey.display()
    );
    let _lb = Lb::start(&cfg, listen);
    common::wait_listening(admin);
    assert!(
        wait_until(Duration::from_secs(10), || names(admin) == ["web1"]),
        "discovery: {}",
        backend_status(admin)["discovery"]
    );
    assert_eq!(get(listen, "/").expect("request").server(), "web1");
}

/// A listener on a dead member's client port that accepts connections and
/// never answers (a box that is gone but whose address still takes the SYN
/// somewhere: every call on it times out), counting the connections.
struct BlackHole {
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start(addr: SocketAddr) -> BlackHole {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind(addr).expect("bind the dead member's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        held.push(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn cluster_store_writes_stay_on_a_member_that_works_when_the_first_is_dead() {
    let Some((etcd, ctl)) = tools() else { return };
    let mut cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    // Member 1 — the first endpoint in every node's list — dies, and its port
    // now takes connections that never get an answer.
    cluster.kill(0);
    let hole = BlackHole::start(cluster.members[0].client);
    let (listen, admin) = (free_addr(), free_addr());
    let _lb = Lb::start(&store_config(listen, admin, &cluster, a1, a2), listen);
    common::wait_listening(admin);
    assert!(
        wait_until(Duration::from_secs(30), || status(admin)["cluster_store"]
            ["reachable"]
            == true),
        "cluster_store: {}",
        status(admin)["cluster_store"]
    );
    let url = format!("http://{admin}");
    let writes = 6;
    for w in 0..writes {
        let weight = (w + 2).to_string();
        let (code, out) = common::ctl(&["--admin", &url, "weight", "web/web2", &weight]);
        assert_eq!(code, 0, "write {w}: {out}");
        assert_eq!(weight_of(admin, "web2"), Some(w + 2));
    }
    let (code, out) = common::ctl(&["--admin", &url, "drain", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    // The watch found the member dead once; the writes never went there (a
    // store that starts every write at the first endpoint would have had each
    // write time out on it). Counted before etcdctl below connects there too.
    let tried = hole.accepted();
    assert!(cluster
        .must(&["get", "/fulcrum/state/web/web2"])
        .contains(&format!("\"weight\":{}", writes + 1)));
    assert!(
        tried <= 1,
        "the dead first member got {tried} connections for {} writes",
        writes + 1
    );
}

fn store_config_prefix(
    listen: SocketAddr,
    admin: SocketAddr,
    cluster: &Cluster,
    a1: SocketAddr,
    a2: SocketAddr,
    store: Option<&str>,
) -> String {
    let base = store_config(listen, admin, cluster, a1, a2);
    let line = format!(
        "store = {{ etcd = {{ endpoints = [{}] }} }}",
        cluster.endpoints_toml()
    );
    match store {
        Some(prefix) => base.replace(
            &line,
            &format!(
                "store = {{ etcd = {{ endpoints = [{}], prefix = \"{prefix}\" }} }}",
                cluster.endpoints_toml()
            ),
        ),
        None => base.replace(&format!("[cluster]\n{line}\n"), ""),
    }
}

fn admin_of(admin: SocketAddr, name: &str) -> Option<String> {
    servers(admin)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
}

#[test]
fn a_reload_that_changes_the_cluster_store_restarts_it() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (listen, admin) = (free_addr(), free_addr());
    let url = format!("http://{admin}");
    // No store at start: a change is local.
    let cfg = store_config_prefix(listen, admin, &cluster, a1, a2, None);
    assert!(!cfg.contains("[cluster]"), "{cfg}");
    let lb = Lb::start(&cfg, listen);
    common::wait_listening(admin);
    assert!(status(admin)["cluster_store"].is_null());

    // The reload adds the store: changes now go through etcd.
    lb.reload(&store_config_prefix(
        listen,
        admin,
        &cluster,
        a1,
        a2,
        Some("/fulcrum/one/"),
    ));
    assert!(
        wait_until(Duration::from_secs(15), || status(admin)["cluster_store"]
            ["reachable"]
            == true),
        "cluster_store after adding it: {}",
        status(admin)["cluster_store"]
    );
    let (code, out) = common::ctl(&["--admin", &url, "drain", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    assert!(cluster
        .must(&["get", "/fulcrum/one/web/web1"])
        .contains("\"drain\""));

    // The reload moves it to another prefix: the new prefix's records apply,
    // the running state (web1 drained) stays.
    cluster.must(&["put", "/fulcrum/two/web/web2", r#"{"state":"maint"}"#]);
    lb.reload(&store_config_prefix(
        listen,
        admin,
        &cluster,
        a1,
        a2,
        Some("/fulcrum/two/"),
    ));
    assert!(
        wait_until(Duration::from_secs(15), || {
            status(admin)["cluster_store"]["source"] == "etcd /fulcrum/two/"
                && admin_of(admin, "web2").as_deref() == Some("maint")
        }),
        "after moving the store: {} {:?}",
        status(admin)["cluster_store"],
        servers(admin)
    );
    assert_eq!(admin_of(admin, "web1").as_deref(), Some("drain"));
    let (code, out) = common::ctl(&["--admin", &url, "ready", "web/web2"]);
    assert_eq!(code, 0, "{out}");
    assert!(cluster
        .must(&["get", "/fulcrum/two/web/web2"])
        .contains("\"ready\""));
    // Nothing more went to the old prefix.
    assert!(!cluster
        .must(&["get", "--prefix", "/fulcrum/one/"])
        .contains("web2"));

    // The reload removes it: changes are local again, nothing is written.
    lb.reload(&store_config_prefix(listen, admin, &cluster, a1, a2, None));
    assert!(
        wait_until(Duration::from_secs(15), || status(admin)["cluster_store"]
            .is_null()),
        "{}",
        status(admin)["cluster_store"]
    );
    let (code, out) = common::ctl(&["--admin", &url, "maint", "web/web1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(admin_of(admin, "web1").as_deref(), Some("maint"));
    assert!(cluster
        .must(&["get", "/fulcrum/one/web/web1"])
        .contains("\"drain\""));
    assert!(cluster
        .must(&["get", "--prefix", "/fulcrum/two/web/web1"])
        .trim()
        .is_empty());
    assert_eq!(get(listen, "/").expect("serving").status, 200);
}

#[test]
fn a_reload_follows_a_changed_cluster_config_in_the_bootstrap_file() {
    let Some((etcd, ctl)) = tools() else { return };
    let cluster = Cluster::start(etcd, ctl);
    let (_b1, a1) = backend("web1");
    let (_b2, a2) = backend("web2");
    let (_b3, a3) = backend("web3");
    let (listen, admin) = (free_addr(), free_addr());
    // The key's configuration sends to web2.
    let on_key = |key: &str, server: SocketAddr| {
        config_with(listen, admin, &cluster, server).replace("/fulcrum/config/lb", key)
    };
    cluster.must(&["put", "/fulcrum/config/a", &on_key("/fulcrum/config/a", a2)]);
    let lb = Lb::start(&on_key("/fulcrum/config/a", a1), listen);
    common::wait_listening(admin);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.server() == "web2")
        .unwrap_or(false)));

    // The bootstrap file now points at another key: SIGHUP follows it.
    cluster.must(&["put", "/fulcrum/config/b", &on_key("/fulcrum/config/b", a3)]);
    lb.reload(&on_key("/fulcrum/config/b", a1));
    assert!(
        wait_until(Duration::from_secs(10), || get(listen, "/")
            .map(|r| r.server() == "web3")
            .unwrap_or(false)),
        "config_source: {}",
        status(admin)["config_source"]
    );
    assert_eq!(
        status(admin)["config_source"]["source"],
        "etcd /fulcrum/config/b"
    );
    // The old key no longer applies.
    cluster.must(&["put", "/fulcrum/config/a", &on_key("/fulcrum/config/a", a1)]);
    cluster.must(&["put", "/fulcrum/config/b", &on_key("/fulcrum/config/b", a2)]);
    assert!(wait_until(Duration::from_secs(10), || get(listen, "/")
        .map(|r| r.server() == "web2")
        .unwrap_or(false)));

    // `[cluster] config` removed from the file: the file is the configuration.
    let plain = on_key("/fulcrum/config/b", a1).replace(
        &format!(
            "[cluster]\nconfig = {{ etcd = {{ endpoints = [{}], key = \"/fulcrum/config/b\" }} }}\n",
            cluster.endpoints_toml()
        ),
        "",
    );
    assert!(!plain.contains("[cluster]"), "{plain}");
    lb.reload(&plain);
    assert!(
        wait_until(Duration::from_secs(10), || get(listen, "/")
            .map(|r| r.server() == "web1")
            .unwrap_or(false)),
        "config_source: {}",
        status(admin)["config_source"]
    );
    assert!(status(admin)["config_source"].is_null());

    // And added back by a reload: the source starts and the key applies.
    lb.reload(&on_key("/fulcrum/config/b", a1));
    assert!(
        wait_until(Duration::from_secs(10), || get(listen, "/")
            .map(|r| r.server() == "web2")
            .unwrap_or(false)),
        "config_source: {}",
        status(admin)["config_source"]
    );
}
