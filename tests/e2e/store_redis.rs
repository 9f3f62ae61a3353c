//! The grant store's shared suite against real Redis: a single `redis-server` and a 3-node
//! Redis Cluster, plus what only Redis can show (key TTLs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::{GrantStatus, GrantStore, suite};
use jit_e2e::{RedisCluster, RedisServer};

async fn run_suite(topology: Topology) {
    let n = Arc::new(AtomicU32::new(0));
    // Real time: Redis expires grant keys by their TTLs, on its own clock.
    suite::run_all(&suite::SuiteTime::Real, |retention| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let topology = topology.clone();
        async move {
            Box::new(RedisStore::new(topology, format!("suite{i}"), 1).with_retention(retention))
                as Box<dyn GrantStore>
        }
    })
    .await;
}

#[test]
fn shared_suite_on_single_redis() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        run_suite(Topology::Single(redis.url())).await;
        Ok(())
    })
}

#[test]
fn shared_suite_on_redis_cluster() -> Result<()> {
    crate::support::run(async move {
        let cluster = RedisCluster::start().await?;
        run_suite(Topology::Cluster(cluster.urls())).await;
        Ok(())
    })
}

#[test]
fn grant_key_ttl_is_the_tokens_remaining_lifetime() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let store = RedisStore::new(Topology::Single(redis.url()), "ttl", 100);
        let g = suite::grant("ttl-1", "alice", "acme/api", "dev", "corp", 600);
        let now = SystemClock.now_ms();
        store.put(&g, now).await?;
        let pttl = store.grant_pttl("ttl-1").await?;
        let remaining = g.remaining_ms(now);
        // The key's TTL is the token's remaining lifetime, give or take the round trip.
        assert!(
            pttl <= remaining && pttl > remaining - 2000,
            "PTTL {pttl} vs remaining {remaining}"
        );

        // Revocation deletes the grant key; its tombstone lives exactly as long as the token would.
        store
            .revoke(
                &jit_broker::store::RevokeTarget::Jti("ttl-1".into()),
                SystemClock.now_ms(),
            )
            .await?;
        assert_eq!(
            store.grant_pttl("ttl-1").await?,
            -2,
            "the grant key is gone"
        );
        assert_eq!(
            store.status("ttl-1", SystemClock.now_ms()).await?,
            GrantStatus::Revoked
        );
        Ok(())
    })
}

#[test]
fn store_fails_closed_and_recovers_in_process() -> Result<()> {
    crate::support::run(async move {
        let mut redis = RedisServer::start().await?;
        let store = RedisStore::new(Topology::Single(redis.url()), "fc", 100);
        let g = suite::grant("fc-1", "alice", "acme/api", "dev", "corp", 600);
        store.put(&g, SystemClock.now_ms()).await?;
        let claims = suite::claims_of(&g);
        assert!(matches!(
            store.check(&claims, SystemClock.now_ms()).await?,
            GrantStatus::Live(_)
        ));

        redis.stop()?;
        let err = store
            .check(&claims, SystemClock.now_ms())
            .await
            .expect_err("never live while down");
        assert!(err.to_string().contains("unavailable"), "{err}");
        assert!(
            store.put(&g, SystemClock.now_ms()).await.is_err(),
            "nothing is stored while down"
        );
        assert!(store.ping().await.is_err());

        redis.start_again().await?;
        // The same store object reconnects by itself (the restarted server is empty).
        let mut recovered = false;
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(recovered, "store did not reconnect");
        let fresh = suite::grant("fc-2", "alice", "acme/api", "dev", "corp", 600);
        store.put(&fresh, SystemClock.now_ms()).await?;
        let st = store
            .check(&suite::claims_of(&fresh), SystemClock.now_ms())
            .await?;
        assert!(matches!(st, GrantStatus::Live(_)));
        Ok(())
    })
}

/// Regression: the watermark hash used to expire a day after the last revocation, so a
/// revoked person's old IdP session could exchange again after 24 h.
#[test]
fn identity_watermarks_are_kept_grant_watermarks_expire() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let client = redis::Client::open(redis.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let now = SystemClock.now_ms();

        let roles = RedisStore::new(Topology::Single(redis.url()), "wm1", 100);
        roles
            .revoke(&jit_broker::store::RevokeTarget::Role("dev".into()), now)
            .await?;
        let ttl: i64 = redis::cmd("TTL")
            .arg("wm1:rev")
            .query_async(&mut conn)
            .await?;
        assert!(
            ttl > 24 * 3600 && ttl <= 24 * 3600 + 60,
            "grant watermarks live a token's life: {ttl}"
        );

        let people = RedisStore::new(Topology::Single(redis.url()), "wm2", 100);
        people
            .revoke(&jit_broker::store::RevokeTarget::Role("dev".into()), now)
            .await?;
        people
            .revoke(
                &jit_broker::store::RevokeTarget::Subject("alice".into()),
                now,
            )
            .await?;
        people
            .revoke(
                &jit_broker::store::RevokeTarget::Repo(jit_proto::RepoPath::parse("acme/api")?),
                now,
            )
            .await?;
        let ttl: i64 = redis::cmd("TTL")
            .arg("wm2:rev")
            .query_async(&mut conn)
            .await?;
        assert_eq!(ttl, -1, "a person's watermark is kept");
        Ok(())
    })
}
