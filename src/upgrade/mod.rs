//! Hitless restart and binary upgrade (HAProxy's `-sf` with `expose-fd
//! listeners`, nginx's `USR2`, Pingora's socket hand-over).
//!
//! `fulcrum upgrade` (or SIGUSR2) asks the running process to start the new
//! binary with the same arguments. The old process passes it every listening
//! socket (admin listener included) over a socketpair with SCM_RIGHTS, and
//! the runtime state as JSON ([`state`]: admin states, weights, servers added
//! through the API, last health results). The new process takes those
//! sockets instead of binding (the hook is [`fds::take_inherited`], called by
//! `proxy::listener::bind`), starts, waits for its first health answers and
//! says "ready" on the socketpair. Only then does the old process stop
//! accepting and drain: requests in flight finish, idle keep-alive
//! connections get `Connection: close` on their next answer (or GOAWAY on
//! HTTP/2), and it exits within `[global] hard_stop_after`.
//!
//! Both processes hold the same listening sockets, so the kernel's accept
//! queue is never closed: there is no moment at which a connection is
//! refused. A new process that fails (bad configuration, crash, no "ready"
//! within the timeout) is killed and the old one keeps serving; the reason
//! goes back to `fulcrum upgrade`, which exits non-zero.
//!
//! The request arrives on a Unix socket in the abstract namespace named
//! after the process (`@fulcrum-upgrade.PID`, see [`control_name`]); only a
//! peer with the same user id (or root) is served, since the request starts
//! a program.

pub mod fds;
pub mod state;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::config::types::Config;
use crate::runtime::Runtime;
use state::Handed;

/// Environment variable naming the socketpair descriptor of a new process.
pub const ENV_FD: &str = "FULCRUM_UPGRADE_FD";

/// How long `fulcrum upgrade` waits for the new process by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of a running process's upgrade socket (abstract namespace).
pub fn control_name(pid: u32) -> String {
    format!("fulcrum-upgrade.{pid}")
}

static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Remember the binary this process runs, for an upgrade without
/// `--binary`. Call at start: once the file is replaced, the kernel's link
/// says "… (deleted)", and the path is what the new binary is found at.
pub fn record_exe() {
    if let Ok(p) = std::env::current_exe() {
        let s = p.to_string_lossy();
        let path = match s.strip_suffix(" (deleted)") {
            Some(stripped) => PathBuf::from(stripped),
            None => p.clone(),
        };
        let _ = EXE.set(path);
    }
}

/// The binary SIGUSR2 starts: the one this process was started from.
pub fn own_exe() -> Option<PathBuf> {
    EXE.get().cloned()
}

/// What a new process received from the one it replaces.
pub struct Inherit {
    sock: UnixStream,
    /// The state it was handed.
    pub handed: Handed,
}

/// The new process's answer on the socketpair.
#[derive(Debug, Serialize, Deserialize)]
struct ReadyMsg {
    ready: bool,
    pid: u32,
    #[serde(default)]
    error: Option<String>,
}

impl Inherit {
    /// In a process started by an upgrade: receive the listening sockets
    /// (kept for `bind` to take) and the state. None in any other process.
    /// Call before any thread starts (it edits the environment).
    pub fn from_env() -> anyhow::Result<Option<Inherit>> {
        let Some(v) = std::env::var_os(ENV_FD) else {
            return Ok(None);
        };
        // Children of this process (its own upgrade) must not see it.
        std::env::remove_var(ENV_FD);
        let fd: i32 = v
            .to_str()
            .and_then(|s| s.parse().ok())
            .filter(|fd| *fd > 2)
            .ok_or_else(|| anyhow::anyhow!("{ENV_FD} is not a descriptor number"))?;
        // SAFETY: the parent left exactly this descriptor open for us (and
        // nothing else in this process knows of it).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        socket
            .r#type()
            .map_err(|e| anyhow::anyhow!("{ENV_FD}={fd} is not a socket: {e}"))?;
        let _ = socket.set_cloexec(true);
        let mut sock = UnixStream::from(OwnedFd::from(socket));
        let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
        let (fds, json) = fds::recv(&mut sock)
            .map_err(|e| anyhow::anyhow!("cannot receive the sockets of the old process: {e}"))?;
        let _ = sock.set_read_timeout(None);
        let handed: Handed = serde_json::from_slice(&json)
            .map_err(|e| anyhow::anyhow!("bad hand-over state: {e}"))?;
        if handed.version != state::VERSION {
            anyhow::bail!(
                "hand-over state version {} (this binary knows {})",
                handed.version,
                state::VERSION
            );
        }
        if handed.listeners.len() != fds.len() {
            anyhow::bail!(
                "hand-over names {} sockets, {} arrived",
                handed.listeners.len(),
                fds.len()
            );
        }
        let listeners = handed
            .listeners
            .iter()
            .copied()
            .zip(fds.into_iter().map(std::net::TcpListener::from))
            .collect();
        fds::set_inherited(listeners);
        state::set_seed(&handed.servers);
        tracing::info!(
            from = handed.from_pid,
            sockets = handed.listeners.len(),
            servers = handed.servers.len(),
            "taking over from the previous process"
        );
        Ok(Some(Inherit { sock, handed }))
    }

    /// Tell the old process to stop accepting: this one serves now.
    pub fn ready(mut self) -> std::io::Result<()> {
        self.answer(true, None)
    }

    /// Tell the old process this one failed (it keeps serving), with why.
    pub fn fail(mut self, why: &str) {
        let _ = self.answer(false, Some(why.to_string()));
    }

    fn answer(&mut self, ready: bool, error: Option<String>) -> std::io::Result<()> {
        let msg = ReadyMsg {
            ready,
            pid: std::process::id(),
            error,
        };
        let mut line = serde_json::to_vec(&msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.sock.write_all(&line)
    }
}

/// One upgrade asked for on the control socket.
pub struct UpgradeRequest {
    /// The binary to start; None: the running one.
    pub binary: Option<PathBuf>,
    pub timeout: Duration,
    reply: oneshot::Sender<(Result<u32, String>, oneshot::Sender<()>)>,
}

impl UpgradeRequest {
    /// Answer with the new process's PID, or why it failed; returns once the
    /// answer is written (so a process that exits next does not lose it).
    pub async fn answer(self, result: Result<u32, String>) {
        let (done, written) = oneshot::channel();
        if self.reply.send((result, done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), written).await;
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRequest {
    binary: Option<PathBuf>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireReply {
    ok: bool,
    pid: Option<u32>,
    error: Option<String>,
}

/// The upgrade socket of a running process.
pub struct ControlServer {
    /// The accept loop; None once closed.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Requests, one at a time, for the main loop.
    pub requests: mpsc::Receiver<UpgradeRequest>,
}

impl ControlServer {
    /// Listen on `@fulcrum-upgrade.PID`.
    pub fn start() -> std::io::Result<ControlServer> {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(control_name(std::process::id()))?;
        let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let (tx, requests) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(serve_one(stream, tx));
            }
        });
        Ok(ControlServer {
            task: Some(task),
            requests,
        })
    }

    /// Stop listening (after handing over: the new process has its own).
    /// Returns once the socket is closed, so a `fulcrum upgrade` started
    /// right after finds the new process only.
    /// Closing twice is fine.
    pub async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve_one(stream: tokio::net::UnixStream, tx: mpsc::Sender<UpgradeRequest>) {
    // Starting a program is as powerful as the user running fulcrum, so
    // only that user (or root) may ask.
    let allowed = stream.peer_cred().is_ok_and(|c| {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        c.uid() == me || c.uid() == 0
    });
    let (rd, mut wr) = stream.into_split();
    let reply = |r: Result<u32, String>| {
        let w = match r {
            Ok(pid) => WireReply {
                ok: true,
                pid: Some(pid),
                error: None,
            },
            Err(e) => WireReply {
                ok: false,
                pid: None,
                error: Some(e),
            },
        };
        let mut v = serde_json::to_vec(&w).unwrap_or_default();
        v.push(b'\n');
        v
    };
    if !allowed {
        let _ = wr
            .write_all(&reply(Err(
                "permission denied: not the user running fulcrum".into(),
            )))
            .await;
        return;
    }
    let mut line = String::new();
    let mut rd = BufReader::new(rd).take(64 * 1024);
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await;
    let req: WireRequest = match read {
        Ok(Ok(_)) => match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = wr.write_all(&reply(Err(format!("bad request: {e}")))).await;
                return;
            }
        },
        _ => return,
    };
    let (otx, orx) = oneshot::channel();
    let request = UpgradeRequest {
        binary: req.binary,
        timeout: req
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT),
        reply: otx,
    };
    let (result, done) = match tx.try_send(request) {
        Ok(()) => match orx.await {
            Ok((r, done)) => (r, Some(done)),
            Err(_) => (Err("the process stopped before answering".into()), None),
        },
        Err(_) => (Err("an upgrade is already in progress".into()), None),
    };
    let _ = wr.write_all(&reply(result)).await;
    let _ = wr.flush().await;
    if let Some(done) = done {
        let _ = done.send(());
    }
}

static BUSY: AtomicBool = AtomicBool::new(false);

/// Start `binary` with this process's arguments, hand it the listening
/// sockets and the state of `rt`, and wait until it is ready (its PID) or
/// has failed (why; it is then killed, and this process goes on serving).
/// `file` is the configuration last read from the file (to tell servers
/// added through the API from configured ones).
pub async fn hand_over(
    rt: &Runtime,
    file: Option<&Config>,
    binary: &Path,
    timeout: Duration,
) -> Result<u32, String> {
    if BUSY.swap(true, Ordering::SeqCst) {
        return Err("an upgrade is already in progress".into());
    }
    let r = hand_over_inner(rt, file, binary, timeout).await;
    BUSY.store(false, Ordering::SeqCst);
    r
}

async fn hand_over_inner(
    rt: &Runtime,
    file: Option<&Config>,
    binary: &Path,
    timeout: Duration,
) -> Result<u32, String> {
    // The next process reads runtime edits from the state file (when one is
    // kept): it must hold every edit made so far.
    rt.flush_state();
    let live = fds::live();
    if live.len() > fds::MAX_FDS {
        return Err(format!(
            "{} listening sockets; at most {} can be handed over",
            live.len(),
            fds::MAX_FDS
        ));
    }
    let (addrs, sockets): (Vec<_>, Vec<_>) = live.into_iter().unzip();
    let handed = Handed {
        version: state::VERSION,
        from_pid: std::process::id(),
        listeners: addrs,
        servers: state::capture(&rt.snapshot(), file),
    };
    let json = serde_json::to_vec(&handed).map_err(|e| e.to_string())?;
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(std::env::args_os().skip(1))
        .env(ENV_FD, their_fd.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl.
    unsafe {
        cmd.pre_exec(move || {
            // The one descriptor the new process inherits (std opens all
            // others close-on-exec).
            if libc::fcntl(their_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    drop(theirs);
    let child_pid = child.id().unwrap_or(0);
    tracing::info!(pid = child_pid, binary = %binary.display(), "upgrade: started the new process");

    let sent = tokio::task::spawn_blocking(move || {
        let _ = ours.set_write_timeout(Some(Duration::from_secs(10)));
        fds::send(&mut ours, &sockets, &json).map(|()| ours)
    })
    .await;
    let ours = match sent {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(&mut child, format!("cannot pass the sockets: {e}")).await),
        Err(e) => return Err(fail(&mut child, format!("cannot pass the sockets: {e}")).await),
    };
    let _ = ours.set_nonblocking(true);
    let ours = match tokio::net::UnixStream::from_std(ours) {
        Ok(s) => s,
        Err(e) => return Err(fail(&mut child, e.to_string()).await),
    };
    let mut lines = BufReader::new(ours);
    let mut line = String::new();
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, lines.read_line(&mut line)) => match r {
            Err(_) => Err(format!("the new process was not ready within {timeout:?}")),
            Ok(Err(e)) => Err(format!("reading the new process's answer: {e}")),
            Ok(Ok(0)) => Err(exit_reason(&mut child).await),
            Ok(Ok(_)) => match serde_json::from_str::<ReadyMsg>(&line) {
                Ok(m) if m.ready => Ok(m.pid),
                Ok(m) => Err(m.error.unwrap_or_else(|| "the new process failed".into())),
                Err(e) => Err(format!("bad answer from the new process: {e}")),
            },
        },
        st = child.wait() => Err(match st {
            Ok(st) => format!("the new process exited at start ({st})"),
            Err(e) => format!("the new process is gone: {e}"),
        }),
    };
    match outcome {
        Ok(pid) => {
            tracing::info!(
                pid,
                "upgrade: the new process is ready; this one stops accepting"
            );
            Ok(pid)
        }
        Err(why) => Err(fail(&mut child, why).await),
    }
}

async fn exit_reason(child: &mut tokio::process::Child) -> String {
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(st)) => format!("the new process exited at start ({st})"),
        _ => "the new process closed the hand-over socket".into(),
    }
}

/// Make sure a failed new process is gone; returns `why` for the caller.
async fn fail(child: &mut tokio::process::Child, why: String) -> String {
    if let Ok(None) = child.try_wait() {
        // Give it a moment to exit by itself (it reported its error).
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
    }
    tracing::error!("upgrade failed, this process keeps serving: {why}");
    why
}

/// The PIDs of the `fulcrum run` processes of this network namespace that
/// listen for upgrades (from /proc/net/unix).
pub fn running() -> Vec<u32> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let flags = cols.nth(3)?;
            let path = cols.nth(3)?;
            let pid = path.strip_prefix("@fulcrum-upgrade.")?.parse().ok()?;
            // __SO_ACCEPTCON: a listening socket, not a connection to one.
            (flags == "00010000").then_some(pid)
        })
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Of `pids`, those started with `config` (an argument naming the same
/// file, relative paths resolved in the process's working directory).
pub fn started_with(pids: &[u32], config: &Path) -> Vec<u32> {
    let Ok(want) = std::fs::canonicalize(config) else {
        return Vec::new();
    };
    pids.iter()
        .copied()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| {
                let arg = Path::new(std::str::from_utf8(arg).unwrap_or(""));
                !arg.as_os_str().is_empty()
                    && std::fs::canonicalize(cwd.join(arg)).is_ok_and(|p| p == want)
            })
        })
        .collect()
}

/// Ask the process `pid` to upgrade (to `binary`, or its own binary) and
/// wait for the outcome: the new process's PID, or why it failed.
pub async fn request(pid: u32, binary: Option<PathBuf>, timeout: Duration) -> anyhow::Result<u32> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(control_name(pid))?;
    let std_stream = std::os::unix::net::UnixStream::connect_addr(&addr)
        .map_err(|e| anyhow::anyhow!("no fulcrum with PID {pid} listens for upgrades: {e}"))?;
    std_stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(std_stream)?;
    let (rd, mut wr) = stream.into_split();
    let req = WireRequest {
        binary,
        timeout_ms: Some(timeout.as_millis() as u64),
    };
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut answer = String::new();
    let mut rd = BufReader::new(rd);
    // The server bounds the wait by `timeout`; a little more here for its answer.
    tokio::time::timeout(timeout + Duration::from_secs(15), rd.read_line(&mut answer))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from PID {pid} in time"))??;
    let reply: WireReply = serde_json::from_str(&answer)
        .map_err(|e| anyhow::anyhow!("bad answer from PID {pid}: {e} ({answer:?})"))?;
    match (reply.ok, reply.pid) {
        (true, Some(new)) => Ok(new),
        _ => anyhow::bail!(
            "{}; PID {pid} keeps serving",
            reply.error.unwrap_or_else(|| "upgrade failed".into())
        ),
    }
}
