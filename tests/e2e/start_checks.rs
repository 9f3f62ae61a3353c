//! `check-config` checks what `serve` will need, and `serve` refuses to start without it:
//! signing keys (missing, corrupt, unreadable by the service user), audit paths, and with
//! `--online` the store (down, AUTH, a replica, a Cluster node given as one URL) and every
//! issuer's discovery; `serve` refuses an unreachable store or waits for it. Each failure is
//! named once, with the configuration file and the key.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;
use jit_e2e::bins::{JIT_BROKER, bin_path, generate_keys};
use jit_e2e::process::{ManagedProcess, START_TIMEOUT, free_port, wait_healthy};
use jit_e2e::{OidcProvider, RedisCluster, RedisServer};

/// A broker configuration with its keys in `dir/keys`, its audit files in `dir/audit`.
fn config(dir: &Path, store: &str, extra: &str) -> String {
    format!(
        r#"
[broker]
listen = "127.0.0.1:{port}"
public_url = "https://jit.example.com"
keys_dir = "{dir}/keys"

[store]
{store}

[audit]
dir = "{dir}/audit"
{extra}
"#,
        port = free_port().unwrap_or(0),
        dir = dir.display(),
    )
}

/// Runs `jit-broker ARGS` to its end (it ends by itself: these commands only check).
fn broker(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new(bin_path(JIT_BROKER)?);
    cmd.args(args)
        .env_remove("JIT_REDIS_URL")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn check(file: &Path, online: bool, env: &[(&str, &str)]) -> Result<(bool, String)> {
    let file = file.to_string_lossy();
    let mut args = vec!["check-config", &*file];
    if online {
        args.push("--online");
    }
    let out = broker(&args, env)?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

fn write(dir: &Path, text: &str) -> Result<std::path::PathBuf> {
    let file = dir.join("broker.toml");
    std::fs::write(&file, text)?;
    Ok(file)
}

/// Regression: `check-config` said `ok` for a missing key folder and an export that cannot
/// be written; `serve` then printed the I/O error twice, naming neither file nor key.
#[test]
fn check_config_and_serve_name_missing_keys_and_unwritable_export_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let file = write(
        d,
        &config(
            d,
            "kind = \"memory\"",
            "export = \"/nonexistent-folder/export.jsonl\"",
        ),
    )?;
    let name = file.display().to_string();
    let (ok, out) = check(&file, false, &[])?;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{name}: broker.keys_dir: {}/keys: No such file",
            d.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{name}: audit.export: cannot create /nonexistent-folder/"
        )),
        "{out}"
    );
    assert_eq!(out.matches("No such file").count(), 2, "once each: {out}");
    let served = broker(&["serve", "--config", &name], &[])?;
    let err = String::from_utf8_lossy(&served.stderr);
    assert!(!served.status.success(), "{err}");
    assert!(err.contains(&format!("{name}: broker.keys_dir: ")), "{err}");
    assert_eq!(err.matches("No such file").count(), 2, "once each: {err}");

    // A corrupt key file.
    std::fs::create_dir(d.join("keys"))?;
    let pem = d.join("keys/jit-1.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )?;
    std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let (ok, out) = check(&write(d, &config(d, "kind = \"memory\"", ""))?, false, &[])?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("broker.keys_dir: ") && out.contains("not a PKCS#8"),
        "{out}"
    );

    // Fixed: ready, and says what it found.
    std::fs::remove_file(&pem)?;
    generate_keys(&d.join("keys"))?;
    let (ok, out) = check(&write(d, &config(d, "kind = \"memory\"", ""))?, false, &[])?;
    assert!(ok, "{out}");
    assert!(out.contains("broker.keys_dir: keys: 1,"), "{out}");
    assert!(
        out.contains("store and issuers not contacted (--online does)"),
        "{out}"
    );
    Ok(())
}

/// What the compile step already refused is refused by `check-config` too: a missing upstream
/// credential, an issuer URL that is not one.
#[test]
fn check_config_refuses_missing_upstream_credentials_and_bad_issuer_urls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    generate_keys(&d.join("keys"))?;
    let upstream = r#"
[[upstream]]
repositories = ["**"]
url = "https://git.example.com"
credential = { kind = "bearer", token_env = "JIT_TEST_UPSTREAM_TOKEN" }
"#;
    let file = write(d, &config(d, "kind = \"memory\"", upstream))?;
    let (ok, out) = check(&file, false, &[])?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("upstream[0].credential.token_env: environment variable JIT_TEST_UPSTREAM_TOKEN is not set"),
        "{out}"
    );
    let (ok, out) = check(&file, false, &[("JIT_TEST_UPSTREAM_TOKEN", "t0ken")])?;
    assert!(ok, "{out}");
    assert!(!out.contains("t0ken"), "{out}");
    let issuer =
        "[[issuer]]\nname = \"corp\"\nissuer = \"sso.example.com\"\naudience = \"git-jit\"\n";
    let (ok, out) = check(
        &write(d, &config(d, "kind = \"memory\"", issuer))?,
        false,
        &[],
    )?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("issuer[0].issuer: \"sso.example.com\" must be an https:// URL"),
        "{out}"
    );
    Ok(())
}

/// A key the service user cannot read: `check-config` run as that user (as `ExecStartPre`
/// runs it) fails. Run as root, the check drops to `nobody` with `setpriv`.
#[test]
fn a_key_the_service_user_cannot_read_fails_the_check() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    generate_keys(&d.join("keys"))?;
    std::fs::set_permissions(d.join("keys"), std::fs::Permissions::from_mode(0o755))?;
    let file = write(d, &config(d, "kind = \"memory\"", ""))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let is_root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let out = if is_root {
        // The binary must be reachable by `nobody` too (it is, under the target folder).
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin_path(JIT_BROKER)?)
            .arg("check-config")
            .arg(&file)
            .output()?
    } else {
        for key in std::fs::read_dir(d.join("keys"))? {
            std::fs::set_permissions(key?.path(), std::fs::Permissions::from_mode(0o000))?;
        }
        Command::new(bin_path(JIT_BROKER)?)
            .arg("check-config")
            .arg(&file)
            .output()?
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}: broker.keys_dir: ", file.display()))
            && err.contains("Permission denied"),
        "{err}"
    );
    Ok(())
}

#[test]
fn check_config_online_asks_the_store_and_every_issuer() -> Result<()> {
    crate::support::run(async move {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        generate_keys(&d.join("keys"))?;
        let oidc = OidcProvider::start().await?;
        let closed = free_port()?;
        let issuers = format!(
            r#"
[[issuer]]
name = "corp"
issuer = "{}"
audience = "git-jit"

[[issuer]]
name = "gone"
issuer = "http://127.0.0.1:{closed}"
audience = "git-jit"
"#,
            oidc.issuer()
        );
        let store = |url: &str| format!("url = \"{url}\"");

        // The store is down; one issuer answers, the other does not.
        let file = write(
            d,
            &config(d, &store(&format!("redis://127.0.0.1:{closed}")), &issuers),
        )?;
        let name = file.display().to_string();
        let (ok, out) = check(&file, false, &[])?;
        assert!(ok, "offline, nothing is contacted: {out}");
        let (ok, out) = check(&file, true, &[])?;
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!("{name}: store.url: grant store unavailable")),
            "{out}"
        );
        assert!(out.contains(&format!("{name}: issuer \"gone\": http://127.0.0.1:{closed}/.well-known/openid-configuration: ")), "{out}");
        assert!(!out.contains("issuer \"corp\""), "corp answers: {out}");

        // AUTH: a password-protected Redis without the password, then with it (from the
        // environment, as production gives it); the password is never printed.
        let mut redis = RedisServer::start().await?;
        jit_e2e::process::run_checked(Command::new("redis-cli").args([
            "-p",
            &redis.port().to_string(),
            "CONFIG",
            "SET",
            "requirepass",
            "s3cret-pw",
        ]))?;
        let only_corp = issuers
            .split("[[issuer]]\nname = \"gone\"")
            .next()
            .unwrap_or_default();
        let file = write(d, &config(d, &store(&redis.url()), only_corp))?;
        let (ok, out) = check(&file, true, &[])?;
        assert!(!ok, "{out}");
        assert!(
            out.contains("store.url: ") && out.contains("NOAUTH"),
            "{out}"
        );
        let with_password = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port());
        let (ok, out) = check(&file, true, &[("JIT_REDIS_URL", &with_password)])?;
        assert!(ok, "{out}");
        assert!(out.contains("store.url: a Redis primary"), "{out}");
        assert!(
            out.contains("issuer \"corp\": discovery and JWKS fetched"),
            "{out}"
        );
        assert!(!out.contains("s3cret-pw"), "{out}");
        redis.stop()?;

        // A replica given as the store: the broker writes, so it is refused.
        let primary = RedisServer::start().await?;
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &primary.port().to_string(),
        ])
        .await?;
        let (ok, out) = check(
            &write(d, &config(d, &store(&replica.url()), ""))?,
            true,
            &[],
        )?;
        assert!(!ok, "{out}");
        assert!(
            out.contains("store.url: ") && out.contains("read-only replica"),
            "{out}"
        );

        // A Cluster node given as one URL, then the cluster given as a cluster.
        let cluster = RedisCluster::start().await?;
        let node = cluster.urls()[0].clone();
        let (ok, out) = check(&write(d, &config(d, &store(&node), ""))?, true, &[])?;
        assert!(!ok, "{out}");
        assert!(
            out.contains("store.url: ") && out.contains("Redis Cluster node"),
            "{out}"
        );
        let nodes = format!("cluster = {:?}", cluster.urls());
        let (ok, out) = check(&write(d, &config(d, &nodes, ""))?, true, &[])?;
        assert!(ok, "{out}");
        assert!(
            out.contains("store.cluster: a Redis Cluster of 3 masters"),
            "{out}"
        );
        Ok(())
    })
}

/// Regression: `serve` started with an unreachable Redis without a word (only `/readyz`
/// said 503).
#[test]
fn serve_refuses_an_unreachable_store_or_waits_for_it() -> Result<()> {
    crate::support::run(async move {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        generate_keys(&d.join("keys"))?;
        let mut redis = RedisServer::start().await?;
        redis.stop()?;
        let text = config(d, &format!("url = \"{}\"", redis.url()), "");
        let file = write(d, &text)?;
        let name = file.display().to_string();
        let served = broker(&["serve", "--config", &name], &[])?;
        let err = String::from_utf8_lossy(&served.stderr);
        assert!(!served.status.success(), "{err}");
        assert!(
            err.contains(&format!("{name}: store.url: grant store unavailable"))
                && err.contains("--wait-for-store"),
            "{err}"
        );

        // Waiting: the broker logs its countdown, then serves once the store is back.
        let mut cmd = Command::new(bin_path(JIT_BROKER)?);
        cmd.args(["serve", "--wait-for-store", "120", "--config", &name])
            .env_remove("JIT_REDIS_URL");
        let process = ManagedProcess::spawn("jit-broker", cmd, d)?;
        jit_e2e::process::wait_for("the countdown", START_TIMEOUT, || {
            let logs = process.logs();
            async move { Ok(logs.contains("waiting for the store").then_some(())) }
        })
        .await?;
        assert!(
            process.logs().contains("seconds_left="),
            "{}",
            process.logs()
        );
        // Regression: the human log format wrote colour codes into redirected output.
        assert!(!process.logs().contains('\x1b'), "{}", process.logs());
        redis.start_again().await?;
        let port = text
            .split("listen = \"127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let mut process = wait_healthy(
            "jit-broker",
            process,
            &format!("http://127.0.0.1:{port}/healthz"),
        )
        .await
        .map_err(|(e, _)| e)?;
        assert!(
            process.logs().contains("the store answers"),
            "{}",
            process.logs()
        );
        process.terminate(Duration::from_secs(5));
        Ok(())
    })
}

/// Colours only for a terminal, and not even there with `NO_COLOR` (run under a
/// pseudo-terminal with util-linux `script`).
#[test]
fn log_colours_only_on_a_terminal_without_no_color() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    generate_keys(&d.join("keys"))?;
    let closed = free_port()?;
    let file = write(
        d,
        &config(d, &format!("url = \"redis://127.0.0.1:{closed}\""), ""),
    )?;
    let command = format!(
        "{} serve --config {}",
        bin_path(JIT_BROKER)?.display(),
        file.display()
    );
    let on_terminal = |no_color: bool| -> Result<String> {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let coloured = on_terminal(false)?;
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colours: {coloured}"
    );
    assert!(coloured.contains("store.url"), "{coloured}");
    let plain = on_terminal(true)?;
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain}");
    assert!(plain.contains("store.url"), "{plain}");
    Ok(())
}

/// An address already in use is named by its key and the file.
#[test]
fn serve_names_a_listen_address_in_use() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    generate_keys(&d.join("keys"))?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let text = config(d, "kind = \"memory\"", "").replace(
        "listen = \"127.0.0.1:",
        &format!("listen = \"127.0.0.1:{port}\"\n# was: \"127.0.0.1:"),
    );
    let file = write(d, &text)?;
    let served = broker(&["serve", "--config", &file.to_string_lossy()], &[])?;
    let err = String::from_utf8_lossy(&served.stderr);
    assert!(!served.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: broker.listen: cannot listen on 127.0.0.1:{port}",
            file.display()
        )),
        "{err}"
    );
    Ok(())
}
