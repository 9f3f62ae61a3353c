//! What scope does this git request need? The helper's policy on top of jit-proto's
//! `WWW-Authenticate` parser ([`jit_proto::challenge`]): take the `scope` of the server's
//! Bearer challenges (as passed by git in `wwwauth[]`), merging actions on one repository and
//! refusing several repositories or one git is not talking to (exactly the repository the
//! request's path names, never a suffix of it); without a challenge, fall back to `read` on
//! the repository in the request's `path`.

use jit_proto::challenge::parse_challenges;
use jit_proto::{Actions, RepoPath, Scope, ScopeError};

/// Why no scope could be determined.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// The Bearer scope was not a git-jit scope.
    #[error("the server asked for scope {scope:?}: {source}")]
    BadScope {
        /// The offending scope.
        scope: String,
        /// Why it was refused.
        source: ScopeError,
    },
    /// The challenge named several repositories.
    #[error("the server asked for scopes on several repositories ({0} and {1})")]
    SeveralRepos(String, String),
    /// The challenge's repository is not the one git is talking to.
    #[error("the server asked for repository {scope} but git is fetching {path:?}; refusing")]
    RepoMismatch {
        /// The scope the server asked for.
        scope: String,
        /// The path git sent.
        path: String,
    },
    /// Neither a challenge nor a path: the helper cannot tell which repository.
    #[error(
        "git did not send the repository path; run `git jit setup <URL>` (sets credential.useHttpPath)"
    )]
    NoPath,
    /// The path is not a valid repository path.
    #[error("repository path {path:?} is not valid: {source}")]
    BadPath {
        /// The path git sent.
        path: String,
        /// Why it was refused.
        source: ScopeError,
    },
}

/// The scope a set of `wwwauth[]` values asks for: the `scope` of the Bearer challenges,
/// merged if several name the same repository. `Ok(None)` when no Bearer challenge has one.
/// Values that are not valid challenge syntax are skipped (they may belong to another
/// scheme's server), but a git-jit Bearer scope that does not parse is an error.
pub fn scope_from_wwwauth(values: &[String]) -> Result<Option<Scope>, ChallengeError> {
    let mut found: Option<Scope> = None;
    for value in values {
        let Ok(challenges) = parse_challenges(value) else {
            continue;
        };
        for ch in challenges.iter().filter(|c| c.is("bearer")) {
            let Some(scopes) = ch.param("scope") else {
                continue;
            };
            for s in scopes.split(' ').filter(|s| !s.is_empty()) {
                let scope = Scope::parse(s).map_err(|source| ChallengeError::BadScope {
                    scope: s.to_owned(),
                    source,
                })?;
                found = Some(match found {
                    None => scope,
                    Some(prev) if prev.repo == scope.repo => {
                        let both = format!("{},{}", prev.actions, scope.actions);
                        let actions = merge_actions(&both);
                        Scope::new(prev.repo, actions)
                    }
                    Some(prev) => {
                        return Err(ChallengeError::SeveralRepos(
                            prev.repo.to_string(),
                            scope.repo.to_string(),
                        ));
                    }
                });
            }
        }
    }
    Ok(found)
}

fn merge_actions(list: &str) -> Actions {
    let read = list.split(',').any(|a| a == "read");
    let write = list.split(',').any(|a| a == "write");
    match (read, write) {
        (true, true) => Actions::READ_WRITE,
        (false, true) => Actions::WRITE,
        _ => Actions::READ,
    }
}

/// The repository in git's `path` (`acme/api.git`), refused if `RepoPath` refuses it.
pub fn repo_from_path(path: Option<&str>) -> Result<RepoPath, ChallengeError> {
    let path = path.ok_or(ChallengeError::NoPath)?;
    RepoPath::parse(path).map_err(|source| ChallengeError::BadPath {
        path: path.to_owned(),
        source,
    })
}

/// The scope this request needs: the challenge's, checked against `path` when git sent one —
/// the repository the challenge names must be exactly the one the path names (`path` is
/// what follows the broker's path prefix, see [`crate::origin`]); otherwise `read` on the
/// repository in `path`. The flag says whether a challenge decided.
pub fn needed_scope(
    wwwauth: &[String],
    path: Option<&str>,
) -> Result<(Scope, bool), ChallengeError> {
    if let Some(scope) = scope_from_wwwauth(wwwauth)? {
        if let Some(p) = path {
            // Parsed like the fallback, so `acme/api` and `acme/api.git` are one repository
            // and `evil/acme/api` is another.
            if repo_from_path(Some(p))? != scope.repo {
                return Err(ChallengeError::RepoMismatch {
                    scope: scope.to_string(),
                    path: p.to_owned(),
                });
            }
        }
        return Ok((scope, true));
    }
    Ok((Scope::new(repo_from_path(path)?, Actions::READ), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scope_from_git_wwwauth_lines() {
        let v = strings(&[
            r#"Bearer realm="git-jit", scope="repo:acme/api:write""#,
            r#"Basic realm="git-jit""#,
        ]);
        let s = scope_from_wwwauth(&v).expect("ok").expect("some");
        assert_eq!(s.to_string(), "repo:acme/api:write");
    }

    #[test]
    fn merges_actions_on_one_repo() {
        let v = strings(&[r#"Bearer scope="repo:acme/api:read repo:acme/api:write""#]);
        let s = scope_from_wwwauth(&v).expect("ok").expect("some");
        assert_eq!(s.to_string(), "repo:acme/api:read,write");
    }

    #[test]
    fn refuses_several_repos_and_bad_scopes() {
        let v = strings(&[r#"Bearer scope="repo:acme/api:read repo:acme/other:write""#]);
        assert!(matches!(
            scope_from_wwwauth(&v),
            Err(ChallengeError::SeveralRepos(..))
        ));
        let v = strings(&[r#"Bearer scope="repo:acme/../secret:read""#]);
        assert!(matches!(
            scope_from_wwwauth(&v),
            Err(ChallengeError::BadScope { .. })
        ));
    }

    #[test]
    fn ignores_foreign_and_malformed_headers() {
        let v = strings(&[
            r#"Basic realm="x""#,
            "Bearer scope=\"oops",
            r#"Bearer realm="y""#,
        ]);
        assert!(scope_from_wwwauth(&v).expect("ok").is_none());
    }

    #[test]
    fn falls_back_to_read_on_path() {
        let (s, from_challenge) = needed_scope(&[], Some("acme/api.git")).expect("ok");
        assert_eq!(s.to_string(), "repo:acme/api:read");
        assert!(!from_challenge);
    }

    #[test]
    fn fallback_refuses_what_repo_path_refuses() {
        for bad in [
            "acme/../secret.git",
            "/acme/api",
            "acme/api.git.git",
            "acme/%2e%2e/x",
            "",
        ] {
            assert!(needed_scope(&[], Some(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            needed_scope(&[], None),
            Err(ChallengeError::NoPath)
        ));
    }

    #[test]
    fn challenge_for_another_repo_is_refused() {
        let v = strings(&[r#"Bearer scope="repo:acme/secret:write""#]);
        assert!(matches!(
            needed_scope(&v, Some("acme/api.git")),
            Err(ChallengeError::RepoMismatch { .. })
        ));
        // A suffix that is not a whole segment must not match either.
        let v = strings(&[r#"Bearer scope="repo:api:write""#]);
        assert!(needed_scope(&v, Some("acme/xapi.git")).is_err());
    }

    /// Regression: a challenge for `acme/api` was accepted on the path `evil/acme/api`
    /// (a suffix match); the path after the broker's prefix must name exactly that repository.
    #[test]
    fn challenge_must_name_exactly_the_repository_of_the_path() {
        let v = strings(&[r#"Bearer scope="repo:acme/api:write""#]);
        for path in [
            "evil/acme/api.git",
            "evil/acme/api",
            "git/acme/api.git",
            "acme/api/x.git",
            "xacme/api.git",
        ] {
            assert!(
                matches!(
                    needed_scope(&v, Some(path)),
                    Err(ChallengeError::RepoMismatch { .. })
                ),
                "{path}"
            );
        }
        assert!(needed_scope(&v, Some("acme/../x.git")).is_err());
        for path in ["acme/api.git", "acme/api"] {
            let (s, from_challenge) = needed_scope(&v, Some(path)).expect(path);
            assert_eq!(s.to_string(), "repo:acme/api:write");
            assert!(from_challenge);
        }
        assert!(
            needed_scope(&v, None).is_ok(),
            "proactive auth without useHttpPath"
        );
    }

    /// Grammar fragments for the pseudo-random inputs.
    const DICTIONARY: &[&[u8]] = &[
        b"Bearer",
        b"Basic",
        b"Negotiate",
        b" ",
        b"\t",
        b",",
        b"=",
        b"==",
        b"\"",
        b"\\",
        b"realm=",
        b"scope=",
        b"error_description=",
        b"\"repo:acme/api:read\"",
        b"\"repo:acme/api:read repo:acme/api:write\"",
        b"repo:acme/api:write",
        b"abc",
        b"Bearer scope=\"repo:acme/api:read\"",
        b"Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
        b"\xc3\xa9",
        b"\x01",
    ];

    /// The stable twin of `fuzz/fuzz_targets/www_authenticate.rs` for the helper's
    /// policy (the parser's own round-trip property lives in jit-proto): never a panic, and
    /// a scope found is always one git-jit scope on one repository.
    #[test]
    fn random_input_never_panics() {
        let mut rng = crate::arbitrary::Rng::new(0x6a69_742d_7777_7761);
        let mut found = 0;
        for _ in 0..5000 {
            let input = rng.input(DICTIONARY, 12);
            let value = String::from_utf8_lossy(&input).into_owned();
            if let Ok(Some(scope)) = scope_from_wwwauth(std::slice::from_ref(&value)) {
                found += 1;
                assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(&scope));
            }
            let _ = needed_scope(std::slice::from_ref(&value), Some("acme/api.git"));
        }
        assert!(found > 20, "only {found} inputs named a scope");
    }

    /// A challenge repeating `scope` is ambiguous: the parser refuses it, so the helper
    /// skips the value rather than pick one of the two.
    #[test]
    fn repeated_scope_is_not_guessed() {
        let v = strings(&[r#"Bearer scope="repo:acme/api:read", scope="repo:acme/x:write""#]);
        assert!(scope_from_wwwauth(&v).expect("ok").is_none());
    }
}
