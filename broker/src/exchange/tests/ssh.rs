//! SSH certificates from the exchange: the same grant as a Bearer token, stored, audited and
//! revocable the same ways; refused cleanly without a CA or with a bad key.

use axum::http::StatusCode;
use jit_proto::api::TOKEN_TYPE_SSH_CERTIFICATE;
use ssh_key::Certificate;
use ssh_key::private::{Ed25519Keypair, KeypairData};

use super::*;
use crate::store::RevokeTarget;

fn public_key() -> String {
    let pair = Ed25519Keypair::from_seed(&[9; 32]);
    ssh_key::PrivateKey::new(KeypairData::Ed25519(pair), "alice@laptop")
        .expect("key")
        .public_key()
        .to_openssh()
        .expect("line")
}

fn ssh_form(token: &str, scope: &str, key: &str) -> String {
    exchange_form(
        token,
        scope,
        &[
            ("requested_token_type", TOKEN_TYPE_SSH_CERTIFICATE),
            ("public_key", key),
            ("reason", "fix CI"),
            ("ttl", "30m"),
        ],
    )
}

#[tokio::test]
async fn certificate_is_the_grant_stored_audited_and_revocable() {
    let w = world().await;
    let (status, json, _) = post(
        &w,
        ssh_form(&alice(&w), "repo:acme/api:write", &public_key()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["issued_token_type"], TOKEN_TYPE_SSH_CERTIFICATE);
    assert_eq!(json["token_type"], "N_A");
    assert_eq!(json["expires_in"], 1800);
    let text = json["access_token"].as_str().expect("certificate");
    let cert = Certificate::from_openssh(text).expect("an OpenSSH certificate");
    assert_eq!(json["jti"], cert.key_id());
    assert_eq!(cert.valid_principals(), ["git-jit", "repo:acme/api:write"]);
    assert_eq!(
        (cert.valid_after(), cert.valid_before()),
        (NOW as u64, NOW as u64 + 1800)
    );
    let claims = w.state.signer.verify_ssh(text, NOW).expect("verifies");
    assert_eq!(claims.role, "dev-write");
    assert_eq!(claims.sub, "alice@example.com");
    assert_eq!(
        claims.refs.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        ["refs/heads/feature/**"]
    );
    assert!(matches!(
        w.state.store.check(&claims, NOW * 1000).await,
        Ok(GrantStatus::Live(_))
    ));

    let events = audit(&w).await;
    let issued: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event == "grant.issued")
        .collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].jti.as_deref(), Some(cert.key_id()));
    assert_eq!(issued[0].data["credential"], "ssh-certificate");
    assert!(
        issued[0].data["ssh_key"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:"))
    );
    let trail = serde_json::to_string(&events).expect("json");
    let body = text.split(' ').nth(1).expect("base64");
    assert!(
        !trail.contains(body),
        "the certificate is not in the audit trail"
    );

    w.state
        .store
        .revoke(&RevokeTarget::Jti(claims.jti.clone()), NOW * 1000 + 1)
        .await
        .expect("revoke");
    assert!(matches!(
        w.state.store.check(&claims, NOW * 1000 + 2).await,
        Ok(GrantStatus::Revoked)
    ));
}

#[tokio::test]
async fn refused_without_a_key_with_a_bad_key_or_without_a_ca() {
    let w = world().await;
    let t = alice(&w);
    let only_type = exchange_form(
        &t,
        "repo:acme/api:read",
        &[("requested_token_type", TOKEN_TYPE_SSH_CERTIFICATE)],
    );
    let (status, json, _) = post(&w, only_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("public_key"),
        "{json}"
    );

    let garbage = "ssh-ed25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, json, _) = post(&w, ssh_form(&t, "repo:acme/api:read", garbage)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json["error_description"],
        "public_key does not decode as an OpenSSH public key"
    );

    let ring = crate::keys::KeyRing::new(vec![crate::keys::SigningKey::generate().expect("key").0])
        .expect("ring");
    let mut state = w.state.clone();
    state.signer = crate::token::TokenSigner::new(
        Arc::new(ring),
        state.signer.issuer().to_owned(),
        state.signer.audience().to_owned(),
    );
    let (status, json, _) = send(
        app_from(&state, [10, 0, 0, 7]),
        ssh_form(&t, "repo:acme/api:read", &public_key()),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("no SSH CA"),
        "{json}"
    );
    let grants = w
        .store
        .inner
        .list(&GrantFilter::default(), NOW * 1000)
        .await
        .expect("list");
    assert!(grants.is_empty(), "a refused request stores nothing");
}
