//! The harness's CI issuer: platform-shaped tokens that verify, negative variants that do not,
//! and the GitHub Actions ID-token request endpoint.

use anyhow::Result;
use jit_e2e::CiIssuer;
use jit_e2e::ci_issuer::DEFAULT_AUDIENCE;

use crate::support::verify_with_jwks;

#[test]
fn ci_issuer_tokens_verify_and_negative_variants_do_not() -> Result<()> {
    crate::support::run(async move {
        let ci = CiIssuer::start().await?;
        let http = jit_e2e::http_client();

        // Discovery per platform points at that platform's JWKS.
        let gh_iss = ci.platform_issuer("github");
        let disc: serde_json::Value = http
            .get(format!("{gh_iss}/.well-known/openid-configuration"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(disc["issuer"], gh_iss.as_str());
        let gh_jwks = disc["jwks_uri"].as_str().expect("jwks_uri").to_owned();

        let gh = ci
            .github_actions("acme/api")
            .git_ref("refs/heads/release")
            .sign();
        let claims = verify_with_jwks(&gh, &gh_jwks, &gh_iss, DEFAULT_AUDIENCE).await?;
        assert_eq!(claims["sub"], "repo:acme/api:ref:refs/heads/release");
        assert_eq!(claims["repository"], "acme/api");
        assert_eq!(claims["repository_owner"], "acme");
        assert_eq!(claims["ref_type"], "branch");
        assert_eq!(
            claims["job_workflow_ref"],
            "acme/api/.github/workflows/deploy.yml@refs/heads/release"
        );

        let rs = ci.github_actions("acme/api").rs256().aud("broker").sign();
        verify_with_jwks(&rs, &gh_jwks, &gh_iss, "broker").await?;

        let gl_iss = ci.platform_issuer("gitlab");
        let gl = ci
            .gitlab_ci("group/sub/proj")
            .git_ref("refs/tags/v1.2.3")
            .sign();
        let claims =
            verify_with_jwks(&gl, &format!("{gl_iss}/jwks"), &gl_iss, DEFAULT_AUDIENCE).await?;
        assert_eq!(
            claims["sub"],
            "project_path:group/sub/proj:ref_type:tag:ref:v1.2.3"
        );
        assert_eq!(claims["namespace_path"], "group/sub");
        assert_eq!(claims["ref_protected"], "true");

        let k8s_iss = ci.platform_issuer("kubernetes");
        let k8s = ci.kubernetes_sa("ci", "deployer").sign();
        let claims =
            verify_with_jwks(&k8s, &format!("{k8s_iss}/jwks"), &k8s_iss, DEFAULT_AUDIENCE).await?;
        assert_eq!(claims["sub"], "system:serviceaccount:ci:deployer");
        assert_eq!(claims["kubernetes.io"]["namespace"], "ci");

        // Negative variants.
        let bad = [
            (
                "unpublished key",
                ci.github_actions("acme/api").unpublished_key().sign(),
            ),
            (
                "expired",
                ci.github_actions("acme/api").expires_in(-600).sign(),
            ),
            (
                "wrong aud",
                ci.github_actions("acme/api").aud("someone-else").sign(),
            ),
            (
                "alg none",
                ci.github_actions("acme/api")
                    .key(jit_e2e::SigningKey::None)
                    .sign(),
            ),
            (
                "HS256",
                ci.github_actions("acme/api")
                    .key(jit_e2e::SigningKey::Hs256(b"secret".to_vec()))
                    .sign(),
            ),
            (
                "unknown kid",
                ci.github_actions("acme/api").kid(Some("nope")).sign(),
            ),
        ];
        for (what, token) in bad {
            assert!(
                verify_with_jwks(&token, &gh_jwks, &gh_iss, DEFAULT_AUDIENCE)
                    .await
                    .is_err(),
                "{what} token verified"
            );
        }

        // Rotation without overlap: the old kid disappears from the JWKS.
        let old = ci.github_actions("acme/api").sign();
        ci.rotate_es256_key(false)?;
        assert!(
            verify_with_jwks(&old, &gh_jwks, &gh_iss, DEFAULT_AUDIENCE)
                .await
                .is_err()
        );
        let fetches = ci.jwks_fetches();
        assert!(fetches >= 1);
        Ok(())
    })
}

#[test]
fn ci_issuer_serves_github_actions_id_token_requests() -> Result<()> {
    crate::support::run(async move {
        let ci = CiIssuer::start().await?;
        let http = jit_e2e::http_client();
        let url = ci.actions_token_request_url();

        let refused = http.get(format!("{url}&audience=x")).send().await?;
        assert_eq!(refused.status(), 401);
        let refused = http
            .get(format!("{url}&audience=x"))
            .bearer_auth("wrong")
            .send()
            .await?;
        assert_eq!(refused.status(), 401);

        ci.set_actions_token(&ci.github_actions("acme/web").git_ref("refs/heads/dev"));
        let body: serde_json::Value = http
            .get(format!("{url}&audience=https://broker.example"))
            .bearer_auth(ci.actions_token_request_token())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = body["value"].as_str().expect("value");
        let gh_iss = ci.platform_issuer("github");
        let claims = verify_with_jwks(
            token,
            &format!("{gh_iss}/jwks"),
            &gh_iss,
            "https://broker.example",
        )
        .await?;
        assert_eq!(claims["sub"], "repo:acme/web:ref:refs/heads/dev");
        Ok(())
    })
}
