//! Terminal escapes from an identity provider: a subject carrying ESC sequences (OSC 8
//! hyperlinks, a screen clear), BEL, an 8-bit CSI, bidi overrides and marks and a line
//! separator goes through the real broker on a real Redis and reaches the security team's
//! terminal only as visible escapes — in `git jit admin audit --csv`, the tables, the error
//! a non-admin sees, and the broker's log — while `/v1/audit`'s JSON keeps it exactly.

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use jit_proto::display::is_dangerous;
use serde_json::{Value, json};

use crate::support::git_jit_admin as admin;

/// The subject: every class of character the broker and the helper neutralise.
const EVIL: &str = "eve\u{1b}]8;;https://evil.example/\u{7}click\u{1b}]8;;\u{7}\u{1b}[2J\u{9b}31m\u{202e}gpj.exe\u{200f}\u{2028}x";

/// Fails if `text` (`what`) holds a character that drives or reorders a terminal; line feeds
/// between lines are the only control characters allowed.
fn assert_inert(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && is_dangerous(*c))
        .collect();
    assert!(raw.is_empty(), "{what} carries raw {raw:?}:\n{text:?}");
}

#[test]
fn a_subject_with_terminal_escapes_reaches_people_inert_and_json_exact() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker = BrokerProcess::start(&crate::support::corp_broker(
            keys.path(),
            &redis.url(),
            &idp.issuer(),
            None,
        ))
        .await?;
        let url = broker.url();
        let evil = idp
            .token()
            .subject(EVIL)
            .claim("groups", json!(["engineering"]))
            .sign();
        crate::support::exchange(&url, &evil, "repo:acme/api:read").await?;
        let sec = idp
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();

        let out = admin(&url, &sec, &["audit", "--csv"])?;
        let csv = String::from_utf8(out.stdout)?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            csv.contains("eve\\u{1b}]8;;https://evil.example/\\u{7}click"),
            "{csv}"
        );
        assert_inert("audit --csv", &csv);

        for args in [&["audit"][..], &["grants"][..]] {
            let out = admin(&url, &sec, args)?;
            let table = String::from_utf8(out.stdout)?;
            assert!(out.status.success(), "{args:?}");
            assert!(table.contains("eve\\u{1b}"), "{args:?}: {table}");
            assert_inert(&format!("{args:?}"), &table);
        }

        // JSON for people: the same values, the bytes inert (C1, bidi and separators as
        // JSON escapes, which serde_json alone would leave raw).
        let out = admin(&url, &sec, &["audit", "--json", "--event", "grant.issued"])?;
        let lines = String::from_utf8(out.stdout)?;
        assert_inert("audit --json", &lines);
        let first: Value = serde_json::from_str(lines.lines().next().unwrap_or_default())?;
        assert_eq!(first["subject"], EVIL, "{lines}");
        let out = admin(&url, &sec, &["grants", "--json"])?;
        let listed = String::from_utf8(out.stdout)?;
        assert_inert("grants --json", &listed);
        let listed: Value = serde_json::from_str(&listed)?;
        assert_eq!(listed[0]["sub"], EVIL, "{listed}");

        // The identity itself is no admin: the refusal it reads names it, inert.
        let out = admin(&url, &evil, &["grants"])?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success());
        assert!(stderr.contains("not an admin"), "{stderr}");
        assert_inert("the non-admin's error", &stderr);

        // JSON keeps the subject exactly (escaped only as JSON escapes it).
        let body = jit_e2e::http_client()
            .get(format!("{url}/v1/audit?event=grant.issued"))
            .bearer_auth(&sec)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let subjects: Vec<String> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["subject"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(subjects, [EVIL], "{body}");

        // The broker's log names the subject inert too (colours aside: the log's own SGR
        // sequences are ESC '[' … 'm'; the subject's OSC, BEL, C1 and bidi must not appear).
        let logs = broker.logs();
        assert!(logs.contains("u{1b}]8;;https://evil.example/"), "{logs}");
        for raw in [
            "\u{1b}]8", "\u{7}", "\u{9b}", "\u{202e}", "\u{200f}", "\u{2028}",
        ] {
            assert!(!logs.contains(raw), "the broker's log carries raw {raw:?}");
        }
        Ok(())
    })
}
