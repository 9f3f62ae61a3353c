//! `/authz` behind real nginx running the shipped deploy/nginx/git-jit-authz.conf in front
//! of `git http-backend`: the file itself is loaded, only its addresses and paths replaced,
//! so a change to it that breaks clone, push or the answers fails here.

use std::path::Path;

use anyhow::Result;
use jit_e2e::bins::generate_keys;
use jit_e2e::process::free_port;
use jit_e2e::{BrokerProcess, CiIssuer, GitClient, GitServer, GitServerConfig, RedisServer};
use serde_json::json;

use crate::support::{assert_no_jwt, exchange, exchange_raw, raw_get, revoke};

fn broker_config(keys: &Path, redis: &str, issuer: &str) -> String {
    format!(
        r#"
{base}
[[issuer]]
name = "ci"
issuer = "{issuer}"
audience = "git-jit"

[[role]]
name = "reader"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/*"]
actions = ["read"]

[[role]]
name = "writer"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/api"]
actions = ["read", "write"]

[[role]]
name = "feature-pusher"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/api"]
actions = ["read", "write"]
refs = ["refs/heads/feature/**"]

[[admin.identity]]
issuer = "ci"
claims = {{ groups = "security" }}
"#,
        base = crate::support::broker_base(keys, redis, None),
    )
}

#[test]
fn authz_with_the_deploy_nginx_config_clone_push_401_403() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&broker_config(keys.path(), &redis.url(), &ci.issuer())).await?;
        let port = free_port()?;
        let git_server = GitServer::start_with(GitServerConfig {
            http_directives: Some(jit_e2e::git_server::authz_deploy_conf(broker.port(), port)?),
            ..Default::default()
        })
        .await?;
        jit_e2e::process::wait_port_open("the deploy server block", port).await?;
        git_server.create_repo("acme/api")?;
        git_server.create_repo("acme/web")?;
        git_server.git_in_repo("acme/api", &["config", "core.logAllRefUpdates", "always"])?;
        let engineer = ci
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let url =
            |repo: &str, token: &str| format!("http://x-jit:{token}@127.0.0.1:{port}/{repo}.git");
        let git = GitClient::new()?;

        // A read token clones.
        let read = exchange(&broker.url(), &engineer, "repo:acme/api:read").await?;
        git.run(&["clone", "--quiet", &url("acme/api", &read), "api"])
            .await?;
        let wt = git.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();

        // No token: 401 with the Bearer challenge carrying the exact scope, and Basic for curl.
        let http = jit_e2e::http_client();
        let r = http
            .get(format!(
                "http://127.0.0.1:{port}/acme/api.git/info/refs?service=git-receive-pack"
            ))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 401);
        let challenges: Vec<String> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            challenges
                .contains(&r#"Bearer realm="git-jit", scope="repo:acme/api:write""#.to_owned())
                && challenges.iter().any(|c| c.starts_with("Basic ")),
            "{challenges:?}"
        );
        assert!(r.text().await?.contains("git-jit: no credential was sent"));

        // A read token pushing: 403, and git prints the broker's message.
        std::fs::write(wt.join("a.txt"), "a\n")?;
        git.run_in(&wt, &["add", "a.txt"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "a"]).await?;
        let stderr = git
            .run_expect_failure(&["-C", &wt_s, "push", "origin", "HEAD:main"])
            .await?;
        assert!(
        stderr.contains(
            "remote: git-jit: token grants repo:acme/api:read; this push needs repo:acme/api:write"
        ),
        "{stderr}"
    );

        // The token of acme/api on acme/web: 403 with the message.
        let stderr = git
            .run_expect_failure(&["ls-remote", &url("acme/web", &read)])
            .await?;
        assert!(
        stderr.contains("remote: git-jit: token grants repo:acme/api:read; this clone or fetch needs repo:acme/web:read"),
        "{stderr}"
    );

        // A write token pushes; git http-backend saw the token's subject as REMOTE_USER.
        // (named: without a role the broker picks the narrowest, the ref-limited one).
        let (status, body) = exchange_raw(
            &broker.url(),
            &engineer,
            "repo:acme/api:read,write",
            &[("role", "writer")],
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        let write = body["access_token"].as_str().unwrap_or_default();
        git.run_in(
            &wt,
            &["push", "--quiet", &url("acme/api", write), "HEAD:main"],
        )
        .await?;
        let head = String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout)
            .trim()
            .to_owned();
        assert_eq!(
            git_server.git_in_repo("acme/api", &["rev-parse", "main"])?,
            head
        );
        let who = git_server.git_in_repo(
            "acme/api",
            &["reflog", "show", "--format=%gn", "-1", "main"],
        )?;
        assert_eq!(
            who, "alice@example.com",
            "REMOTE_USER is the token's subject"
        );

        // Regression: with a Bearer credential from a helper (authtype), a push larger than git's
        // post buffer starts with a `0000` probe that git sends without the header; nginx asks
        // /authz with only its length, and the push must go through.
        let mut noise = vec![0u8; 3 * 1024 * 1024];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut noise)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        std::fs::write(wt.join("big.bin"), noise)?;
        git.run_in(&wt, &["add", "big.bin"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "a 3 MiB blob"])
            .await?;
        let bearer_helper = format!(
            "!f() {{ test \"$1\" = get || exit 0; echo capability[]=authtype; echo authtype=Bearer; echo credential={write}; }}; f"
        );
        let plain_url = format!("http://127.0.0.1:{port}/acme/api.git");
        git.run_in(
            &wt,
            &[
                "-c",
                "credential.helper=",
                "-c",
                &format!("credential.helper={bearer_helper}"),
                "push",
                "--quiet",
                &plain_url,
                "HEAD:main",
            ],
        )
        .await?;
        let big_head =
            String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout)
                .trim()
                .to_owned();
        assert_eq!(
            git_server.git_in_repo("acme/api", &["rev-parse", "main"])?,
            big_head
        );

        // A ref-limited grant cannot push here (only the gateway sees refs): refused with a
        // message at the ref advertisement.
        let (status, body) = exchange_raw(
            &broker.url(),
            &engineer,
            "repo:acme/api:write",
            &[("role", "feature-pusher")],
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        let limited = body["access_token"].as_str().unwrap_or_default();
        let stderr = git
            .run_expect_failure(&[
                "-C",
                &wt_s,
                "push",
                &url("acme/api", limited),
                "HEAD:feature/x",
            ])
            .await?;
        assert!(
            stderr.contains("ref-limited pushes must go through the git-jit gateway"),
            "{stderr}"
        );

        // Raw paths: nginx hands the broker $request_uri undecoded, so tricks are refused (403).
        let auth = crate::support::basic(&read);
        for trick in [
            "/acme/%2e%2e/acme/api.git",
            "/acme//api.git",
            "/acme/x/../api.git",
        ] {
            let (status, answer) = raw_get(
                port,
                &format!("{trick}/info/refs?service=git-upload-pack"),
                Some(&auth),
            )
            .await?;
            assert_eq!(status, 403, "{trick}: {answer}");
            assert!(!answer.contains("# service="), "{trick}: {answer}");
        }

        // Revoked: refused on the very next request, with the reason.
        let admin = ci
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        revoke(
            &broker.url(),
            &admin,
            "subject",
            "alice@example.com",
            "offboarding",
        )
        .await?;
        let stderr = git.run_expect_failure(&["-C", &wt_s, "fetch"]).await?;
        assert!(
            stderr.contains("remote: git-jit: token has been revoked"),
            "{stderr}"
        );
        assert_no_jwt("git's stderr", &stderr);
        assert_no_jwt("the broker log", &broker.logs());
        Ok(())
    })
}
