//! Who is asking: finds the subject token to exchange at the broker, CI first — GitHub
//! Actions (its OIDC token endpoint, for the broker's audience), a variable set by the CI
//! (GitLab `id_tokens:`; its name is configurable), a token file (Kubernetes projected
//! service-account token) — then the person's `git jit login` session.

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
    /// The broker's metadata (audience, login issuer).
    pub metadata: &'a ServerMetadata,
    /// The broker's base URL, for messages.
    pub broker: &'a str,
    /// The local clock.
    pub clock: fn() -> i64,
}

/// Finds the first available identity, in the documented order.
pub async fn subject_token(l: &Lookup<'_>) -> Result<SubjectToken, IdentityError> {
    if let (Some(url), Some(bearer)) = (
        (l.env)("ACTIONS_ID_TOKEN_REQUEST_URL"),
        (l.env)("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) {
        let token =
            github_actions(l.http, &url, &bearer, &l.metadata.subject_token_audience).await?;
        return Ok(SubjectToken {
            token,
            token_type: SubjectTokenType::Jwt,
            source: Source::GitHubActions,
        });
    }
    let var = &l.settings.id_token_env;
    if let Some(v) = (l.env)(var) {
        let token = Secret::new(v.trim());
        return Ok(SubjectToken {
            token,
            token_type: SubjectTokenType::Jwt,
            source: Source::EnvVar(var.clone()),
        });
    }
    if let Some(path) = &l.settings.id_token_file {
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
    let token = login::current_id_token(&store, issuer, l.clock).await?;
    Ok(SubjectToken {
        token,
        token_type: SubjectTokenType::IdToken,
        source: Source::Session,
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
            broker: None,
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
}
