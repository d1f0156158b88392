//! The `database` topology (seed 001): the classic pair and app servers, plus a PostgreSQL
//! primary (`db1`) and a streaming standby (`db2`) behind a TCP frontend on the VIP's port
//! 5432 with a `postgres` health check and `role = "primary"`. The `db-failover` drill stops
//! the primary (immediate shutdown), promotes the standby, and measures how long a client
//! connecting to VIP:5432 finds no primary; afterwards the old primary is rebuilt as a
//! standby of the new one.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::netns;
use super::probe::Answer;
use super::topology::{addr, State};

/// PostgreSQL's port on the database nodes and on the VIP.
pub const DB_PORT: u16 = 5432;

/// The PostgreSQL bin directory (the highest `/usr/lib/postgresql/*/bin` with `initdb`).
pub fn pg_bin() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        anyhow!(
            "the database topology needs PostgreSQL (/usr/lib/postgresql/*/bin/initdb not found; \
             apt-get install postgresql)"
        )
    })
}

/// uid and gid of the `postgres` user.
pub fn postgres_user() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    // SAFETY: getpwnam with a valid C string; the result is read at once, before any other
    // call that could reuse its static buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("the database topology needs the `postgres` user (installed with PostgreSQL)");
    }
    // SAFETY: pw is non-null and points to a passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn run_ok(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip netns exec NS runuser -u postgres -- PROGRAM`.
fn as_postgres(st: &State, ns_role: &str, program: PathBuf) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &st.ns(ns_role),
        "runuser",
        "-u",
        "postgres",
        "--",
    ])
    .arg(program);
    c
}

fn data(st: &State, db: &str) -> PathBuf {
    st.dir.join("pg").join(db)
}

/// Settings appended to `db`'s postgresql.conf (later lines win over copied ones).
fn append_conf(st: &State, db: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data(st, db).join("postgresql.conf"))
        .context("postgresql.conf")?;
    writeln!(
        f,
        "\n# fulcrum lab\nlisten_addresses = '{}'\nport = {DB_PORT}\nunix_socket_directories = ''\nfsync = off\nwal_sender_timeout = 5s\nwal_receiver_timeout = 5s\n",
        addr(db),
    )?;
    Ok(())
}

/// Starts the postmaster of `db` (tracked by its own PID) and waits until it listens.
fn start_db(st: &mut State, db: &str) -> Result<()> {
    let (uid, gid) = postgres_user()?;
    let program = pg_bin()?.join("postgres");
    let args = vec!["-D".to_string(), data(st, db).display().to_string()];
    let log = st.dir.join(format!("{db}.log"));
    let p = netns::spawn_as(db, &st.ns(db), &program, &args, &log, uid, gid)?;
    st.procs.retain(|p| p.name != db);
    st.procs.push(p);
    st.save()?;
    let to = SocketAddr::from((addr(db), DB_PORT));
    let up = netns::wait_listening(&st.ns(db), to, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    if !up || !st.proc(db).is_some_and(|p| p.alive()) {
        bail!("{db} did not start; see {}", log.display());
    }
    Ok(())
}

/// Copies `from` (the primary) into `to` with `pg_basebackup -R` (a standby) and starts it.
fn make_standby(st: &mut State, from: &str, to: &str) -> Result<()> {
    let dir = data(st, to);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut bb = as_postgres(st, to, pg_bin()?.join("pg_basebackup"));
    bb.arg("-D")
        .arg(&dir)
        .arg("-h")
        .arg(addr(from).to_string())
        .args(["-p", &DB_PORT.to_string(), "-U", "postgres", "-R"])
        .args(["-X", "stream", "--no-sync"]);
    run_ok(bb, "pg_basebackup")?;
    append_conf(st, to)?;
    start_db(st, to)
}

/// Creates and starts the primary `db1` and the standby `db2`.
pub fn build(st: &mut State) -> Result<()> {
    let bin = pg_bin()?;
    let (uid, gid) = postgres_user()?;
    let pg = st.dir.join("pg");
    std::fs::create_dir_all(&pg)?;
    let c = std::ffi::CString::new(pg.as_os_str().as_encoded_bytes())?;
    // SAFETY: chown on a directory we just created.
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        bail!(
            "chown {}: {}",
            pg.display(),
            std::io::Error::last_os_error()
        );
    }
    let dir = data(st, "db1");
    let mut init = as_postgres(st, "db1", bin.join("initdb"));
    init.arg("-D")
        .arg(&dir)
        .args(["-U", "postgres", "--auth=trust", "--no-sync"]);
    run_ok(init, "initdb")?;
    append_conf(st, "db1")?;
    // Trust inside the lab's subnet only (the lab's own namespaces).
    std::fs::write(
        dir.join("pg_hba.conf"),
        "local all all trust\nhost all all 10.231.0.0/24 trust\nhost replication all 10.231.0.0/24 trust\n",
    )?;
    start_db(st, "db1")?;
    make_standby(st, "db1", "db2")
}

/// The `[frontends.db]` and `[backends.db]` of a load balancer in the database topology.
pub fn lb_config_extra() -> String {
    format!(
        r#"
[frontends.db]
mode = "tcp"
listen = ["0.0.0.0:{DB_PORT}"]
backend = "db"

[backends.db]
health = {{ kind = "postgres", user = "postgres", database = "postgres", interval = "200ms", timeout = "200ms", rise = 1, fall = 2 }}
role = "primary"
servers = [
  {{ name = "db1", address = "{}:{DB_PORT}" }},
  {{ name = "db2", address = "{}:{DB_PORT}" }},
]
"#,
        addr("db1"),
        addr("db2")
    )
}

/// One client connection to `to`: connect, `SELECT inet_server_addr(), pg_is_in_recovery()`;
/// `Some` only when a primary answered (the server is named by its address).
pub fn request(to: SocketAddr, timeout: Duration) -> Option<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async move {
        let work = async {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(to.ip().to_string())
                .port(to.port())
                .user("postgres")
                .dbname("postgres")
                .connect_timeout(Duration::from_millis(500));
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.ok()?;
            let conn = tokio::spawn(conn);
            let row = client
                .query_one("SELECT host(inet_server_addr()), pg_is_in_recovery()", &[])
                .await
                .ok()?;
            drop(client);
            let _ = conn.await;
            let server: String = row.try_get(0).ok()?;
            let standby: bool = row.try_get(1).ok()?;
            if standby {
                return None;
            }
            let name = match server.parse::<Ipv4Addr>() {
                Ok(a) if a == addr("db1") => "db1".to_string(),
                Ok(a) if a == addr("db2") => "db2".to_string(),
                _ => server,
            };
            Some(Answer {
                // Which load balancer is not visible in the PostgreSQL protocol.
                lb: Some("vip".to_string()),
                server: Some(name),
            })
        };
        tokio::time::timeout(timeout, work).await.ok().flatten()
    })
}

/// Which database node is the primary, asked directly from the client namespace.
pub fn primary(st: &State) -> Option<&'static str> {
    netns::run_in(&st.ns("client"), || {
        ["db1", "db2"].into_iter().find(|db| {
            request(
                SocketAddr::from((addr(db), DB_PORT)),
                Duration::from_secs(2),
            )
            .is_some()
        })
    })
    .ok()
    .flatten()
}

/// The injury of `db-failover`: immediate shutdown of the primary (like pulling its plug),
/// then `pg_ctl promote` on the standby — seed 001's playbook.
pub fn failover(st: &mut State) -> Result<()> {
    let Some(old) = primary(st) else {
        bail!("no database primary answers");
    };
    let new = if old == "db1" { "db2" } else { "db1" };
    let Some(p) = st.proc(old).cloned() else {
        bail!("the lab has no process {old}");
    };
    p.signal(libc::SIGQUIT);
    if !p.wait_gone(Duration::from_secs(10)) {
        p.signal(libc::SIGKILL);
        p.wait_gone(Duration::from_secs(5));
    }
    let mut promote = as_postgres(st, new, pg_bin()?.join("pg_ctl"));
    promote
        .arg("-D")
        .arg(data(st, new))
        .args(["-w", "-t", "30", "promote"]);
    run_ok(promote, "pg_ctl promote")
}

/// Restores the database pair: a stopped node is rebuilt as a standby of the running primary
/// (or restarted as it was when no primary runs).
pub fn make_whole(st: &mut State) -> Result<()> {
    for db in ["db1", "db2"] {
        let alive = st.proc(db).is_some_and(|p| p.alive());
        if alive {
            continue;
        }
        let other = if db == "db1" { "db2" } else { "db1" };
        if primary(st) == Some(other) {
            make_standby(st, other, db)?;
        } else {
            st.restart(db)?;
        }
    }
    Ok(())
}
