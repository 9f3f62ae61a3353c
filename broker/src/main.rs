//! `jit-broker`: parses flags, calls the subcommand's body in [`jit_broker::commands`], maps
//! errors to exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jit_broker::commands;
use jit_broker::http::observe::RequestIdFormat;

/// Requests allocate and free many small buffers on whichever worker thread runs them; mimalloc
/// keeps those on per-thread free lists (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// repository `demo/hello` is created in it. Default: `git-jit/dev-repos` in the
        /// user's data directory ($XDG_DATA_HOME or ~/.local/share), created 0700; a folder
        /// open to other users is refused.
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
        /// Wait up to SECS for the store to answer at start (logging a countdown) instead of
        /// refusing to start at once.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "60")]
        wait_for_store: Option<u64>,
    },
    /// Check a configuration file and what serving it needs (signing keys, audit files,
    /// upstream credentials, issuer URLs), then exit.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
        /// Also connect to the store (AUTH, topology) and fetch every issuer's discovery
        /// document and keys.
        #[arg(long)]
        online: bool,
    },
    /// Show which roles would grant a request for the given claims, and why the others
    /// would not. Exit status 0 if the request would be granted, 1 otherwise.
    Explain(ExplainCli),
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

/// `explain`'s flags.
#[derive(Debug, Args)]
struct ExplainCli {
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
}

impl From<ExplainCli> for commands::ExplainArgs {
    fn from(c: ExplainCli) -> Self {
        Self {
            config: c.config,
            claims: c.claims,
            scope: c.scope,
            role: c.role,
            ttl: c.ttl,
            reason: c.reason,
            refs: c.refs,
            issuer: c.issuer,
        }
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the audit hash chain event by event, in constant memory: detects edited,
    /// deleted and reordered events, tampered rotation boundaries and false checkpoints, and
    /// reports the last signed checkpoint. Reads the audit folders (--dir) or files (--file)
    /// given, merged by seq across replicas; else the store named by --config. With both,
    /// files that end before the store's head are reported as a cut tail.
    Verify {
        /// The broker configuration: its store, its keys (checkpoint signatures).
        #[arg(long, short, required_unless_present_any = ["dir", "file"])]
        config: Option<PathBuf>,
        /// An audit folder (`audit-*.jsonl` of one or several replicas); repeatable.
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// One JSON-lines audit file (an export, a single trail file); repeatable.
        #[arg(long)]
        file: Vec<PathBuf>,
        /// The broker's JWKS (`/.well-known/jwks.json` saved to a file) to check checkpoint
        /// signatures without the private keys.
        #[arg(long)]
        jwks: Option<PathBuf>,
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
        /// Generate an SSH certificate authority key instead (OpenSSH Ed25519, in DIR/ssh;
        /// rotated the same way, every key published at /.well-known/ssh-ca.pub).
        #[arg(long)]
        ssh: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    // Colours only for a person at a terminal: never into a redirected file or a journal,
    // and never when NO_COLOR is set (no-color.org: any non-empty value).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.event_format(RequestIdFormat::human()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(RequestIdFormat::json())
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every JWT signature is made and checked with ring, the TLS library: installed before
    // any is.
    if !jit_broker::jose::install() {
        eprintln!("jit-broker: the JWT signature provider could not be installed");
        return ExitCode::FAILURE;
    }
    if let Command::Explain(args) = cli.command {
        return match commands::explain(&args.into()) {
            Ok((report, granted)) => {
                print!("{report}");
                if granted {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
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
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jit-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev {
            listen,
            repos,
            user,
        } => commands::dev(listen, repos, &user).await,
        Command::Serve {
            config,
            wait_for_store,
        } => commands::serve(&config, wait_for_store.map(std::time::Duration::from_secs)).await,
        Command::CheckConfig { file, online } => {
            println!("{}", commands::check_config(&file, online).await?);
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    dir,
                    file,
                    jwks,
                },
        } => {
            let args = commands::VerifyArgs {
                config,
                paths: dir.into_iter().chain(file).collect(),
                jwks,
            };
            println!("{}", commands::audit_verify(&args).await?);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate { dir, ssh },
        } => {
            let line = if ssh {
                commands::keys_generate_ssh(&dir)?
            } else {
                commands::keys_generate(&dir)?
            };
            println!("{line}");
            Ok(())
        }
        Command::Explain(_) => anyhow::bail!("explain runs before the runtime starts"),
    }
}
