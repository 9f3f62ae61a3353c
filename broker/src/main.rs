//! `jit-broker`: parses flags, loads configuration, runs the broker, maps errors to exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use jit_broker::config::Config;
use jit_broker::keys::KeyRing;
use jit_broker::state::AppState;

/// git-jit broker: short-lived, repository-scoped Git credentials.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "JIT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a self-contained development broker: in-memory store, a fresh signing key,
    /// everything on 127.0.0.1. Not for production.
    Dev {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory of bare repositories the gateway serves (`dir:` upstream); a demo
        /// repository `demo/hello` is created in it. Default: `git-jit-dev/repos` in the
        /// system's temporary directory.
        #[arg(long)]
        repos: Option<PathBuf>,
    },
    /// Run the broker from a configuration file.
    Serve {
        /// The TOML configuration file (see deploy/broker.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new Ed25519 signing key (PKCS#8 PEM, mode 0600) in DIR. The newest key
    /// signs; keep older ones until every token they signed has expired, then delete them.
    Generate {
        /// The key directory (created 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

async fn serve(listen: SocketAddr, state: AppState) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, issuer = %state.settings.public_url, "broker listening");
    tracing::info!(
        "serving /oauth/introspect, /.well-known/jwks.json, /.well-known/oauth-authorization-server, /healthz, /readyz, /authz and the Git gateway (/<repo>.git/...)"
    );
    jit_broker::run(listener, state, shutdown_signal())
        .await
        .context("server failed")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { listen, repos } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "dev mode listens on loopback only, not {listen}"
            );
            let repos =
                repos.unwrap_or_else(|| std::env::temp_dir().join("git-jit-dev").join("repos"));
            let demo = jit_broker::gateway::demo::create(&repos).with_context(|| {
                format!("cannot create the demo repository in {}", repos.display())
            })?;
            let state = AppState::dev(&format!("http://{listen}"))?
                .with_gateway(jit_broker::gateway::Gateway::dir(&repos));
            tracing::info!(repos = %repos.display(), "gateway serves bare repositories (dir: upstream)");
            tracing::info!("demo repository: git clone http://{listen}/{demo}.git");
            tracing::warn!(
                "DEVELOPMENT MODE: in-memory store, ephemeral signing key; never use in production"
            );
            serve(listen, state).await
        }
        Command::Serve { config } => {
            let cfg = Config::load(&config)?;
            let state = AppState::from_config(&cfg)?;
            serve(cfg.broker.listen, state).await
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate { dir },
        } => {
            let (path, kid) = KeyRing::generate_into(&dir, time::OffsetDateTime::now_utc())?;
            println!("{} kid={kid}", path.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One TLS provider for the whole process (Redis TLS, OIDC discovery).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jit-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jit-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
