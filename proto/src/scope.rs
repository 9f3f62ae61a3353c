//! Repository paths and scopes: `repo:<path>:<action>[,<action>]`.
//!
//! This is the one place where a repository path is normalised. The broker (policy, store,
//! gateway) and the helper all parse through [`RepoPath::parse`], so a token for `acme/api`
//! can never be stretched to another repository by a differently spelled path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted repository path, in bytes, after the `.git` suffix is removed.
pub const MAX_PATH_LEN: usize = 255;
/// Longest accepted path segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 100;
/// Most segments a repository path may have (`group/sub/…/project`).
pub const MAX_SEGMENTS: usize = 16;

/// Why a repository path or scope was refused. Each message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The repository path was empty.
    #[error("repository path is empty")]
    EmptyPath,
    /// The path was longer than [`MAX_PATH_LEN`].
    #[error("repository path is {0} bytes long; at most {MAX_PATH_LEN} are allowed")]
    PathTooLong(usize),
    /// A segment was longer than [`MAX_SEGMENT_LEN`].
    #[error("repository path segment is {0} bytes long; at most {MAX_SEGMENT_LEN} are allowed")]
    SegmentTooLong(usize),
    /// The path had more than [`MAX_SEGMENTS`] segments.
    #[error("repository path has {0} segments; at most {MAX_SEGMENTS} are allowed")]
    TooManySegments(usize),
    /// The path started with `/`.
    #[error("repository path must not start with '/'")]
    LeadingSlash,
    /// The path ended with `/`.
    #[error("repository path must not end with '/'")]
    TrailingSlash,
    /// Two slashes in a row.
    #[error("repository path has an empty segment ('//')")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("repository path has a '{0}' segment")]
    DotSegment(&'static str),
    /// A percent sign: escapes are never decoded here, so they are refused.
    #[error("repository path contains '%': percent-escapes are not accepted")]
    PercentEscape,
    /// A backslash.
    #[error("repository path contains a backslash")]
    Backslash,
    /// A control character (including NUL).
    #[error("repository path contains control character U+{0:04X}")]
    ControlChar(u32),
    /// Any other character outside `A-Z a-z 0-9 . _ -` and `/`.
    #[error(
        "repository path contains {0:?}; only letters, digits, '.', '_', '-' and '/' are allowed"
    )]
    BadChar(char),
    /// A `.git` suffix that is not the single, lower-case, final one.
    #[error("repository path has a misplaced or repeated '.git' suffix in segment {0:?}")]
    GitSuffix(String),
    /// A segment starting with `-` (would read as an option to git tools).
    #[error("repository path segment {0:?} starts with '-'")]
    LeadingDash(String),
    /// The scope did not start with `repo:`.
    #[error("scope must start with 'repo:'")]
    NotRepoScope,
    /// The scope had no `:<actions>` part.
    #[error("scope has no actions; expected repo:<path>:read or repo:<path>:read,write")]
    MissingActions,
    /// An empty action between commas.
    #[error("scope has an empty action")]
    EmptyAction,
    /// An action other than `read` or `write` (actions are lower case).
    #[error("unknown action {0:?}; expected 'read' or 'write'")]
    UnknownAction(String),
    /// The same action twice.
    #[error("action {0:?} is listed twice")]
    DuplicateAction(String),
}

/// A normalised repository path such as `acme/api` or `group/sub/project`.
///
/// It can only exist valid: no leading or trailing `/`, no `.git` suffix, no empty, `.` or
/// `..` segments, only `A-Z a-z 0-9 . _ -` in segments, case preserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RepoPath(String);

impl RepoPath {
    /// Parses and normalises a repository path. A single final `.git` suffix is removed;
    /// anything else that is not already normal is refused, never repaired.
    pub fn parse(input: &str) -> Result<Self, ScopeError> {
        if input.is_empty() {
            return Err(ScopeError::EmptyPath);
        }
        // Character checks come first so that the message names the real problem.
        for c in input.chars() {
            match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/' => {}
                '%' => return Err(ScopeError::PercentEscape),
                '\\' => return Err(ScopeError::Backslash),
                c if c.is_control() => return Err(ScopeError::ControlChar(c as u32)),
                c => return Err(ScopeError::BadChar(c)),
            }
        }
        if input.len() > MAX_PATH_LEN + ".git".len() {
            return Err(ScopeError::PathTooLong(input.len()));
        }
        if input.starts_with('/') {
            return Err(ScopeError::LeadingSlash);
        }
        if input.ends_with('/') {
            return Err(ScopeError::TrailingSlash);
        }
        let path = input.strip_suffix(".git").unwrap_or(input);
        if path.is_empty() {
            return Err(ScopeError::EmptyPath);
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(ScopeError::TooManySegments(segments.len()));
        }
        for seg in &segments {
            match *seg {
                "" => return Err(ScopeError::EmptySegment),
                "." => return Err(ScopeError::DotSegment(".")),
                ".." => return Err(ScopeError::DotSegment("..")),
                _ => {}
            }
            if seg.len() > MAX_SEGMENT_LEN {
                return Err(ScopeError::SegmentTooLong(seg.len()));
            }
            if seg.starts_with('-') {
                return Err(ScopeError::LeadingDash((*seg).to_owned()));
            }
            // `api.git.git`, `api.GIT`, `acme.git/api`: every spelling that a server might
            // map to a different repository than we do is refused.
            if seg.to_ascii_lowercase().ends_with(".git") {
                return Err(ScopeError::GitSuffix((*seg).to_owned()));
            }
        }
        if path.len() > MAX_PATH_LEN {
            return Err(ScopeError::PathTooLong(path.len()));
        }
        Ok(Self(path.to_owned()))
    }

    /// The normalised path, without `.git`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoPath {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for RepoPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Clone, fetch, ls-remote (git-upload-pack).
    Read,
    /// Push (git-receive-pack). Implies nothing else.
    Write,
}

impl Action {
    /// The action's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Action::Read),
            "write" => Ok(Action::Write),
            "" => Err(ScopeError::EmptyAction),
            other => Err(ScopeError::UnknownAction(other.to_owned())),
        }
    }
}

/// A non-empty set of actions, printed in the canonical order `read,write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Actions {
    read: bool,
    write: bool,
}

impl Actions {
    /// Only `read`.
    pub const READ: Actions = Actions {
        read: true,
        write: false,
    };
    /// Only `write`.
    pub const WRITE: Actions = Actions {
        read: false,
        write: true,
    };
    /// `read,write`.
    pub const READ_WRITE: Actions = Actions {
        read: true,
        write: true,
    };

    /// Parses `read`, `write`, `read,write` or `write,read`; refuses empty, unknown,
    /// upper-case and duplicate actions.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        if s.is_empty() {
            return Err(ScopeError::MissingActions);
        }
        let mut set = Actions {
            read: false,
            write: false,
        };
        for part in s.split(',') {
            let action: Action = part.parse()?;
            let slot = match action {
                Action::Read => &mut set.read,
                Action::Write => &mut set.write,
            };
            if *slot {
                return Err(ScopeError::DuplicateAction(part.to_owned()));
            }
            *slot = true;
        }
        Ok(set)
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        match action {
            Action::Read => self.read,
            Action::Write => self.write,
        }
    }

    /// Whether every action of `other` is in this set.
    pub fn covers(self, other: Actions) -> bool {
        (self.read || !other.read) && (self.write || !other.write)
    }

    /// The actions, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        [(self.read, Action::Read), (self.write, Action::Write)]
            .into_iter()
            .filter_map(|(on, a)| on.then_some(a))
    }
}

impl From<Action> for Actions {
    fn from(a: Action) -> Self {
        match a {
            Action::Read => Actions::READ,
            Action::Write => Actions::WRITE,
        }
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for a in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl FromStr for Actions {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Actions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `repo:<path>:<actions>`: one repository and the actions on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The repository.
    pub repo: RepoPath,
    /// The actions on it.
    pub actions: Actions,
}

impl Scope {
    /// A scope for one repository and a set of actions.
    pub fn new(repo: RepoPath, actions: impl Into<Actions>) -> Self {
        Self {
            repo,
            actions: actions.into(),
        }
    }

    /// Parses `repo:<path>:<action>[,<action>]`.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let rest = s.strip_prefix("repo:").ok_or(ScopeError::NotRepoScope)?;
        // Paths cannot contain ':', so the last ':' separates the actions.
        let (path, actions) = rest.rsplit_once(':').ok_or(ScopeError::MissingActions)?;
        let repo = RepoPath::parse(path)?;
        let actions = Actions::parse(actions)?;
        Ok(Self { repo, actions })
    }

    /// Whether this scope includes everything `other` asks for.
    pub fn covers(&self, other: &Scope) -> bool {
        self.repo == other.repo && self.actions.covers(other.actions)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repo:{}:{}", self.repo, self.actions)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(canonical)` or `Err(substring of the message)`.
    const TABLE: &[(&str, Result<&str, &str>)] = &[
        // accepted
        ("repo:acme/api:read", Ok("repo:acme/api:read")),
        ("repo:acme/api:write", Ok("repo:acme/api:write")),
        ("repo:acme/api:read,write", Ok("repo:acme/api:read,write")),
        ("repo:acme/api:write,read", Ok("repo:acme/api:read,write")),
        ("repo:acme/api.git:read", Ok("repo:acme/api:read")),
        ("repo:group/sub/proj:read", Ok("repo:group/sub/proj:read")),
        ("repo:Acme/API:read", Ok("repo:Acme/API:read")),
        ("repo:api:read", Ok("repo:api:read")),
        ("repo:org/.github:read", Ok("repo:org/.github:read")),
        (
            "repo:acme/my_repo-2.0:read",
            Ok("repo:acme/my_repo-2.0:read"),
        ),
        ("repo:acme/git:read", Ok("repo:acme/git:read")),
        ("repo:acme/gitty.gi:read", Ok("repo:acme/gitty.gi:read")),
        ("repo:a/b/c/d/e/f/g/h:read", Ok("repo:a/b/c/d/e/f/g/h:read")),
        // structure
        ("", Err("must start with 'repo:'")),
        ("acme/api:read", Err("must start with 'repo:'")),
        ("REPO:acme/api:read", Err("must start with 'repo:'")),
        ("repo:acme/api", Err("no actions")),
        ("repo:acme/api:", Err("no actions")),
        ("repo::read", Err("path is empty")),
        ("repo:", Err("no actions")),
        // actions
        ("repo:acme/api:READ", Err("unknown action \"READ\"")),
        ("repo:acme/api:Write", Err("unknown action \"Write\"")),
        ("repo:acme/api:admin", Err("unknown action \"admin\"")),
        ("repo:acme/api:read,read", Err("\"read\" is listed twice")),
        ("repo:acme/api:read,", Err("empty action")),
        ("repo:acme/api:,write", Err("empty action")),
        (
            "repo:acme/api:read, write",
            Err("unknown action \" write\""),
        ),
        ("repo:acme/api:*", Err("unknown action \"*\"")),
        // dot segments and slashes
        ("repo:acme/../secret:read", Err("'..' segment")),
        ("repo:acme/api/..:read", Err("'..' segment")),
        ("repo:./api:read", Err("'.' segment")),
        ("repo:acme/./api:read", Err("'.' segment")),
        ("repo:..:read", Err("'..' segment")),
        ("repo:acme//api:read", Err("empty segment")),
        ("repo:/acme/api:read", Err("must not start with '/'")),
        ("repo:acme/api/:read", Err("must not end with '/'")),
        ("repo:acme/api.git/:read", Err("must not end with '/'")),
        // escapes and odd characters
        ("repo:acme/%2e%2e/secret:read", Err("percent-escapes")),
        ("repo:acme%2Fapi:read", Err("percent-escapes")),
        ("repo:acme/api%00:read", Err("percent-escapes")),
        ("repo:acme\\api:read", Err("backslash")),
        ("repo:acme/..\\secret:read", Err("backslash")),
        ("repo:acme/api\0:read", Err("control character U+0000")),
        ("repo:acme/api\n:read", Err("control character U+000A")),
        ("repo:acme/\x1b[31m:read", Err("control character U+001B")),
        ("repo:acme/a\u{7f}:read", Err("control character U+007F")),
        ("repo:acme/api name:read", Err("' '")),
        ("repo:acme/api?x=1:read", Err("'?'")),
        ("repo:acme/api#x:read", Err("'#'")),
        ("repo:acme/ápi:read", Err("'á'")),
        ("repo:acme/\u{2215}api:read", Err("'∕'")),
        ("repo:acme/api*:read", Err("'*'")),
        ("repo:acme:api:read", Err("':'")),
        ("repo:~root/api:read", Err("'~'")),
        // .git suffix variants
        ("repo:acme/api.git.git:read", Err("'.git' suffix")),
        ("repo:acme/api.GIT:read", Err("'.git' suffix")),
        ("repo:acme/api.Git:read", Err("'.git' suffix")),
        ("repo:acme.git/api:read", Err("'.git' suffix")),
        ("repo:.git:read", Err("path is empty")),
        ("repo:acme/.git:read", Err("empty segment")),
        ("repo:acme/-upload-pack:read", Err("starts with '-'")),
    ];

    #[test]
    fn scope_table() {
        assert!(TABLE.len() >= 40);
        for (input, want) in TABLE {
            let got = Scope::parse(input);
            match (want, &got) {
                (Ok(canon), Ok(scope)) => {
                    assert_eq!(&scope.to_string(), canon, "input {input:?}");
                    // Printing and parsing again is the identity.
                    assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(scope));
                }
                (Err(needle), Err(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(needle),
                        "input {input:?}: {msg:?} lacks {needle:?}"
                    );
                }
                _ => panic!("input {input:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn repo_path_special_cases() {
        assert_eq!(RepoPath::parse(".git"), Err(ScopeError::EmptyPath));
        let long = "a/".repeat(MAX_SEGMENTS) + "a";
        assert!(matches!(
            RepoPath::parse(&long),
            Err(ScopeError::TooManySegments(_))
        ));
        let seg = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(
            RepoPath::parse(&seg),
            Err(ScopeError::SegmentTooLong(_))
        ));
        let path = vec!["a".repeat(90); 3].join("/");
        assert!(matches!(
            RepoPath::parse(&path),
            Err(ScopeError::PathTooLong(_))
        ));
        let huge = "a".repeat(10_000);
        assert!(matches!(
            RepoPath::parse(&huge),
            Err(ScopeError::PathTooLong(_))
        ));
        assert_eq!(
            RepoPath::parse("acme/api.git").map(|p| p.to_string()),
            Ok("acme/api".into())
        );
    }

    #[test]
    fn covers() {
        let rw = Scope::parse("repo:acme/api:read,write").expect("valid");
        let r = Scope::parse("repo:acme/api:read").expect("valid");
        let other = Scope::parse("repo:acme/apix:read").expect("valid");
        assert!(rw.covers(&r));
        assert!(!r.covers(&rw));
        assert!(!rw.covers(&other));
    }

    #[test]
    fn serde_round_trip_refuses_bad_paths() {
        let s: Scope = serde_json::from_str("\"repo:acme/api:read\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            "\"repo:acme/api:read\""
        );
        assert!(serde_json::from_str::<RepoPath>("\"acme/../x\"").is_err());
    }

    /// The fuzz target's properties on a few thousand grammar-biased inputs, so CI runs them
    /// on stable: never a panic, and whatever parses prints back to itself.
    #[test]
    fn pseudo_random_inputs_never_panic_and_round_trip() {
        const PIECES: &[&str] = &[
            "repo:", "acme", "/", "api", ".git", ":", "read", "write", ",", "..", ".", "%2e",
            "%2F", "\\", "\0", "\n", "-", "_", "GIT", "ÿ", "∕", " ", "*", "//",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut text = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for i in 0..(x % 9) {
                text.push_str(PIECES[((x >> (i * 5)) % PIECES.len() as u64) as usize]);
            }
            if let Ok(scope) = Scope::parse(&text) {
                accepted += 1;
                assert_eq!(
                    Scope::parse(&scope.to_string()).as_ref(),
                    Ok(&scope),
                    "{text:?}"
                );
                assert!(
                    scope
                        .repo
                        .segments()
                        .all(|s| s != "." && s != ".." && !s.is_empty())
                );
            }
            if let Ok(p) = RepoPath::parse(&text) {
                assert_eq!(RepoPath::parse(p.as_str()).as_ref(), Ok(&p), "{text:?}");
            }
        }
        assert!(accepted > 0, "the generator must reach valid scopes too");
    }
}
