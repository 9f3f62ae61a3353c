//! The harness's oidc-provider: browserless ID tokens, CIBA, the device flow approved over
//! HTTP, and key rotation.

use anyhow::Result;
use jit_e2e::OidcProvider;
use jit_e2e::oidc::{CLI_CLIENT, OTHER_CLIENT, TEST_CLIENT, TEST_CLIENT_ES256};

use crate::support::verify_with_jwks;

#[test]
fn oidc_id_tokens_verify_against_the_provider_jwks() -> Result<()> {
    crate::support::run(async move {
        let mut op = OidcProvider::start().await?;
        let jwks_uri = format!("{}/jwks", op.issuer());

        let token = op.id_token("alice@example.com", TEST_CLIENT).await?;
        let claims = verify_with_jwks(&token, &jwks_uri, &op.issuer(), TEST_CLIENT).await?;
        assert_eq!(claims["sub"], "alice@example.com");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["name"], "Alice");
        assert_eq!(claims["groups"], serde_json::json!(["engineering"]));

        // The public CLI client (PKCE, no secret) and an ES256 client.
        let cli = op.id_token("bob", CLI_CLIENT).await?;
        let claims = verify_with_jwks(&cli, &jwks_uri, &op.issuer(), CLI_CLIENT).await?;
        assert_eq!(claims["email"], "bob@example.com");
        let es = op.id_token("carol-admin", TEST_CLIENT_ES256).await?;
        assert_eq!(
            jsonwebtoken::decode_header(&es)?.alg,
            jsonwebtoken::Algorithm::ES256
        );
        let claims = verify_with_jwks(&es, &jwks_uri, &op.issuer(), TEST_CLIENT_ES256).await?;
        assert_eq!(
            claims["groups"],
            serde_json::json!(["engineering", "git-jit-admins"])
        );

        // Another client's token has another audience.
        let other = op.id_token("alice@example.com", OTHER_CLIENT).await?;
        assert!(
            verify_with_jwks(&other, &jwks_uri, &op.issuer(), TEST_CLIENT)
                .await
                .is_err()
        );

        // CIBA, with a refresh token.
        let ciba = op
            .ciba_tokens(
                "dave@example.com",
                TEST_CLIENT,
                "openid email groups offline_access",
            )
            .await?;
        let id = ciba.id_token.expect("CIBA id_token");
        let claims = verify_with_jwks(&id, &jwks_uri, &op.issuer(), TEST_CLIENT).await?;
        assert_eq!(claims["sub"], "dave@example.com");
        assert!(
            ciba.refresh_token.is_some(),
            "offline_access gives a refresh token"
        );

        // After rotation on the same port, old tokens no longer verify; new ones do.
        let port = op.port();
        op.rotate_keys().await?;
        assert_eq!(op.port(), port);
        assert!(
            verify_with_jwks(&token, &jwks_uri, &op.issuer(), TEST_CLIENT)
                .await
                .is_err()
        );
        let fresh = op.id_token("alice@example.com", TEST_CLIENT).await?;
        verify_with_jwks(&fresh, &jwks_uri, &op.issuer(), TEST_CLIENT).await?;
        Ok(())
    })
}

#[test]
fn oidc_device_flow_is_approved_over_http() -> Result<()> {
    crate::support::run(async move {
        let op = OidcProvider::start().await?;
        let http = jit_e2e::http_client();
        let disc = op.discovery().await?;
        let device_endpoint = disc["device_authorization_endpoint"]
            .as_str()
            .expect("device endpoint");
        let token_endpoint = disc["token_endpoint"].as_str().expect("token endpoint");

        // RFC 8628 §3.1, as `git jit login` would do it.
        let auth: serde_json::Value = http
            .post(device_endpoint)
            .form(&[
                ("client_id", CLI_CLIENT),
                ("scope", "openid email groups offline_access"),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let device_code = auth["device_code"].as_str().expect("device_code");
        let user_code = auth["user_code"].as_str().expect("user_code");
        assert!(auth["verification_uri"].as_str().is_some());

        let poll = || async {
            let resp = http
                .post(token_endpoint)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code),
                    ("client_id", CLI_CLIENT),
                ])
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await?;
            anyhow::Ok((status, body))
        };
        let (status, body) = poll().await?;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "authorization_pending");

        op.approve_device(user_code, "erin@example.com").await?;

        let (status, body) = poll().await?;
        assert_eq!(status, 200, "{body}");
        let id_token = body["id_token"].as_str().expect("id_token");
        let claims = verify_with_jwks(
            id_token,
            &format!("{}/jwks", op.issuer()),
            &op.issuer(),
            CLI_CLIENT,
        )
        .await?;
        assert_eq!(claims["sub"], "erin@example.com");
        let refresh = body["refresh_token"]
            .as_str()
            .expect("refresh_token with offline_access");

        // The refresh token yields a new ID token for the same person.
        let refreshed = op.refresh(CLI_CLIENT, refresh).await?;
        let again = refreshed.id_token.expect("id_token on refresh");
        let claims = verify_with_jwks(
            &again,
            &format!("{}/jwks", op.issuer()),
            &op.issuer(),
            CLI_CLIENT,
        )
        .await?;
        assert_eq!(claims["sub"], "erin@example.com");

        // A wrong code is refused by the verification page.
        let wrong = op.device_authorization(CLI_CLIENT, "openid").await?;
        assert!(
            op.approve_device("BCDF-GHJK", "erin@example.com")
                .await
                .is_err()
        );
        assert!(
            op.poll_device_token(CLI_CLIENT, &wrong.device_code)
                .await?
                .is_none()
        );
        Ok(())
    })
}
