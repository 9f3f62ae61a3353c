//! Redis Sentinel, the third topology: one primary, one replica and three real Sentinels. A
//! broker runs exchanges and Git access checks (`/authz`, the gatekeeper every door asks)
//! while the primary is killed. It shows that (a) nothing is allowed that the store did not
//! confirm — a revoked token is never let in, every other answer is an allow or a 503, never a
//! guess; (b) service resumes after the failover without a broker restart, and how long it
//! took; (c) grants and revocations written before the failover hold after it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisSentinels};
use serde_json::json;

/// The answer of `/authz` to a clone of acme/api with `token`.
async fn authz(http: &reqwest::Client, broker: &str, token: &str) -> u16 {
    http.get(format!("{broker}/authz"))
        .header(
            "x-original-uri",
            "/acme/api.git/info/refs?service=git-upload-pack",
        )
        .header("x-original-method", "GET")
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The replication offset of the server on `port` (`master_repl_offset`).
fn offset(port: u16) -> Result<i64> {
    jit_e2e::redis_ha::redis_cli(port, &["info", "replication"])?
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no master_repl_offset")
}

/// A broker (keys in `keys`) on the primary `redis`'s Sentinels name, answering revocations
/// once one replica holds them.
async fn broker_on(
    redis: &RedisSentinels,
    idp: &CiIssuer,
    keys: &std::path::Path,
) -> Result<BrokerProcess> {
    generate_keys(keys)?;
    let sentinels = redis
        .sentinel_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = crate::support::corp_broker(keys, "unused", &idp.issuer(), None).replace(
        "url = \"unused\"",
        &format!("sentinel = [{sentinels}]\nrevocation_replicas = 1"),
    );
    BrokerProcess::start(&config).await
}

/// An ID token of `sub`, an engineer.
fn engineer(idp: &CiIssuer, sub: &str) -> String {
    idp.token()
        .subject(sub)
        .claim("groups", json!(["engineering"]))
        .sign()
}

/// An ID token of the security team's admin.
fn security(idp: &CiIssuer) -> String {
    idp.token()
        .subject("sec@example.com")
        .claim("groups", json!(["security"]))
        .sign()
}

#[derive(Default)]
struct Seen {
    /// (milliseconds since the kill, negative before; status) of the live token's checks.
    live: Vec<(i64, u16)>,
    /// Statuses of the revoked token's checks.
    revoked: Vec<u16>,
    /// Statuses of exchanges.
    exchanges: Vec<u16>,
}

#[test]
fn sentinel_failover_fails_closed_resumes_and_keeps_what_was_written() -> Result<()> {
    crate::support::run(async move {
        let mut redis = RedisSentinels::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        let broker = broker_on(&redis, &idp, keys.path()).await?;
        let url = broker.url();
        let pid = broker.pid();
        let http = jit_e2e::http_client();
        let person = |sub: &str| engineer(&idp, sub);
        let admin = security(&idp);

        // Before: alice's grant, and bob's grant revoked (answered once the replica holds it).
        let alice =
            crate::support::exchange(&url, &person("alice@example.com"), "repo:acme/api:read")
                .await?;
        let bob = crate::support::exchange(&url, &person("bob@example.com"), "repo:acme/api:read")
            .await?;
        crate::support::revoke(&url, &admin, "subject", "bob@example.com", "laptop stolen").await?;
        assert_eq!(authz(&http, &url, &alice).await, 204);
        assert_eq!(authz(&http, &url, &bob).await, 401);
        // "Written before the failover": the replica has everything the primary has.
        let (p, r) = (redis.primary_port(), redis.replica_port());
        jit_e2e::process::wait_for(
            "the replica to catch up",
            Duration::from_secs(30),
            || async move { Ok((offset(r)? >= offset(p)?).then_some(())) },
        )
        .await?;

        // Traffic through the failover.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = {
            let (seen, killed_at, stop) = (seen.clone(), killed_at.clone(), stop.clone());
            let (http, url, alice, bob) = (http.clone(), url.clone(), alice.clone(), bob.clone());
            let carol = person("carol@example.com");
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let live = authz(&http, &url, &alice).await;
                    let revoked = authz(&http, &url, &bob).await;
                    let exchanged =
                        crate::support::exchange_raw(&url, &carol, "repo:acme/api:read", &[])
                            .await
                            .map(|(s, _)| s)
                            .unwrap_or(0);
                    let since = killed_at
                        .lock()
                        .map(|k| {
                            k.map_or(-1, |t| {
                                i64::try_from(t.elapsed().as_millis()).unwrap_or(i64::MAX)
                            })
                        })
                        .unwrap_or(-1);
                    if let Ok(mut s) = seen.lock() {
                        s.live.push((since, live));
                        s.revoked.push(revoked);
                        s.exchanges.push(exchanged);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old_primary = redis.primary_now()?;
        redis.kill_primary()?;
        if let Ok(mut k) = killed_at.lock() {
            *k = Some(Instant::now());
        }
        // Service is back once the live token is allowed again after the kill.
        jit_e2e::process::wait_for(
            "service after the failover",
            Duration::from_secs(120),
            || {
                let seen = seen.clone();
                async move {
                    let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let outage = s.live.iter().any(|(t, st)| *t >= 0 && *st != 204);
                    let back = s
                        .live
                        .iter()
                        .rev()
                        .take(3)
                        .all(|(t, st)| *t >= 0 && *st == 204);
                    Ok((outage && back).then_some(()))
                }
            },
        )
        .await
        .with_context(|| {
            format!(
                "sentinel logs:\n{}\nbroker logs:\n{}",
                redis.logs(),
                broker.logs()
            )
        })?;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        traffic.await?;

        let new_primary = redis.primary_now()?;
        assert_ne!(
            new_primary, old_primary,
            "the Sentinels promoted the replica"
        );
        assert_eq!(new_primary, redis.replica_port());
        assert_eq!(
            broker.pid(),
            pid,
            "the same broker process, never restarted"
        );

        {
            let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            // (a) Nothing the store did not confirm: the revoked token is never allowed, and every
            // answer is the store's (allow, or refuse as revoked) or a 503 while it cannot say.
            assert!(
                s.revoked.iter().all(|st| *st == 401 || *st == 503),
                "{:?}",
                s.revoked
            );
            assert!(
                s.live.iter().all(|(_, st)| *st == 204 || *st == 503),
                "{:?}",
                s.live
            );
            // Carol asks every 20 ms, past her identity's burst: a 429 is the limiter's
            // answer, kept in the store like the grants, and grants nothing.
            assert!(
                s.exchanges
                    .iter()
                    .all(|st| *st == 200 || *st == 503 || *st == 429),
                "{:?}",
                s.exchanges
            );
            // (b) How long the live token was refused, from the kill to its first allow after.
            let first_refusal = s
                .live
                .iter()
                .find(|(t, st)| *t >= 0 && *st == 503)
                .map(|(t, _)| *t);
            let back = s
                .live
                .iter()
                .filter(|(t, _)| *t >= 0)
                .skip_while(|(_, st)| *st == 204)
                .find(|(_, st)| *st == 204)
                .map(|(t, _)| *t)
                .context("service resumed")?;
            let refused = s
                .live
                .iter()
                .filter(|(t, st)| *t >= 0 && *st == 503)
                .count();
            eprintln!(
                "sentinel failover: first refusal {first_refusal:?} ms after the kill, service back \
             {back} ms after it ({refused} checks answered 503, {} checks in all)",
                s.live.len()
            );
        }
        // (c) What was written before holds after: alice's grant, bob's revocation; new
        // exchanges and revocations work on the new primary.
        assert_eq!(authz(&http, &url, &alice).await, 204);
        assert_eq!(authz(&http, &url, &bob).await, 401);
        let dave =
            crate::support::exchange(&url, &person("dave@example.com"), "repo:acme/api:read")
                .await?;
        assert_eq!(authz(&http, &url, &dave).await, 204);
        // With no replica left, a revocation is in force but not confirmed: the admin gets a 503
        // (revoking again is harmless), the log says why.
        let r = http
            .post(format!("{url}/v1/revoke"))
            .bearer_auth(&admin)
            .json(&json!({"by": "subject", "value": "dave@example.com", "reason": "offboarded"}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        assert_eq!(status, 503, "{body}");
        assert!(
            broker.logs().contains("0 of the 1 replicas required"),
            "the log says why"
        );
        assert_eq!(
            authz(&http, &url, &dave).await,
            401,
            "in force on the primary all the same"
        );
        Ok(())
    })
}

/// A switch-over with both nodes up (`SENTINEL FAILOVER`): the old primary stays reachable as a
/// replica. The broker leaves it (a write there answers `READONLY`; the Sentinels are asked
/// again), and writes, revocations confirmed by the new replica included, go to the new
/// primary, in the same process.
#[test]
fn sentinel_switch_over_moves_the_broker_to_the_new_primary() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisSentinels::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        let broker = broker_on(&redis, &idp, keys.path()).await?;
        let url = broker.url();
        let http = jit_e2e::http_client();
        let person = |sub: &str| engineer(&idp, sub);
        let admin = security(&idp);
        let alice =
            crate::support::exchange(&url, &person("alice@example.com"), "repo:acme/api:read")
                .await?;
        assert_eq!(authz(&http, &url, &alice).await, 204);
        let new_primary = redis.switch_over().await?;
        assert_eq!(new_primary, redis.replica_port());
        // The first calls may meet the demoted primary and fail closed; then the new one.
        let (http2, url2) = (http.clone(), url.clone());
        let bob_token = person("bob@example.com");
        let bob = jit_e2e::process::wait_for(
            "an exchange on the new primary",
            Duration::from_secs(60),
            || {
                let (url, bob_token) = (url2.clone(), bob_token.clone());
                async move {
                    let (status, body) =
                        crate::support::exchange_raw(&url, &bob_token, "repo:acme/api:read", &[])
                            .await?;
                    anyhow::ensure!(status == 200 || status == 503, "{status}: {body}");
                    Ok(body["access_token"].as_str().map(str::to_owned))
                }
            },
        )
        .await
        .with_context(|| broker.logs())?;
        assert_eq!(
            authz(&http2, &url, &alice).await,
            204,
            "a grant from before holds"
        );
        assert_eq!(authz(&http2, &url, &bob).await, 204);
        // Answered only once written on the new primary and confirmed by its replica (the old
        // primary): a write sent to the demoted node would fail READONLY.
        crate::support::revoke(&url, &admin, "subject", "bob@example.com", "rotated out")
            .await
            .with_context(|| broker.logs())?;
        assert_eq!(authz(&http, &url, &bob).await, 401);
        Ok(())
    })
}
