//! The `fulcrum` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

use fulcrum::config::{self, quick::QuickOptions, types::Algorithm, types::Mode};
use fulcrum::runtime::{Change, Runtime};

#[derive(Parser)]
#[command(
    name = "fulcrum",
    version = env!("FULCRUM_VERSION"),
    about = "High-availability load balancer: HTTP/TCP proxy, health checks, failover — one daemon"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the load balancer in the foreground (SIGHUP reloads, SIGTERM drains and exits).
    Run(RunArgs),
    /// Validate a configuration file: exit 0, or print every error with file:line:col and exit 1.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start demo backends and a load balancer on loopback, print what to curl, run until Ctrl-C.
    Demo(fulcrum::demo::DemoOptions),
    /// Operate running load balancers through their admin API.
    Ctl(fulcrum::ctl::CtlArgs),
    /// Run the demo app server used by the demo, the lab and tests.
    Backend {
        /// Address to listen on, e.g. 127.0.0.1:9101.
        #[arg(long)]
        listen: SocketAddr,
        /// Name this server reports in its answers.
        #[arg(long)]
        name: String,
    },
    /// Convert a haproxy.cfg / keepalived.conf / heartbeat setup into a fulcrum config, with a report.
    Import(fulcrum::import::ImportArgs),
    /// Build the seeds' topologies in network namespaces and run failure drills (root).
    Lab(fulcrum::lab::LabArgs),
    /// Replace a running `fulcrum run` by a new binary without dropping a connection
    /// (same as `kill -USR2 PID`; HAProxy's `-sf` with `expose-fd listeners`).
    Upgrade(UpgradeArgs),
    /// Print the manual page (roff) to stdout: `fulcrum man | man -l -`.
    Man,
    /// Register this app server in etcd under a lease until SIGTERM/SIGINT (for a systemd unit).
    #[cfg(feature = "etcd")]
    Register(fulcrum::cluster::register::RegisterArgs),
}

#[derive(clap::Args)]
struct UpgradeArgs {
    /// PID of the running process; default: the only `fulcrum run` listening for upgrades.
    #[arg(long, conflicts_with = "config")]
    pid: Option<u32>,
    /// Choose the running process by the configuration file it was started with.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The new binary; default: the path the running process was started from.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// How long the new process may take to be ready before it is killed
    /// (the old one keeps serving).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    timeout: Duration,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short, conflicts_with_all = ["listen", "server"])]
    config: Option<PathBuf>,
    /// Quick mode: address to listen on (repeatable).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Quick mode: upstream server address (repeatable).
    #[arg(long)]
    server: Vec<SocketAddr>,
    /// Quick mode: proxy HTTP (default) or raw TCP.
    #[arg(long, value_enum, default_value_t = QuickMode::Http)]
    mode: QuickMode,
    /// Quick mode: balancing algorithm.
    #[arg(long, value_enum, default_value_t = QuickBalance::Roundrobin)]
    balance: QuickBalance,
    /// Quick mode: active health check, "tcp" or an HTTP path like "/health".
    #[arg(long)]
    check: Option<String>,
    /// How long a graceful stop (or an upgraded-away process) waits for open
    /// connections; `[global] hard_stop_after` overrides it.
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    grace: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuickMode {
    Http,
    Tcp,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuickBalance {
    Roundrobin,
    Leastconn,
    Random,
    Source,
    Uri,
    First,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    config::duration::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        init_tracing(&Default::default());
    }
    let result = match cli.cmd {
        Cmd::Check { config } => return check(&config),
        Cmd::Run(args) => {
            fulcrum::upgrade::record_exe();
            // Started by an upgrade: take the old process's sockets first
            // (before any thread: this edits the environment).
            let mut inherit = match fulcrum::upgrade::Inherit::from_env() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("fulcrum: error: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let result = load_run_config(&args).and_then(|cfg| {
                // Diagnostics and the access log go where `[log]` says from here on.
                init_tracing(&cfg.log);
                fulcrum::log::access::start(&cfg.log.target, cfg.log.buffer)
                    .context("cannot open the access log")?;
                let r = proxy_runtime(&cfg.global)
                    .and_then(|rt| rt.block_on(run(args, cfg, &mut inherit)));
                // Every line of a clean stop reaches the sink (bounded: a blocked
                // sink must not hold the exit).
                if !fulcrum::log::access::shutdown(Duration::from_secs(5)) {
                    tracing::warn!("access log: the sink did not take the last lines within 5 s");
                }
                r
            });
            if let (Err(e), Some(i)) = (&result, inherit.take()) {
                // The old process keeps serving and tells `fulcrum upgrade` why.
                i.fail(&format!("{e:#}"));
            }
            result
        }
        Cmd::Upgrade(args) => return upgrade(args),
        Cmd::Man => {
            use clap::CommandFactory;
            // The package version only: the page does not change per commit.
            let man = clap_mangen::Man::new(Cli::command().version(env!("CARGO_PKG_VERSION")));
            let mut out = std::io::stdout().lock();
            return match man.render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fulcrum man: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Ctl(args) => {
            // One thread: a command makes a few requests and exits; worker
            // threads would only add their start-up to every `ctl` call.
            return match runtime_with(Some(1)).and_then(|rt| rt.block_on(fulcrum::ctl::run(args))) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("fulcrum ctl: error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Lab(args) => return fulcrum::lab::run(args),
        Cmd::Import(args) => return fulcrum::import::main(args),
        Cmd::Demo(opts) => {
            let r = runtime().and_then(|rt| rt.block_on(fulcrum::demo::run_demo(opts)));
            fulcrum::log::access::shutdown(Duration::from_secs(5));
            r
        }
        #[cfg(feature = "etcd")]
        Cmd::Register(args) => {
            runtime().and_then(|rt| rt.block_on(fulcrum::cluster::register::run(args)))
        }
        Cmd::Backend { listen, name } => runtime().and_then(|rt| {
            rt.block_on(fulcrum::demo::backend::run_backend(
                fulcrum::demo::backend::BackendOptions { name, listen },
            ))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics as `[log]` says (stderr text by default); colours only on a
/// terminal and never with `NO_COLOR` (see `fulcrum::log::diag`).
fn init_tracing(log: &config::types::LogConfig) {
    if let Err(e) = fulcrum::log::diag::init(&log.diagnostics, log.diagnostics_format) {
        eprintln!("fulcrum: cannot open the diagnostics log ({e}); using stderr");
        let _ =
            fulcrum::log::diag::init(&config::types::DiagTarget::Stderr, log.diagnostics_format);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// The async runtime with `threads` workers (default: tokio's, one per core,
/// or `TOKIO_WORKER_THREADS`). One thread is a current-thread runtime: no
/// work-stealing machinery at all (in a quick A/B against a one-worker
/// multi-thread runtime: 0–8 % less CPU per request, within run-to-run noise).
fn runtime_with(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The runtime `fulcrum run` runs on. One thread (`threads = 1`): one
/// current-thread runtime for everything. More (the default is one per CPU
/// the process may use): a current-thread runtime for the control plane
/// (health checks, discovery, admin API, VRRP, signals) and `threads` proxy
/// workers, each a thread with its own current-thread runtime and accept
/// loops (see `fulcrum::proxy::workers`).
fn proxy_runtime(global: &config::types::GlobalConfig) -> Result<tokio::runtime::Runtime> {
    let n = fulcrum::proxy::workers::resolve(global.threads);
    if n == 1 {
        return runtime_with(Some(1));
    }
    fulcrum::proxy::workers::start(n, global.cpu_affinity)
        .context("cannot start the proxy workers")?;
    runtime_with(Some(1))
}

/// `fulcrum upgrade`: ask the running process to hand over to a new binary.
fn upgrade(args: UpgradeArgs) -> ExitCode {
    let mut running = fulcrum::upgrade::running();
    if let Some(c) = &args.config {
        running = fulcrum::upgrade::started_with(&running, c);
    }
    let pid = match args.pid {
        Some(p) => p,
        None => match running.as_slice() {
            [one] => *one,
            [] => {
                eprintln!("fulcrum upgrade: error: no running `fulcrum run` found (give --pid)");
                return ExitCode::FAILURE;
            }
            many => {
                eprintln!("fulcrum upgrade: error: several fulcrum processes run ({many:?}); choose one with --pid");
                return ExitCode::FAILURE;
            }
        },
    };
    // The running process may have another working directory.
    let binary = match args
        .binary
        .map(|b| std::fs::canonicalize(&b).map_err(|e| (b, e)))
    {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err((b, e))) => {
            eprintln!("fulcrum upgrade: error: {}: {e}", b.display());
            return ExitCode::FAILURE;
        }
    };
    let outcome =
        runtime().and_then(|rt| rt.block_on(fulcrum::upgrade::request(pid, binary, args.timeout)));
    match outcome {
        Ok(new) => {
            println!("upgraded: PID {new} serves now; PID {pid} drains and exits");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fulcrum upgrade: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            let servers: usize = cfg.backends.values().map(|b| b.servers.len()).sum();
            println!(
                "{}: OK ({} frontend(s), {} backend(s), {} server(s))",
                path.display(),
                cfg.frontends.len(),
                cfg.backends.len(),
                servers
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// The configuration `run` starts with: the file, or quick mode's flags.
fn load_run_config(args: &RunArgs) -> Result<config::types::Config> {
    let cfg = match &args.config {
        Some(path) => {
            config::load_file(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?
        }
        None => config::quick::quick_config(&QuickOptions {
            listen: args.listen.clone(),
            servers: args.server.clone(),
            mode: match args.mode {
                QuickMode::Http => Mode::Http,
                QuickMode::Tcp => Mode::Tcp,
            },
            balance: match args.balance {
                QuickBalance::Roundrobin => Algorithm::RoundRobin,
                QuickBalance::Leastconn => Algorithm::LeastConn,
                QuickBalance::Random => Algorithm::Random,
                QuickBalance::Source => Algorithm::Source,
                QuickBalance::Uri => Algorithm::Uri,
                QuickBalance::First => Algorithm::First,
            },
            check: args.check.clone(),
            admin: None,
        })
        .map_err(|e| anyhow::anyhow!("{e} (or use --config FILE)"))?,
    };
    Ok(cfg)
}

async fn run(
    args: RunArgs,
    mut cfg: config::types::Config,
    inherit: &mut Option<fulcrum::upgrade::Inherit>,
) -> Result<()> {
    let upgraded = inherit.is_some();
    // What the file said, to tell servers added through the API from configured ones.
    let file_cfg = args.config.as_ref().map(|_| cfg.clone());
    if let Some(i) = inherit.as_ref() {
        // With a state file the runtime edits come from it (the old process
        // wrote it before handing over), as the file's own layer stays the
        // file's; without one, the handed state carries them.
        if cfg.state_file_path().is_none() {
            fulcrum::upgrade::state::apply_to_config(&mut cfg, &i.handed.servers);
        }
    }
    let hard_stop = cfg.global.hard_stop_after.unwrap_or(args.grace);
    let admin = cfg.admin.clone();
    // Read the token before binding anything, so a bad token file fails fast.
    fulcrum::admin::read_token(&admin)?;
    let vrrp_cfg = cfg.vrrp.clone();
    // `[cluster] config`: the file is a bootstrap; the configuration is the
    // etcd key's when it can be read and is valid.
    #[cfg(feature = "etcd")]
    let cfg = fulcrum::cluster::config_source::initial(cfg).await;
    #[cfg(feature = "etcd")]
    let (store, started) = (cfg.cluster.store.clone(), cfg.clone());
    let rt = fulcrum::supervisor::start(cfg).await?;
    #[cfg(feature = "etcd")]
    fulcrum::cluster::config_source::spawn(&rt, &started);
    // Shared runtime state: admin changes go through etcd and come back
    // through its watch on every node (src/cluster/store.rs).
    // A reload that changes `[cluster] store` restarts it (or adds or removes it).
    #[cfg(feature = "etcd")]
    fulcrum::cluster::store::spawn(&rt, store.as_ref()).map_err(anyhow::Error::msg)?;
    // The admin API shows VRRP status once the instances run (they start after the listeners).
    let vrrp_status = Arc::new(std::sync::OnceLock::<fulcrum::vrrp::VrrpStatus>::new());
    fulcrum::admin::start(rt.clone(), &admin, vrrp_status.clone()).await?;
    // Ready means serving: the first health checks have answered.
    fulcrum::health::warm::all_first_checks(&rt).await;
    fulcrum::upgrade::state::clear_seed();
    for addr in fulcrum::upgrade::fds::drop_unclaimed() {
        tracing::info!(%addr, "closed a listening socket the new configuration does not use");
    }
    for (fe, addr) in rt.bound_addresses().await {
        tracing::info!(frontend = %fe, %addr, "ready");
    }
    let control = match fulcrum::upgrade::ControlServer::start() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no upgrade socket: `fulcrum upgrade` and SIGUSR2 will not work");
            None
        }
    };
    // VRRP starts once the listeners are bound, so a node never claims a VIP it cannot serve.
    // The supervisor re-applies `[vrrp]` on every reload (SIGHUP, API, etcd).
    let vrrp = fulcrum::supervisor::Vrrp::start(&rt, &vrrp_cfg).await?;
    let _ = vrrp_status.set(vrrp.status());
    fulcrum::systemd::ready(upgraded);
    if let Some(period) = fulcrum::systemd::watchdog_period(upgraded) {
        fulcrum::systemd::spawn_watchdog(period);
    }
    if let Some(i) = inherit.take() {
        // From here on the old process stops accepting and drains.
        i.ready()
            .context("cannot tell the old process this one is ready")?;
    }
    let ctx = Serve {
        rt,
        config: args.config,
        file_cfg,
        hard_stop,
        control,
    };
    serve_signals(ctx, vrrp).await
}

/// What the signal loop works with.
struct Serve {
    rt: Arc<Runtime>,
    config: Option<PathBuf>,
    /// The configuration last read from the file.
    file_cfg: Option<config::types::Config>,
    hard_stop: Duration,
    control: Option<fulcrum::upgrade::ControlServer>,
}

/// SIGHUP reloads the file; SIGUSR2 and `fulcrum upgrade` hand over to a new
/// binary; SIGTERM/SIGINT drain and return. (`vrrp` follows every reload by
/// itself: see `supervisor::Vrrp`.)
async fn serve_signals(mut s: Serve, vrrp: fulcrum::supervisor::Vrrp) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut handed_to = None;
    loop {
        let request = async {
            match s.control.as_mut() {
                Some(c) => c.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup.recv() => {
                fulcrum::systemd::reloading();
                let status = match reload(&s.rt, s.config.as_deref()).await {
                    Some(cfg) => {
                        s.file_cfg = Some(cfg);
                        "serving (reloaded)"
                    }
                    None => "serving (last reload refused)",
                };
                fulcrum::systemd::reloaded(status);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr2.recv() => {
                let Some(binary) = fulcrum::upgrade::own_exe() else {
                    tracing::error!("SIGUSR2: cannot tell which binary this process runs; use `fulcrum upgrade --binary`");
                    continue;
                };
                let r = fulcrum::upgrade::hand_over(&s.rt, s.file_cfg.as_ref(), &binary, fulcrum::upgrade::DEFAULT_TIMEOUT).await;
                if let Ok(pid) = r {
                    handed_to = Some(pid);
                    break;
                }
            }
            Some(req) = request => {
                let binary = req.binary.clone().or_else(fulcrum::upgrade::own_exe);
                let r = match binary {
                    Some(b) => fulcrum::upgrade::hand_over(&s.rt, s.file_cfg.as_ref(), &b, req.timeout).await,
                    None => Err("cannot tell which binary this process runs; give --binary".to_string()),
                };
                let ok = r.as_ref().ok().copied();
                if let Some(pid) = ok {
                    // Stop answering upgrade requests before saying so: the
                    // next `fulcrum upgrade` must find the new process only.
                    if let Some(c) = s.control.as_mut() {
                        c.close().await;
                    }
                    fulcrum::systemd::hand_over(pid);
                }
                req.answer(r).await;
                if let Some(pid) = ok {
                    handed_to = Some(pid);
                    break;
                }
            }
        }
    }
    if let Some(c) = s.control.as_mut() {
        c.close().await;
    }
    let rt = s.rt;
    match handed_to {
        Some(pid) => {
            fulcrum::systemd::hand_over(pid);
            tracing::info!(
                new = pid,
                open = rt.conns.open(),
                "upgraded: draining open connections"
            );
        }
        None => {
            fulcrum::systemd::stopping();
            tracing::info!(
                open = rt.conns.open(),
                "stopping: draining open connections"
            );
        }
    }
    // Hand the virtual IPs over first: listeners keep serving until the new master has them.
    vrrp.shutdown().await;
    rt.shutdown(s.hard_stop).await;
    tracing::info!("stopped");
    Ok(())
}

/// Reload the file; the configuration applied, or None when refused.
async fn reload(
    rt: &Arc<Runtime>,
    path: Option<&std::path::Path>,
) -> Option<config::types::Config> {
    #[cfg(feature = "etcd")]
    if let Some(r) = fulcrum::cluster::config_source::reload(rt).await {
        match r {
            Ok(generation) => tracing::info!(generation, "reloaded the configuration from etcd"),
            Err(e) => {
                tracing::error!("reload refused: {e}; the running configuration stays in force")
            }
        }
        return None;
    }
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: quick mode has no configuration file");
        return None;
    };
    match config::load_file(path) {
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                "reload refused: {} error(s); the running configuration stays in force",
                errors.0.len()
            );
            None
        }
        Ok(cfg) => match rt
            .apply_by(Change::Reload(Box::new(cfg.clone())), "sighup")
            .await
        {
            Ok(generation) => {
                tracing::info!(generation, "reloaded {}", path.display());
                Some(cfg)
            }
            Err(e) => {
                tracing::error!("reload refused: {e}; the running configuration stays in force");
                None
            }
        },
    }
}
