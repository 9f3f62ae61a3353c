//! Redis over TLS with an ACL user: a real `redis-server` listening only on `--tls-port`, its
//! certificate issued by a CA the test makes, the default user off. The store's shared suite
//! passes over it; without the CA, without credentials or with a wrong password, nothing
//! works; a broker process given `store.ca_file` and the URL in `JIT_REDIS_URL` serves.

use std::sync::Arc;

use anyhow::Result;
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::{GrantStore, suite};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisTls};
use serde_json::json;

fn with_ca(redis: &RedisTls, over: Topology) -> Result<Topology> {
    Ok(Topology::Tls {
        ca_pem: Arc::new(std::fs::read(redis.ca_file())?),
        over: Box::new(over),
    })
}

#[test]
fn shared_suite_on_redis_over_tls_with_an_acl_user() -> Result<()> {
    crate::support::run(async move {
        jit_e2e::install_crypto_provider();
        let redis = RedisTls::start("jit", "s3cret-acl").await?;
        let topology = with_ca(&redis, Topology::Single(redis.url()))?;
        crate::store_redis::run_suite(topology).await;
        Ok(())
    })
}

#[test]
fn redis_over_tls_refuses_the_wrong_ca_no_user_and_a_wrong_password() -> Result<()> {
    crate::support::run(async move {
        jit_e2e::install_crypto_provider();
        let redis = RedisTls::start("jit", "s3cret-acl").await?;
        let g = suite::grant("tls-1", "alice", "acme/api", "dev", "corp", 600);
        let now = jit_broker::clock::Clock::now_ms(&jit_broker::clock::SystemClock);
        let wrong_password = redis.url().replace("s3cret-acl", "guess");
        for (what, topology) in [
            (
                "the system's roots (the test CA is not among them)",
                Topology::Single(redis.url()),
            ),
            (
                "no user",
                with_ca(&redis, Topology::Single(redis.anonymous_url()))?,
            ),
            (
                "a wrong password",
                with_ca(&redis, Topology::Single(wrong_password.clone()))?,
            ),
        ] {
            let store = RedisStore::new(topology, "refused", 10);
            let e = store
                .put(&g, now)
                .await
                .expect_err(&format!("{what}: refused"));
            let text = e.to_string();
            assert!(!text.contains("s3cret-acl"), "{what}: {text}");
            assert!(!text.contains("guess"), "{what}: {text}");
        }
        let store = RedisStore::new(with_ca(&redis, Topology::Single(redis.url()))?, "ok", 10);
        store.put(&g, now).await?;
        Ok(())
    })
}

#[test]
fn a_broker_exchanges_on_redis_over_tls_with_an_acl_user() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisTls::start("jit", "s3cret-acl").await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let config =
            crate::support::corp_broker(keys.path(), "rediss://unused", &idp.issuer(), None)
                .replace(
                    "[store]\n",
                    &format!("[store]\nca_file = \"{}\"\n", redis.ca_file().display()),
                );
        let url = redis.url();
        let broker = BrokerProcess::start_with_env(&config, &[("JIT_REDIS_URL", &url)]).await?;
        let ready = jit_e2e::http_client()
            .get(format!("{}/readyz", broker.url()))
            .send()
            .await?;
        assert_eq!(ready.status().as_u16(), 200, "{}", broker.logs());
        let alice = idp
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let token = crate::support::exchange(&broker.url(), &alice, "repo:acme/api:read").await?;
        let introspected: serde_json::Value = jit_e2e::http_client()
            .post(format!("{}/oauth/introspect", broker.url()))
            .form(&[("token", token.as_str())])
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(introspected["active"], true, "{introspected}");
        assert!(
            !broker.logs().contains("s3cret-acl"),
            "the Redis password never reaches the logs"
        );
        Ok(())
    })
}
