//! Small helpers shared by the end-to-end tests, and [`run`], the runner every test goes
//! through.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

/// How long one end-to-end test may run: `JIT_E2E_TEST_TIMEOUT_SECS`, or 240 s — under the
/// 300 s after which nextest ends a test (`.config/nextest.toml`), so this clearer failure
/// comes first there, and the only limit under plain `cargo test`.
pub fn test_timeout() -> Duration {
    let secs = std::env::var("JIT_E2E_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    Duration::from_secs(secs)
}

/// Runs an end-to-end test body within [`test_timeout`]. See [`run_within`].
pub fn run<F>(body: F) -> Result<()>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    run_within(test_timeout(), body)
}

/// Runs `body` on a fresh current-thread runtime on its own thread and fails the test with a
/// clear message if it has not finished within `limit`. The limit holds even when the body
/// blocks its thread (a synchronous call stuck on the network), which a
/// `tokio::time::timeout` in the body could not catch. A body that times out is left behind;
/// its servers die with the test process (see `jit_e2e::process`).
pub fn run_within<F>(limit: Duration, body: F) -> Result<()>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    // libtest names each test's thread after the test.
    let name = std::thread::current()
        .name()
        .unwrap_or("end-to-end test")
        .to_owned();
    let (done, result) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the test's runtime")
                .and_then(|rt| rt.block_on(body));
            // Fails only if the test already timed out and stopped listening.
            let _ = done.send(outcome);
        })
        .context("starting the test's thread")?;
    match result.recv_timeout(limit) {
        Ok(outcome) => outcome,
        Err(RecvTimeoutError::Timeout) => panic!(
            "{name} did not finish within {limit:?} (JIT_E2E_TEST_TIMEOUT_SECS sets the limit)"
        ),
        // The body panicked: fail with its panic, as if it had run on this thread.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => anyhow::bail!("{name} ended without a result"),
        },
    }
}

/// Verifies `token` against the JWKS at `jwks_uri` (picked by `kid`), checking `iss` and `aud`,
/// and returns its claims.
pub async fn verify_with_jwks(token: &str, jwks_uri: &str, iss: &str, aud: &str) -> Result<Value> {
    let jwks: JwkSet = jit_e2e::http_client()
        .get(jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    verify_with_set(token, &jwks, iss, aud)
}

/// Like [`verify_with_jwks`] with a JWKS already fetched.
pub fn verify_with_set(token: &str, jwks: &JwkSet, iss: &str, aud: &str) -> Result<Value> {
    let header = decode_header(token)?;
    let kid = header.kid.context("token without kid")?;
    let jwk = jwks
        .find(&kid)
        .with_context(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk)?;
    let alg = match header.alg {
        a @ (Algorithm::RS256 | Algorithm::ES256) => a,
        other => anyhow::bail!("unexpected alg {other:?}"),
    };
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[iss]);
    validation.set_audience(&[aud]);
    Ok(decode::<Value>(token, &key, &validation)?.claims)
}

/// `POST /oauth/token` (RFC 8693) with `subject_token` for `scope`, plus extension
/// parameters (`role`, `reason`, `ttl`, `refs`). Returns the status and the JSON body.
pub async fn exchange_raw(
    broker: &str,
    subject_token: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> Result<(u16, Value)> {
    let mut form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject_token),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        ),
        ("scope", scope),
    ];
    form.extend_from_slice(extra);
    let r = jit_e2e::http_client()
        .post(format!("{broker}/oauth/token"))
        .form(&form)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// A Redis, a fresh signing key and a broker on them ([`broker_base`], nothing trusted).
pub async fn plain_broker() -> Result<(
    jit_e2e::RedisServer,
    tempfile::TempDir,
    jit_e2e::BrokerProcess,
)> {
    let redis = jit_e2e::RedisServer::start().await?;
    let keys = tempfile::tempdir()?;
    jit_e2e::bins::generate_keys(keys.path())?;
    let broker =
        jit_e2e::BrokerProcess::start(&broker_base(keys.path(), &redis.url(), None)).await?;
    Ok((redis, keys, broker))
}

/// Signs a token for `scope` with the broker's own keys (in `keys`) and stores its grant, as
/// an exchange would.
pub async fn issue(
    keys: &std::path::Path,
    broker_url: &str,
    store: &jit_broker::store::redis::RedisStore,
    scope: &str,
) -> Result<String> {
    use jit_broker::clock::Clock as _;
    use jit_broker::store::GrantStore as _;
    let signer = jit_broker::token::TokenSigner::new(
        std::sync::Arc::new(jit_broker::keys::KeyRing::load_dir(keys)?),
        broker_url,
        "git-jit",
    );
    let now = jit_broker::clock::SystemClock.now_ms();
    let claims = jit_proto::Claims {
        iss: broker_url.to_owned(),
        aud: "git-jit".into(),
        sub: "alice@example.com".into(),
        idp: "corp".into(),
        iat: now / 1000,
        nbf: now / 1000,
        exp: now / 1000 + 600,
        jti: jit_broker::token::new_jti()?,
        scope: jit_proto::Scope::parse(scope)?,
        refs: vec![],
        role: "dev".into(),
        reason: None,
        req: None,
    };
    store
        .put(&jit_broker::store::Grant::from_claims(&claims, now), now)
        .await?;
    Ok(signer.sign(&claims)?.expose().to_owned())
}

/// `POST /oauth/introspect` of `token` from loopback: the status and the JSON answer.
pub async fn introspect(
    http: &reqwest::Client,
    broker: &str,
    token: &str,
) -> Result<(u16, serde_json::Value)> {
    let r = http
        .post(format!("{broker}/oauth/introspect"))
        .form(&[("token", token)])
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// Like [`exchange_raw`], failing unless the broker grants; returns the broker token.
pub async fn exchange(broker: &str, subject_token: &str, scope: &str) -> Result<String> {
    let (status, body) = exchange_raw(broker, subject_token, scope, &[]).await?;
    anyhow::ensure!(
        status == 200,
        "exchange for {scope} failed ({status}): {body}"
    );
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the exchange answer")
}

/// `POST /v1/revoke` as `admin` (an ID token the broker's `[admin]` accepts).
pub async fn revoke(
    broker: &str,
    admin: &str,
    by: &str,
    value: &str,
    reason: &str,
) -> Result<Value> {
    Ok(jit_e2e::http_client()
        .post(format!("{broker}/v1/revoke"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"by": by, "value": value, "reason": reason}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// One HTTP/1.1 `GET` written byte for byte to 127.0.0.1:`port`, so the request target
/// reaches the server exactly as given (HTTP client libraries normalise `..` and `//`).
/// Returns the status and the whole raw answer (head and body).
pub async fn raw_get(
    port: u16,
    target: &str,
    authorization: Option<&str>,
) -> Result<(u16, String)> {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: git/jit-e2e-raw\r\nConnection: close\r\n"
    );
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    raw_request(port, &request).await
}

/// Writes `request` byte for byte to 127.0.0.1:`port` and reads until the server closes;
/// the status and the whole raw answer.
pub async fn raw_request(port: u16, request: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .context("no complete answer within 10 s")??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:?}"))?;
    Ok((status, answer))
}

/// Runs `git-jit --broker <broker> admin …` with `token` (an admin's ID token) in
/// `JIT_ADMIN_TOKEN`, in a fresh home.
pub fn git_jit_admin(broker: &str, token: &str, args: &[&str]) -> Result<std::process::Output> {
    let home = tempfile::tempdir()?;
    Ok(
        std::process::Command::new(jit_e2e::bin_path(jit_e2e::bins::GIT_JIT)?)
            .arg("--broker")
            .arg(broker)
            .arg("admin")
            .args(["--token-env", "JIT_ADMIN_TOKEN"])
            .args(args)
            .env("JIT_ADMIN_TOKEN", token)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(std::process::Stdio::null())
            .output()?,
    )
}

/// Fails if `text` (`what`: a command's stderr, a log) contains anything shaped like a JWT:
/// tokens must never be printed or logged.
pub fn assert_no_jwt(what: &str, text: &str) {
    for (i, _) in text.match_indices("eyJ") {
        let tail: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        assert!(
            tail.matches('.').count() < 2 || tail.len() < 40,
            "{what} contains a token: {}…",
            &tail[..tail.len().min(24)]
        );
    }
}

/// The `Authorization` header value for `token` sent as a Basic password.
pub fn basic(token: &str) -> String {
    format!("Basic {}", base64_std(&format!("x-jit:{token}")))
}

fn base64_std(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The claims of a broker token, unverified (for a test's look at `jti`, `refs`, `role`).
pub fn claims_of(token: &str) -> Result<jit_proto::Claims> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The `[broker]` and `[store]` sections of a test broker on `redis` signing with the keys in
/// `keys`, with `BrokerProcess`'s placeholders; `public_url` defaults to the broker's own URL
/// (replicas share one). Tests append their issuers, roles, admins and upstreams.
pub fn broker_base(keys: &std::path::Path, redis: &str, public_url: Option<&str>) -> String {
    format!(
        r#"
[broker]
listen = "{{{{LISTEN}}}}"
public_url = "{public_url}"
keys_dir = "{keys}"

[store]
url = "{redis}"
"#,
        public_url = public_url.unwrap_or("{{URL}}"),
        keys = keys.display(),
    )
}

/// A broker trusting `issuer` as `corp`: engineers (`groups` has `engineering`) read `acme/*`
/// under role `dev`; `groups` = `security` are admins. `public_url` as in [`broker_base`].
pub fn corp_broker(
    keys: &std::path::Path,
    redis: &str,
    issuer: &str,
    public_url: Option<&str>,
) -> String {
    format!(
        r#"{base}
[[issuer]]
name = "corp"
issuer = "{issuer}"
audience = "git-jit"

[[role]]
name = "dev"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/*"]
actions = ["read"]

[[admin.identity]]
issuer = "corp"
claims = {{ groups = "security" }}
"#,
        base = broker_base(keys, redis, public_url),
    )
}

/// The `[[issuer]]` "corp" of the real oidc-provider at `sso` (subjects are email addresses)
/// and the `[login]` that `git jit login` uses with it.
pub fn sso_issuer(sso: &str) -> String {
    let client = jit_e2e::oidc::CLI_CLIENT;
    format!(
        r#"
[[issuer]]
name = "corp"
issuer = "{sso}"
audience = "{client}"
subject_claim = "email"
client_id = "{client}"
algorithms = ["RS256"]

[login]
issuer = "corp"
"#
    )
}
