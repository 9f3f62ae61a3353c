//! The broker binary as a process: located next to the tests, started from a config text,
//! healthy on a free port.

use anyhow::Result;
use jit_e2e::bins::{GIT_CREDENTIAL_JIT, GIT_JIT, JIT_BROKER, bin_path, generate_keys};
use jit_e2e::{BrokerProcess, RedisServer};

#[test]
fn workspace_binaries_are_found_next_to_the_tests() -> Result<()> {
    for name in [JIT_BROKER, GIT_CREDENTIAL_JIT, GIT_JIT] {
        let path = bin_path(name)?;
        assert!(path.is_file(), "{}", path.display());
    }
    let missing = bin_path("no-such-binary").expect_err("missing binary");
    assert!(format!("{missing}").contains("cargo build --workspace"));
    Ok(())
}

#[test]
fn broker_serves_healthz_from_a_config_file() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let config = crate::support::broker_base(keys.path(), &redis.url(), None);
        let mut broker = BrokerProcess::start(&config).await?;
        let http = jit_e2e::http_client();
        let health = http.get(format!("{}/healthz", broker.url())).send().await?;
        assert!(health.status().is_success());
        let port = broker.port();
        broker.stop()?;
        assert!(!jit_e2e::process::port_is_open(port));
        Ok(())
    })
}
