//! `git-credential-jit`: the git credential helper. git runs it as `git credential-jit get`
//! (configure with `git jit setup URL`); extra arguments in the helper string come first,
//! e.g. `credential.helper = "jit --broker https://broker.example"`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use jit_helper::credential::CredentialArgs;

fn main() -> ExitCode {
    // Only ring is compiled in; if a provider is already installed that is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = CredentialArgs::parse();
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
