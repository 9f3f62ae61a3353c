//! `jit-ssh-gate`: sshd's `ForceCommand` for the Git user (see docs/ssh.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jit_ssh_gate::{GateConfig, SshEnv};

/// Serves git over SSH to holders of git-jit certificates: asks the broker about each
/// connection and push, then runs git-upload-pack or git-receive-pack.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The broker's URL.
    #[arg(long, env = "JIT_BROKER")]
    broker: String,
    /// The folder of the bare repositories (acme/api is <repos>/acme/api.git).
    #[arg(long)]
    repos: PathBuf,
    /// The introspection client id the gate authenticates as (none: the broker must be on
    /// loopback and allow loopback introspection).
    #[arg(long, requires = "secret_file")]
    client_id: Option<String>,
    /// The file holding that client's secret (mode 0600, readable by the Git user).
    #[arg(long, requires = "client_id")]
    secret_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let config = GateConfig {
        broker: args.broker,
        repos: args.repos,
        client: args.client_id.zip(args.secret_file),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("git-jit: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(jit_ssh_gate::serve(&config, &SshEnv::from_process())) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
