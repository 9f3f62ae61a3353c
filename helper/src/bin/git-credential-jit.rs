//! `git-credential-jit`: the git credential helper. git runs it as `git credential-jit get`
//! (configure with `git jit setup URL`); extra arguments in the helper string come first,
//! e.g. `credential.helper = "jit --broker https://broker.example"`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The git credential helper of git-jit: prints short-lived tokens for git.
#[derive(Debug, Parser)]
#[command(name = "git-credential-jit", version)]
struct Args {
    /// The broker's URL. Default: $GIT_JIT_BROKER, config.toml, or the Git URL's origin.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// get, store or erase (sent by git); anything else is ignored.
    operation: String,
}

fn main() -> ExitCode {
    // Only ring is compiled in; if a provider is already installed that is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let ctx = match jit_helper::process_context(args.broker.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("git-jit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("git-jit: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin().lock();
    let code = rt.block_on(jit_helper::credential::run(
        &ctx,
        &args.operation,
        stdin,
        std::io::stdout().lock(),
        std::io::stderr().lock(),
    ));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
