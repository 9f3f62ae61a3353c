//! The token exchange against real issuers: ID tokens of the npm `oidc-provider` (RS256,
//! `aud` = client id) including a key rotation, and GitHub Actions / GitLab CI shaped tokens
//! judged by the shipped example policies (deploy/policies/*.toml).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::oidc::{OTHER_CLIENT, TEST_CLIENT};
use jit_e2e::{BrokerProcess, CiIssuer, OidcProvider, RedisServer};
use serde_json::{Value, json};

use crate::support::{claims_of, exchange, exchange_raw};

const GITHUB_POLICY: &str = include_str!("../../deploy/policies/github-actions.toml");
const GITLAB_POLICY: &str = include_str!("../../deploy/policies/gitlab-ci.toml");
const KUBERNETES_POLICY: &str = include_str!("../../deploy/policies/kubernetes.toml");

fn sso_config(keys: &Path, redis: &str, issuer: &str) -> String {
    format!(
        r#"
{base}
[[issuer]]
name = "corp"
issuer = "{issuer}"
audience = "{TEST_CLIENT}"
subject_claim = "email"
algorithms = ["RS256"]

[[role]]
name = "dev-read"
issuer = "corp"
claims = {{ groups = "engineering", email = "*@example.com" }}
repositories = ["acme/**"]
actions = ["read"]
"#,
        base = crate::support::broker_base(keys, redis, None),
    )
}

async fn introspect(broker: &str, token: &str) -> Result<Value> {
    Ok(jit_e2e::http_client()
        .post(format!("{broker}/oauth/introspect"))
        .form(&[("token", token)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[test]
fn exchange_of_a_real_oidc_id_token_and_a_wrong_audience() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let op = OidcProvider::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&sso_config(keys.path(), &redis.url(), &op.issuer())).await?;

        let id = op.id_token("alice@example.com", TEST_CLIENT).await?;
        assert_eq!(
            jsonwebtoken::decode_header(&id)?.alg,
            jsonwebtoken::Algorithm::RS256
        );
        let token = exchange(&broker.url(), &id, "repo:acme/api:read").await?;
        let claims = claims_of(&token)?;
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.idp.as_str(),
                claims.role.as_str()
            ),
            ("alice@example.com", "corp", "dev-read")
        );
        assert_eq!(claims.scope.to_string(), "repo:acme/api:read");
        let live = introspect(&broker.url(), &token).await?;
        assert_eq!(live["active"], true, "{live}");

        // Another client's ID token: same issuer, same keys, wrong audience.
        let other = op.id_token("alice@example.com", OTHER_CLIENT).await?;
        let (status, body) = exchange_raw(&broker.url(), &other, "repo:acme/api:read", &[]).await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert_eq!(
            body["error_description"],
            format!("subject_token audience does not include '{TEST_CLIENT}'"),
            "{body}"
        );
        // The verified token grants read only, and only what the role allows.
        let (status, body) = exchange_raw(&broker.url(), &id, "repo:acme/api:write", &[]).await?;
        assert_eq!(
            (status, &body["error_description"]),
            (
                400,
                &Value::from("role 'dev-read' grants read on 'acme/api', not write")
            ),
            "{body}"
        );
        let (status, body) = exchange_raw(&broker.url(), &id, "repo:other/api:read", &[]).await?;
        assert!(status == 400 || status == 403, "{body}");
        assert!(
            !body["error_description"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
        Ok(())
    })
}

#[test]
fn exchange_follows_an_oidc_key_rotation_and_drops_the_old_key() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let mut op = OidcProvider::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&sso_config(keys.path(), &redis.url(), &op.issuer())).await?;

        let old = op.id_token("alice@example.com", TEST_CLIENT).await?;
        exchange(&broker.url(), &old, "repo:acme/api:read").await?;
        op.rotate_keys().await?;
        let new = op.id_token("alice@example.com", TEST_CLIENT).await?;
        let (old_kid, new_kid) = (
            jsonwebtoken::decode_header(&old)?.kid,
            jsonwebtoken::decode_header(&new)?.kid,
        );
        assert_ne!(old_kid, new_kid);

        // The broker re-fetches the JWKS when it meets an unknown kid — at most once per 10 s
        // per issuer, so a token of the new key may wait for that interval to pass.
        let rotated = Instant::now();
        loop {
            let (status, body) =
                exchange_raw(&broker.url(), &new, "repo:acme/api:read", &[]).await?;
            if status == 200 {
                break;
            }
            let why = body["error_description"].as_str().unwrap_or_default();
            assert!(
                why.contains("does not publish"),
                "only an unknown key may delay the new token: {body}"
            );
            assert!(
                rotated.elapsed() < Duration::from_secs(15),
                "the broker never picked up the new key: {body}\n{}",
                broker.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "new key accepted {:.1} s after the rotation",
            rotated.elapsed().as_secs_f64()
        );
        // The refreshed set no longer has the old key.
        let (status, body) = exchange_raw(&broker.url(), &old, "repo:acme/api:read", &[]).await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["error_description"],
            format!(
                "subject_token was signed by key {:?} which issuer 'corp' does not publish",
                old_kid.unwrap_or_default()
            ),
            "{body}"
        );
        Ok(())
    })
}

/// An exchange the policy refused, saying why (`invalid_scope` or `access_denied`).
fn refused((status, why): (u16, String)) {
    assert!(
        (status == 400 || status == 403) && why.contains("role"),
        "expected a policy refusal naming the roles, got {status}: {why}"
    );
}

/// The broker with the example GitHub Actions, GitLab CI and Kubernetes policies appended,
/// their issuer URLs pointed at the CI issuer and their audience at this broker.
fn ci_config(keys: &Path, redis: &str, ci: &CiIssuer) -> String {
    let k8s = ci.platform_issuer("kubernetes");
    let policies = format!("{GITHUB_POLICY}\n{GITLAB_POLICY}\n{KUBERNETES_POLICY}")
        .replace(
            "https://token.actions.githubusercontent.com",
            &ci.platform_issuer("github"),
        )
        .replace("https://gitlab.example.com", &ci.platform_issuer("gitlab"))
        .replace(
            "https://k8s-api.prod.example.com:6443/openid/v1/jwks",
            &format!("{k8s}/jwks"),
        )
        .replace("https://kubernetes.default.svc.cluster.local", &k8s)
        .replace("https://jit.example.com", "{{URL}}");
    format!(
        r#"
{base}
{policies}
"#,
        base = crate::support::broker_base(keys, redis, None),
    )
}

#[test]
fn exchange_ci_tokens_under_the_example_policies_write_only_their_own_repository() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker = BrokerProcess::start(&ci_config(keys.path(), &redis.url(), &ci)).await?;
        let url = broker.url();
        // (status, role, refs) of an exchange.
        let ask = |token: String, scope: &'static str| {
            let url = url.clone();
            async move {
                let (status, body) = exchange_raw(&url, &token, scope, &[]).await?;
                let granted = match body["access_token"].as_str() {
                    Some(t) => {
                        let c = claims_of(t)?;
                        let refs: Vec<String> =
                            c.refs.iter().map(|r| r.as_str().to_owned()).collect();
                        format!("{} {}", c.role, refs.join(" "))
                    }
                    None => body["error_description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                };
                anyhow::Ok((status, granted.trim().to_owned()))
            }
        };

        // GitHub Actions: the production deployment of main in acme/api.
        let gha = |repo: &str, git_ref: &str| {
            // GitHub signs with RS256, the only algorithm the example issuer accepts.
            ci.github_actions(repo)
                .git_ref(git_ref)
                .rs256()
                .aud(&broker.url())
                .claim("repository_owner_id", "1234567")
        };
        let job = gha("acme/api", "refs/heads/main").sign();
        assert_eq!(
            ask(job.clone(), "repo:acme/api:read").await?,
            (200, "gha-read-own".into())
        );
        assert_eq!(
            ask(job.clone(), "repo:acme/api:write").await?,
            (200, "gha-deploy refs/heads/main".into())
        );
        assert_eq!(
            ask(job.clone(), "repo:acme/shared-proto:read").await?,
            (200, "gha-read-shared".into())
        );
        for other in [
            "repo:acme/web:write",
            "repo:acme/web:read",
            "repo:acme/api:read,write",
        ] {
            refused(ask(job.clone(), other).await?);
        }
        // A job on a feature branch reads its repository but cannot write it.
        let feature = gha("acme/api", "refs/heads/feature/x").sign();
        assert_eq!(ask(feature.clone(), "repo:acme/api:read").await?.0, 200);
        refused(ask(feature, "repo:acme/api:write").await?);
        // Another organisation's job (the owner id is pinned, not the name) gets nothing.
        let impostor = ci
            .github_actions("acme/api")
            .rs256()
            .aud(&broker.url())
            .sign();
        refused(ask(impostor, "repo:acme/api:read").await?);
        // A token minted for another audience is refused before any policy.
        let wrong_aud = gha("acme/api", "refs/heads/main")
            .aud("https://elsewhere.example")
            .sign();
        let (status, why) = ask(wrong_aud, "repo:acme/api:read").await?;
        assert_eq!(status, 400, "{why}");
        assert!(why.contains("audience"), "{why}");

        // GitLab CI: a pipeline on the protected main branch of acme/api.
        let gl = |project: &str| ci.gitlab_ci(project).rs256().aud(&broker.url());
        let pipeline = gl("acme/api").sign();
        assert_eq!(
            ask(pipeline.clone(), "repo:acme/api:read,write").await?,
            (200, "gl-push-protected refs/heads/** refs/tags/**".into())
        );
        assert_eq!(
            ask(pipeline.clone(), "repo:acme/api:read").await?,
            (200, "gl-read-own".into())
        );
        refused(ask(pipeline, "repo:acme/web:write").await?);
        let unprotected = gl("acme/api").claim("ref_protected", "false").sign();
        assert_eq!(ask(unprotected.clone(), "repo:acme/api:read").await?.0, 200);
        refused(ask(unprotected, "repo:acme/api:write").await?);
        let outsider = gl("other/api").sign();
        refused(ask(outsider, "repo:other/api:read").await?);

        // Kubernetes: a projected service-account token, whose header has no `typ`.
        let sa = ci.kubernetes_sa("mirror", "git-sync").sign();
        assert_eq!(jsonwebtoken::decode_header(&sa)?.typ, None);
        assert_eq!(
            ask(sa, "repo:mirror/linux:read").await?,
            (200, "k8s-mirror".into())
        );
        // Every platform token above carried `typ: JWT` except this one.
        assert_eq!(
            jsonwebtoken::decode_header(gl("acme/api").sign())?
                .typ
                .as_deref(),
            Some("JWT")
        );
        Ok(())
    })
}

/// What the audit trail of `broker` says, one JSON event per line, read as `admin`.
async fn audit_trail(broker: &str, admin: &str) -> Result<Vec<Value>> {
    let text = jit_e2e::http_client()
        .get(format!("{broker}/v1/audit"))
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

#[test]
fn exchange_refuses_access_tokens_foreign_azp_and_absurd_times_of_a_trusted_issuer() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let config = crate::support::corp_broker(keys.path(), &redis.url(), &ci.issuer(), None);
        let broker = BrokerProcess::start(&config).await?;
        let url = broker.url();
        let alice = || {
            ci.token()
                .subject("alice@example.com")
                .claim("groups", json!(["engineering"]))
        };
        // The same person's identity token is exchanged, with `typ: JWT` or without `typ`.
        for token in [alice().sign(), alice().typ(None).sign()] {
            let (status, body) = exchange_raw(&url, &token, "repo:acme/api:read", &[]).await?;
            assert_eq!(status, 200, "{body}");
        }
        // Tokens the trusted issuer signed, for the broker's audience, that are not identity
        // tokens or not for this client, or whose times are absurd.
        let access_token = |typ: &str| {
            alice()
                .typ(Some(typ))
                .claim("client_id", "git-jit")
                .claim("scope", "openid repo")
        };
        let cases = [
            (
                access_token("at+jwt"),
                r#"subject_token is an OAuth access token (RFC 9068), not an identity token (typ "at+jwt")"#,
            ),
            (
                access_token("application/at+jwt"),
                r#"subject_token is an OAuth access token (RFC 9068), not an identity token (typ "application/at+jwt")"#,
            ),
            (
                alice().typ(Some("logout+jwt")),
                r#"subject_token is a logout token (OpenID Connect Back-Channel Logout), not an identity token (typ "logout+jwt")"#,
            ),
            (
                alice().typ(Some("JOSE")),
                r#"subject_token type "JOSE" is not accepted from issuer 'corp' (accepted: JWT)"#,
            ),
            (
                alice().auds(&["git-jit", "https://api.example.com"]),
                "subject_token has several audiences but no 'azp' naming 'git-jit' (OpenID Connect Core 3.1.3.7)",
            ),
            (
                alice()
                    .auds(&["git-jit", "https://api.example.com"])
                    .claim("azp", "https://api.example.com"),
                r#"subject_token was issued to another client: 'azp' is "https://api.example.com", not 'git-jit'"#,
            ),
            (
                alice().claim("azp", "another-client"),
                r#"subject_token was issued to another client: 'azp' is "another-client", not 'git-jit'"#,
            ),
            (
                alice().claim("exp", 1e300),
                "subject_token 'exp' is beyond the year 9999 (at most 253402300799)",
            ),
            (
                alice().claim("exp", i64::MAX),
                "subject_token 'exp' is beyond the year 9999 (at most 253402300799)",
            ),
            (alice().claim("nbf", -1), "subject_token 'nbf' is negative"),
            (
                alice().claim("auth_time", jit_e2e::now_unix() + 86_400),
                "subject_token was issued in the future ('auth_time')",
            ),
        ];
        let (mut tokens, mut wrong) = (Vec::new(), Vec::new());
        for (builder, why) in &cases {
            let token = builder.sign();
            let (status, body) = exchange_raw(&url, &token, "repo:acme/api:read", &[]).await?;
            let got = (
                status,
                body["error"].as_str(),
                body["error_description"].as_str(),
            );
            if got != (400, Some("invalid_grant"), Some(*why)) {
                wrong.push(format!(
                    "expected {why:?}, got {status} {:?}",
                    got.2.unwrap_or("(granted)")
                ));
            }
            assert!(!body.to_string().contains(&token));
            tokens.push(token);
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // Each refusal is audited like any refused identity, with its reason and no token.
        let admin = ci
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let trail = audit_trail(&url, &admin).await?;
        for (_, why) in &cases {
            assert!(
                trail
                    .iter()
                    .any(|e| e["event"] == "grant.denied" && e["denial"] == *why),
                "no grant.denied event saying {why:?}"
            );
        }
        let text = serde_json::to_string(&trail)?;
        for token in &tokens {
            assert!(
                !text.contains(token.as_str()),
                "a token reached the audit trail"
            );
        }
        // The admin API trusts the same verification: an admin's access token is no identity.
        let admin_access = ci
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .typ(Some("at+jwt"))
            .sign();
        let status = jit_e2e::http_client()
            .get(format!("{url}/v1/audit"))
            .bearer_auth(&admin_access)
            .send()
            .await?
            .status();
        assert_eq!(
            status.as_u16(),
            401,
            "an admin's access token opened the audit trail"
        );
        Ok(())
    })
}
