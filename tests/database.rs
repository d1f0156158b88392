//! Database-aware routing with real servers: a PostgreSQL primary + streaming
//! standby behind a "writes" (`role = "primary"`) and a "reads"
//! (`role = "standby"`) frontend, failover by `pg_ctl promote`; and a Redis
//! master/replica pair with the same role filter.
//!
//! Needs Debian's `postgresql` and `redis-server` (`.ci/db-deps.sh` installs
//! them); when they cannot be had the tests say why and skip. Everything runs
//! on 127.0.0.1 ephemeral ports under a temp dir; every process started here
//! is stopped by its PID (or `pg_ctl stop` on its data dir) on drop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_addr, get, wait_until, Lb};

/// Check timers used by fulcrum in these tests.
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Generous bound for set-up steps (initdb, base backup, starting servers).
const SETUP: Duration = Duration::from_secs(60);

const SUPERUSER_PASSWORD: &str = "secret-super";
const CHECK_USER: &str = "fulcrum";
const CHECK_PASSWORD: &str = "check-pw";

/// How long a role change may take to show in routing: the next check (one
/// interval plus up to 10% jitter, plus the check itself), or the old node
/// going down after `fall` failures; plus a margin for a loaded machine and
/// the client's reconnect.
fn failover_bound() -> Duration {
    INTERVAL * (FALL + 1) + CHECK_TIMEOUT + Duration::from_secs(3)
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs `.ci/db-deps.sh` once when something is missing (root only).
fn install_deps() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !is_root() {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/db-deps.sh");
        let _ = Command::new("bash").arg(&script).status();
    });
}

/// The PostgreSQL bin dir (with initdb), installing it if needed.
fn pg_bin() -> Result<PathBuf, String> {
    let find = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(b) = find() {
        return Ok(b);
    }
    install_deps();
    find().ok_or_else(|| {
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb missing) and \
         .ci/db-deps.sh could not install it"
            .to_string()
    })
}

/// A command run as the `postgres` OS user when we are root (PostgreSQL
/// refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One PostgreSQL data directory and the server running on it.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Cluster {
    fn pg_ctl(&self) -> Command {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data);
        c
    }

    fn start(&self) {
        let mut c = self.pg_ctl();
        c.arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.sock.display()
            ));
        c.arg("start");
        let log = self.log.clone();
        let out = c.stdin(Stdio::null()).output().expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m immediate`: like pulling the plug on the primary.
    fn crash(&self) {
        let mut c = self.pg_ctl();
        c.args(["-m", "immediate", "-w", "stop"]);
        run(c, "pg_ctl stop -m immediate");
    }

    fn promote(&self) {
        let mut c = self.pg_ctl();
        c.args(["-w", "-t", "60", "promote"]);
        run(c, "pg_ctl promote");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The postmaster PID while it runs.
    fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// Owns the temp dir and every cluster in it; stops them on drop, even when
/// the test panics.
struct PgLab {
    clusters: Vec<Cluster>,
    dir: tempfile::TempDir,
}

impl Drop for PgLab {
    fn drop(&mut self) {
        for c in &self.clusters {
            let Some(pid) = c.pid() else { continue };
            let mut stop = c.pg_ctl();
            stop.args(["-m", "immediate", "-w", "-t", "10", "stop"]);
            let stopped = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !stopped && c.pid() == Some(pid) {
                // Only this cluster's postmaster, by its PID.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl PgLab {
    fn new(bin: PathBuf) -> PgLab {
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(dir.path());
                    c
                },
                "chown temp dir",
            );
        }
        let mk = |name: &str| {
            let port = free_addr().port();
            Cluster {
                bin: bin.clone(),
                data: dir.path().join(name),
                sock: dir.path().to_path_buf(),
                port,
                log: dir.path().join(format!("{name}.log")),
            }
        };
        let primary = mk("primary");
        let standby = mk("standby");
        PgLab {
            clusters: vec![primary, standby],
            dir,
        }
    }

    fn primary(&self) -> &Cluster {
        &self.clusters[0]
    }
    fn standby(&self) -> &Cluster {
        &self.clusters[1]
    }

    /// initdb + start the primary; base backup + start the standby.
    fn build(&self) {
        let p = self.primary();
        let pwfile = self.dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write pwfile");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&pwfile);
                    c
                },
                "chown pwfile",
            );
        }
        let mut init = as_postgres(&p.bin.join("initdb"));
        init.arg("-D")
            .arg(&p.data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(init, "initdb");
        // Synchronous replication: a commit is acknowledged only once the
        // standby has it, so no acknowledged write can be lost by failover.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(p.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(
            conf,
            "\nsynchronous_standby_names = '*'\nfsync = off\nwal_sender_timeout = 5s\n"
        )
        .expect("append conf");
        drop(conf);
        p.start();

        // Base backup over the unix socket (trust), with -R for standby mode.
        let s = self.standby();
        let mut bb = as_postgres(&p.bin.join("pg_basebackup"));
        bb.arg("-D").arg(&s.data).arg("-h").arg(&p.sock).args([
            "-p",
            &p.port.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ]);
        run(bb, "pg_basebackup");
        // The copied postgresql.conf asks for a synchronous standby; once
        // promoted this node has none, and would wait forever on commits.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(s.data.join("postgresql.conf"))
            .expect("open standby postgresql.conf");
        writeln!(conf, "\nsynchronous_standby_names = ''\n").expect("append conf");
        drop(conf);
        s.start();
    }
}

async fn connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn superuser(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect(addr, "postgres", SUPERUSER_PASSWORD).await
}

/// (pg_is_in_recovery, server port) of the node behind a connection.
async fn whoami(c: &tokio_postgres::Client) -> Result<(bool, i32), tokio_postgres::Error> {
    let row = c
        .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn db_config(admin: SocketAddr, writes: SocketAddr, reads: SocketAddr, lab: &PgLab) -> String {
    let servers = format!(
        "servers = [\n  {{ name = \"pg1\", address = \"{}\" }},\n  {{ name = \"pg2\", address = \"{}\" }},\n]",
        lab.primary().addr(),
        lab.standby().addr()
    );
    let health = format!(
        "health = {{ kind = \"postgres\", user = \"{CHECK_USER}\", password = \"{CHECK_PASSWORD}\", interval = \"{}ms\", timeout = \"{}ms\", rise = 2, fall = {FALL} }}",
        INTERVAL.as_millis(),
        CHECK_TIMEOUT.as_millis()
    );
    format!(
        r#"[admin]
listen = "{admin}"

[frontends.writes]
mode = "tcp"
listen = ["{writes}"]
backend = "db_primary"

[frontends.reads]
mode = "tcp"
listen = ["{reads}"]
backend = "db_standby"

[backends.db_primary]
role = "primary"
balance = "first"
connect_timeout = "1s"
{health}
{servers}

[backends.db_standby]
role = "standby"
balance = "roundrobin"
connect_timeout = "1s"
{health}
{servers}
"#
    )
}

/// What the writer saw.
#[derive(Default)]
struct WriteLog {
    /// Acknowledged inserts: (id, server port that acknowledged).
    acked: Vec<(i32, i32)>,
    /// Errors, in order, with when they happened.
    errors: Vec<(Instant, String)>,
    /// When each acknowledged insert finished.
    acked_at: Vec<Instant>,
}

#[test]
fn postgres_writes_follow_the_primary_through_failover() {
    let bin = match pg_bin() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIP postgres failover test: {why}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let lab = PgLab::new(bin);
    lab.build();
    let (p_addr, s_addr) = (lab.primary().addr(), lab.standby().addr());

    // Schema and the check's login role (replicated to the standby).
    rt.block_on(async {
        let c = superuser(p_addr).await.expect("superuser on primary");
        c.batch_execute(&format!(
            "CREATE ROLE {CHECK_USER} LOGIN PASSWORD '{CHECK_PASSWORD}';
             CREATE TABLE writes (id int PRIMARY KEY, at_port int NOT NULL);"
        ))
        .await
        .expect("schema");
    });
    assert!(
        wait_until(SETUP, || rt.block_on(async {
            match superuser(s_addr).await {
                Ok(c) => c
                    .query_one(
                        "SELECT count(*) FROM pg_roles WHERE rolname = $1",
                        &[&CHECK_USER],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) == 1),
                Err(_) => false,
            }
        })),
        "standby replays the primary"
    );

    let (admin, writes, reads) = (free_addr(), free_addr(), free_addr());
    let lb = Lb::start(&db_config(admin, writes, reads, &lab), writes);

    // Both frontends route by role once the first checks answered.
    let routed = wait_until(SETUP, || {
        rt.block_on(async {
            let w = match superuser(writes).await {
                Ok(c) => whoami(&c).await.ok(),
                Err(_) => None,
            };
            let r = match superuser(reads).await {
                Ok(c) => whoami(&c).await.ok(),
                Err(_) => None,
            };
            w == Some((false, i32::from(p_addr.port())))
                && r == Some((true, i32::from(s_addr.port())))
        })
    });
    let status = || {
        get(admin, "/api/v1/status")
            .map(|r| r.json())
            .unwrap_or_default()
    };
    assert!(
        routed,
        "writes → primary, reads → standby\nstatus: {:#}\nlog: {}",
        status(),
        lb.proc.output()
    );
    let st = status();
    assert_eq!(
        st["backends"][0]["servers"][0]["last_check"]["detail"], "postgres primary",
        "{st:#}"
    );
    assert_eq!(
        st["backends"][0]["servers"][1]["last_check"]["detail"], "postgres standby",
        "{st:#}"
    );

    // A reads connection held open across the failover: its node is
    // promoted, so fulcrum closes it (on_role_change = "close").
    let held_read = rt.block_on(async { superuser(reads).await.expect("reads connection") });
    assert_eq!(
        rt.block_on(whoami(&held_read)).expect("whoami"),
        (true, i32::from(s_addr.port()))
    );

    // The writer: one connection through "writes", re-opened after any error,
    // inserting ids in order; bounded by a deadline and a count.
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        rt.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut client: Option<tokio_postgres::Client> = None;
            let mut id = 0i32;
            while Instant::now() < deadline
                && id < 100_000
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
            {
                let c = match client.take() {
                    Some(c) => c,
                    None => match superuser(writes).await {
                        Ok(c) => c,
                        Err(e) => {
                            log.lock()
                                .unwrap()
                                .errors
                                .push((Instant::now(), format!("connect: {e}")));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                id += 1;
                let r = c
                    .query_one(
                        "INSERT INTO writes VALUES ($1, inet_server_port()) RETURNING at_port",
                        &[&id],
                    )
                    .await;
                match r {
                    Ok(row) => {
                        let mut l = log.lock().unwrap();
                        l.acked.push((id, row.get(0)));
                        l.acked_at.push(Instant::now());
                        client = Some(c);
                    }
                    Err(e) => {
                        let why = match e.as_db_error() {
                            Some(db) => format!("{} ({})", db.message(), db.code().code()),
                            None => e.to_string(),
                        };
                        log.lock().unwrap().errors.push((Instant::now(), why));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    assert!(
        wait_until(SETUP, || log.lock().unwrap().acked.len() >= 20),
        "inserts through writes before failover: errors {:?}",
        log.lock().unwrap().errors
    );

    // Failover: the primary dies, the standby is promoted.
    lab.primary().crash();
    let crashed = Instant::now();
    lab.standby().promote();
    let promoted = Instant::now();
    let acked_before = log.lock().unwrap().acked.len();

    // New connections through "writes" reach the new primary and inserts succeed.
    let new_port = i32::from(s_addr.port());
    let bound = failover_bound();
    let recovered = wait_until(bound + Duration::from_secs(2), || {
        let l = log.lock().unwrap();
        l.acked
            .iter()
            .skip(acked_before)
            .any(|&(_, port)| port == new_port)
    });
    let first_new = {
        let l = log.lock().unwrap();
        l.acked
            .iter()
            .zip(&l.acked_at)
            .skip(acked_before)
            .find(|((_, port), _)| *port == new_port)
            .map(|(_, at)| *at)
    };
    assert!(
        recovered,
        "no insert acknowledged by the new primary within {bound:?}; errors: {:?}\nstatus: {:#}\nlog: {}",
        log.lock().unwrap().errors.iter().map(|e| &e.1).collect::<Vec<_>>(),
        status(),
        lb.proc.output()
    );
    let took = first_new
        .map(|t| t.saturating_duration_since(promoted))
        .unwrap_or_default();
    eprintln!(
        "failover: primary crashed, promote took {:?}; first write on the new primary {:?} after promote (bound {bound:?})",
        promoted - crashed,
        took
    );
    assert!(
        took <= bound,
        "writes recovered in {took:?}, bound {bound:?}"
    );

    // The held reads connection was closed when its node became primary.
    let closed = wait_until(bound, || {
        held_read.is_closed() || rt.block_on(whoami(&held_read)).is_err()
    });
    assert!(closed, "reads connection to the promoted node was closed");

    // Let a few more writes land, then stop the writer.
    let more = log.lock().unwrap().acked.len() + 10;
    assert!(wait_until(SETUP, || log.lock().unwrap().acked.len() >= more));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(writer).expect("writer task");

    // Every acknowledged write is on the new primary, none was acknowledged
    // by a node that was not primary, and no insert ever reached a standby.
    let l = log.lock().unwrap();
    let old_port = i32::from(p_addr.port());
    assert!(l
        .acked
        .iter()
        .all(|&(_, port)| port == old_port || port == new_port));
    let ids: Vec<i32> = rt.block_on(async {
        let c = superuser(s_addr).await.expect("new primary");
        assert_eq!(whoami(&c).await.expect("whoami"), (false, new_port));
        c.query("SELECT id FROM writes ORDER BY id", &[])
            .await
            .expect("select")
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    for (id, port) in &l.acked {
        assert!(
            ids.binary_search(id).is_ok(),
            "acknowledged id {id} (by port {port}) is missing on the new primary"
        );
    }
    for (_, e) in &l.errors {
        assert!(
            !e.contains("read-only transaction") && !e.contains("25006"),
            "an insert reached a standby: {e}"
        );
    }
    eprintln!(
        "writes: {} acknowledged ({} after failover), {} errors during failover",
        l.acked.len(),
        l.acked.len() - acked_before,
        l.errors.len()
    );

    // Reads now fall back to the (new) primary: no standby is left.
    let r = rt.block_on(async {
        let c = superuser(reads).await.expect("reads after failover");
        whoami(&c).await.expect("whoami")
    });
    assert_eq!(r, (false, new_port), "reads fall back to the primary");
    drop(lb);
}

#[test]
fn postgres_check_reasons() {
    let bin = match pg_bin() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIP postgres check reasons test: {why}");
            return;
        }
    };
    let lab = PgLab::new(bin);
    let p = lab.primary();
    let pwfile = lab.dir.path().join("pw");
    std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("pwfile");
    if is_root() {
        let mut c = Command::new("chown");
        c.arg("postgres:").arg(&pwfile);
        run(c, "chown");
    }
    let mut init = as_postgres(&p.bin.join("initdb"));
    init.arg("-D").arg(&p.data).args([
        "-U",
        "postgres",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--no-sync",
    ]);
    init.arg(format!("--pwfile={}", pwfile.display()));
    run(init, "initdb");
    p.start();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    use fulcrum::config::types::{CheckKind, PostgresCheck, Secret};
    let check = |user: &str, pw: Option<&str>, db: &str| {
        let kind = CheckKind::Postgres(PostgresCheck {
            user: user.into(),
            password: pw.map(|p| Secret::Inline(p.into())),
            database: db.into(),
        });
        rt.block_on(fulcrum::health::run_check(
            p.addr(),
            &kind,
            Duration::from_secs(5),
        ))
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        check("postgres", Some(SUPERUSER_PASSWORD), "postgres"),
        Ok("postgres primary".into())
    );
    assert_eq!(
        check("postgres", Some("wrong"), "postgres"),
        Err("password authentication failed for user \"postgres\"".into())
    );
    assert_eq!(
        check("postgres", Some(SUPERUSER_PASSWORD), "nope"),
        Err("database \"nope\" does not exist".into())
    );
    let missing = check("postgres", None, "postgres").unwrap_err();
    assert!(missing.contains("password missing"), "{missing}");
}

// ---------------------------------------------------------------- Redis

fn redis_bin() -> Result<PathBuf, String> {
    let find = || {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    };
    if let Some(b) = find() {
        return Ok(b);
    }
    install_deps();
    find().ok_or_else(|| {
        "redis-server is not installed and .ci/db-deps.sh could not install it".into()
    })
}

/// A redis-server child on 127.0.0.1, killed by PID on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(bin: &Path, replica_of: Option<SocketAddr>) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_addr();
        let mut c = Command::new(bin);
        c.args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--daemonize", "no", "--protected-mode", "no"])
        // Diskless full sync waits 5 s for more replicas by default.
        .args(["--repl-diskless-sync-delay", "0"]);
        if let Some(m) = replica_of {
            c.args(["--replicaof", &m.ip().to_string(), &m.port().to_string()]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        common::wait_listening(addr);
        Redis {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one inline command, return the reply's text (simple or bulk string).
fn redis_cmd(addr: SocketAddr, cmd: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    redis_on(&mut s, cmd)
}

fn redis_on(s: &mut TcpStream, cmd: &str) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(rest) = text.strip_prefix('$') {
            if let Some((len, body)) = rest.split_once("\r\n") {
                let len: usize = len.parse().unwrap_or(0);
                if body.len() >= len + 2 {
                    return Ok(body[..len].to_string());
                }
            }
        } else if text.ends_with("\r\n") {
            return Ok(text.trim_end().to_string());
        }
    }
}

/// "master" or "slave" and the port, as seen through `addr`.
fn redis_whoami(addr: SocketAddr) -> Option<(String, u16)> {
    let info = redis_cmd(addr, "INFO replication").ok()?;
    let role = info
        .lines()
        .find_map(|l| l.strip_prefix("role:"))?
        .trim()
        .to_string();
    let server = redis_cmd(addr, "INFO server").ok()?;
    let port = server
        .lines()
        .find_map(|l| l.strip_prefix("tcp_port:"))?
        .trim()
        .parse()
        .ok()?;
    Some((role, port))
}

#[test]
fn redis_role_filter_follows_replica_promotion() {
    let bin = match redis_bin() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIP redis role test: {why}");
            return;
        }
    };
    let master = Redis::start(&bin, None);
    let replica = Redis::start(&bin, Some(master.addr));
    let (m_port, r_port) = (master.addr.port(), replica.addr.port());
    assert!(
        wait_until(SETUP, || redis_cmd(replica.addr, "INFO replication")
            .is_ok_and(|i| i.contains("master_link_status:up"))),
        "replica syncs"
    );

    let (admin, rw, ro, keep) = (free_addr(), free_addr(), free_addr(), free_addr());
    let health = format!(
        "health = {{ kind = \"redis\", interval = \"{}ms\", rise = 2, fall = {FALL} }}",
        INTERVAL.as_millis()
    );
    let servers = format!(
        "servers = [ {{ name = \"r1\", address = \"{}\" }}, {{ name = \"r2\", address = \"{}\" }} ]",
        master.addr, replica.addr
    );
    let cfg = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[frontends.rw]\nmode = \"tcp\"\nlisten = [\"{rw}\"]\nbackend = \"primary\"\n\n\
         [frontends.ro]\nmode = \"tcp\"\nlisten = [\"{ro}\"]\nbackend = \"replicas\"\n\n\
         [backends.primary]\nrole = \"primary\"\n{health}\n{servers}\n\n\
         [backends.replicas]\nrole = \"standby\"\n{health}\n{servers}\n\n\
         [frontends.keep]\nmode = \"tcp\"\nlisten = [\"{keep}\"]\nbackend = \"primary_keep\"\n\n\
         [backends.primary_keep]\nrole = \"primary\"\non_role_change = \"keep\"\n{health}\n{servers}\n"
    );
    let lb = Lb::start(&cfg, rw);
    let routed = wait_until(SETUP, || {
        redis_whoami(rw) == Some(("master".into(), m_port))
            && redis_whoami(ro) == Some(("slave".into(), r_port))
    });
    assert!(
        routed,
        "rw → master, ro → replica\nlog: {}",
        lb.proc.output()
    );
    // Writes through rw work.
    assert_eq!(redis_cmd(rw, "SET k v1").expect("SET"), "+OK");

    // A connection through rw held open across the switch-over.
    let mut held = TcpStream::connect(rw).expect("held rw connection");
    assert_eq!(redis_on(&mut held, "PING").expect("PING"), "+PONG");
    // The same through a backend with on_role_change = "keep".
    assert!(wait_until(SETUP, || redis_whoami(keep)
        == Some(("master".into(), m_port))));
    let mut kept = TcpStream::connect(keep).expect("held keep connection");
    assert_eq!(redis_on(&mut kept, "PING").expect("PING"), "+PONG");

    // Switch-over: the replica becomes master, the old master its replica.
    assert_eq!(
        redis_cmd(replica.addr, "REPLICAOF NO ONE").expect("promote"),
        "+OK"
    );
    let switched = Instant::now();
    assert_eq!(
        redis_cmd(master.addr, &format!("REPLICAOF 127.0.0.1 {r_port}")).expect("demote"),
        "+OK"
    );
    let bound = failover_bound();
    let moved = wait_until(bound, || {
        redis_whoami(rw) == Some(("master".into(), r_port))
            && redis_whoami(ro) == Some(("slave".into(), m_port))
    });
    assert!(
        moved,
        "roles followed within {bound:?}\nlog: {}",
        lb.proc.output()
    );
    eprintln!(
        "redis switch-over followed in {:?} (bound {bound:?})",
        switched.elapsed()
    );
    assert_eq!(redis_cmd(rw, "SET k v2").expect("SET after switch"), "+OK");

    // The held connection went to the demoted node: closed by fulcrum.
    let closed = wait_until(bound, || redis_on(&mut held, "PING").is_err());
    assert!(closed, "connection to the demoted master was closed");
    // on_role_change = "keep": still open, still talking to the old master.
    let still = redis_on(&mut kept, "INFO server").expect("kept connection is open");
    assert!(still.contains(&format!("tcp_port:{m_port}")), "{still}");
    assert!(
        lb.proc
            .output()
            .contains("role changed: primary -> standby"),
        "{}",
        lb.proc.output()
    );
}

// ---------------------------------------------------------------- config

fn config_errors(backend: &str) -> Vec<String> {
    let text = format!(
        "[frontends.db]\nmode = \"tcp\"\nlisten = [\"127.0.0.1:5432\"]\nbackend = \"db\"\n\n[backends.db]\n{backend}\nservers = [{{ name = \"a\", address = \"127.0.0.1:5433\" }}]\n"
    );
    match fulcrum::config::parse_str(&text, "db.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn config_role_and_l4_check_keys() {
    use fulcrum::config::types::*;
    let ok = |backend: &str| {
        let errs = config_errors(backend);
        assert!(errs.is_empty(), "{backend}: {errs:?}");
    };
    let bad = |backend: &str, want: &str| {
        let errs = config_errors(backend);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{backend}: want {want:?} in {errs:?}"
        );
    };
    ok("role = \"primary\"\nhealth = { kind = \"postgres\", user = \"fulcrum\", password = \"x\" }");
    ok("role = \"standby\"\non_role_change = \"keep\"\nhealth = { kind = \"redis\" }");
    ok("health = { kind = \"tcp\", send = \"PING\\r\\n\", expect = \"+PONG\" }");
    ok("health = { kind = \"tcp\", send_hex = \"50 49 4e 47 0d 0a\", expect_hex = \"2b504f4e47\" }");

    bad(
        "role = \"primary\"",
        "needs a health check that reports roles",
    );
    bad(
        "role = \"primary\"\nhealth = { kind = \"tcp\" }",
        "needs a health check that reports roles",
    );
    bad(
        "role = \"leader\"\nhealth = { kind = \"redis\" }",
        "unknown role `leader`",
    );
    bad(
        "on_role_change = \"close\"",
        "`on_role_change` only applies with role",
    );
    bad(
        "role = \"primary\"\non_role_change = \"kill\"\nhealth = { kind = \"redis\" }",
        "unknown on_role_change `kill`",
    );
    bad(
        "health = { kind = \"postgres\" }",
        "a postgres check needs `user`",
    );
    bad("health = { kind = \"postgres\", user = \"u\", password = \"a\", password_file = \"/nonexistent\" }", "either `password` or `password_file`");
    bad(
        "health = { kind = \"redis\", password_file = \"\" }",
        "`password_file` must not be empty",
    );
    ok("health = { kind = \"redis\", password_file = \"/run/secrets/redis.pass\" }");
    bad(
        "health = { kind = \"http\", send = \"x\" }",
        "`send` only applies to kind = \"tcp\"",
    );
    bad(
        "health = { kind = \"tcp\", user = \"x\" }",
        "`user` only applies to kind = \"postgres\" or \"redis\"",
    );
    bad(
        "health = { kind = \"redis\", database = \"x\" }",
        "`database` only applies to kind = \"postgres\"",
    );
    bad(
        "health = { kind = \"tcp\", send_hex = \"zz\" }",
        "bad hex in `send_hex`",
    );
    bad(
        "health = { kind = \"tcp\", expect = \"a\", expect_hex = \"61\" }",
        "either `expect` or `expect_hex`",
    );
    bad(
        "health = { kind = \"tcp\", expect = \"\" }",
        "`expect` must be 1 to 1024 bytes",
    );
    bad(
        "health = { kind = \"mysql\" }",
        "unknown health check kind `mysql`",
    );

    // Typed values.
    let text = "[frontends.db]\nmode = \"tcp\"\nlisten = [\"127.0.0.1:5432\"]\nbackend = \"db\"\n\n[backends.db]\nrole = \"standby\"\nhealth = { kind = \"postgres\", user = \"u\", password = \"p\" }\nservers = []\n";
    let cfg = fulcrum::config::parse_str(text, "db.toml").expect("valid");
    let b = &cfg.backends["db"];
    assert_eq!(
        b.role,
        RolePolicy {
            want: RoleFilter::Standby,
            on_change: OnRoleChange::Close
        }
    );
    match b.health.check.as_ref().expect("check") {
        CheckKind::Postgres(p) => {
            assert_eq!((p.user.as_str(), p.database.as_str()), ("u", "postgres"));
            assert_eq!(p.password, Some(Secret::Inline("p".into())));
            assert_eq!(format!("{:?}", p.password), "Some(Secret(<redacted>))");
        }
        other => panic!("{other:?}"),
    }
    let text = text
        .replace(
            "kind = \"postgres\", user = \"u\", password = \"p\"",
            "kind = \"tcp\", send_hex = \"0d0a\", expect = \"OK\"",
        )
        .replace("role = \"standby\"\n", "");
    let cfg = fulcrum::config::parse_str(&text, "db.toml").expect("valid");
    assert_eq!(
        cfg.backends["db"].health.check,
        Some(CheckKind::TcpExpect {
            send: Some(b"\r\n".to_vec()),
            expect: Some(b"OK".to_vec())
        })
    );
}

#[test]
fn seed001_example_means_what_it_says() {
    use fulcrum::config::types::*;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed001-database.toml");
    let c = fulcrum::config::load_file(&path).expect("valid");
    assert_eq!(c.frontends["writes"].mode, Mode::Tcp);
    let w = &c.backends["db_primary"];
    assert_eq!(w.role.want, RoleFilter::Primary);
    assert_eq!(w.role.on_change, OnRoleChange::Close);
    assert_eq!(c.backends["db_standby"].role.want, RoleFilter::Standby);
    assert!(matches!(
        w.health.check,
        Some(CheckKind::Postgres(PostgresCheck { ref user, password: Some(Secret::File(_)), .. })) if user == "fulcrum"
    ));
}
