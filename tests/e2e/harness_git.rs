//! The harness's git server: nginx + fcgiwrap + git http-backend, driven by the real `git`.

use anyhow::Result;
use jit_e2e::{GitClient, GitServer, GitServerConfig};

#[test]
fn git_clone_and_push_against_nginx() -> Result<()> {
    crate::support::run(async move {
        let server = GitServer::start().await?;
        let initial = {
            server.create_repo("acme/api")?;
            server.git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?
        };
        let git = GitClient::new()?;
        let work = git.home().join("api");
        git.run(&[
            "clone",
            &server.repo_url("acme/api"),
            &work.to_string_lossy(),
        ])
        .await?;
        assert!(work.join("README.md").is_file());
        let tags = git.run_in(&work, &["tag", "--list"]).await?;
        assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "v0.1.0");

        std::fs::write(work.join("CHANGELOG.md"), "one\n")?;
        git.run_in(&work, &["add", "CHANGELOG.md"]).await?;
        git.run_in(&work, &["commit", "-q", "-m", "add changelog"])
            .await?;
        git.run_in(
            &work,
            &["push", "-q", "origin", "main", "main:refs/heads/feature/x"],
        )
        .await?;
        let head = git.run_in(&work, &["rev-parse", "HEAD"]).await?;
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert_ne!(head, initial);
        assert_eq!(
            server.git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?,
            head
        );
        assert_eq!(
            server.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/x"])?,
            head
        );

        // Protocol v2 ls-remote sees the push.
        let ls = git
            .run(&[
                "-c",
                "protocol.version=2",
                "ls-remote",
                &server.repo_url("acme/api"),
            ])
            .await?;
        assert!(String::from_utf8_lossy(&ls.stdout).contains(&format!("{head}\trefs/heads/main")));
        Ok(())
    })
}

#[test]
fn git_server_with_basic_auth_requires_the_upstream_credential() -> Result<()> {
    crate::support::run(async move {
        let server = GitServer::start_with(GitServerConfig {
            basic_auth: Some(("upstream".into(), "s3cret".into())),
            server_directives: Some("location = /ping { return 200 'pong'; }".into()),
            location_directives: Some("add_header X-Harness yes always;".into()),
            ..Default::default()
        })
        .await?;
        let http = jit_e2e::http_client();
        let ping = http
            .get(format!("{}/ping", server.base_url()))
            .send()
            .await?;
        assert_eq!(ping.text().await?, "pong");
        let denied = http.get(server.repo_url("acme/api")).send().await?;
        assert_eq!(denied.status(), 401);
        assert_eq!(denied.headers()["x-harness"], "yes");
        server.create_repo("acme/api")?;
        let git = GitClient::new()?;
        let err = git
            .run_expect_failure(&["ls-remote", &server.repo_url("acme/api")])
            .await?;
        assert!(
            err.contains("401")
                || err.contains("Authentication failed")
                || err.contains("could not read Username"),
            "{err}"
        );
        let ok = git
            .run(&["ls-remote", &server.repo_url_with_credentials("acme/api")])
            .await?;
        assert!(String::from_utf8_lossy(&ok.stdout).contains("refs/heads/main"));
        Ok(())
    })
}
