//! The bodies of `jit-broker`'s subcommands, as library functions the binary calls and tests
//! can run: `serve`, `dev`, `check-config`, `explain`, `keys generate`, `audit verify`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jit_proto::Scope;
use tokio::net::TcpListener;

use crate::clock::{Clock as _, SystemClock};
use crate::compile::{self, AuditSetup};
use crate::config::Config;
use crate::exchange::{parse_refs, parse_ttl};
use crate::gateway::{Gateway, demo};
use crate::keys::KeyRing;
use crate::policy::Request;
use crate::policy::explain::{explain as policy_explain, identity_from_claims};
use crate::preflight;
use crate::recorder::sink::SinkTarget;
use crate::recorder::verify;
use crate::runtime::AdminRuntime;
use crate::state::AppState;

/// What `explain` is asked.
#[derive(Debug, Clone, Default)]
pub struct ExplainArgs {
    /// The configuration file.
    pub config: PathBuf,
    /// A JSON file with the identity's claims.
    pub claims: PathBuf,
    /// The scope asked for.
    pub scope: String,
    /// The role asked for.
    pub role: Option<String>,
    /// The lifetime asked for.
    pub ttl: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
    /// Space-separated ref patterns.
    pub refs: Option<String>,
    /// The `[[issuer]]` name.
    pub issuer: Option<String>,
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

/// Binds `listen` (and `server.metrics_listen`, when set) and serves `state` until
/// `shutdown`; then accepts nothing more and lets requests in flight finish, for at most
/// `server.shutdown_drain_secs`. `listen_key` names where `listen` came from in errors.
pub async fn serve_on(
    listen: SocketAddr,
    listen_key: &str,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("{listen_key}: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, issuer = %state.settings.public_url, "broker listening");
    let metrics_listener = match state.server.metrics_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .with_context(|| format!("server.metrics_listen: cannot listen on {at}"))?;
            tracing::info!(addr = %l.local_addr()?, "serving /metrics (not on the main listener)");
            Some(l)
        }
        None => None,
    };
    tracing::info!(
        "serving /oauth/token, /oauth/introspect, /v1/grants, /v1/revoke, /v1/audit, /.well-known/jwks.json, /.well-known/oauth-authorization-server, /healthz, /readyz, {}/authz and the Git gateway (/<repo>.git/...)",
        if metrics_listener.is_some() {
            ""
        } else {
            "/metrics, "
        }
    );
    // One shutdown for both listeners; from it, requests in flight get the drain time.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let drain = std::time::Duration::from_secs(state.server.shutdown_drain_secs);
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(crate::http::run_metrics(
            l,
            state.clone(),
            wait(stopped.clone()),
        ))
    });
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            drain_secs = drain.as_secs(),
            "no new connections; requests in flight may finish"
        );
        let _ = stop.send(true);
    });
    let served = crate::http::run(listener, state, wait(stopped.clone()));
    let drained = async {
        wait(stopped).await;
        tokio::time::sleep(drain).await;
    };
    let served = tokio::select! {
        served = served => {
            tracing::info!("stopped: every connection is closed");
            served.context("server failed")
        }
        () = drained => {
            // Dropping the server closes the connections still open.
            tracing::warn!(
                drain_secs = drain.as_secs(),
                "stopped: the drain time is over, connections still open are closed"
            );
            Ok(())
        }
    };
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served
}

/// `jit-broker serve --config FILE`: the checks of `check-config` first (each failure names
/// the file and key), then the store must answer (now, or within `wait_for_store`).
pub async fn serve(file: &Path, wait_for_store: Option<std::time::Duration>) -> anyhow::Result<()> {
    let compiled = compile::load(file)?;
    let checked = preflight::files(&compiled, file);
    anyhow::ensure!(checked.is_ok(), "{}", checked.problems_text());
    let listen = compiled.listen;
    let store = compiled.store.clone();
    let admin = AdminRuntime::start().context("cannot start the admin runtime")?;
    // Opened with the admin runtime current: the webhook deliveries it starts run there.
    let state = admin
        .enter(|| AppState::open(compiled))
        .with_context(|| format!("{}", file.display()))?
        .with_admin_runtime(admin);
    let found = preflight::store_ready(&*state.store, &store, file, wait_for_store).await?;
    tracing::info!(store = %found, "the store answers");
    // Binding `broker.listen` or `server.metrics_listen` can still fail: name the file.
    serve_on(listen, "broker.listen", state, shutdown_signal())
        .await
        .with_context(|| file.display().to_string())
}

/// `jit-broker dev`: the state, and the lines to log, for a development broker on `listen`
/// serving bare repositories under `repos`, writing its audit files into `audit`.
pub fn dev_state(
    listen: SocketAddr,
    repos: &Path,
    audit: &Path,
    user: &str,
) -> anyhow::Result<AppState> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "dev mode listens on loopback only, not {listen}"
    );
    let demo = demo::create(repos)
        .with_context(|| format!("cannot create the demo repository in {}", repos.display()))?;
    let replica = format!("dev-{}", std::process::id());
    let setup = AuditSetup {
        sink: SinkTarget::File {
            dir: audit.to_path_buf(),
            replica: replica.clone(),
            rotate_bytes: 16 << 20,
        },
        replica_given: true,
        replica,
        checkpoint_interval: std::time::Duration::from_secs(60),
    };
    let state = AppState::dev(&format!("http://{listen}"), user)?
        .with_gateway(Gateway::dir(repos))
        .with_durable_audit(&setup, None)?;
    tracing::info!(dir = %audit.display(), "audit files (verify: jit-broker audit verify --dir DIR)");
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
             dev-read (any repo, read) and dev-write (demo/**, read and write, reason required)",
            dev.url()
        );
    }
    Ok(state)
}

/// The repositories folder of `jit-broker dev`: `repos` as given, else `git-jit/dev-repos` in
/// the user's data directory (`$XDG_DATA_HOME`, else `~/.local/share`) — never a shared
/// temporary directory, where another local user could plant a folder with a hook that runs
/// on the next push. A missing folder is created 0700; an existing one must not be open to
/// other users.
pub fn dev_repos(
    repos: Option<PathBuf>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<PathBuf> {
    let dir = match repos {
        Some(dir) => dir,
        None => dev_data(&env)
            .context("neither XDG_DATA_HOME nor HOME is set; pass --repos DIR")?
            .join("dev-repos"),
    };
    private_dir(&dir)?;
    Ok(dir)
}

/// The audit folder of `jit-broker dev`: `git-jit/dev-audit` in the user's data directory,
/// else `git-jit-dev-audit-<pid>` in the temporary directory (private, or refused).
pub fn dev_audit(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    let dir = match dev_data(&env) {
        Some(data) => data.join("dev-audit"),
        None => std::env::temp_dir().join(format!("git-jit-dev-audit-{}", std::process::id())),
    };
    private_dir(&dir)?;
    Ok(dir)
}

/// `git-jit` in the user's data directory (`$XDG_DATA_HOME`, else `~/.local/share`).
fn dev_data(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("XDG_DATA_HOME")
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local").join("share")))
        .map(|d| d.join("git-jit"))
}

/// Creates `dir` 0700 when missing; refuses it when group or others may use it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        return Ok(());
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", dir.display());
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is open to other users (mode {mode:o}): another user could plant a hook that runs on push; \
         use a private folder (chmod 700 {}) or another --repos",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// `jit-broker dev`.
pub async fn dev(listen: SocketAddr, repos: Option<PathBuf>, user: &str) -> anyhow::Result<()> {
    let repos = dev_repos(repos, |k| std::env::var(k).ok())?;
    // Each dev broker starts a new trail (its store is in memory): a folder per run.
    let run = format!(
        "run-{}-{}",
        time::OffsetDateTime::now_utc().unix_timestamp(),
        std::process::id()
    );
    let audit = dev_audit(|k| std::env::var(k).ok())?.join(run);
    let admin = AdminRuntime::start().context("cannot start the admin runtime")?;
    let state = dev_state(listen, &repos, &audit, user)?.with_admin_runtime(admin);
    serve_on(listen, "--listen", state, shutdown_signal()).await
}

/// `[server.tls]` loads as `serve` loads it: both files readable, PEM, the key the
/// certificate's. The HTTP floor owns TLS, so this check lives here, beside `serve`.
fn check_tls(report: &mut preflight::Report, file: &Path, tls: &crate::config::TlsConfig) {
    match crate::http::tls::ReloadableCert::load(tls) {
        Ok(cert) => {
            let until = cert
                .not_after()
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "an unreadable date".into());
            report.check(
                file,
                "server.tls",
                Ok(format!("certificate and key load; valid until {until}")),
            );
        }
        Err(crate::http::tls::TlsError::File { key, path, problem }) => {
            report.check(
                file,
                &format!("server.tls.{key}"),
                Err(format!("{path}: {problem}")),
            );
        }
        Err(crate::http::tls::TlsError::Pair(why)) => {
            report.check(file, "server.tls", Err(why));
        }
    }
}

/// `jit-broker check-config FILE [--online]`: the one compile step `serve` uses, then what
/// `serve` will open (keys, audit files); `online` also asks the store and every issuer. The
/// lines of what is ready and the summary line, or every problem found.
pub async fn check_config(file: &Path, online: bool) -> anyhow::Result<String> {
    let compiled = compile::load(file)?;
    let mut report = preflight::files(&compiled, file);
    if let Some(tls) = &compiled.server.tls {
        check_tls(&mut report, file, tls);
    }
    if online {
        let store = crate::state::open_store(&compiled.store)
            .map_err(|e| anyhow::anyhow!("{}: store: {e}", file.display()))?;
        let reached = preflight::online(&compiled, &*store, file).await;
        report.ready.extend(reached.ready);
        report.problems.extend(reached.problems);
    }
    anyhow::ensure!(report.is_ok(), "{}", report.problems_text());
    let mut out: String = report
        .ready
        .iter()
        .map(|line| format!("{}: {line}\n", file.display()))
        .collect();
    if !online {
        out.push_str(&format!(
            "{}: store and issuers not contacted (--online does)\n",
            file.display()
        ));
    }
    out.push_str(&format!(
        "{}: ok ({} issuers, {} roles)",
        file.display(),
        compiled.issuers,
        compiled.policy.roles().len()
    ));
    Ok(out)
}

/// `jit-broker keys generate --dir DIR`: the new key's path and kid.
pub fn keys_generate(dir: &Path) -> anyhow::Result<String> {
    let (path, kid) = KeyRing::generate_into(dir, time::OffsetDateTime::now_utc())?;
    Ok(format!("{} kid={kid}", path.display()))
}

/// `jit-broker keys generate --ssh`: a new SSH CA key in `dir/ssh`; its path and fingerprint.
pub fn keys_generate_ssh(dir: &Path) -> anyhow::Result<String> {
    let ssh = dir.join(crate::keys::ssh::SSH_DIR);
    let (path, fingerprint) =
        crate::keys::SshCa::generate_into(&ssh, time::OffsetDateTime::now_utc())?;
    Ok(format!("{} {fingerprint}", path.display()))
}

/// What `audit verify` is asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    /// The broker configuration: its store (when no files are given), its keys, and its
    /// store's head to compare the files' end with.
    pub config: Option<PathBuf>,
    /// Audit folders or files (of one or several replicas).
    pub paths: Vec<PathBuf>,
    /// A JWKS file (the broker's `/.well-known/jwks.json`) to check checkpoint signatures.
    pub jwks: Option<PathBuf>,
}

/// Events read per page from the store.
const VERIFY_PAGE: usize = 5000;

/// `jit-broker audit verify`: checks the files given, or else the store named by the
/// configuration, event by event; returns the report lines.
pub async fn audit_verify(args: &VerifyArgs) -> anyhow::Result<String> {
    let state = match &args.config {
        Some(config) => Some(
            AppState::open_store_only(compile::load(config)?)
                .with_context(|| format!("{}", config.display()))?,
        ),
        None => None,
    };
    let jwks = match &args.jwks {
        Some(file) => Some(load_jwks(file)?),
        None => None,
    };
    let keys = |kid: &str, message: &[u8], sig: &str| -> Option<bool> {
        if let Some(jwks) = &jwks {
            let key = jwks.get(kid)?;
            return Some(
                jsonwebtoken::crypto::verify(sig, message, key, jsonwebtoken::Algorithm::EdDSA)
                    .unwrap_or(false),
            );
        }
        let (ring, _) = state.as_ref()?;
        crate::recorder::key_ring_verifies(ring, kid, message, sig)
    };
    if !args.paths.is_empty() {
        let heads = match &state {
            Some((_, store)) => Some(verify::chain_heads(&**store).await?),
            None => None,
        };
        return Ok(verify::verify_replica_files(
            &args.paths,
            &keys,
            heads.as_ref(),
        )?);
    }
    let Some((_, store)) = &state else {
        anyhow::bail!("give --config, or audit folders or files (--dir, --file)");
    };
    Ok(verify::verify_store(&**store, &keys, VERIFY_PAGE).await?)
}

/// The Ed25519 keys of a JWKS file, by `kid`.
fn load_jwks(
    file: &Path,
) -> anyhow::Result<std::collections::HashMap<String, jsonwebtoken::DecodingKey>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JWK set", file.display()))?;
    let mut keys = std::collections::HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .with_context(|| format!("{}: key {kid}", file.display()))?;
        keys.insert(kid, key);
    }
    Ok(keys)
}

/// `jit-broker explain`: pure, no runtime needed. The report, and whether it grants.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<(String, bool)> {
    let cfg = Config::load(&args.config)?;
    let text = std::fs::read_to_string(&args.claims)
        .with_context(|| format!("cannot read {}", args.claims.display()))?;
    let claims_map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object", args.claims.display()))?;
    let scope = &args.scope;
    let request = Request {
        scope: Scope::parse(scope).map_err(|e| anyhow::anyhow!("--scope {scope:?}: {e}"))?,
        role: args.role.clone(),
        ttl: args
            .ttl
            .as_deref()
            .map(parse_ttl)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?,
        reason: args.reason.clone(),
        refs: parse_refs(args.refs.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("--refs: {e}"))?,
    };
    let identity = identity_from_claims(&cfg, claims_map, args.issuer.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.claims.display()))?;
    let answer =
        policy_explain(&cfg, &identity, &request, SystemClock.now()).map_err(anyhow::Error::msg)?;
    Ok((answer.report, answer.granted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    const CONFIG: &str = r#"
[broker]
listen = "127.0.0.1:0"
public_url = "https://jit.example.com"
keys_dir = "keys"

[store]
kind = "memory"

[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "git-jit"

[[role]]
name = "read"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]
"#;

    #[test]
    fn check_config_loads_the_tls_certificate_as_serve_does() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("broker.toml");
        let keys = dir.path().join("keys");
        keys_generate(&keys).expect("key");
        let (cert, key) = (dir.path().join("b.crt"), dir.path().join("b.key"));
        let config = format!(
            "{}\n[server.tls]\ncert = {cert:?}\nkey = {key:?}\n",
            CONFIG.replace("keys_dir = \"keys\"", &format!("keys_dir = {keys:?}"))
        );
        std::fs::write(&file, config).expect("write");
        let check = |file: &Path| {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(check_config(file, false))
        };
        let err = check(&file).expect_err("no certificate").to_string();
        assert!(err.contains("broker.toml: server.tls.cert:"), "{err}");
        let pair = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["broker.test".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        std::fs::write(&cert, params.self_signed(&pair).expect("cert").pem()).expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let err = check(&file).expect_err("bad key").to_string();
        assert!(err.contains("broker.toml: server.tls.key:"), "{err}");
        assert!(
            !err.contains("not a key"),
            "the key file's bytes were shown: {err}"
        );
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&key, other.serialize_pem()).expect("write");
        let err = check(&file)
            .expect_err("a key of another certificate")
            .to_string();
        assert!(err.contains("does not belong to the certificate"), "{err}");
        std::fs::write(&key, pair.serialize_pem()).expect("write");
        let out = check(&file).expect("ok");
        assert!(
            out.contains("server.tls: certificate and key load; valid until 2031-01-02T00:00:00Z"),
            "{out}"
        );
    }

    #[test]
    fn check_config_compiles_and_reports() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("broker.toml");
        let keys = dir.path().join("keys");
        keys_generate(&keys).expect("key");
        std::fs::write(
            &file,
            CONFIG.replace("keys_dir = \"keys\"", &format!("keys_dir = {keys:?}")),
        )
        .expect("write");
        let check = |file: &Path| {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(check_config(file, false))
        };
        let out = check(&file).expect("ok");
        assert!(out.ends_with(": ok (1 issuers, 1 roles)"), "{out}");
        std::fs::write(
            &file,
            CONFIG.replace("issuer = \"corp\"\nrepo", "issuer = \"x\"\nrepo"),
        )
        .expect("write");
        let err = check(&file).expect_err("bad role issuer").to_string();
        assert!(err.contains("broker.toml: role"), "{err}");
    }

    #[test]
    fn explain_reports_and_grants() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, CONFIG).expect("write");
        let claims = dir.path().join("claims.json");
        std::fs::write(
            &claims,
            r#"{"iss":"https://sso.example.com","sub":"alice"}"#,
        )
        .expect("write");
        let mut args = ExplainArgs {
            config: file,
            claims,
            scope: "repo:acme/api:read".into(),
            ..Default::default()
        };
        let (report, granted) = explain(&args).expect("explains");
        assert!(granted, "{report}");
        args.scope = "repo:other/api:read".into();
        let (report, granted) = explain(&args).expect("explains");
        assert!(!granted, "{report}");
    }

    #[test]
    fn keys_generate_then_audit_verify_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let out = keys_generate(&dir.path().join("keys")).expect("generates");
        assert!(out.contains(" kid="), "{out}");
        let mut a = AuditEvent::new("grant.issued", 1);
        a.seq = 1;
        a.hash = crate::audit::chain_hash(&a);
        let mut b = AuditEvent::new("access.allowed", 2);
        b.seq = 2;
        b.prev = a.hash.clone();
        b.hash = crate::audit::chain_hash(&b);
        let lines = [&a, &b]
            .iter()
            .map(|e| serde_json::to_string(e).expect("json") + "\n")
            .collect::<String>();
        let file = dir.path().join("audit.jsonl");
        std::fs::write(&file, &lines).expect("write");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let args = VerifyArgs {
            paths: vec![file.clone()],
            ..Default::default()
        };
        let report = rt.block_on(audit_verify(&args)).expect("intact");
        assert!(
            report.starts_with(
                "audit chain intact: 2 events, seq 1..=2, 0 checkpoints\nno checkpoint"
            ),
            "{report}"
        );
        std::fs::write(
            &file,
            lines.replace("access.allowed", "access.denied") + "\n",
        )
        .expect("write");
        assert!(rt.block_on(audit_verify(&args)).is_err());
    }

    /// Regression: dev mode used (and created) `git-jit-dev/repos` in the shared temporary
    /// directory, and reused one another user had planted there.
    #[test]
    fn dev_repositories_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = tempfile::tempdir().expect("dir");
        let h = home.path().to_string_lossy().into_owned();
        let env = |k: &str| (k == "HOME").then(|| h.clone());
        let dir = dev_repos(None, env).expect("default");
        assert_eq!(dir, home.path().join(".local/share/git-jit/dev-repos"));
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{mode:o}");
        // A folder others may write into is refused, named, with what to do.
        let planted = home.path().join("planted");
        std::fs::create_dir(&planted).expect("dir");
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = dev_repos(Some(planted.clone()), env).expect_err("open folder");
        assert!(err.to_string().contains("open to other users"), "{err}");
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(
            dev_repos(Some(planted.clone()), env).expect("private"),
            planted
        );
        assert!(dev_repos(None, |_| None).is_err(), "no HOME, no default");
    }
}
