//! Two broker processes on one Redis: a grant issued by one is live on the other, and a
//! revocation sent to one is enforced by the other on its very next request.

use std::time::Instant;

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use serde_json::{Value, json};

fn config(keys: &std::path::Path, redis: &str, issuer: &str) -> String {
    crate::support::corp_broker(keys, redis, issuer, Some("https://jit.test"))
}

async fn exchange(
    http: &reqwest::Client,
    broker: &str,
    id_token: &str,
    scope: &str,
) -> Result<Value> {
    let r = http
        .post(format!("{broker}/oauth/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("scope", scope),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "exchange failed: {}",
        r.text().await?
    );
    Ok(r.json().await?)
}

async fn active(http: &reqwest::Client, broker: &str, token: &str) -> Result<bool> {
    let r = http
        .post(format!("{broker}/oauth/introspect"))
        .form(&[("token", token)])
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "introspection failed: {}",
        r.status()
    );
    let body: Value = r.json().await?;
    Ok(body["active"].as_bool() == Some(true))
}

#[test]
fn revocation_on_one_replica_holds_on_the_other_at_once() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &idp.issuer());
        let a = BrokerProcess::start(&text).await?;
        let b = BrokerProcess::start(&text).await?;
        let http = jit_e2e::http_client();

        let alice = idp
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let bob = idp
            .token()
            .subject("bob@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let admin = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();

        let t_alice = exchange(&http, &a.url(), &alice, "repo:acme/api:read").await?;
        let t_bob = exchange(&http, &b.url(), &bob, "repo:acme/api:read").await?;
        let alice_token = t_alice["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let bob_token = t_bob["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            active(&http, &b.url(), &alice_token).await?,
            "a grant from A is live on B"
        );
        assert!(
            active(&http, &a.url(), &bob_token).await?,
            "a grant from B is live on A"
        );

        let revoked: Value = http
            .post(format!("{}/v1/revoke", a.url()))
            .bearer_auth(&admin)
            .json(&json!({"by": "subject", "value": "alice@example.com", "reason": "incident 42"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let returned = Instant::now();
        assert_eq!(revoked["at_most"], 1, "{revoked}");
        // The very next request on the other replica is refused: no retries, no propagation delay.
        let still_active = active(&http, &b.url(), &alice_token).await?;
        let latency = returned.elapsed();
        assert!(
            !still_active,
            "replica B still accepted a token revoked on A"
        );
        eprintln!(
            "revocation on A → first refusal on B: {:.2} ms (one request)",
            latency.as_secs_f64() * 1e3
        );
        assert!(
            active(&http, &b.url(), &bob_token).await?,
            "other subjects are untouched"
        );

        // Both replicas list the same live grants, and each writes its own audit chain.
        let grants: Value = http
            .get(format!("{}/v1/grants", b.url()))
            .bearer_auth(&admin)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        assert_eq!(
            grants["grants"].as_array().map(Vec::len),
            Some(1),
            "{grants}"
        );
        assert!(grants.get("next_cursor").is_none(), "{grants}");
        assert_eq!(grants["grants"][0]["sub"], "bob@example.com");
        // One more grant on A, so that A's chain holds evidence on both sides of its
        // revocation.
        exchange(&http, &a.url(), &bob, "repo:acme/api:read").await?;
        let trail = http
            .get(format!("{}/v1/audit", a.url()))
            .bearer_auth(&admin)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let events: Vec<Value> = trail
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        assert!(
            kinds.contains(&"grant.issued") && kinds.contains(&"grant.revoked"),
            "{kinds:?}"
        );
        let mut chains: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for e in &events {
            let name = e["replica"]["name"].as_str().unwrap_or_default().to_owned();
            chains
                .entry(name)
                .or_default()
                .push(e["seq"].as_u64().unwrap_or(0));
        }
        assert_eq!(chains.len(), 2, "one chain per replica: {chains:?}");
        for seqs in chains.values() {
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            assert_eq!(
                &sorted,
                &(1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{chains:?}"
            );
        }
        assert!(
            events
                .windows(2)
                .all(|w| w[0]["ts"].as_i64() <= w[1]["ts"].as_i64()),
            "the merged trail is in time order"
        );
        assert!(
            !trail.contains(&alice_token),
            "tokens never reach the audit trail"
        );

        // `jit-broker audit verify` proves the chain in the store, and catches a deleted event.
        let verify = || {
            std::process::Command::new(jit_e2e::bin_path("jit-broker")?)
                .args(["audit", "verify", "--config"])
                .arg(a.config_path())
                .output()
                .map_err(anyhow::Error::from)
        };
        let ok = verify()?;
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let report = String::from_utf8_lossy(&ok.stdout).into_owned();
        assert!(
            report.contains("audit chain intact: 2 replica chains"),
            "{report}"
        );
        // Each replica's own audit files verify on their own: its chain is whole.
        for replica in [&a, &b] {
            let alone = jit_e2e::process::run_checked(
                std::process::Command::new(jit_e2e::bin_path("jit-broker")?)
                    .args(["audit", "verify", "--dir"])
                    .arg(replica.dir().join("audit")),
            )?;
            assert!(alone.contains("audit chain intact"), "{alone}");
            assert!(alone.contains("chained"), "{alone}");
            assert!(!alone.contains("other replicas' events"), "{alone}");
        }
        let client = redis::Client::open(redis.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        // An evidence event amid its replica's evidence (neither its chain's first, which
        // could have been trimmed, nor its newest), deleted from that replica's chain.
        let evidence_of = |name: &Value| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["lane"] == "evidence" && &e["replica"]["name"] == name)
                .collect()
        };
        let victim = events
            .iter()
            .map(|e| evidence_of(&e["replica"]["name"]))
            .find(|chain| chain.len() >= 3)
            .map(|chain| chain[1])
            .ok_or_else(|| anyhow::anyhow!("no replica wrote three evidence events"))?;
        let chain = victim["replica"]["name"].as_str().unwrap_or_default();
        let deleted: i64 = redis::cmd("XDEL")
            .arg(format!("jit:{{audit.{chain}}}:s:evidence"))
            .arg(victim["id"].as_str().unwrap_or_default())
            .query_async(&mut conn)
            .await?;
        assert_eq!(deleted, 1);
        let broken = verify()?;
        assert!(!broken.status.success(), "a deleted event must be detected");
        let msg = String::from_utf8_lossy(&broken.stderr);
        assert!(msg.contains("deleted or reordered"), "{msg}");
        Ok(())
    })
}
