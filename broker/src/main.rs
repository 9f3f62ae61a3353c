//! `jit-broker`: parses flags, loads configuration, runs the broker, maps errors to exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use jit_broker::audit::{AuditEvent, AuditQuery, verify_chain};
use jit_broker::clock::{Clock as _, SystemClock};
use jit_broker::config::Config;
use jit_broker::exchange::{parse_refs, parse_ttl};
use jit_broker::keys::KeyRing;
use jit_broker::policy::Request;
use jit_broker::policy::explain::{explain as policy_explain, identity_from_claims};
use jit_broker::state::AppState;
use jit_proto::Scope;

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
        /// The identity `git jit login` gets from the development issuer.
        #[arg(long, default_value = "developer@localhost")]
        user: String,
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
    /// Show which roles would grant a request for the given claims, and why the others
    /// would not. Exit status 0 if the request would be granted, 1 otherwise.
    Explain {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A JSON file with the identity's claims (a decoded ID token or CI token payload).
        #[arg(long)]
        claims: PathBuf,
        /// The scope asked for, e.g. repo:acme/api:write.
        #[arg(long)]
        scope: String,
        /// The role asked for (default: the narrowest that grants).
        #[arg(long)]
        role: Option<String>,
        /// The lifetime asked for (30m, 2h, or minutes).
        #[arg(long)]
        ttl: Option<String>,
        /// The reason given.
        #[arg(long)]
        reason: Option<String>,
        /// Ref patterns a write is limited to (space-separated).
        #[arg(long)]
        refs: Option<String>,
        /// The [[issuer]] name (default: the one whose URL is the claims' iss).
        #[arg(long)]
        issuer: Option<String>,
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
        "serving /oauth/token, /oauth/introspect, /v1/grants, /v1/revoke, /v1/audit, /.well-known/jwks.json, /.well-known/oauth-authorization-server, /healthz, /readyz, /authz and the Git gateway (/<repo>.git/...)"
    );
    jit_broker::run(listener, state, shutdown_signal())
        .await
        .context("server failed")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            listen,
            repos,
            user,
        } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "dev mode listens on loopback only, not {listen}"
            );
            let repos =
                repos.unwrap_or_else(|| std::env::temp_dir().join("git-jit-dev").join("repos"));
            let demo = jit_broker::gateway::demo::create(&repos).with_context(|| {
                format!("cannot create the demo repository in {}", repos.display())
            })?;
            let state = AppState::dev(&format!("http://{listen}"), &user)?
                .with_gateway(jit_broker::gateway::Gateway::dir(&repos));
            tracing::info!(repos = %repos.display(), "gateway serves bare repositories (dir: upstream)");
            tracing::info!("demo repository: git clone http://{listen}/{demo}.git");
            tracing::warn!(
                "DEVELOPMENT MODE: in-memory store, ephemeral signing key; never use in production"
            );
            if let Some(dev) = &state.dev_issuer {
                tracing::warn!(
                    issuer = dev.url(),
                    user = dev.user(),
                    "DEVELOPMENT ISSUER ENABLED: anyone on this machine can mint an identity \
                     (POST {}/token with sub=NAME, or `git jit login` as the user above); roles \
                     dev-read (any repo, read) and dev-write (demo/**, write, reason required)",
                    dev.url()
                );
            }
            serve(listen, state).await
        }
        Command::Serve { config } => {
            let cfg = Config::load(&config)?;
            let state = AppState::from_config(&cfg)?;
            serve(cfg.broker.listen, state).await
        }
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            println!(
                "{}: ok ({} issuers, {} roles)",
                file.display(),
                cfg.issuer.len(),
                cfg.role.len()
            );
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
                    println!("audit chain intact: {n} events, seq {}..={}", a.seq, b.seq);
                    if a.seq > 1 {
                        // Trimmed by the length bound, or deleted from the start: the store
                        // cannot tell. The export keeps them; verify it with --file.
                        println!(
                            "events seq 1..={} are not here (trimmed by store.audit_max_events, or removed); verify the export for them",
                            a.seq - 1
                        );
                    }
                }
                _ => println!("audit chain empty"),
            }
            Ok(())
        }
        Command::Explain { .. } => anyhow::bail!("explain runs before the runtime starts"),
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

/// `jit-broker explain`: pure, no runtime needed. `Ok(false)` when the request is refused.
fn explain(cmd: Command) -> anyhow::Result<bool> {
    let Command::Explain {
        config,
        claims,
        scope,
        role,
        ttl,
        reason,
        refs,
        issuer,
    } = cmd
    else {
        anyhow::bail!("not an explain command");
    };
    let cfg = Config::load(&config)?;
    let text = std::fs::read_to_string(&claims)
        .with_context(|| format!("cannot read {}", claims.display()))?;
    let claims_map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object", claims.display()))?;
    let request = Request {
        scope: Scope::parse(&scope).map_err(|e| anyhow::anyhow!("--scope {scope:?}: {e}"))?,
        role,
        ttl: ttl
            .map(|t| parse_ttl(&t))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?,
        reason,
        refs: parse_refs(refs.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("--refs: {e}"))?,
    };
    let identity = identity_from_claims(&cfg, claims_map, issuer.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", claims.display()))?;
    let now = SystemClock.now();
    let answer = policy_explain(&cfg, &identity, &request, now).map_err(anyhow::Error::msg)?;
    print!("{}", answer.report);
    Ok(answer.granted)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Explain { .. }) {
        return match explain(cli.command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("jit-broker: {e:#}");
                ExitCode::from(2)
            }
        };
    }
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
