//! The security console in a real browser: Debian's chromium, driven through chromedriver
//! (WebDriver) with fantoccini, against a real broker on Redis and the real oidc-provider.
//! A non-admin signs in and is turned away with the reason; the security admin signs in
//! through the provider's login page, sees Alice's live grant, revokes it (Alice's token is
//! refused at once: her next `git fetch` through the gateway fails), while a forged cross-site form post is refused and revokes nothing, and a
//! revocation made through the API leaves the open page without a reload; the trail shows
//! the revocation, its chain verifies and it exports as CSV; the repository's timeline draws
//! both grants; Bob's pending request is approved from the Requests page. Each of the four
//! pages is checked for accessibility on the way (see `a11y`).
//! Screenshots of each page go to `JIT_E2E_SCREENSHOTS` (default
//! `<target>/console-screenshots`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use jit_e2e::bins::generate_keys;
use jit_e2e::git_server::create_bare_repo;
use jit_e2e::oidc::CLI_CLIENT;
use jit_e2e::process::{ManagedProcess, find_program, free_port, port_is_open, wait_for};
use jit_e2e::{BrokerProcess, GitClient, OidcProvider, RedisServer};
use serde_json::{Value, json};

use crate::support::{basic, broker_base, claims_of, exchange, exchange_raw, revoke};

mod a11y;

/// How long a page may take to appear.
const PAGE: Duration = Duration::from_secs(20);

fn config(keys: &std::path::Path, redis: &str, sso: &str, repos: &std::path::Path) -> String {
    format!(
        r#"{base}
[[issuer]]
name = "corp"
issuer = "{sso}"
audience = "{CLI_CLIENT}"
subject_claim = "email"
client_id = "{CLI_CLIENT}"
algorithms = ["RS256"]

[login]
issuer = "corp"

[[role]]
name = "dev-read"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/*"]
actions = ["read"]

[[role]]
name = "prod-push"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/api"]
actions = ["write"]
refs = ["refs/heads/main"]

[role.approval]
required = 1
wait = 30
min_reason = 5

[[role.approval.approvers]]
issuer = "corp"
subjects = ["sec-admin@example.com"]

[[admin.identity]]
issuer = "corp"
claims = {{ groups = "git-jit-admins" }}

[[upstream]]
repositories = ["acme/**"]
url = "dir:{root}"
"#,
        base = broker_base(keys, redis, None),
        root = repos.display(),
    )
}

/// Redis, the provider, signing keys and an upstream holding acme/api, and the broker
/// configuration over them (one broker or several replicas start from it).
struct World {
    _redis: RedisServer,
    op: OidcProvider,
    _keys: tempfile::TempDir,
    _repos: tempfile::TempDir,
    config: String,
}

impl World {
    async fn start() -> Result<Self> {
        let redis = RedisServer::start().await?;
        let op = OidcProvider::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let repos = tempfile::tempdir()?;
        create_bare_repo(repos.path(), "acme/api")?;
        let config = config(keys.path(), &redis.url(), &op.issuer(), repos.path());
        Ok(Self {
            _redis: redis,
            op,
            _keys: keys,
            _repos: repos,
            config,
        })
    }
}

/// Where screenshots go.
fn screenshot_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("JIT_E2E_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
            .join("console-screenshots"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A running chromedriver on a free port, ended with its process group on drop.
struct Chromedriver {
    _process: ManagedProcess,
    port: u16,
    _logs: tempfile::TempDir,
}

impl Chromedriver {
    async fn start() -> Result<Self> {
        let program = find_program("chromedriver")?;
        let logs = tempfile::Builder::new()
            .prefix("jit-e2e-chromedriver-")
            .tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new(program);
        cmd.arg(format!("--port={port}"));
        // Chromium inherits the zone: the page must show times in it, not in UTC.
        cmd.env("TZ", a11y::ZONE);
        let process = ManagedProcess::spawn("chromedriver", cmd, logs.path())?;
        wait_for("chromedriver", Duration::from_secs(20), || async move {
            Ok(port_is_open(port).then_some(()))
        })
        .await?;
        Ok(Self {
            _process: process,
            port,
            _logs: logs,
        })
    }

    /// A fresh browser (its own profile: no cookies from another session).
    async fn browser(&self) -> Result<Client> {
        let chromium = find_program("chromium")?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    "--lang=en-US",
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .context("starting chromium through chromedriver")
    }
}

async fn shot(browser: &Client, dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    let png = browser.screenshot().await?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png)?;
    Ok(path)
}

async fn wait_css(browser: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    match browser
        .wait()
        .at_most(PAGE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => Ok(e),
        Err(e) => {
            let url = browser.current_url().await.map(|u| u.to_string());
            let source = browser.source().await.unwrap_or_default();
            bail!("no `{css}` within {PAGE:?} ({e}); at {url:?}:\n{source}")
        }
    }
}

/// Signs in at the console through the provider's own login page, as `account`.
async fn sign_in(browser: &Client, broker: &str, account: &str) -> Result<()> {
    browser.goto(&format!("{broker}/console")).await?;
    wait_css(browser, "#sign-in").await?.click().await?;
    // The provider's login form (no login_hint: a person types who they are).
    let field = wait_css(browser, "form#login input[name=account]").await?;
    field.send_keys(account).await?;
    browser
        .find(Locator::Css("form#login button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// The signed-in browser's session, as a `Cookie` header value, and its CSRF token.
async fn signed_in_session(browser: &Client) -> Result<(String, String)> {
    let csrf = wait_css(browser, "header form input[name=csrf]")
        .await?
        .attr("value")
        .await?
        .context("no CSRF field")?;
    let cookie = browser.get_named_cookie("jit_console").await?;
    Ok((format!("jit_console={}", cookie.value()), csrf))
}

/// `git fetch` in `work` through the gateway with `token` as the bearer credential; the exit
/// status and stderr.
async fn fetch(git: &GitClient, work: &std::path::Path, token: &str) -> Result<(bool, String)> {
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    let dir = work.to_string_lossy();
    let out = git
        .output(&["-C", &dir, "-c", &header, "fetch", "--quiet", "origin"])
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `/authz`'s answer for a clone of acme/api with `token`.
async fn authz(broker: &str, token: &str) -> Result<u16> {
    Ok(jit_e2e::http_client()
        .get(format!("{broker}/authz"))
        .header(
            "x-original-uri",
            "/acme/api.git/info/refs?service=git-upload-pack",
        )
        .header("authorization", basic(token))
        .send()
        .await?
        .status()
        .as_u16())
}

#[test]
fn the_security_team_signs_in_sees_and_revokes_a_live_grant_in_a_browser() -> Result<()> {
    crate::support::run(async move {
        let world = World::start().await?;
        let op = &world.op;
        let broker = BrokerProcess::start(&world.config).await?;
        let url = broker.url();
        let shots = screenshot_dir()?;
        let driver = Chromedriver::start().await?;

        // Alice and Bob hold live grants.
        let alice_id = op.id_token("alice@example.com", CLI_CLIENT).await?;
        let alice = exchange(&url, &alice_id, "repo:acme/api:read").await?;
        let alice_jti = claims_of(&alice)?.jti;
        let bob_id = op.id_token("bob@example.com", CLI_CLIENT).await?;
        let bob = exchange(&url, &bob_id, "repo:acme/api:read").await?;
        let bob_jti = claims_of(&bob)?.jti;
        // Alice clones and fetches through the gateway with her live grant.
        let git = GitClient::new()?;
        let plain = format!("{url}/acme/api.git");
        let header = format!("http.extraHeader=Authorization: Bearer {alice}");
        git.run(&["-c", &header, "clone", "--quiet", &plain, "api"])
            .await?;
        let work = git.home().join("api");
        let (ok, err) = fetch(&git, &work, &alice).await?;
        ensure!(ok, "Alice's fetch with her live grant failed:\n{err}");

        // A non-admin is turned away with the reason.
        let browser = driver.browser().await?;
        sign_in(&browser, &url, "alice@example.com").await?;
        let why = wait_css(&browser, "p.notice.error").await?.text().await?;
        ensure!(
            why.contains(
                "alice@example.com (issuer corp) is neither an admin of this broker nor an approver"
            ),
            "non-admin page says: {why}"
        );
        shot(&browser, &shots, "console-denied").await?;
        browser.close().await?;

        // The security admin signs in and sees Alice's live grant.
        let browser = driver.browser().await?;
        sign_in(&browser, &url, "sec-admin").await?;
        let row = format!("tr[data-jti='{alice_jti}']");
        wait_css(&browser, &row).await?;
        let page = browser.source().await?;
        ensure!(page.contains("alice@example.com"), "Now page:\n{page}");
        ensure!(!page.contains(&alice), "a token was rendered in the page");
        let now_png = shot(&browser, &shots, "console-now").await?;
        // Keep the README's screenshot current when asked.
        if let Some(docs) = std::env::var_os("JIT_UPDATE_DOCS_SCREENSHOT") {
            std::fs::copy(&now_png, PathBuf::from(docs))?;
        }

        // A forged cross-site post, with the admin's session cookie, is refused.
        let (session, csrf) = signed_in_session(&browser).await?;
        a11y::check_page(
            &browser,
            &format!("{url}/console"),
            &session,
            2,
            &shots,
            "a11y-now",
        )
        .await?;
        browser.goto(&format!("{url}/console")).await?;
        wait_css(&browser, &row).await?;
        let http = jit_e2e::http_client();
        let forged = [
            ("http://evil.example", csrf.as_str()),
            (url.as_str(), ""),
            (url.as_str(), "not-the-token"),
        ];
        for (origin, token) in forged {
            let r = http
                .post(format!("{url}/console/revoke"))
                .header("cookie", &session)
                .header("origin", origin)
                .form(&[
                    ("csrf", token),
                    ("by", "jti"),
                    ("value", bob_jti.as_str()),
                    ("reason", "forged"),
                ])
                .send()
                .await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            ensure!(
                status == 403,
                "forged post from {origin} answered {status}:\n{body}"
            );
            ensure!(body.contains("refused:"), "{body}");
        }
        ensure!(
            authz(&url, &bob).await? == 204,
            "a forged post revoked Bob's grant"
        );

        // A revocation made elsewhere (the API, as the CLI does) shows on the open page
        // without a reload: Bob's row goes.
        let admin_id = op.id_token("sec-admin", CLI_CLIENT).await?;
        revoke(&url, &admin_id, "jti", &bob_jti, "rotated").await?;
        let bob_row = format!("tr[data-jti='{bob_jti}']");
        let gone = browser
            .wait()
            .at_most(PAGE)
            .for_element(Locator::Css(&format!("#grants:not(:has({bob_row}))")))
            .await;
        ensure!(gone.is_ok(), "Bob's revoked grant still shows: {gone:?}");
        ensure!(
            browser.find(Locator::Css(&row)).await.is_ok(),
            "Alice's row went too"
        );

        // Revoke Alice's grant from its row: her token is refused at once.
        let reason = wait_css(&browser, &format!("{row} input[name=reason]")).await?;
        reason.send_keys("laptop lost").await?;
        browser
            .find(Locator::Css(&format!("{row} button[type=submit]")))
            .await?
            .click()
            .await?;
        let done = wait_css(&browser, "#revoked").await?.text().await?;
        ensure!(done.contains("at most 1 live grant ended"), "{done}");
        shot(&browser, &shots, "console-revoked").await?;
        let (ok, err) = fetch(&git, &work, &alice).await?;
        ensure!(
            !ok,
            "Alice's fetch still works after the revocation:\n{err}"
        );
        ensure!(!err.contains(&alice), "git's error shows the token");
        // Refused for want of a credential (the 401 challenge), not for some other failure.
        ensure!(
            ["could not read Username", "Authentication failed", "401"]
                .iter()
                .any(|why| err.contains(why)),
            "Alice's fetch failed, but not on a refused credential:\n{err}"
        );
        println!("Alice's fetch after the revocation: {}", err.trim());

        // The revocation is in the trail under the admin's name.
        let trail = http
            .get(format!("{url}/v1/audit?event=grant.revoked"))
            .bearer_auth(&admin_id)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let by_console = trail
            .lines()
            .map(serde_json::from_str::<Value>)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|e| e["jti"] == alice_jti.as_str())
            .with_context(|| format!("no grant.revoked for Alice's jti:\n{trail}"))?;
        ensure!(
            by_console["subject"] == "sec-admin@example.com",
            "{by_console}"
        );
        ensure!(by_console["reason"] == "laptop lost", "{by_console}");

        // The repository's timeline draws both grants, Alice's ended by a revocation.
        browser
            .goto(&format!("{url}/console/repo?repo=acme%2Fapi"))
            .await?;
        wait_css(
            &browser,
            &format!("svg#timeline rect[data-jti='{alice_jti}']"),
        )
        .await?;
        wait_css(
            &browser,
            "svg#timeline g[data-subject='alice@example.com'] path.revoked",
        )
        .await?;
        wait_css(
            &browser,
            &format!("svg#timeline rect[data-jti='{bob_jti}']"),
        )
        .await?;
        shot(&browser, &shots, "console-repository").await?;
        let repo_page = format!("{url}/console/repo?repo=acme%2Fapi");
        a11y::check_page(&browser, &repo_page, &session, 2, &shots, "a11y-repository").await?;

        // The Trail page finds it, verifies the chain, and exports it.
        browser
            .goto(&format!("{url}/console/trail?event=grant.revoked"))
            .await?;
        wait_css(&browser, "tr td code").await?;
        let page = browser.source().await?;
        ensure!(page.contains(&alice_jti), "Trail page:\n{page}");
        wait_css(&browser, "#verify-chain").await?.click().await?;
        let chain = wait_css(&browser, "p#chain.ok").await?.text().await?;
        ensure!(chain.contains("audit chain intact"), "{chain}");
        shot(&browser, &shots, "console-trail").await?;
        let trail_page = format!("{url}/console/trail?event=grant.revoked");
        a11y::check_page(&browser, &trail_page, &session, 1, &shots, "a11y-trail").await?;
        let csv = http
            .get(format!(
                "{url}/console/trail/export?format=csv&event=grant.revoked"
            ))
            .header("cookie", &session)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        ensure!(
            csv.starts_with("seq,ts,event") && csv.contains(&alice_jti),
            "export:\n{csv}"
        );

        // Bob asks to push to main; the admin approves from the Requests page.
        let (status, asked) = exchange_raw(
            &url,
            &bob_id,
            "repo:acme/api:write",
            &[
                ("role", "prod-push"),
                ("refs", "refs/heads/main"),
                ("reason", "hotfix INC-42"),
                ("approval", "request"),
            ],
        )
        .await?;
        let request = asked["request_id"]
            .as_str()
            .with_context(|| format!("no request filed ({status}): {asked}"))?
            .to_owned();
        browser.goto(&format!("{url}/console/requests")).await?;
        let pending = format!("tr[data-request='{request}']");
        wait_css(&browser, &pending).await?;
        let page = browser.source().await?;
        ensure!(page.contains("hotfix INC-42"), "Requests page:\n{page}");
        shot(&browser, &shots, "console-requests").await?;
        let requests_page = format!("{url}/console/requests");
        a11y::check_page(
            &browser,
            &requests_page,
            &session,
            1,
            &shots,
            "a11y-requests",
        )
        .await?;
        wait_css(&browser, &format!("{pending} input[name=reason]"))
            .await?
            .send_keys("checked INC-42")
            .await?;
        browser
            .find(Locator::Css(&format!("{pending} button[value=approve]")))
            .await?
            .click()
            .await?;
        let said = wait_css(&browser, "p.notice").await?.text().await?;
        ensure!(
            said.contains(&format!("request {request} is now approved")),
            "{said}"
        );

        // Signing out ends the session: the old cookie opens nothing.
        browser.goto(&format!("{url}/console")).await?;
        wait_css(&browser, "header form button[type=submit]")
            .await?
            .click()
            .await?;
        wait_css(&browser, "#sign-in").await?;
        let after = http
            .get(format!("{url}/console"))
            .header("cookie", &session)
            .send()
            .await?;
        ensure!(
            after.status().as_u16() == 401,
            "the ended session still opens the console"
        );
        browser.close().await?;
        crate::support::assert_no_jwt("broker log", &broker.logs());
        Ok(())
    })
}

/// Two replicas on one Redis share console sessions: signed in on A (through the provider's
/// login page), the cookie opens B; signing out on B ends the session on A too.
#[test]
fn a_console_session_is_shared_by_replicas_and_ended_on_all() -> Result<()> {
    crate::support::run(async move {
        let world = World::start().await?;
        let a = BrokerProcess::start(&world.config).await?;
        let b = BrokerProcess::start(&world.config).await?;
        let driver = Chromedriver::start().await?;
        let browser = driver.browser().await?;
        sign_in(&browser, &a.url(), "sec-admin").await?;
        let (session, csrf) = signed_in_session(&browser).await?;
        browser.close().await?;

        let http = jit_e2e::http_client();
        let open = |base: String| {
            let http = http.clone();
            let session = session.clone();
            async move {
                let r = http
                    .get(format!("{base}/console"))
                    .header("cookie", &session)
                    .send()
                    .await?;
                anyhow::Ok(r.status().as_u16())
            }
        };
        ensure!(
            open(a.url()).await? == 200,
            "A does not open its own session"
        );
        ensure!(open(b.url()).await? == 200, "B does not open A's session");
        let out = http
            .post(format!("{}/console/logout", b.url()))
            .header("cookie", &session)
            .header("origin", b.url())
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await?;
        let status = out.status().as_u16();
        ensure!(
            status == 200,
            "sign-out on B answered {status}: {}",
            out.text().await?
        );
        ensure!(
            open(a.url()).await? == 401,
            "the session signed out on B still opens A"
        );
        ensure!(open(b.url()).await? == 401, "B still opens it");
        crate::support::assert_no_jwt("replica A's log", &a.logs());
        crate::support::assert_no_jwt("replica B's log", &b.logs());
        Ok(())
    })
}
