//! The audit trail under a flood, through the real broker on a real Redis: denials of a valid
//! token are budgeted (429, a metric, one summary a minute) and can never push a grant out of
//! the trail; refused admin calls are audited and throttled like other refused credentials.

use anyhow::{Context as _, Result};
use jit_e2e::bins::{JIT_BROKER, bin_path, generate_keys};
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use serde_json::{Value, json};

/// A broker trusting `issuer` as `corp` (see `corp_broker`), its store keeping at most
/// `audit_max` events (per lane, on this branch), with `extra` appended to `[store]`.
fn config(keys: &std::path::Path, redis: &str, issuer: &str, store_extra: &str) -> String {
    crate::support::corp_broker(keys, redis, issuer, None).replacen(
        "[store]\n",
        &format!("[store]\n{store_extra}\n"),
        1,
    )
}

/// Sends `n` gateway requests with `token` for a repository it may not read, 16 at a time;
/// the statuses, in no particular order.
async fn flood(url: &str, token: &str, n: usize) -> Result<Vec<u16>> {
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 16;
    for w in 0..workers {
        let url = url.to_owned();
        let token = token.to_owned();
        let share = n / workers + usize::from(w < n % workers);
        tasks.spawn(async move {
            let http = jit_e2e::http_client();
            let mut statuses = Vec::with_capacity(share);
            for _ in 0..share {
                let r = http
                    .get(format!(
                        "{url}/acme/secret.git/info/refs?service=git-upload-pack"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                statuses.push(r.status().as_u16());
                if r.status() == 429 {
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    anyhow::ensure!(retry.is_some_and(|s| s >= 1), "429 without Retry-After");
                }
            }
            anyhow::Ok(statuses)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// The whole trail, as an admin reads it through `GET /v1/audit` (JSON lines, paged).
async fn trail(url: &str, admin: &str) -> Result<Vec<Value>> {
    let http = jit_e2e::http_client();
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let r = http
            .get(format!("{url}/v1/audit?limit=1000&after_seq={after}"))
            .bearer_auth(admin)
            .send()
            .await?
            .error_for_status()?;
        let next = r
            .headers()
            .get("x-next-after-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = r.text().await?;
        for line in body.lines().filter(|l| !l.is_empty()) {
            out.push(serde_json::from_str(line)?);
        }
        match next {
            Some(n) if n > after => after = n,
            _ => return Ok(out),
        }
    }
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

async fn metrics(url: &str) -> Result<String> {
    Ok(jit_e2e::http_client()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The finding: one read token sent 3,000 requests for a repository it may not read; all
/// 3,000 were audited 403s, none was refused 429, and the trail (bounded at 1,000 events)
/// lost the token's own `grant.issued`. Now the token's denials past its budget are 429s
/// with `Retry-After`, counted by limiter, summarised by `access.limited`, and the grant
/// stays in the trail.
#[test]
fn denials_of_one_token_are_budgeted_and_never_push_its_grant_out() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(
            keys.path(),
            &redis.url(),
            &idp.issuer(),
            "audit_max_events = 1000",
        );
        let broker = BrokerProcess::start(&text).await?;
        let url = broker.url();
        let id = idp
            .token()
            .subject("mallory@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let token = crate::support::exchange(&url, &id, "repo:acme/api:read").await?;
        let jti = crate::support::claims_of(&token)?.jti;

        let statuses = flood(&url, &token, 3000).await?;
        let forbidden = statuses.iter().filter(|s| **s == 403).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(forbidden + limited, 3000, "only 403 and 429: {statuses:?}");
        assert!(
            limited > 2000,
            "past its budget a token gets 429s: {limited} of 3000"
        );

        let admin = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let events = trail(&url, &admin).await?;
        let issued: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "grant.issued" && e["jti"] == jti.as_str())
            .collect();
        assert_eq!(issued.len(), 1, "the token's grant.issued is kept");
        let denied = count(&events, "access.denied");
        assert_eq!(denied, forbidden, "each 403 is audited, no 429 is");
        let summaries: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "access.limited")
            .collect();
        assert!(
            !summaries.is_empty() && summaries.len() <= 2,
            "one summary per limiter and minute, not one per request: {summaries:?}"
        );
        assert_eq!(summaries[0]["jti"], jti.as_str());
        assert_eq!(summaries[0]["data"]["limiter"], "denied_token");
        let m = metrics(&url).await?;
        let line = m
            .lines()
            .find(|l| l.starts_with("jit_rate_limited_total{limiter=\"denied_token\"}"))
            .with_context(|| format!("no denied_token counter in\n{m}"))?;
        assert!(
            line.ends_with(&format!(" {limited}")),
            "{line} vs {limited}"
        );
        Ok(())
    })
}

/// The durable sink: the `grant.issued` of an exchange is in the broker's audit file when the
/// exchange's answer arrives (nothing is awaited after it), and the files verify, checked
/// against the store's head.
#[test]
fn every_event_is_in_the_audit_file_before_the_answer() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&config(keys.path(), &redis.url(), &idp.issuer(), "")).await?;
        let id = idp
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let token = crate::support::exchange(&broker.url(), &id, "repo:acme/api:read").await?;
        let jti = crate::support::claims_of(&token)?.jti;
        let audit = broker
            .config_path()
            .parent()
            .context("config folder")?
            .join("audit");
        let mut found = false;
        for entry in std::fs::read_dir(&audit)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path)?.lines() {
                    let e: Value = serde_json::from_str(line)?;
                    found |= e["event"] == "grant.issued" && e["jti"] == jti.as_str();
                }
            }
        }
        assert!(
            found,
            "the grant's event is in the audit file before the answer"
        );
        let out = std::process::Command::new(bin_path(JIT_BROKER)?)
            .args(["audit", "verify", "--config"])
            .arg(broker.config_path())
            .arg("--dir")
            .arg(&audit)
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("audit chain intact"), "{said}");
        Ok(())
    })
}

/// Even with the denial budget raised so that every one of 3,000 denials is audited, and the
/// store keeping only 500 events per lane, the flood trims only traffic: the grant stays,
/// the newest denials stay, and `jit-broker audit verify` finds both chains intact.
#[test]
fn a_traffic_flood_trims_only_traffic_and_the_chain_verifies() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = format!(
            "{}\n[exchange.rate_limit]\ndenied_token_burst = 5000\ndenied_identity_burst = 5000\n",
            config(
                keys.path(),
                &redis.url(),
                &idp.issuer(),
                "audit_max_events = 500\naudit_traffic_max_bytes = 400000",
            )
        );
        let broker = BrokerProcess::start(&text).await?;
        let url = broker.url();
        let id = idp
            .token()
            .subject("mallory@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let token = crate::support::exchange(&url, &id, "repo:acme/api:read").await?;
        let jti = crate::support::claims_of(&token)?.jti;
        let statuses = flood(&url, &token, 3000).await?;
        assert!(
            statuses.iter().all(|s| *s == 403),
            "within the raised budget"
        );

        let admin = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let events = trail(&url, &admin).await?;
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "grant.issued" && e["jti"] == jti.as_str()),
            "the grant survives the flood"
        );
        let denied = count(&events, "access.denied");
        assert!(
            (100..=500).contains(&denied),
            "the traffic lane is bounded by events and bytes: {denied}"
        );
        let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one order over both lanes"
        );
        let newest_denial = events
            .iter()
            .filter(|e| e["event"] == "access.denied")
            .filter_map(|e| e["seq"].as_u64())
            .max();
        // The grant (seq 1), the 3,000 denials, and any signed checkpoint the broker wrote
        // meanwhile (every 60 s while events come).
        let checkpoints = events
            .iter()
            .filter(|e| e["event"] == "audit.checkpoint")
            .filter(|e| e["seq"].as_u64() < newest_denial)
            .count() as u64;
        assert_eq!(
            newest_denial,
            Some(3001 + checkpoints),
            "the newest denials are kept"
        );

        let out = std::process::Command::new(bin_path(JIT_BROKER)?)
            .args(["audit", "verify", "--config"])
            .arg(broker.config_path())
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("audit chain intact"), "{said}");
        Ok(())
    })
}

/// Refused admin calls — no credential, a forged token, another issuer's token, a non-admin's
/// — were neither audited nor rate-limited. Now each is an `admin.denied` event naming why,
/// within the address's budget of refused credentials; past it the answer is 429.
#[test]
fn refused_admin_calls_are_audited_and_throttled() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&config(keys.path(), &redis.url(), &idp.issuer(), "")).await?;
        let url = broker.url();
        let http = jit_e2e::http_client();
        let grants = format!("{url}/v1/grants");
        let non_admin = idp
            .token()
            .subject("eve@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let other_issuer = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .iss("https://elsewhere.example")
            .sign();
        let forged = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .unpublished_key()
            .sign();
        for (what, bearer, status) in [
            ("non-admin", Some(non_admin.as_str()), 403),
            ("other issuer", Some(other_issuer.as_str()), 401),
            ("forged", Some(forged.as_str()), 401),
            ("no credential", None, 401),
        ] {
            let mut r = http.get(&grants);
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            let r = r.send().await?;
            assert_eq!(r.status().as_u16(), status, "{what}");
        }
        let mut codes = Vec::new();
        for _ in 0..250 {
            codes.push(http.get(&grants).send().await?.status().as_u16());
        }
        let limited = codes.iter().filter(|c| **c == 429).count();
        assert!(limited >= 100, "past the address's budget, 429: {codes:?}");
        assert!(codes.iter().all(|c| *c == 401 || *c == 429), "{codes:?}");

        let admin = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let events = trail(&url, &admin).await?;
        let denied: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "admin.denied")
            .collect();
        assert_eq!(
            denied.len(),
            4 + 250 - limited,
            "each refusal within budget"
        );
        assert_eq!(denied[0]["subject"], "eve@example.com");
        assert!(
            denied[0]["denial"]
                .as_str()
                .is_some_and(|d| d.contains("is not an admin")),
            "{}",
            denied[0]
        );
        assert!(denied.iter().all(|e| e["client"] == "127.0.0.1"));
        let summaries: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "access.limited")
            .collect();
        assert_eq!(
            summaries.len(),
            1,
            "one summary in the minute: {summaries:?}"
        );
        assert_eq!(summaries[0]["data"]["via"], "admin");
        assert_eq!(summaries[0]["data"]["limiter"], "refused_address");
        let m = metrics(&url).await?;
        assert!(
            m.contains(&format!(
                "jit_rate_limited_total{{limiter=\"refused_address\"}} {limited}"
            )),
            "{m}"
        );
        Ok(())
    })
}
