//! A broker process on a real Redis fails closed while the store is away, says why, and
//! recovers by itself when it is back.

use std::time::Duration;

use anyhow::Result;
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::store::GrantStore;
use jit_broker::store::redis::{RedisStore, Topology};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, RedisServer};

use crate::support::{introspect, issue};

#[test]
fn broker_fails_closed_while_redis_is_down_and_recovers() -> Result<()> {
    crate::support::run(async move {
        let mut redis = RedisServer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker = BrokerProcess::start(&crate::support::broker_base(
            keys.path(),
            &redis.url(),
            None,
        ))
        .await?;
        let store = RedisStore::new(Topology::Single(redis.url()), "jit", 1000);
        let http = jit_e2e::http_client();
        let url = broker.url();

        let token = issue(keys.path(), &url, &store, "repo:acme/api:read").await?;
        let (status, body) = introspect(&http, &url, &token).await?;
        assert_eq!(
            (status, body["active"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
        assert_eq!(
            http.get(format!("{url}/readyz"))
                .send()
                .await?
                .status()
                .as_u16(),
            200
        );

        redis.stop()?;
        let (status, body) = introspect(&http, &url, &token).await?;
        assert_eq!(
            status, 503,
            "never 'active' while the store is away: {body}"
        );
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or("")
                .contains("unavailable"),
            "{body}"
        );
        assert_ne!(body["active"], serde_json::Value::Bool(true));
        let ready = http.get(format!("{url}/readyz")).send().await?;
        assert_eq!(ready.status().as_u16(), 503);
        let text = ready.text().await?;
        assert!(text.contains("unavailable"), "{text}");
        // The store's own error (its address, its words) is logged, not answered.
        assert_eq!(text, "not ready: the grant store is unavailable\n");

        redis.start_again().await?;
        let mut ready = false;
        for _ in 0..50 {
            if http
                .get(format!("{url}/readyz"))
                .send()
                .await?
                .status()
                .as_u16()
                == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ready,
            "the broker did not recover by itself:\n{}",
            broker.logs()
        );
        // The test's own connection learns of the restart on its first call, like any client.
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The restarted Redis is empty: the old grant is unknown (inactive), a new one is live.
        let (status, body) = introspect(&http, &url, &token).await?;
        assert_eq!((status, body), (200, serde_json::json!({"active": false})));
        let fresh = issue(keys.path(), &url, &store, "repo:acme/api:read").await?;
        let (status, body) = introspect(&http, &url, &fresh).await?;
        assert_eq!(
            (status, body["active"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
        Ok(())
    })
}

#[test]
fn introspection_answers_only_inactive_for_anything_not_live() -> Result<()> {
    crate::support::run(async move {
        let (redis, keys, broker) = crate::support::plain_broker().await?;
        let store = RedisStore::new(Topology::Single(redis.url()), "jit", 1000);
        let http = jit_e2e::http_client();
        let url = broker.url();

        let live = issue(keys.path(), &url, &store, "repo:acme/api:read").await?;
        let (_, body) = introspect(&http, &url, &live).await?;
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "repo:acme/api:read");
        assert_eq!(body["sub"], "alice@example.com");
        assert_eq!(body["token_type"], "Bearer");

        // Revoked: inactive, and nothing else is said.
        let claims: serde_json::Value = body;
        let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
        store
            .revoke(
                &jit_broker::store::RevokeTarget::Jti(jti),
                SystemClock.now_ms(),
            )
            .await?;
        let mut forged = live.clone();
        forged.push('x');
        let other_keys = tempfile::tempdir()?;
        generate_keys(other_keys.path())?;
        let foreign = issue(other_keys.path(), &url, &store, "repo:acme/api:read").await?;
        for token in [
            live.as_str(),
            forged.as_str(),
            foreign.as_str(),
            "garbage",
            "",
            "a.b.c",
        ] {
            let (status, body) = introspect(&http, &url, token).await?;
            assert_eq!(
                (status, body),
                (200, serde_json::json!({"active": false})),
                "token {token:.12}"
            );
        }
        Ok(())
    })
}
