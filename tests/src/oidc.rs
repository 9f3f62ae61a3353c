//! The company SSO for tests: the npm package `oidc-provider` run by `tests/oidc/server.mjs`
//! under Node, on a free port, with keys in a JWKS file the harness controls.
//!
//! ID tokens are obtained without a browser (authorization code + PKCE driven over HTTP, or
//! CIBA), and device-flow user codes are approved by driving the provider's verification
//! pages over HTTP as a browser would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{
    ManagedProcess, NotReady, START_TIMEOUT, failed, find_program, free_port, start_retrying,
    wait_for, wait_healthy, wait_port_closed,
};
use crate::{b64url, http_client, random_token};

/// The public native client `git jit login` uses (device code, refresh token, auth code).
pub const CLI_CLIENT: &str = "git-jit-cli";
/// A confidential client with CIBA; its ID tokens are RS256.
pub const TEST_CLIENT: &str = "git-jit-test";
/// Like [`TEST_CLIENT`], with ES256 ID tokens.
pub const TEST_CLIENT_ES256: &str = "git-jit-test-es256";
/// Another confidential client: its tokens carry the wrong audience for git-jit.
pub const OTHER_CLIENT: &str = "other-app";
/// The redirect URI every client registered (never actually served).
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// Scopes asked for by default.
pub const DEFAULT_SCOPE: &str = "openid email profile groups";

/// The secret of a confidential client (`None` for the public CLI client).
pub fn client_secret(client: &str) -> Option<&'static str> {
    match client {
        TEST_CLIENT => Some("git-jit-test-secret"),
        TEST_CLIENT_ES256 => Some("git-jit-test-es256-secret"),
        OTHER_CLIENT => Some("other-app-secret"),
        _ => None,
    }
}

/// A token endpoint response.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenResponse {
    /// The ID token (JWT).
    pub id_token: Option<String>,
    /// The opaque access token.
    pub access_token: Option<String>,
    /// Present when `offline_access` was granted.
    pub refresh_token: Option<String>,
    /// Seconds.
    pub expires_in: Option<i64>,
    /// Granted scope.
    pub scope: Option<String>,
}

/// An RFC 8628 device authorization response.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceAuthorization {
    /// For the token endpoint.
    pub device_code: String,
    /// What the user types.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// Same, with the code filled in.
    pub verification_uri_complete: Option<String>,
    /// Seconds.
    pub expires_in: i64,
    /// Seconds between polls.
    pub interval: Option<i64>,
}

/// A running `oidc-provider`, killed on drop.
#[derive(Debug)]
pub struct OidcProvider {
    process: Option<ManagedProcess>,
    port: u16,
    jwks_path: PathBuf,
    http: reqwest::Client,
    dir: TempDir,
}

impl OidcProvider {
    /// Starts the provider on a free port with freshly generated keys.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("jit-e2e-oidc-").tempdir()?;
        let jwks_path = dir.path().join("jwks.json");
        let (folder, jwks) = (dir.path(), &jwks_path);
        let (process, port) = start_retrying("oidc-provider", move || async move {
            let port = free_port().map_err(failed)?;
            Ok((spawn_provider(folder, jwks, port).await?, port))
        })
        .await?;
        Ok(Self {
            process: Some(process),
            port,
            jwks_path,
            http: http_client(),
            dir,
        })
    }

    /// `http://127.0.0.1:PORT` (the `iss` of its tokens).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the provider logged.
    pub fn logs(&self) -> String {
        self.process
            .as_ref()
            .map(ManagedProcess::logs)
            .unwrap_or_default()
    }

    /// Restarts the provider on the same port with fresh signing keys. Old tokens no longer
    /// verify against its JWKS; sessions and grants are forgotten.
    pub async fn rotate_keys(&mut self) -> Result<()> {
        self.stop()?;
        std::fs::remove_file(&self.jwks_path).context("removing the old JWKS")?;
        self.respawn().await
    }

    /// Restarts the provider on the same port with the same keys.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.respawn().await
    }

    /// Starts the provider again on its port; a start that stalls (see [`NotReady::Stalled`])
    /// or finds the port not yet free is tried again, as [`crate::process::Retries`] allows.
    async fn respawn(&mut self) -> Result<()> {
        let (folder, jwks, port) = (self.dir.path(), &self.jwks_path, self.port);
        let process =
            start_retrying("oidc-provider", move || spawn_provider(folder, jwks, port)).await?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills the provider and waits until its port is closed.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        wait_port_closed(self.port, std::time::Duration::from_secs(10))
    }

    /// The provider's public JWKS (`GET /jwks`).
    pub async fn jwks(&self) -> Result<Value> {
        let disc = self.discovery().await?;
        let uri = disc["jwks_uri"].as_str().context("no jwks_uri")?;
        Ok(self
            .http
            .get(uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Result<Value> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// An ID token for `account` issued to `client` (its `aud`), obtained by driving the
    /// authorization-code flow with PKCE over HTTP (login by `login_hint`, consent granted).
    pub async fn id_token(&self, account: &str, client: &str) -> Result<String> {
        self.authorization_code_tokens(account, client, DEFAULT_SCOPE)
            .await?
            .id_token
            .context("token response without id_token")
    }

    /// The full token response of an authorization-code flow for `account` and `client`
    /// with `scope` (add `offline_access` for a refresh token).
    pub async fn authorization_code_tokens(
        &self,
        account: &str,
        client: &str,
        scope: &str,
    ) -> Result<TokenResponse> {
        let verifier = random_token(32);
        let challenge =
            b64url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let mut auth = Url::parse(&format!("{}/auth", self.issuer()))?;
        {
            let mut q = auth.query_pairs_mut();
            q.append_pair("client_id", client)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", REDIRECT_URI)
                .append_pair("scope", scope)
                .append_pair("login_hint", account)
                .append_pair("state", &random_token(8))
                .append_pair("nonce", &random_token(8))
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if scope.split(' ').any(|s| s == "offline_access") {
                q.append_pair("prompt", "consent");
            }
        }
        let mut browser = Browser::new(self.http.clone());
        let page = browser
            .navigate(
                reqwest::Method::GET,
                auth.as_str(),
                None,
                Some(REDIRECT_URI),
            )
            .await?;
        let redirect = Url::parse(&page.url)?;
        let params: BTreeMap<String, String> = redirect.query_pairs().into_owned().collect();
        if let Some(err) = params.get("error") {
            bail!(
                "authorization failed: {err}: {:?}",
                params.get("error_description")
            );
        }
        let code = params
            .get("code")
            .with_context(|| format!("no code in redirect {}", page.url))?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("code_verifier", verifier),
        ];
        if client_secret(client).is_none() {
            form.push(("client_id", client.to_owned()));
        }
        self.token_request(client, &form).await
    }

    /// Tokens for `account` through CIBA (poll mode; the provider approves at once).
    /// Only confidential clients ([`TEST_CLIENT`], [`TEST_CLIENT_ES256`], [`OTHER_CLIENT`]).
    pub async fn ciba_tokens(
        &self,
        account: &str,
        client: &str,
        scope: &str,
    ) -> Result<TokenResponse> {
        let secret = client_secret(client).context("CIBA needs a confidential client")?;
        let resp: Value = self
            .http
            .post(format!("{}/backchannel", self.issuer()))
            .basic_auth(client, Some(secret))
            .form(&[("scope", scope), ("login_hint", account)])
            .send()
            .await?
            .json()
            .await?;
        let auth_req_id = resp["auth_req_id"]
            .as_str()
            .with_context(|| format!("backchannel authentication refused: {resp}"))?
            .to_owned();
        wait_for("CIBA approval", START_TIMEOUT, || {
            let form = vec![
                ("grant_type", "urn:openid:params:grant-type:ciba".to_owned()),
                ("auth_req_id", auth_req_id.clone()),
            ];
            async move {
                match self.token_request(client, &form).await {
                    Ok(t) => Ok(Some(t)),
                    Err(e) if format!("{e:#}").contains("authorization_pending") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Starts a device authorization (RFC 8628 §3.1) for `client` with `scope`.
    pub async fn device_authorization(
        &self,
        client: &str,
        scope: &str,
    ) -> Result<DeviceAuthorization> {
        let resp = self
            .http
            .post(format!("{}/device/auth", self.issuer()))
            .form(&[("client_id", client), ("scope", scope)])
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("device authorization failed ({status}): {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Approves `user_code` as `account`, the way a person's browser would: opens the
    /// verification page, submits the code, confirms, logs in as `account` (consent is granted
    /// by the provider's test interaction handler), and checks the success page.
    pub async fn approve_device(&self, user_code: &str, account: &str) -> Result<()> {
        let mut browser = Browser::new(self.http.clone());
        let mut page = browser
            .navigate(
                reqwest::Method::GET,
                &format!("{}/device", self.issuer()),
                None,
                None,
            )
            .await?;
        // Each step is a page with a form: code entry, confirmation, login.
        for _ in 0..6 {
            if page.body.contains("class=\"red\"") {
                bail!("the provider refused the device approval:\n{}", page.body);
            }
            let Some(form) = Form::first_in(&page.body) else {
                if page.body.contains("Sign-in Success") {
                    return Ok(());
                }
                bail!(
                    "device approval ended on an unexpected page ({}):\n{}",
                    page.status,
                    page.body
                );
            };
            let mut fields = form.fields.clone();
            if let Some(v) = fields
                .iter_mut()
                .find(|(k, v)| k == "user_code" && v.is_empty())
            {
                v.1 = user_code.to_owned();
            }
            if let Some(v) = fields.iter_mut().find(|(k, _)| k == "account") {
                v.1 = account.to_owned();
            }
            let action = page.resolve(&form.action)?;
            page = browser
                .navigate(form.method.clone(), &action, Some(fields), None)
                .await?;
        }
        bail!("device approval did not finish:\n{}", page.body)
    }

    /// Polls the token endpoint once for a device code; `Ok(None)` while pending.
    pub async fn poll_device_token(
        &self,
        client: &str,
        device_code: &str,
    ) -> Result<Option<TokenResponse>> {
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("device_code", device_code.to_owned()),
            ("client_id", client.to_owned()),
        ];
        match self.token_request(client, &form).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if format!("{e:#}").contains("authorization_pending") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, client: &str, refresh_token: &str) -> Result<TokenResponse> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.to_owned()),
        ];
        if client_secret(client).is_none() {
            form.push(("client_id", client.to_owned()));
        }
        self.token_request(client, &form).await
    }

    async fn token_request(&self, client: &str, form: &[(&str, String)]) -> Result<TokenResponse> {
        let mut req = self
            .http
            .post(format!("{}/token", self.issuer()))
            .form(form);
        if let Some(secret) = client_secret(client) {
            req = req.basic_auth(client, Some(secret));
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("token request failed ({status}): {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// Runs `tests/oidc/server.mjs` on `port` with the keys in `jwks` (made there when missing),
/// its log in `dir`, and waits until it answers `GET /healthz`.
async fn spawn_provider(
    dir: &Path,
    jwks: &Path,
    port: u16,
) -> Result<ManagedProcess, (anyhow::Error, NotReady)> {
    if !oidc_dir().join("node_modules/oidc-provider").is_dir() {
        return Err(failed(anyhow::anyhow!(
            "{}/node_modules is missing: run scripts/test (or `npm ci` in tests/oidc)",
            oidc_dir().display()
        )));
    }
    let mut cmd = Command::new(find_program("node").map_err(failed)?);
    cmd.current_dir(oidc_dir())
        .arg(oidc_dir().join("server.mjs"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--jwks")
        .arg(jwks)
        .env("NODE_ENV", "test");
    let process = ManagedProcess::spawn("oidc-provider", cmd, dir).map_err(failed)?;
    wait_healthy(
        "oidc-provider",
        process,
        &format!("http://127.0.0.1:{port}/healthz"),
    )
    .await
}

/// `tests/oidc` in the source tree.
fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A page the [`Browser`] ended on.
#[derive(Debug)]
struct Page {
    url: String,
    status: reqwest::StatusCode,
    body: String,
}

impl Page {
    fn resolve(&self, href: &str) -> Result<String> {
        let base = Url::parse(&self.url)?;
        Ok(base.join(&decode_entities(href))?.to_string())
    }
}

/// Just enough of a browser: a cookie jar for one host and manual redirect following.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            cookies: BTreeMap::new(),
        }
    }

    /// Requests `url` and follows redirects until a non-redirect response, or until a
    /// redirect to `stop_at` (returned as a page with that URL and an empty body).
    async fn navigate(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<Vec<(String, String)>>,
        stop_at: Option<&str>,
    ) -> Result<Page> {
        let mut url = url.to_owned();
        let mut method = method;
        let mut form = form;
        for _ in 0..20 {
            let mut req = self.http.request(method.clone(), &url);
            if !self.cookies.is_empty() {
                let header = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                req = req.header("cookie", header);
            }
            if let Some(f) = form.take() {
                req = req.form(&f);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            self.store_cookies(&resp);
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .context("redirect without Location")?;
                let next = Url::parse(&url)?.join(location)?.to_string();
                if stop_at.is_some_and(|s| next.starts_with(s)) {
                    return Ok(Page {
                        url: next,
                        status,
                        body: String::new(),
                    });
                }
                url = next;
                method = reqwest::Method::GET;
                continue;
            }
            let body = resp.text().await?;
            if status.is_client_error() || status.is_server_error() {
                bail!("{method} {url} answered {status}:\n{body}");
            }
            return Ok(Page { url, status, body });
        }
        bail!("too many redirects from {url}")
    }

    fn store_cookies(&mut self, resp: &reqwest::Response) {
        for value in resp.headers().get_all("set-cookie") {
            let Ok(value) = value.to_str() else { continue };
            let pair = value.split(';').next().unwrap_or("");
            let Some((name, val)) = pair.split_once('=') else {
                continue;
            };
            let expired = value
                .to_ascii_lowercase()
                .contains("expires=thu, 01 jan 1970");
            if expired || val.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), val.trim().to_owned());
            }
        }
    }
}

/// An HTML form: its action, method and named `<input>` fields (buttons are ignored).
#[derive(Clone, Debug)]
struct Form {
    action: String,
    method: reqwest::Method,
    fields: Vec<(String, String)>,
}

impl Form {
    /// The first `<form>` of a page (a minimal scanner, enough for the provider's pages).
    fn first_in(html: &str) -> Option<Self> {
        let start = html.find("<form")?;
        let tag_end = start + html[start..].find('>')?;
        let tag = &html[start..tag_end];
        let end = html[tag_end..]
            .find("</form>")
            .map_or(html.len(), |e| tag_end + e);
        let inner = &html[tag_end..end];
        let method = match attr(tag, "method").map(|m| m.to_ascii_uppercase()) {
            Some(m) if m == "POST" => reqwest::Method::POST,
            _ => reqwest::Method::GET,
        };
        let mut fields = Vec::new();
        let mut rest = inner;
        while let Some(i) = rest.find("<input") {
            let after = &rest[i..];
            let close = after.find('>').unwrap_or(after.len());
            let input = &after[..close];
            if let Some(name) = attr(input, "name") {
                fields.push((name, attr(input, "value").unwrap_or_default()));
            }
            rest = &after[close..];
        }
        Some(Self {
            action: attr(tag, "action").unwrap_or_default(),
            method,
            fields,
        })
    }
}

/// The value of `name="..."` inside one tag (double quotes, as the provider writes them).
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let mut search = tag;
    loop {
        let i = search.find(&needle)?;
        // Attribute names are preceded by whitespace; skip e.g. `data-name="` for `name="`.
        let preceded_by_space =
            i == 0 || search[..i].chars().last().is_some_and(char::is_whitespace);
        let after = &search[i + needle.len()..];
        if preceded_by_space {
            let end = after.find('"')?;
            return Some(decode_entities(&after[..end]));
        }
        search = after;
    }
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(semi) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_scanner_reads_the_device_confirm_form() {
        let html = r#"<p>x</p><form id="op.deviceConfirmForm" method="post" action="/device">
<input type="hidden" name="xsrf" value="a&amp;b"/>
<input type="hidden" name="user_code" value="ABCD-EFGH"/>
<input type="hidden" name="confirm" value="yes"/>
</form><button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">"#;
        let form = Form::first_in(html).expect("form");
        assert_eq!(form.action, "/device");
        assert_eq!(form.method, reqwest::Method::POST);
        assert_eq!(
            form.fields,
            vec![
                ("xsrf".to_owned(), "a&b".to_owned()),
                ("user_code".to_owned(), "ABCD-EFGH".to_owned()),
                ("confirm".to_owned(), "yes".to_owned()),
            ]
        );
    }
}
