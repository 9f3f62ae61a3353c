//! Who is asking: finds the subject token to exchange at the broker, CI first — GitHub
//! Actions (its OIDC token endpoint, for the broker's audience), a variable set by the CI
//! (GitLab `id_tokens:`; its name is configurable), a token file (Kubernetes projected
//! service-account token) — then the person's `git jit login` session.
//!
//! Identities go only to the broker the person configured (`git jit setup`, `GIT_JIT_BROKER`):
//! a CI identity is never sent to a broker taken from a Git URL, and the audience asked of
//! GitHub Actions is the configured one, never what a server's metadata says.

use std::fmt;
use std::path::PathBuf;

use jit_proto::Secret;
use jit_proto::api::ServerMetadata;
use jit_proto::exchange::SubjectTokenType;
use serde::Deserialize;

use crate::broker::chain;
use crate::config::{Env, Settings};
use crate::login::{self, LoginError};
use crate::session::SessionStore;

/// Why no identity could be found.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// GitHub Actions' token endpoint failed.
    #[error(
        "GitHub Actions OIDC token request failed: {0} (does the job have `permissions: id-token: write`?)"
    )]
    GitHubActions(String),
    /// The configured token file could not be read.
    #[error("cannot read the ID token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The broker is not the configured one: no CI identity goes there.
    #[error(
        "refusing to send the {identity} identity to {broker}: CI identities go only to the broker configured with `git jit setup <URL>` or GIT_JIT_BROKER"
    )]
    NotPinned {
        /// The identity that would have been sent.
        identity: Source,
        /// The broker it would have gone to.
        broker: String,
    },
    /// The broker's metadata asks for another audience than the configured one.
    #[error(
        "the broker at {broker} asks for CI identity tokens with audience {advertised:?}, but the configured audience is {configured:?}; refusing (set `audience` in config.toml or GIT_JIT_AUDIENCE if the broker's is right)"
    )]
    AudienceMismatch {
        /// The broker.
        broker: String,
        /// The audience from the configuration.
        configured: String,
        /// The audience the broker's metadata names.
        advertised: String,
    },
    /// The person's session is missing, expired or broken.
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Where a subject token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// GitHub Actions' OIDC token endpoint.
    GitHubActions,
    /// An environment variable (GitLab `id_tokens:` or any CI).
    EnvVar(String),
    /// A file (Kubernetes projected service-account token).
    File(PathBuf),
    /// The `git jit login` session.
    Session,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::GitHubActions => f.write_str("GitHub Actions OIDC"),
            Source::EnvVar(v) => write!(f, "environment variable {v}"),
            Source::File(p) => write!(f, "token file {}", p.display()),
            Source::Session => f.write_str("git jit login session"),
        }
    }
}

/// A token to exchange at the broker.
#[derive(Debug, Clone)]
pub struct SubjectToken {
    /// The token.
    pub token: Secret,
    /// Its RFC 8693 type.
    pub token_type: SubjectTokenType,
    /// Where it came from.
    pub source: Source,
}

/// What identity discovery needs.
pub struct Lookup<'a> {
    /// The environment.
    pub env: Env<'a>,
    /// The settings (variable name, token file, directories).
    pub settings: &'a Settings,
    /// The HTTP client.
    pub http: &'a reqwest::Client,
    /// The broker's metadata (login issuer; its audience is only compared, never used).
    pub metadata: &'a ServerMetadata,
    /// The broker's base URL: where the identity goes.
    pub broker: &'a str,
    /// The audience CI identity tokens are requested for, from the configuration; `None`
    /// when `broker` is not the configured broker (taken from a Git URL), and then no CI
    /// identity, nor a login session made for another broker, is sent.
    pub pinned: Option<&'a str>,
    /// The local clock.
    pub clock: fn() -> i64,
}

/// The CI identity this environment provides, in the order they are tried (GitHub Actions,
/// the variable, the token file), without reading or fetching it: what `git jit status`
/// shows. `None`: the `git jit login` session is used.
pub fn ci_source(env: Env<'_>, settings: &Settings) -> Option<Source> {
    if env("ACTIONS_ID_TOKEN_REQUEST_URL").is_some()
        && env("ACTIONS_ID_TOKEN_REQUEST_TOKEN").is_some()
    {
        return Some(Source::GitHubActions);
    }
    if env(&settings.id_token_env).is_some() {
        return Some(Source::EnvVar(settings.id_token_env.clone()));
    }
    settings.id_token_file.clone().map(Source::File)
}

/// Finds the first available identity, in the documented order.
pub async fn subject_token(l: &Lookup<'_>) -> Result<SubjectToken, IdentityError> {
    if let (Some(url), Some(bearer)) = (
        (l.env)("ACTIONS_ID_TOKEN_REQUEST_URL"),
        (l.env)("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) {
        let audience = pinned(l, Source::GitHubActions)?;
        if l.metadata.subject_token_audience != audience {
            return Err(IdentityError::AudienceMismatch {
                broker: l.broker.to_owned(),
                configured: audience.to_owned(),
                advertised: l.metadata.subject_token_audience.clone(),
            });
        }
        let token = github_actions(l.http, &url, &bearer, audience).await?;
        return Ok(SubjectToken {
            token,
            token_type: SubjectTokenType::Jwt,
            source: Source::GitHubActions,
        });
    }
    let var = &l.settings.id_token_env;
    if let Some(v) = (l.env)(var) {
        pinned(l, Source::EnvVar(var.clone()))?;
        let token = Secret::new(v.trim());
        return Ok(SubjectToken {
            token,
            token_type: SubjectTokenType::Jwt,
            source: Source::EnvVar(var.clone()),
        });
    }
    if let Some(path) = &l.settings.id_token_file {
        pinned(l, Source::File(path.clone()))?;
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::File {
            path: path.clone(),
            source,
        })?;
        let token = Secret::new(text.trim());
        return Ok(SubjectToken {
            token,
            token_type: SubjectTokenType::Jwt,
            source: Source::File(path.clone()),
        });
    }
    let issuer = l
        .metadata
        .login_issuer
        .as_deref()
        .ok_or_else(|| LoginError::NoLoginIssuer(l.broker.to_owned()))?;
    let store = SessionStore::new(&l.settings.dirs.config);
    let token =
        login::current_id_token(&store, issuer, l.broker, l.pinned.is_some(), l.clock).await?;
    Ok(SubjectToken {
        token,
        token_type: SubjectTokenType::IdToken,
        source: Source::Session,
    })
}

/// The configured audience, or why `source` must not go to this broker.
fn pinned<'a>(l: &Lookup<'a>, source: Source) -> Result<&'a str, IdentityError> {
    l.pinned.ok_or_else(|| IdentityError::NotPinned {
        identity: source,
        broker: l.broker.to_owned(),
    })
}

#[derive(Deserialize)]
struct ActionsToken {
    value: Secret,
}

/// Asks GitHub Actions for an OIDC token minted for `audience`.
async fn github_actions(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    audience: &str,
) -> Result<Secret, IdentityError> {
    let fail = |m: String| IdentityError::GitHubActions(m);
    let mut u = reqwest::Url::parse(url)
        .map_err(|_| fail("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".into()))?;
    // The runner's bearer token goes there: never in clear text beyond this machine.
    if !(u.scheme() == "https" || (u.scheme() == "http" && crate::broker::is_loopback(&u))) {
        return Err(fail(
            "ACTIONS_ID_TOKEN_REQUEST_URL must use https (plain http only on loopback)".into(),
        ));
    }
    u.query_pairs_mut().append_pair("audience", audience);
    let resp = http
        .get(u)
        .bearer_auth(bearer)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| fail(chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("status {status}")));
    }
    let t: ActionsToken = resp.json().await.map_err(|e| fail(chain(&e)))?;
    Ok(t.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::fake_jwt;
    use crate::config::Dirs;
    use crate::session::Session;
    use crate::testserver::{Reply, TestServer, client};
    use serde_json::json;
    use std::collections::HashMap;

    fn settings(dir: &std::path::Path, file: Option<PathBuf>) -> Settings {
        Settings {
            dirs: Dirs {
                config: dir.join("c"),
                cache: dir.join("k"),
            },
            broker: Some("https://b".into()),
            servers: vec![],
            audience: None,
            id_token_env: "CI_JIT_TOKEN".into(),
            id_token_file: file,
        }
    }

    fn md(login: Option<&str>) -> ServerMetadata {
        ServerMetadata {
            issuer: "https://b".into(),
            token_endpoint: "https://b/oauth/token".into(),
            introspection_endpoint: "https://b/oauth/introspect".into(),
            introspection_endpoint_auth_methods_supported: vec![],
            jwks_uri: "https://b/jwks".into(),
            grant_types_supported: vec![],
            token_audience: "git".into(),
            subject_token_audience: "git-jit broker".into(),
            login_issuer: login.map(str::to_owned),
            login_client_id: Some("git-jit-cli".into()),
            login_scope: None,
            scope_syntax: String::new(),
        }
    }

    async fn find(
        env: &[(&str, &str)],
        s: &Settings,
        m: &ServerMetadata,
    ) -> Result<SubjectToken, IdentityError> {
        find_at(env, s, m, Some("git-jit broker")).await
    }

    async fn find_at(
        env: &[(&str, &str)],
        s: &Settings,
        m: &ServerMetadata,
        pinned: Option<&str>,
    ) -> Result<SubjectToken, IdentityError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let env = move |k: &str| map.get(k).cloned();
        let http = client();
        let l = Lookup {
            env: &env,
            settings: s,
            http: &http,
            metadata: m,
            broker: "https://b",
            pinned,
            clock: || 1000,
        };
        subject_token(&l).await
    }

    #[tokio::test]
    async fn github_actions_first_with_broker_audience() {
        let srv = TestServer::start(|_| Reply::json(200, json!({"value": "gha-jwt", "count": 1})));
        let tmp = tempfile::tempdir().expect("tmp");
        let url = format!("{}/token?api-version=2.0", srv.url);
        let env = [
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret"),
            ("CI_JIT_TOKEN", "gitlab"),
        ];
        let t = find(&env, &settings(tmp.path(), None), &md(None))
            .await
            .expect("token");
        assert_eq!(
            (t.token.expose(), t.source),
            ("gha-jwt", Source::GitHubActions)
        );
        let r = &srv.seen()[0];
        assert_eq!(r.target, "/token?api-version=2.0&audience=git-jit+broker");
        assert_eq!(r.header("authorization"), Some("Bearer runner-secret"));
        assert_eq!(r.method, "GET");
    }

    #[tokio::test]
    async fn github_actions_failure_explains_permissions() {
        let srv = TestServer::start(|_| Reply::json(403, json!({})));
        let tmp = tempfile::tempdir().expect("tmp");
        let url = format!("{}/token?x=1", srv.url);
        let env = [
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "s"),
        ];
        let e = find(&env, &settings(tmp.path(), None), &md(None))
            .await
            .expect_err("403");
        assert!(e.to_string().contains("id-token: write"), "{e}");
    }

    /// The runner's bearer token is never sent in clear text beyond this machine.
    #[tokio::test]
    async fn github_actions_url_must_be_https() {
        let tmp = tempfile::tempdir().expect("tmp");
        for url in ["http://runner.example/token", "ftp://127.0.0.1/token"] {
            let env = [
                ("ACTIONS_ID_TOKEN_REQUEST_URL", url),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret"),
            ];
            let e = find(&env, &settings(tmp.path(), None), &md(None))
                .await
                .expect_err(url);
            assert!(e.to_string().contains("must use https"), "{url}: {e}");
            assert!(!e.to_string().contains("runner-secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn then_env_var_then_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("sa-token");
        std::fs::write(&file, "k8s-jwt\n").expect("write");
        let s = settings(tmp.path(), Some(file.clone()));
        let t = find(&[("CI_JIT_TOKEN", " gitlab-jwt\n")], &s, &md(None))
            .await
            .expect("env");
        assert_eq!(
            (t.token.expose(), t.source),
            ("gitlab-jwt", Source::EnvVar("CI_JIT_TOKEN".into()))
        );
        let t = find(&[], &s, &md(None)).await.expect("file");
        assert_eq!(
            (t.token.expose(), t.source),
            ("k8s-jwt", Source::File(file))
        );
        let s = settings(tmp.path(), Some(tmp.path().join("missing")));
        assert!(matches!(
            find(&[], &s, &md(None)).await,
            Err(IdentityError::File { .. })
        ));
    }

    #[tokio::test]
    async fn then_the_login_session() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = settings(tmp.path(), None);
        let e = find(&[], &s, &md(None)).await.expect_err("no login issuer");
        assert!(e.to_string().contains("offers no interactive login"), "{e}");
        let e = find(&[], &s, &md(Some("https://idp")))
            .await
            .expect_err("not logged in");
        assert_eq!(e.to_string(), "not logged in: run `git jit login`");
        let idt = fake_jwt(&json!({"sub": "alice", "exp": 99_999}));
        SessionStore::new(&s.dirs.config)
            .save(&Session {
                issuer: "https://idp".into(),
                client_id: "git-jit-cli".into(),
                token_endpoint: "https://idp/token".into(),
                id_token: Secret::new(idt.clone()),
                id_token_expires_at: 99_999,
                refresh_token: None,
                broker: Some("https://b".into()),
            })
            .expect("save");
        let t = find(&[], &s, &md(Some("https://idp")))
            .await
            .expect("session");
        assert_eq!(
            (t.token.expose(), t.token_type, t.source),
            (idt.as_str(), SubjectTokenType::IdToken, Source::Session)
        );
    }

    /// CI identities are requested and sent only for the configured broker: with a broker
    /// taken from a Git URL, GitHub Actions is not asked, the variable and the file are not
    /// sent, and a login session made for the configured broker stays home.
    #[tokio::test]
    async fn no_identity_for_a_broker_that_is_not_configured() {
        let gha = TestServer::start(|_| Reply::json(200, json!({"value": "gha-jwt"})));
        let tmp = tempfile::tempdir().expect("tmp");
        let url = format!("{}/token?x=1", gha.url);
        let env = [
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret"),
        ];
        let s = settings(tmp.path(), None);
        let e = find_at(&env, &s, &md(None), None)
            .await
            .expect_err("GitHub Actions for an unconfigured broker");
        assert!(
            matches!(
                e,
                IdentityError::NotPinned {
                    identity: Source::GitHubActions,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("git jit setup"), "{e}");
        assert!(!e.to_string().contains("runner-secret"), "{e}");
        assert!(
            gha.seen().is_empty(),
            "GitHub Actions was asked for a token"
        );

        let e = find_at(&[("CI_JIT_TOKEN", "gitlab-jwt")], &s, &md(None), None)
            .await
            .expect_err("variable");
        assert!(matches!(e, IdentityError::NotPinned { .. }), "{e}");
        assert!(!e.to_string().contains("gitlab-jwt"), "{e}");
        let file = tmp.path().join("sa-token");
        std::fs::write(&file, "k8s-jwt\n").expect("write");
        let s = settings(tmp.path(), Some(file));
        let e = find_at(&[], &s, &md(None), None).await.expect_err("file");
        assert!(matches!(e, IdentityError::NotPinned { .. }), "{e}");

        let s = settings(tmp.path(), None);
        SessionStore::new(&s.dirs.config)
            .save(&Session {
                issuer: "https://idp".into(),
                client_id: "git-jit-cli".into(),
                token_endpoint: "https://idp/token".into(),
                id_token: Secret::new(fake_jwt(&json!({"sub": "alice", "exp": 99_999}))),
                id_token_expires_at: 99_999,
                refresh_token: None,
                broker: None,
            })
            .expect("save");
        let e = find_at(&[], &s, &md(Some("https://idp")), None)
            .await
            .expect_err("session");
        assert!(
            matches!(e, IdentityError::Login(LoginError::NotPinned(_))),
            "{e}"
        );
    }

    /// The audience asked of GitHub Actions is the configured one; a broker's metadata that
    /// names another is refused, and GitHub is not asked.
    #[tokio::test]
    async fn the_audience_comes_from_the_configuration_not_the_metadata() {
        let gha = TestServer::start(|_| Reply::json(200, json!({"value": "gha-jwt"})));
        let tmp = tempfile::tempdir().expect("tmp");
        let url = format!("{}/token?x=1", gha.url);
        let env = [
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret"),
        ];
        let mut m = md(None);
        m.subject_token_audience = "https://other-relying-party.example".into();
        let e = find_at(&env, &settings(tmp.path(), None), &m, Some("https://b"))
            .await
            .expect_err("another audience");
        assert!(matches!(e, IdentityError::AudienceMismatch { .. }), "{e}");
        assert!(e.to_string().contains("GIT_JIT_AUDIENCE"), "{e}");
        assert!(
            gha.seen().is_empty(),
            "GitHub Actions was asked for a token"
        );
        m.subject_token_audience = "https://b".into();
        find_at(&env, &settings(tmp.path(), None), &m, Some("https://b"))
            .await
            .expect("the configured audience");
        assert_eq!(gha.seen()[0].target, "/token?x=1&audience=https%3A%2F%2Fb");
    }
}
