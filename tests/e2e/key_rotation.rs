//! The key rotation of docs/operations.md, step by step against a real broker: stage a new
//! key (published, verifying, not yet signing), promote it (it signs; tokens of the old key
//! keep verifying), remove the old key (its tokens stop verifying — which is why the runbook
//! waits for the longest token lifetime before removing it).

use std::path::{Path, PathBuf};
use std::process::Command;

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

        // 1. Stage a new key that sorts first: every replica restarted with it verifies its
        //    tokens, while the old key still signs.
        let staging = tempfile::tempdir()?;
        generate_keys(staging.path())?;
        let (made, new_kid) = key_files(staging.path())?.remove(0);
        let staged = keys
            .path()
            .join(format!("jit-00000000T000000Z-{}.pem", &new_kid[..8]));
        std::fs::rename(&made, &staged)?;
        broker.start_again().await?;
        assert_eq!(kid(&token().await?)?, old_kid, "the old key still signs");
        let kids = published(&http, &url).await?;
        assert!(
            kids.contains(&old_kid) && kids.contains(&new_kid),
            "{kids:?}"
        );

        // 2. Promote it: named by the time now (as `keys generate` names keys), it is the
        //    newest and signs; tokens of the old key keep verifying.
        let now = jit_e2e::process::run_checked(
            Command::new("date").args(["-u", "+%Y%m%dT%H%M%S.%6NZ"]),
        )?;
        let promoted = keys
            .path()
            .join(format!("jit-{}-{}.pem", now.trim(), &new_kid[..8]));
        std::fs::rename(&staged, &promoted)?;
        broker.start_again().await?;
        let new_token = token().await?;
        assert_eq!(kid(&new_token)?, new_kid, "the newest key signs");
        assert!(
            active(old_token.clone()).await?,
            "old tokens keep verifying"
        );
        assert!(active(new_token.clone()).await?);

        // 3. Remove the old key, restart: only the new key is published, its tokens verify,
        //    and a token of the removed key no longer does (so wait out its lifetime first).
        for (path, kid) in key_files(keys.path())? {
            if kid == old_kid {
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

/// The key files of `dir` and their `kid`s, by name.
fn key_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    use base64::Engine as _;
    let mut files = Vec::new();
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        let body: String = std::fs::read_to_string(&path)?
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body)?;
        let key = jit_broker::keys::SigningKey::from_pkcs8(&der).map_err(anyhow::Error::msg)?;
        files.push((path, key.kid().to_owned()));
    }
    files.sort();
    Ok(files)
}
