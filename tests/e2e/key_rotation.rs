//! The key rotation of docs/operations.md, step by step against a real broker: add a key and
//! restart, the new key signs, tokens of the old key keep verifying (and are listed in the
//! JWKS) while it stays; removed, its tokens stop verifying — which is why the runbook waits
//! for the longest token lifetime before removing it.

use anyhow::{Context, Result};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use serde_json::json;

use crate::support::{exchange, introspect};

/// The `kid` in a JWT's header.
fn kid(token: &str) -> Result<String> {
    jsonwebtoken::decode_header(token)?.kid.context("no kid")
}

/// The `kid`s the broker publishes.
async fn published(http: &reqwest::Client, broker: &str) -> Result<Vec<String>> {
    let jwks: serde_json::Value = http
        .get(format!("{broker}/.well-known/jwks.json"))
        .send()
        .await?
        .json()
        .await?;
    Ok(jwks["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn key_rotation_runbook() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = crate::support::corp_broker(keys.path(), &redis.url(), &ci.issuer(), None);
        let mut broker = BrokerProcess::start(&text).await?;
        let http = jit_e2e::http_client();
        // The same address across restarts.
        let url = broker.url();
        let token = || async {
            let id = ci
                .token()
                .subject("alice@example.com")
                .claim("groups", json!(["engineering"]))
                .sign();
            exchange(&url, &id, "repo:acme/api:read").await
        };
        let active = |t: String| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let (_, body) = introspect(&http, &url, &t).await?;
                anyhow::Ok(body["active"] == json!(true))
            }
        };
        let old_token = token().await?;
        let old_kid = kid(&old_token)?;
        assert_eq!(published(&http, &url).await?, vec![old_kid.clone()]);

        // 1. Add a key, restart: the new key signs, the old one still verifies.
        generate_keys(keys.path())?;
        broker.start_again().await?;
        let new_token = token().await?;
        let new_kid = kid(&new_token)?;
        assert_ne!(new_kid, old_kid, "the newest key signs");
        let kids = published(&http, &url).await?;
        assert!(
            kids.contains(&old_kid) && kids.contains(&new_kid),
            "{kids:?}"
        );
        assert!(
            active(old_token.clone()).await?,
            "old tokens keep verifying"
        );
        assert!(active(new_token.clone()).await?);

        // 2. Remove the old key, restart: only the new key is published, its tokens verify,
        //    and a token of the removed key no longer does (so wait out its lifetime first).
        for file in std::fs::read_dir(keys.path())? {
            let path = file?.path();
            let text = std::fs::read_to_string(&path)?;
            let ring =
                jit_broker::keys::SigningKey::from_pkcs8(&pem_der(&text).context("a PEM key")?)
                    .map_err(anyhow::Error::msg)?;
            if ring.kid() == old_kid {
                std::fs::remove_file(&path)?;
            }
        }
        broker.start_again().await?;
        assert_eq!(published(&http, &url).await?, vec![new_kid.clone()]);
        assert!(active(new_token).await?);
        assert!(
            !active(old_token).await?,
            "the removed key's tokens stop verifying"
        );
        assert_eq!(kid(&token().await?)?, new_kid);
        Ok(())
    })
}

/// The DER of a PKCS#8 PEM.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}
