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
    version,
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
    /// Build the seeds' topologies in network namespaces and run failure drills (root).
    Lab(fulcrum::lab::LabArgs),
    /// Register this app server in etcd under a lease until SIGTERM/SIGINT (for a systemd unit).
    #[cfg(feature = "etcd")]
    Register(fulcrum::cluster::register::RegisterArgs),
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
    /// How long a graceful stop waits for open connections.
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
    init_tracing();
    let result = match cli.cmd {
        Cmd::Check { config } => return check(&config),
        Cmd::Run(args) => load_run_config(&args).and_then(|cfg| {
            runtime_with(cfg.global.threads).and_then(|rt| rt.block_on(run(args, cfg)))
        }),
        Cmd::Ctl(args) => {
            return match runtime().and_then(|rt| rt.block_on(fulcrum::ctl::run(args))) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("fulcrum ctl: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Lab(args) => return fulcrum::lab::run(args),
        #[cfg(feature = "etcd")]
        Cmd::Register(args) => {
            runtime().and_then(|rt| rt.block_on(fulcrum::cluster::register::run(args)))
        }
        Cmd::Demo(opts) => runtime().and_then(|rt| rt.block_on(fulcrum::demo::run_demo(opts))),
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FULCRUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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

async fn run(args: RunArgs, cfg: config::types::Config) -> Result<()> {
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
    let rt = Runtime::start(cfg).await?;
    #[cfg(feature = "etcd")]
    fulcrum::cluster::config_source::spawn(&rt, &started);
    // Shared runtime state: admin changes go through etcd and come back
    // through its watch on every node (src/cluster/store.rs).
    #[cfg(feature = "etcd")]
    if let Some(store) = &store {
        fulcrum::cluster::store::spawn(&rt, store).map_err(anyhow::Error::msg)?;
    }
    // The admin API shows VRRP status once the instances run (they start after the listeners).
    let vrrp_status = Arc::new(std::sync::OnceLock::<fulcrum::vrrp::VrrpStatus>::new());
    fulcrum::admin::start(rt.clone(), &admin, vrrp_status.clone()).await?;
    for (fe, addr) in rt.bound_addresses().await {
        tracing::info!(frontend = %fe, %addr, "ready");
    }
    // VRRP starts once the listeners are bound, so a node never claims a VIP it cannot serve.
    let vrrp =
        fulcrum::vrrp::Vrrp::start(&vrrp_cfg, Some(fulcrum::vrrp::frontends_probe(rt.clone())))
            .await?;
    let _ = vrrp_status.set(vrrp.status());
    serve_signals(rt, args.config, args.grace, vrrp).await
}

/// SIGHUP reloads the file; SIGTERM/SIGINT drain and return.
async fn serve_signals(
    rt: Arc<Runtime>,
    config: Option<PathBuf>,
    grace: Duration,
    vrrp: fulcrum::vrrp::Vrrp,
) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&rt, config.as_deref()).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Hand the virtual IPs over first: listeners keep serving until the new master has them.
    vrrp.shutdown().await;
    tracing::info!(
        open = rt.conns.open(),
        "stopping: draining open connections"
    );
    rt.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn reload(rt: &Arc<Runtime>, path: Option<&std::path::Path>) {
    #[cfg(feature = "etcd")]
    if let Some(r) = fulcrum::cluster::config_source::reload(rt).await {
        match r {
            Ok(generation) => tracing::info!(generation, "reloaded the configuration from etcd"),
            Err(e) => {
                tracing::error!("reload refused: {e}; the running configuration stays in force")
            }
        }
        return;
    }
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: quick mode has no configuration file");
        return;
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
        }
        Ok(cfg) => match rt.apply(Change::Reload(Box::new(cfg))).await {
            Ok(generation) => tracing::info!(generation, "reloaded {}", path.display()),
            Err(e) => {
                tracing::error!("reload refused: {e}; the running configuration stays in force")
            }
        },
    }
}
