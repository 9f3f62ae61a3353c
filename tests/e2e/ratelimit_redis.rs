//! The rate limits in real Redis: the shared suite on a single `redis-server` and on a
//! 3-node Redis Cluster, what only Redis can show (key TTLs, two replicas on one budget),
//! and a broker that fails closed when its limits cannot be checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::ratelimit::redis::{RedisGcra, Target};
use jit_broker::ratelimit::{Backend, Rule, suite};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisCluster, RedisServer};
use serde_json::json;

async fn run_suite(target: Target) {
    let n = Arc::new(AtomicU32::new(0));
    suite::run_all(|| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let target = target.clone();
        async move { Box::new(RedisGcra::new(target, format!("rl{i}"))) as Box<dyn Backend> }
    })
    .await;
}

#[test]
fn limits_suite_on_single_redis() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        run_suite(Target::Single(redis.url())).await;
        Ok(())
    })
}

#[test]
fn limits_suite_on_redis_cluster() -> Result<()> {
    crate::support::run(async move {
        let cluster = RedisCluster::start().await?;
        run_suite(Target::Cluster(cluster.urls())).await;
        Ok(())
    })
}

/// A key lives only until it is full again, so Redis holds only the active keys.
#[test]
fn limit_keys_live_until_full_again() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let b = RedisGcra::new(Target::Single(redis.url()), "ttl");
        // One per second, five at once: five takes make the key full again in 5 s.
        let r = Rule::new("ttl", 60, 5);
        let now = SystemClock.now_ms();
        assert_eq!(b.pttl(&r, "k").await?, -2, "nothing held before a take");
        for _ in 0..5 {
            assert_eq!(b.take(&r, "k", now).await?, Ok(()));
        }
        let pttl = b.pttl(&r, "k").await?;
        assert!(pttl <= 5_000 && pttl > 3_000, "PTTL {pttl}");
        // A refusal leaves the TTL where it was.
        assert!(b.take(&r, "k", now).await?.is_err());
        assert!(b.pttl(&r, "k").await? <= pttl);
        // Key names carry neither the address nor the identity.
        let name = b.key(&r, "alice@example.com");
        assert!(
            name.starts_with("ttl:rl:{ttl:") && !name.contains("alice"),
            "{name}"
        );
        Ok(())
    })
}

/// Two replicas (two backends, two connections) on one Redis spend one budget: what one
/// took, the other cannot take again.
#[test]
fn replicas_share_one_budget() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let a = RedisGcra::new(Target::Single(redis.url()), "jit");
        let b = RedisGcra::new(Target::Single(redis.url()), "jit");
        let r = Rule::new("exchange_identity", 1, 10);
        let now = SystemClock.now_ms();
        for i in 0..10 {
            let replica = if i % 2 == 0 { &a } else { &b };
            assert_eq!(replica.take(&r, "corp alice", now).await?, Ok(()));
        }
        assert!(a.take(&r, "corp alice", now).await?.is_err());
        assert!(b.take(&r, "corp alice", now).await?.is_err());
        Ok(())
    })
}

async fn exchange_status(
    http: &reqwest::Client,
    broker: &str,
    id_token: &str,
) -> Result<(u16, Option<String>, String)> {
    let request = jit_proto::ExchangeRequest::new(
        jit_proto::Secret::new(id_token),
        jit_proto::exchange::SubjectTokenType::IdToken,
        jit_proto::Scope::parse("repo:acme/api:read")?,
    );
    let r = http
        .post(format!("{broker}/oauth/token"))
        .form(&request.to_form())
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry, r.text().await?))
}

/// Two broker processes on one Redis: an identity's exchange budget is one, whichever replica
/// it asks; with limits in each process it would get twice as many. Then Redis goes away and
/// the exchange fails closed on the limits, with `Retry-After`, counted in `/metrics`.
#[test]
fn brokers_share_exchange_limits_and_fail_closed_without_them() -> Result<()> {
    crate::support::run(async move {
        let mut redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = format!(
            "{}\n[exchange.rate_limit]\nidentity_per_minute = 1\nidentity_burst = 4\n",
            crate::support::corp_broker(
                keys.path(),
                &redis.url(),
                &idp.issuer(),
                Some("https://jit.test")
            )
        );
        let a = BrokerProcess::start(&text).await?;
        let b = BrokerProcess::start(&text).await?;
        let http = jit_e2e::http_client();
        let alice = idp
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        for i in 0..4 {
            let broker = if i % 2 == 0 { a.url() } else { b.url() };
            let (status, _, body) = exchange_status(&http, &broker, &alice).await?;
            assert_eq!(status, 200, "exchange {i}: {body}");
        }
        for broker in [a.url(), b.url()] {
            let (status, retry, body) = exchange_status(&http, &broker, &alice).await?;
            assert_eq!(status, 429, "the fifth exchange, on either replica: {body}");
            let secs: u64 = retry.as_deref().unwrap_or("").parse()?;
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
        }
        // Another identity still has its own budget.
        let bob = idp
            .token()
            .subject("bob@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        assert_eq!(exchange_status(&http, &b.url(), &bob).await?.0, 200);

        redis.stop()?;
        let (status, retry, body) = exchange_status(&http, &a.url(), &bob).await?;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry.as_deref(), Some("5"));
        assert!(body.contains("temporarily_unavailable"), "{body}");
        assert!(
            !body.contains("127.0.0.1"),
            "internals stay in the log: {body}"
        );
        let metrics = http
            .get(format!("{}/metrics", a.url()))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            metrics.contains("jit_rate_limit_unavailable_total{limiter=\"exchange_client\"} 1"),
            "{metrics}"
        );
        Ok(())
    })
}
