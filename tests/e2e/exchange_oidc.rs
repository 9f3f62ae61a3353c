//! The token exchange against real issuers: ID tokens of the npm `oidc-provider` (RS256,
//! `aud` = client id) including a key rotation, and GitHub Actions / GitLab CI shaped tokens
//! judged by the shipped example policies (deploy/policies/*.toml).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::oidc::{OTHER_CLIENT, TEST_CLIENT};
use jit_e2e::{BrokerProcess, CiIssuer, OidcProvider, RedisServer};
use serde_json::Value;

use crate::support::{claims_of, exchange, exchange_raw};

const GITHUB_POLICY: &str = include_str!("../../deploy/policies/github-actions.toml");
const GITLAB_POLICY: &str = include_str!("../../deploy/policies/gitlab-ci.toml");

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

/// The broker with the example GitHub Actions and GitLab CI policies appended, their issuer
/// URLs pointed at the CI issuer and their audience at this broker.
fn ci_config(keys: &Path, redis: &str, ci: &CiIssuer) -> String {
    let policies = format!("{GITHUB_POLICY}\n{GITLAB_POLICY}")
        .replace(
            "https://token.actions.githubusercontent.com",
            &ci.platform_issuer("github"),
        )
        .replace("https://gitlab.example.com", &ci.platform_issuer("gitlab"))
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
        Ok(())
    })
}
