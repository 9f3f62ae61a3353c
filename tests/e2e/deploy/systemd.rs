//! deploy/systemd/git-jit-broker.service: `systemd-analyze verify` accepts it, and its exact
//! `ExecStartPre` and `ExecStart` lines, run as its `User=` (created by
//! deploy/systemd/git-jit.sysusers) in the folders its `*Directory=` lines name, with the
//! example config and the keys installed as the unit's header says, serve `/readyz` and write
//! the audit files and the export where the example config puts them.
//!
//! There is no systemd to start it with on a build machine, so the test does what systemd
//! would, in a private mount namespace: overlays over /etc, /usr/local/bin, /var/lib and
//! /var/log (the host's files are never touched), the service's folders owned by its user,
//! the root file system read-only but for those folders (`ProtectSystem=strict`), a private
//! /tmp, the unit's environment, umask and descriptor limit, then `setpriv` to the user.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use jit_e2e::RedisServer;
use jit_e2e::bins::{JIT_BROKER, bin_path};
use jit_e2e::process::{ManagedProcess, find_program, free_port, wait_healthy};

use super::{example, example_listening_on, is_root, read, writable_paths};

const UNIT: &str = "deploy/systemd/git-jit-broker.service";
const SYSUSERS: &str = "deploy/systemd/git-jit.sysusers";

/// The `[Service]` section's settings; repeated keys keep every value in order.
fn service_section(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    out
}

fn one<'a>(s: &'a BTreeMap<String, Vec<String>>, key: &str) -> Result<&'a str> {
    match s.get(key).map(Vec::as_slice) {
        Some([v]) => Ok(v),
        other => anyhow::bail!("{UNIT}: expected one {key}=, found {other:?}"),
    }
}

/// The unit, the sysusers file and the example config agree: the service user is the one
/// sysusers creates, and every folder the example writes is a folder systemd makes writable.
#[test]
fn systemd_unit_agrees_with_sysusers_and_the_example_config() -> Result<()> {
    let s = service_section(&read(UNIT)?);
    let (_, config) = example()?;
    let user = one(&s, "User")?;
    ensure!(
        !s.contains_key("DynamicUser") || one(&s, "DynamicUser")? == "no",
        "a static user (the keys are given to its group)"
    );
    let sysusers = read(SYSUSERS)?;
    ensure!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", user])),
        "{SYSUSERS} creates user {user}"
    );
    assert_eq!(one(&s, "ProtectSystem")?, "strict");
    let state = Path::new("/var/lib").join(one(&s, "StateDirectory")?);
    let logs = Path::new("/var/log").join(one(&s, "LogsDirectory")?);
    for path in writable_paths(&config)? {
        ensure!(
            path.starts_with(&state) || path.starts_with(&logs),
            "{} (written by the example config) is outside StateDirectory and LogsDirectory",
            path.display()
        );
    }
    let conf = Path::new("/etc").join(one(&s, "ConfigurationDirectory")?);
    ensure!(
        config.broker.keys_dir.starts_with(&conf),
        "keys under {}",
        conf.display()
    );
    ensure!(
        one(&s, "ExecStart")?.ends_with(&format!("--config {}/broker.toml", conf.display())),
        "ExecStart reads the config from ConfigurationDirectory"
    );
    Ok(())
}

/// What systemd and the install steps do, then the unit's own command lines, as a script for
/// `unshare --mount`. Its arguments come in the environment (see the test).
const SCRIPT: &str = r#"set -eu
ov() { mkdir -p "$WORK/ov/$2/u" "$WORK/ov/$2/w"
       mount -t overlay overlay -o "lowerdir=$1,upperdir=$WORK/ov/$2/u,workdir=$WORK/ov/$2/w" "$1"; }
ov /etc etc; ov /usr/local/bin bin; ov /var/lib lib; ov /var/log log
# The install steps of the unit's header.
install -m 0755 "$BROKER_BIN" /usr/local/bin/jit-broker
install -m 0644 "$SYSUSERS" /etc/git-jit.sysusers.conf
systemd-sysusers /etc/git-jit.sysusers.conf
install -d -m "$CONF_MODE" "/etc/$CONF_DIR"
install -m 0644 "$WORK/broker.toml" "/etc/$CONF_DIR/broker.toml"
(umask 077; printf 'JIT_REDIS_URL=%s\n' "$REDIS_URL" >"/etc/$CONF_DIR/broker.env")
/usr/local/bin/jit-broker keys generate --dir "/etc/$CONF_DIR/keys"
chgrp -R "$SVC_GROUP" "/etc/$CONF_DIR/keys"
chmod 0750 "/etc/$CONF_DIR/keys"
chmod 0640 "/etc/$CONF_DIR/keys/"*
# What systemd does for StateDirectory= and LogsDirectory=.
install -d -o "$SVC_USER" -g "$SVC_GROUP" -m "$STATE_MODE" "/var/lib/$STATE_DIR"
install -d -o "$SVC_USER" -g "$SVC_GROUP" -m "$LOGS_MODE" "/var/log/$LOGS_DIR"
echo "== systemd-analyze verify"
systemd-analyze verify "$UNIT_FILE"
# ProtectSystem=strict: everything read-only but the service's folders; PrivateTmp=.
mount --bind "/var/lib/$STATE_DIR" "/var/lib/$STATE_DIR"
mount --bind "/var/log/$LOGS_DIR" "/var/log/$LOGS_DIR"
for m in /etc /usr/local/bin /var/lib /var/log; do mount -o remount,bind,ro "$m"; done
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777 tmpfs /tmp
# Environment=, EnvironmentFile=, UMask=, LimitNOFILE=.
export $UNIT_ENV
set -a; . "$ENV_FILE"; set +a
umask "$UNIT_UMASK"
ulimit -n "$UNIT_NOFILE"
as_user() { setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups --no-new-privs -- "$@"; }
echo "== ExecStartPre as $(as_user id -un)"
as_user $EXEC_START_PRE
echo "== ExecStart"
exec setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups --no-new-privs -- $EXEC_START
"#;

#[test]
fn systemd_unit_serves_as_its_unprivileged_user() -> Result<()> {
    crate::support::run(async {
        if !is_root() {
            eprintln!(
                "SKIPPED systemd_unit_serves_as_its_unprivileged_user: needs root (a mount \
                 namespace with overlays stands in for systemd); scripts/test runs as root"
            );
            return Ok(());
        }
        for tool in ["systemd-analyze", "systemd-sysusers", "unshare", "setpriv"] {
            find_program(tool)?;
        }
        let s = service_section(&read(UNIT)?);
        let (text, config) = example()?;
        let redis = RedisServer::start().await?;
        let work = tempfile::Builder::new()
            .prefix("jit-e2e-systemd-")
            .tempdir()?;
        let port = free_port()?;
        std::fs::write(
            work.path().join("broker.toml"),
            example_listening_on(&text, &config, &format!("127.0.0.1:{port}"))?,
        )?;
        let exec_start = one(&s, "ExecStart")?;
        let exec_start_pre = one(&s, "ExecStartPre")?;
        for line in [exec_start, exec_start_pre] {
            ensure!(line.starts_with('/'), "a plain command line: {line}");
        }
        let env_file = one(&s, "EnvironmentFile")?.trim_start_matches('-');
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
            .env("WORK", work.path())
            .env("BROKER_BIN", bin_path(JIT_BROKER)?)
            .env("SYSUSERS", super::repo().join(SYSUSERS))
            .env("UNIT_FILE", super::repo().join(UNIT))
            .env("REDIS_URL", redis.url())
            .env("SVC_USER", one(&s, "User")?)
            .env("SVC_GROUP", one(&s, "Group")?)
            .env("CONF_DIR", one(&s, "ConfigurationDirectory")?)
            .env("CONF_MODE", one(&s, "ConfigurationDirectoryMode")?)
            .env("STATE_DIR", one(&s, "StateDirectory")?)
            .env("STATE_MODE", one(&s, "StateDirectoryMode")?)
            .env("LOGS_DIR", one(&s, "LogsDirectory")?)
            .env("LOGS_MODE", one(&s, "LogsDirectoryMode")?)
            .env("UNIT_ENV", one(&s, "Environment")?)
            .env("ENV_FILE", env_file)
            .env("UNIT_UMASK", one(&s, "UMask")?)
            .env("UNIT_NOFILE", one(&s, "LimitNOFILE")?)
            .env("EXEC_START_PRE", exec_start_pre)
            .env("EXEC_START", exec_start);
        let process = ManagedProcess::spawn("systemd-unit", cmd, work.path())?;
        let base = format!("http://127.0.0.1:{port}");
        let mut process = wait_healthy(
            "jit-broker (systemd unit)",
            process,
            &format!("{base}/readyz"),
        )
        .await
        .map_err(|(e, _)| e)?;
        let log = process.logs();
        let verify = log
            .split("== systemd-analyze verify\n")
            .nth(1)
            .and_then(|rest| rest.split("== ").next())
            .context("systemd-analyze verify ran")?;
        assert_eq!(verify.trim(), "", "systemd-analyze verify complained");
        ensure!(log.contains("== ExecStartPre as git-jit\n"), "{log}");

        // A refused request is an audit event: it reaches the files and the export, written
        // by the service user where the example config says.
        super::audited_refusal(&base).await?;
        let uid = {
            let passwd = std::fs::read_to_string(work.path().join("ov/etc/u/passwd"))?;
            passwd
                .lines()
                .find_map(|l| l.strip_prefix("git-jit:x:"))
                .and_then(|rest| rest.split(':').next())
                .context("git-jit in the overlay's passwd")?
                .parse::<u32>()?
        };
        assert_ne!(uid, 0);
        let upper = |p: &Path, base: &str, layer: &str| -> Result<std::path::PathBuf> {
            Ok(work
                .path()
                .join("ov")
                .join(layer)
                .join("u")
                .join(p.strip_prefix(base)?))
        };
        let paths = writable_paths(&config)?;
        let audit_dir = upper(&paths[0], "/var/lib", "lib")?;
        let export = upper(
            Path::new(config.audit.export.as_deref().context("export")?),
            "/var/log",
            "log",
        )?;
        super::audit_files_of(&audit_dir, uid).with_context(|| log.clone())?;
        let exported = std::fs::read_to_string(&export)?;
        ensure!(exported.contains("\"access.denied\""), "export: {exported}");
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(&export)?.uid(), uid);
        // The audit files verify, and so does the export file (the same events) on its own.
        for (flag, path) in [("--dir", &audit_dir), ("--file", &export)] {
            let verified = jit_e2e::process::run_checked(
                Command::new(bin_path(JIT_BROKER)?)
                    .args(["audit", "verify", flag])
                    .arg(path),
            )?;
            ensure!(
                verified.contains("audit chain intact"),
                "{flag}: {verified}"
            );
        }
        process.kill();
        Ok(())
    })
}
