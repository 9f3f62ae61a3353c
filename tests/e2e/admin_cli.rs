//! `git jit admin` against a real broker on a real Redis: the security team lists grants,
//! revokes a person's access, and reads the audit trail, with readable tables and JSON.

use std::process::Output;

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use serde_json::{Value, json};

use crate::support::git_jit_admin as admin;

fn config(keys: &std::path::Path, redis: &str, issuer: &str) -> String {
    crate::support::corp_broker(keys, redis, issuer, None)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn security_team_lists_revokes_and_reads_the_trail() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&config(keys.path(), &redis.url(), &idp.issuer())).await?;
        let url = broker.url();
        let http = jit_e2e::http_client();
        let mut tokens = Vec::new();
        for who in ["alice@example.com", "bob@example.com"] {
            let id = idp
                .token()
                .subject(who)
                .claim("groups", json!(["engineering"]))
                .sign();
            let r: Value = http
                .post(format!("{url}/oauth/token"))
                .form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", id.as_str()),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ),
                    ("scope", "repo:acme/api:read"),
                    ("reason", "review PR 7"),
                ])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            tokens.push(r["access_token"].as_str().unwrap_or_default().to_owned());
        }
        let sec = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let dev = idp
            .token()
            .subject("eve@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();

        let out = admin(&url, &sec, &["grants"])?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stdout.contains("SUBJECT")
                && stdout.contains("alice@example.com")
                && stdout.contains("bob@example.com"),
            "{stdout}"
        );
        assert!(
            stdout.contains("repo:acme/api:read") && stdout.contains("review PR 7"),
            "{stdout}"
        );

        let out = admin(
            &url,
            &sec,
            &["grants", "--subject", "alice@example.com", "--json"],
        )?;
        let listed: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

        // Not an admin: refused with a reason the user can act on, and nothing changes.
        let out = admin(
            &url,
            &dev,
            &["revoke", "--all", "--yes", "--reason", "oops"],
        )?;
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains("not an admin"), "{stderr}");
        // A revocation needs a reason; without a terminal to ask, it is refused before any call.
        let out = admin(&url, &sec, &["revoke", "--subject", "alice@example.com"])?;
        assert!(!out.status.success());

        let out = admin(
            &url,
            &sec,
            &[
                "revoke",
                "--subject",
                "alice@example.com",
                "--reason",
                "laptop stolen",
            ],
        )?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stdout.contains(
                "revoked sub alice@example.com: in force now, at most 1 live grant ended"
            ),
            "{stdout}"
        );
        let introspect = |t: String| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let v: Value = http
                    .post(format!("{url}/oauth/introspect"))
                    .form(&[("token", t)])
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(v["active"].as_bool() == Some(true))
            }
        };
        assert!(
            !introspect(tokens[0].clone()).await?,
            "alice's token is dead"
        );
        assert!(introspect(tokens[1].clone()).await?, "bob's token lives");

        let out = admin(&url, &sec, &["audit", "--event", "grant.revoked"])?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stdout.contains("grant.revoked") && stdout.contains("laptop stolen"),
            "{stdout}"
        );
        let out = admin(&url, &sec, &["audit", "--csv"])?;
        let (stdout, _) = text(&out);
        assert!(stdout.starts_with("seq,ts,event,"), "{stdout}");
        assert!(
            stdout.contains("grant.issued") && stdout.contains("admin.grants"),
            "{stdout}"
        );
        for t in &tokens {
            assert!(!stdout.contains(t.as_str()), "no token in the audit trail");
            assert!(
                !broker.logs().contains(t.as_str()),
                "no token in the broker's log"
            );
        }
        Ok(())
    })
}
