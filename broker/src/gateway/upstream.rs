//! The upstream table: which Git server serves which repositories (first matching
//! `[[upstream]]` wins), built once from the configuration with its credentials loaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::response::Response;
use jit_proto::glob::Glob;
use jit_proto::{RepoPath, Secret};
use reqwest::Url;

use super::body::BodyStream;
use super::cgi::DirUpstream;
use super::proxy::{Forward, HttpUpstream, UpstreamAuth};
use crate::config::{UpstreamConfig, UpstreamCredential};
use crate::policy::pattern::RepoPattern;

/// The longest `keepalive_secs` taken: past the keep-alive of the servers Git commonly runs
/// behind (nginx keeps 75 s), a longer one only meets connections the upstream has closed.
const MAX_KEEPALIVE_SECS: u64 = 300;

/// Why the upstream table could not be built. `key` is relative to `upstream[i]`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A configuration value is not acceptable.
    #[error("upstream[{index}].{key}: {problem}")]
    Invalid {
        /// The entry.
        index: usize,
        /// The key within it.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("upstream[{index}]: cannot build the HTTP client: {source}")]
    Client {
        /// The entry.
        index: usize,
        /// The cause.
        source: reqwest::Error,
    },
}

/// Where one upstream's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// An http(s) Git server.
    Http(HttpUpstream),
    /// `git http-backend` over local bare repositories.
    Dir(DirUpstream),
}

/// One `[[upstream]]` entry, ready to serve.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `upstream[i]`, for logs.
    pub name: String,
    patterns: Vec<Glob>,
    /// Where requests go.
    pub target: Target,
}

/// The gateway's upstream table.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    upstreams: Vec<Upstream>,
}

/// Compiles `repositories`: the dialect of `docs/patterns.md`, shaped like a repository
/// path, without the `{claim}` placeholders of role patterns (an upstream has no identity).
fn glob_set(patterns: &[String]) -> Result<Vec<Glob>, (String, String)> {
    if patterns.is_empty() {
        return Err((
            "repositories".into(),
            "must list at least one pattern".into(),
        ));
    }
    patterns
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let key = || format!("repositories[{j}]");
            if p.contains(['{', '}']) {
                return Err((
                    key(),
                    format!(
                        "{p:?}: '{{...}}' is neither a claim placeholder (those exist only in \
                         [[role]] repositories) nor alternation (list several patterns instead)"
                    ),
                ));
            }
            RepoPattern::compile(p).map_err(|e| (key(), e))?;
            Glob::parse(p).map_err(|e| (key(), format!("{p:?}: {e}")))
        })
        .collect()
}

enum Location {
    Http(Url),
    Dir(PathBuf),
}

fn location(url: &str) -> Result<Location, (String, String)> {
    let bad = |p: String| ("url".to_owned(), p);
    if let Some(dir) = url.strip_prefix("dir:") {
        if dir.is_empty() {
            return Err(bad("dir: needs a directory, e.g. dir:/srv/git".into()));
        }
        return Ok(Location::Dir(PathBuf::from(dir)));
    }
    let parsed = Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad(format!(
            "{url:?} must be http(s)://host[/prefix] or dir:/path"
        )));
    }
    if url.ends_with('/') || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(format!(
            "{url:?} must not end with '/' or carry a query or fragment"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("put credentials in `credential`, not in the URL".into()));
    }
    Ok(Location::Http(parsed))
}

/// Where a secret is read from.
#[derive(Debug, Clone, Copy)]
enum SecretSource<'a> {
    /// An environment variable.
    Env(&'a str),
    /// A file.
    File(&'a Path),
}

fn one_source<'a>(
    env: &'a Option<String>,
    file: &'a Option<PathBuf>,
    env_key: &str,
    file_key: &str,
) -> Result<SecretSource<'a>, (String, String)> {
    match (env, file) {
        (Some(e), None) if !e.is_empty() => Ok(SecretSource::Env(e)),
        (None, Some(f)) => Ok(SecretSource::File(f)),
        _ => Err((
            "credential".into(),
            format!("set exactly one of {env_key} or {file_key}"),
        )),
    }
}

/// Checks one `[[upstream]]` entry without touching the environment or the disk; errors are
/// `(key, problem)` with the key relative to the entry.
pub fn validate(c: &UpstreamConfig) -> Result<(), (String, String)> {
    glob_set(&c.repositories)?;
    let loc = location(&c.url)?;
    match (&loc, &c.credential) {
        (Location::Dir(_), Some(_)) => {
            return Err((
                "credential".into(),
                "a dir: upstream takes no credential".into(),
            ));
        }
        (
            _,
            Some(UpstreamCredential::Basic {
                username,
                password_env,
                password_file,
            }),
        ) => {
            if username.is_empty() || username.contains(':') {
                return Err((
                    "credential.username".into(),
                    "must be non-empty without ':'".into(),
                ));
            }
            one_source(password_env, password_file, "password_env", "password_file")?;
        }
        (
            _,
            Some(UpstreamCredential::Bearer {
                token_env,
                token_file,
            }),
        ) => {
            one_source(token_env, token_file, "token_env", "token_file")?;
        }
        (_, None) => {}
    }
    for (key, secs) in [
        ("connect_timeout_secs", c.connect_timeout_secs),
        ("idle_timeout_secs", c.idle_timeout_secs),
    ] {
        if secs == 0 {
            return Err((key.into(), "must be at least 1 second".into()));
        }
    }
    if c.keepalive_secs > MAX_KEEPALIVE_SECS {
        return Err((
            "keepalive_secs".into(),
            format!(
                "{} is more than {MAX_KEEPALIVE_SECS}; it must stay below the upstream's own \
                 keep-alive timeout (0 keeps no idle connection)",
                c.keepalive_secs
            ),
        ));
    }
    Ok(())
}

fn load_secret(source: SecretSource<'_>, key: &str) -> Result<Secret, (String, String)> {
    let value = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            (
                key.to_owned(),
                format!("environment variable {var} is not set"),
            )
        })?,
        SecretSource::File(file) => std::fs::read_to_string(file).map_err(|e| {
            (
                key.to_owned(),
                format!("cannot read {}: {e}", file.display()),
            )
        })?,
    };
    let value = value.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err((key.to_owned(), "the secret is empty".into()));
    }
    Ok(Secret::new(value))
}

fn load_auth(c: &Option<UpstreamCredential>) -> Result<Option<UpstreamAuth>, (String, String)> {
    Ok(match c {
        None => None,
        Some(UpstreamCredential::Basic {
            username,
            password_env,
            password_file,
        }) => {
            let src = one_source(password_env, password_file, "password_env", "password_file")?;
            let key = match src {
                SecretSource::Env(_) => "credential.password_env",
                SecretSource::File(_) => "credential.password_file",
            };
            Some(UpstreamAuth::Basic {
                username: username.clone(),
                password: load_secret(src, key)?,
            })
        }
        Some(UpstreamCredential::Bearer {
            token_env,
            token_file,
        }) => {
            let src = one_source(token_env, token_file, "token_env", "token_file")?;
            let key = match src {
                SecretSource::Env(_) => "credential.token_env",
                SecretSource::File(_) => "credential.token_file",
            };
            Some(UpstreamAuth::Bearer(load_secret(src, key)?))
        }
    })
}

impl Gateway {
    /// A gateway with no upstream: every allowed request answers "no upstream".
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds the table from `[[upstream]]`, loading credentials from the environment/files.
    pub fn from_config(entries: &[UpstreamConfig]) -> Result<Self, UpstreamError> {
        let mut upstreams = Vec::with_capacity(entries.len());
        for (index, c) in entries.iter().enumerate() {
            let invalid = |(key, problem): (String, String)| UpstreamError::Invalid {
                index,
                key,
                problem,
            };
            validate(c).map_err(invalid)?;
            let patterns = glob_set(&c.repositories).map_err(invalid)?;
            let target = match location(&c.url).map_err(invalid)? {
                Location::Dir(root) => Target::Dir(DirUpstream::new(root)),
                Location::Http(base) => Target::Http(
                    HttpUpstream::new(
                        base,
                        load_auth(&c.credential).map_err(invalid)?,
                        Duration::from_secs(c.connect_timeout_secs),
                        Duration::from_secs(c.idle_timeout_secs),
                        Duration::from_secs(c.keepalive_secs),
                    )
                    .map_err(|source| UpstreamError::Client { index, source })?,
                ),
            };
            upstreams.push(Upstream {
                name: format!("upstream[{index}]"),
                patterns,
                target,
            });
        }
        Ok(Self { upstreams })
    }

    /// Every repository served from bare repositories under `root` (dev mode).
    pub fn dir(root: impl Into<PathBuf>) -> Self {
        let patterns = glob_set(&["**".to_owned()]).unwrap_or_default();
        Self {
            upstreams: vec![Upstream {
                name: "dev".into(),
                patterns,
                target: Target::Dir(DirUpstream::new(root)),
            }],
        }
    }

    /// The first upstream whose patterns match `repo`.
    pub fn upstream_for(&self, repo: &RepoPath) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .find(|u| u.patterns.iter().any(|g| g.matches(repo.as_str())))
    }

    /// Forwards an allowed request to `upstream`.
    pub async fn forward(&self, upstream: &Upstream, f: Forward, body: BodyStream) -> Response {
        tracing::debug!(upstream = %upstream.name, repo = %f.repo, endpoint = f.endpoint.suffix(), "forwarding");
        match &upstream.target {
            Target::Http(h) => h.forward(f, body).await,
            Target::Dir(d) => d.forward(f, body).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(repos: &[&str], url: &str, credential: Option<UpstreamCredential>) -> UpstreamConfig {
        UpstreamConfig {
            repositories: repos.iter().map(|s| (*s).to_owned()).collect(),
            url: url.into(),
            credential,
            connect_timeout_secs: 10,
            idle_timeout_secs: 300,
            keepalive_secs: 4,
        }
    }

    fn repo(s: &str) -> RepoPath {
        RepoPath::parse(s).expect("repo")
    }

    #[test]
    fn first_match_wins_and_star_stays_in_a_segment() {
        let gw = Gateway::from_config(&[
            entry(&["acme/*"], "dir:/a", None),
            entry(
                &["acme/**", "other"],
                "http://git.example:8080/prefix",
                None,
            ),
        ])
        .expect("valid");
        assert_eq!(
            gw.upstream_for(&repo("acme/api")).map(|u| u.name.as_str()),
            Some("upstream[0]")
        );
        assert_eq!(
            gw.upstream_for(&repo("acme/sub/x"))
                .map(|u| u.name.as_str()),
            Some("upstream[1]")
        );
        assert_eq!(
            gw.upstream_for(&repo("other")).map(|u| u.name.as_str()),
            Some("upstream[1]")
        );
        assert!(gw.upstream_for(&repo("ACME/api")).is_none());
        assert!(gw.upstream_for(&repo("elsewhere/x")).is_none());
    }

    #[test]
    fn documented_upstream_examples() {
        let rows = crate::policy::pattern::tests::doc_examples();
        assert!(rows.iter().filter(|r| r.0 == "upstream").count() >= 5);
        for (used_in, pattern, text, outcome) in rows {
            if used_in != "upstream" {
                continue;
            }
            let got = glob_set(std::slice::from_ref(&pattern)).ok().map(|_| {
                let gw =
                    Gateway::from_config(&[entry(&[&pattern], "dir:/a", None)]).expect("valid");
                gw.upstream_for(&repo(&text)).is_some()
            });
            assert_eq!(got, outcome, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn refusals_name_the_pattern() {
        let err = Gateway::from_config(&[entry(&["acme/{api,web}"], "dir:/a", None)])
            .expect_err("braces")
            .to_string();
        assert!(
            err.starts_with("upstream[0].repositories[0]: \"acme/{api,web}\": "),
            "{err}"
        );
    }

    #[test]
    fn bad_entries_name_the_key() {
        let basic = |env: Option<&str>, file: Option<&str>| {
            Some(UpstreamCredential::Basic {
                username: "jit".into(),
                password_env: env.map(Into::into),
                password_file: file.map(Into::into),
            })
        };
        let cases = [
            (entry(&[], "dir:/a", None), "repositories"),
            (entry(&["a/[x"], "dir:/a", None), "repositories[0]"),
            (entry(&["**", "a/{b,c}"], "dir:/a", None), "repositories[1]"),
            (entry(&["a/{team}"], "dir:/a", None), "repositories[0]"),
            (entry(&["a/b?"], "dir:/a", None), "repositories[0]"),
            (entry(&["a/***"], "dir:/a", None), "repositories[0]"),
            (entry(&["a/"], "dir:/a", None), "repositories[0]"),
            (entry(&["**"], "ftp://x", None), "url"),
            (entry(&["**"], "http://x/", None), "url"),
            (entry(&["**"], "http://u:p@x", None), "url"),
            (entry(&["**"], "dir:", None), "url"),
            (
                entry(&["**"], "dir:/a", basic(Some("X"), None)),
                "credential",
            ),
            (entry(&["**"], "http://x", basic(None, None)), "credential"),
            (
                entry(&["**"], "http://x", basic(Some("A"), Some("/f"))),
                "credential",
            ),
            (
                UpstreamConfig {
                    connect_timeout_secs: 0,
                    ..entry(&["**"], "http://x", None)
                },
                "connect_timeout_secs",
            ),
            (
                UpstreamConfig {
                    idle_timeout_secs: 0,
                    ..entry(&["**"], "http://x", None)
                },
                "idle_timeout_secs",
            ),
            (
                UpstreamConfig {
                    keepalive_secs: 301,
                    ..entry(&["**"], "http://x", None)
                },
                "keepalive_secs",
            ),
        ];
        for (c, key) in cases {
            let (k, _) = validate(&c).expect_err(key);
            assert_eq!(k, key);
        }
        for keepalive_secs in [0, 300] {
            let c = UpstreamConfig {
                keepalive_secs,
                ..entry(&["**"], "http://x", None)
            };
            assert_eq!(validate(&c), Ok(()), "keepalive_secs = {keepalive_secs}");
        }
        let missing = Gateway::from_config(&[entry(
            &["**"],
            "https://x",
            basic(Some("JIT_TEST_SURELY_UNSET_VAR"), None),
        )])
        .expect_err("missing env")
        .to_string();
        assert_eq!(
            missing,
            "upstream[0].credential.password_env: environment variable JIT_TEST_SURELY_UNSET_VAR is not set"
        );
    }

    #[test]
    fn config_file_schema_and_errors_name_the_key() {
        let base = r#"
[broker]
listen = "127.0.0.1:8080"
public_url = "https://jit.example.com"
keys_dir = "keys"

[store]
kind = "memory"
"#;
        let good = format!(
            r#"{base}
[[upstream]]
repositories = ["acme/*"]
url = "https://git.example.com/git"
credential = {{ kind = "basic", username = "jit", password_env = "PW" }}

[[upstream]]
repositories = ["**"]
url = "dir:/srv/git"
"#
        );
        let file = Path::new("broker.toml");
        let c = crate::config::Config::parse(&good, file).expect("parses");
        c.validate(file).expect("valid");
        assert_eq!(c.upstream.len(), 2);
        assert_eq!(c.upstream[0].idle_timeout_secs, 300);
        assert_eq!(c.upstream[0].keepalive_secs, 4);

        let cases = [
            (
                good.replace("https://git.example.com/git", "git.example.com"),
                "broker.toml: upstream[0].url: ",
            ),
            (
                good.replace(
                    "password_env = \"PW\"",
                    "password_file = \"f\", password_env = \"PW\"",
                ),
                "broker.toml: upstream[0].credential: ",
            ),
            (
                good.replace("\"basic\"", "\"digest\""),
                "unknown variant `digest`",
            ),
            (
                good.replace("password_env", "pasword_env"),
                "unknown field `pasword_env`",
            ),
            (
                good.replace("[\"**\"]", "[]"),
                "broker.toml: upstream[1].repositories: ",
            ),
            (
                good.replace(
                    "url = \"dir:/srv/git\"",
                    "url = \"dir:/srv/git\"\nkeepalive_secs = 900",
                ),
                "broker.toml: upstream[1].keepalive_secs: 900 is more than 300",
            ),
        ];
        for (text, needle) in cases {
            let err = match crate::config::Config::parse(&text, file)
                .and_then(|c| crate::compile::compile(&c, file))
            {
                Ok(_) => panic!("{needle}: compiled"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
