//! What scope does this git request need? Parses the server's `WWW-Authenticate` challenges
//! (RFC 9110 §11.6.1, as passed by git in `wwwauth[]`) and takes the Bearer `scope`; without a
//! challenge, falls back to `read` on the repository in the request's `path`.

use std::fmt::{self, Write as _};

use jit_proto::{Actions, RepoPath, Scope, ScopeError};

/// Why no scope could be determined.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// A `WWW-Authenticate` value was not valid challenge syntax.
    #[error("malformed WWW-Authenticate header: {0}")]
    Syntax(&'static str),
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

/// One challenge: an auth scheme and its parameters (or token68).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme as sent (compare case-insensitively).
    pub scheme: String,
    /// `name=value` parameters; names lower-cased, quoted values unescaped.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of a parameter, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Challenge {
    /// The canonical form, which parses back to an equal challenge: `Scheme`,
    /// `Scheme token68`, or `Scheme name="value", …` with every value quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        let params = match self.params.as_slice() {
            [(name, token68)] if name.is_empty() => return write!(f, " {token68}"),
            params => params,
        };
        for (i, (name, value)) in params.iter().enumerate() {
            write!(f, "{}{name}=\"", if i == 0 { " " } else { ", " })?;
            for c in value.chars() {
                if matches!(c, '"' | '\\') {
                    f.write_char('\\')?;
                }
                f.write_char(c)?;
            }
            f.write_char('"')?;
        }
        Ok(())
    }
}

/// Challenges as one `WWW-Authenticate` value (canonical form, comma-separated).
pub fn render_challenges(challenges: &[Challenge]) -> String {
    challenges
        .iter()
        .map(Challenge::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

struct Lexer<'a> {
    s: &'a str,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        self.s = self.s.trim_start_matches([' ', '\t']);
    }
    /// A token68 (RFC 9110 §11.2) standing alone, or nothing (and no input consumed).
    fn token68(&mut self) -> Option<&'a str> {
        let body = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c)))
            .unwrap_or(self.s.len());
        if body == 0 {
            return None;
        }
        let pad = self.s[body..].len() - self.s[body..].trim_start_matches('=').len();
        let (t68, rest) = self.s.split_at(body + pad);
        let after = rest.trim_start_matches([' ', '\t']);
        if after.is_empty() || after.starts_with(',') {
            self.s = rest;
            Some(t68)
        } else {
            None
        }
    }
    fn eat(&mut self, c: char) -> bool {
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }
    fn token(&mut self) -> Option<&'a str> {
        let end = self.s.find(|c: char| !is_tchar(c)).unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let (tok, rest) = self.s.split_at(end);
        self.s = rest;
        Some(tok)
    }
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        let mut out = String::new();
        let mut chars = self.s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.s = &self.s[i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e)) if !e.is_control() => out.push(e),
                    _ => return Err(ChallengeError::Syntax("bad escape in quoted string")),
                },
                c if c.is_control() && c != '\t' => {
                    return Err(ChallengeError::Syntax("control character in quoted string"));
                }
                c => out.push(c),
            }
        }
        Err(ChallengeError::Syntax("unterminated quoted string"))
    }
}

/// Parses one `WWW-Authenticate` value, which may hold several challenges.
pub fn parse_challenges(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut lx = Lexer { s: header };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        lx.skip_ws();
        while lx.eat(',') {
            lx.skip_ws();
        }
        if lx.s.is_empty() {
            return Ok(out);
        }
        let scheme = lx
            .token()
            .ok_or(ChallengeError::Syntax("expected an auth scheme"))?;
        let mut ch = Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
        };
        lx.skip_ws();
        if let Some(t68) = lx.token68() {
            // Kept as a nameless parameter; git-jit never uses it.
            ch.params.push((String::new(), t68.to_owned()));
            out.push(ch);
            continue;
        }
        // Parameters until a token not followed by '=' starts the next challenge.
        loop {
            lx.skip_ws();
            while lx.eat(',') {
                lx.skip_ws();
            }
            if lx.s.is_empty() {
                break;
            }
            let save = lx.s;
            let name = lx
                .token()
                .ok_or(ChallengeError::Syntax("expected a parameter"))?;
            lx.skip_ws();
            if !lx.eat('=') {
                lx.s = save;
                break;
            }
            lx.skip_ws();
            let value = if lx.eat('"') {
                lx.quoted()?
            } else {
                lx.token()
                    .ok_or(ChallengeError::Syntax("expected a parameter value"))?
                    .to_owned()
            };
            ch.params.push((name.to_ascii_lowercase(), value));
            lx.skip_ws();
            if lx.s.is_empty() {
                break;
            }
            if !lx.eat(',') {
                return Err(ChallengeError::Syntax("expected ',' between parameters"));
            }
            lx.skip_ws();
            while lx.eat(',') {
                lx.skip_ws();
            }
        }
        out.push(ch);
    }
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
        for ch in challenges
            .iter()
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
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

/// The scope this request needs: the challenge's, checked against `path` when git sent one
/// (the gateway may be mounted under a prefix, so `git/acme/api.git` matches `acme/api`);
/// otherwise `read` on the repository in `path`. The flag says whether a challenge decided.
pub fn needed_scope(
    wwwauth: &[String],
    path: Option<&str>,
) -> Result<(Scope, bool), ChallengeError> {
    if let Some(scope) = scope_from_wwwauth(wwwauth)? {
        if let Some(p) = path {
            let sent = p.strip_suffix(".git").unwrap_or(p);
            let want = scope.repo.as_str();
            let same = sent == want || sent.ends_with(&format!("/{want}"));
            if !same {
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

    fn p(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn parses_gateway_challenge() {
        let ch = parse_challenges(r#"Bearer realm="git-jit", scope="repo:acme/api:write""#)
            .expect("valid");
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].scheme, "Bearer");
        assert_eq!(
            ch[0].params,
            vec![p("realm", "git-jit"), p("scope", "repo:acme/api:write")]
        );
    }

    #[test]
    fn parses_several_challenges_in_one_value() {
        let ch = parse_challenges(
            r#"Basic realm="a, b", Bearer realm=x,scope="repo:acme/api:read" , Negotiate"#,
        )
        .expect("valid");
        let schemes: Vec<&str> = ch.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Basic", "Bearer", "Negotiate"]);
        assert_eq!(ch[0].param("realm"), Some("a, b"));
        assert_eq!(ch[1].param("realm"), Some("x"));
        assert_eq!(ch[1].param("scope"), Some("repo:acme/api:read"));
    }

    #[test]
    fn unescapes_quoted_strings() {
        let ch = parse_challenges(r#"Bearer error_description="say \"no\" \\ ok""#).expect("ok");
        assert_eq!(ch[0].param("error_description"), Some(r#"say "no" \ ok"#));
    }

    #[test]
    fn token68_is_kept_apart() {
        let ch = parse_challenges("Negotiate abc==, Bearer scope=\"repo:a/b:read\"").expect("ok");
        assert_eq!(ch[1].param("scope"), Some("repo:a/b:read"));
    }

    #[test]
    fn parameter_names_are_case_insensitive() {
        let ch = parse_challenges(r#"bearer Scope="repo:a/b:read""#).expect("ok");
        assert_eq!(ch[0].param("scope"), Some("repo:a/b:read"));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            r#"Bearer scope="unterminated"#,
            "Bearer scope=\"a\\",
            "=x",
            "Bearer a=\"\x01\"",
        ] {
            assert!(parse_challenges(bad).is_err(), "{bad:?}");
        }
    }

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

    #[test]
    fn challenge_under_a_path_prefix_matches() {
        let v = strings(&[r#"Bearer scope="repo:acme/api:write""#]);
        let (s, from_challenge) = needed_scope(&v, Some("git/acme/api.git")).expect("ok");
        assert_eq!(s.to_string(), "repo:acme/api:write");
        assert!(from_challenge);
        assert!(
            needed_scope(&v, None).is_ok(),
            "proactive auth without useHttpPath"
        );
    }

    #[test]
    fn renders_canonically() {
        let ch = parse_challenges(
            r#"Negotiate abc==, bearer Realm=x, error_description="a \"b\" \\", Basic"#,
        )
        .expect("ok");
        assert_eq!(
            render_challenges(&ch),
            r#"Negotiate abc==, bearer realm="x", error_description="a \"b\" \\", Basic"#
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
        b"\xc3\xa9",
        b"\x01",
    ];

    /// The stable twin of `fuzz/helper/fuzz_targets/www_authenticate.rs`.
    #[test]
    fn random_input_never_panics_and_accepted_input_round_trips() {
        let mut rng = crate::arbitrary::Rng::new(0x6a69_742d_7777_7761);
        let mut accepted = 0;
        for _ in 0..5000 {
            let input = rng.input(DICTIONARY, 12);
            let value = String::from_utf8_lossy(&input).into_owned();
            let _ = scope_from_wwwauth(std::slice::from_ref(&value));
            let _ = needed_scope(std::slice::from_ref(&value), Some("acme/api.git"));
            let Ok(challenges) = parse_challenges(&value) else {
                continue;
            };
            accepted += 1;
            let rendered = render_challenges(&challenges);
            let again = parse_challenges(&rendered).expect("rendered challenges parse");
            assert_eq!(again, challenges, "{value:?} -> {rendered:?}");
            assert_eq!(
                render_challenges(&again),
                rendered,
                "canonical form is stable"
            );
        }
        assert!(accepted > 400, "only {accepted} inputs were accepted");
    }
}
