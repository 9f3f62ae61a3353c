//! The grant store's shared suite against real Redis: a single `redis-server` and a 3-node
//! Redis Cluster, plus what only Redis can show (key TTLs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::{GrantStatus, GrantStore, suite};
use jit_e2e::{RedisCluster, RedisServer};

pub(crate) async fn run_suite(topology: Topology) {
    let n = Arc::new(AtomicU32::new(0));
    // Real time: Redis expires grant keys by their TTLs, on its own clock.
    suite::run_all(
        &suite::SuiteTime::Real,
        jit_broker::recorder::verify::suite_verifier,
        |retention| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let topology = topology.clone();
            async move {
                Box::new(
                    RedisStore::new(topology, format!("suite{i}"), 1).with_retention(retention),
                ) as Box<dyn GrantStore>
            }
        },
    )
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
        // Every bucket holds a copy of the watermarks; each copy lives a token's life.
        for key in roles.watermark_keys() {
            let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
            assert!(
                ttl > 24 * 3600 && ttl <= 24 * 3600 + 60,
                "grant watermarks live a token's life: {key} {ttl}"
            );
        }

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
        for key in people.watermark_keys() {
            let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
            assert_eq!(ttl, -1, "a person's watermark is kept: {key}");
        }
        Ok(())
    })
}

/// A bulk revocation's tidy job survives the broker: one store object works a batch and goes
/// away; a new one on the same Redis resumes where it stopped, and tidying twice ends
/// nothing twice. The revocation held all along.
#[test]
fn tidy_resumes_after_a_restart_and_is_idempotent() -> Result<()> {
    use jit_broker::store::{GrantFilter, RevokeTarget, bounds, tidy};
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let topology = Topology::Single(redis.url());
        let first = RedisStore::new(topology.clone(), "tr", 100);
        let n = bounds::TIDY_BATCH * 2 + 37;
        let now = SystemClock.now_ms();
        let mut grants = Vec::new();
        for i in 0..n {
            let g = suite::grant_at(
                now,
                &format!("tr-{i:05}"),
                "alice",
                "acme/api",
                "dev",
                "corp",
                600,
            );
            first.put(&g, now).await?;
            grants.push(g);
        }
        let keep = suite::grant_at(now, "tr-other", "bob", "acme/web", "dev", "corp", 600);
        first.put(&keep, now).await?;
        let later = SystemClock.now_ms() + 1;
        let r = first
            .revoke(&RevokeTarget::Subject("alice".into()), later)
            .await?;
        assert_eq!((r.at_most, r.tidy_pending), (n as u64, true));
        let p = first.tidy("first", later).await?;
        assert_eq!(p.ended, bounds::TIDY_BATCH as u64);
        assert!(p.more, "one batch is not all");
        drop(first);

        let second = RedisStore::new(topology, "tr", 100);
        assert_eq!(
            second.tidy_pending().await?,
            1,
            "the job outlived its broker"
        );
        for g in grants.iter().step_by(97) {
            assert_eq!(
                second.check(&suite::claims_of(g), later).await?,
                GrantStatus::Revoked,
                "revoked before, during and after tidying"
            );
        }
        let refused = tidy::drain(&second, "second", later, 100).await?;
        assert_eq!(refused.ended, 0, "the first broker's lease still runs");
        // The restarted broker is another worker: it takes over once the lease has lapsed.
        let later = later + tidy::LEASE_MS + 1;
        let rest = tidy::drain(&second, "second", later, 100).await?;
        assert_eq!(
            rest.ended,
            (n - bounds::TIDY_BATCH) as u64,
            "resumed, not restarted"
        );
        assert_eq!(second.tidy_pending().await?, 0);
        let again = tidy::drain(&second, "second", later, 100).await?;
        assert_eq!((again.ended, again.dropped), (0, 0));
        let listed = second.list(&GrantFilter::default(), later).await?;
        assert_eq!(listed, vec![keep.clone()]);
        for g in grants.iter().step_by(97) {
            assert_eq!(second.grant_pttl(&g.jti).await?, -2, "the record is gone");
            assert_eq!(second.status(&g.jti, later).await?, GrantStatus::Revoked);
        }
        let client = redis::Client::open(redis.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        for dim in ["sub:alice", "repo:acme/api", "all"] {
            let n: u64 = redis::cmd("ZCARD")
                .arg(second.index_key(dim))
                .query_async(&mut conn)
                .await?;
            let want = u64::from(dim == "all");
            assert_eq!(n, want, "{dim} index tidied");
        }
        Ok(())
    })
}
