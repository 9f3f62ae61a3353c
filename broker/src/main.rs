//! `jit-broker`: parses flags, loads configuration, runs the broker, maps errors to exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use jit_broker::audit::{AuditEvent, AuditQuery, verify_chain};
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
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the audit hash chain: detects edited, deleted and reordered events. Reads the
    /// store named by --config, or an exported JSON-lines file given by --file.
    Verify {
        /// The broker configuration whose store to read.
        #[arg(long, short, conflicts_with = "file", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// An exported JSON-lines audit file.
        #[arg(long)]
        file: Option<PathBuf>,
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
        "serving /oauth/introspect, /.well-known/jwks.json, /.well-known/oauth-authorization-server, /healthz, /readyz"
    );
    jit_broker::run(listener, state, shutdown_signal())
        .await
        .context("server failed")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { listen } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "dev mode listens on loopback only, not {listen}"
            );
            let state = AppState::dev(&format!("http://{listen}"))?;
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
        Command::Audit {
            command: AuditCommand::Verify { config, file },
        } => {
            let events = match (config, file) {
                (Some(config), _) => {
                    let cfg = Config::load(&config)?;
                    let state = AppState::from_config(&cfg)?;
                    let all = AuditQuery {
                        limit: usize::MAX,
                        ..Default::default()
                    };
                    state.store.read_audit(&all).await?
                }
                (None, Some(file)) => read_event_lines(&file)?,
                (None, None) => anyhow::bail!("give --config or --file"),
            };
            let n = verify_chain(&events)?;
            match (events.first(), events.last()) {
                (Some(a), Some(b)) => {
                    println!("audit chain intact: {n} events, seq {}..={}", a.seq, b.seq)
                }
                _ => println!("audit chain empty"),
            }
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

fn read_event_lines(file: &std::path::Path) -> anyhow::Result<Vec<AuditEvent>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<AuditEvent>(l)
                .with_context(|| format!("{}:{}: not an audit event", file.display(), i + 1))
        })
        .collect()
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
