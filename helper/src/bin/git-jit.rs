//! `git jit`: login, setup, status and explicit access requests for git-jit.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use jit_helper::cli::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Only ring is compiled in; if a provider is already installed that is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result: anyhow::Result<()> = async {
        let ctx = jit_helper::process_context(cli.broker.as_deref())?;
        run(cli, &ctx).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("git-jit: {e}");
            // 130 after Ctrl-C, as a shell reports SIGINT; 1 otherwise.
            ExitCode::from(
                e.downcast_ref::<jit_helper::cli::CliError>()
                    .map_or(1, jit_helper::cli::CliError::exit_code),
            )
        }
    }
}
