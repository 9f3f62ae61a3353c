//! The credential in an `Authorization` header, as git sends it to the gateway and an admin
//! client sends it to the broker: `Bearer <token>`, or `Basic base64(<user>:<token>)` (any
//! user name; the password is the token). The scheme is matched case-insensitively; an empty
//! token is [`CredentialError::Missing`]. Neither the value nor an error ever shows the token.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

/// Longest `Authorization` value parsed, in bytes (a git-jit token is well under 2 KiB; an
/// OIDC ID token a few KiB).
pub const MAX_AUTHORIZATION_LEN: usize = 32 * 1024;

/// Why an `Authorization` value holds no usable credential. No variant repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The scheme was followed by an empty token or password.
    #[error("no credential was sent")]
    Missing,
    /// Longer than [`MAX_AUTHORIZATION_LEN`].
    #[error(
        "the Authorization header is {0} bytes long; at most {MAX_AUTHORIZATION_LEN} are accepted"
    )]
    TooLong(usize),
    /// No space between a scheme and credentials.
    #[error("the Authorization header has no credentials after its scheme")]
    NoCredentials,
    /// A scheme other than `Basic` or `Bearer`.
    #[error("the Authorization header is not Basic or Bearer")]
    UnknownScheme,
    /// `Basic` credentials that are not standard, padded base64.
    #[error("the Basic credentials are not valid base64")]
    Base64,
    /// `Basic` credentials that do not decode to UTF-8.
    #[error("the Basic credentials are not UTF-8")]
    NotUtf8,
    /// `Basic` credentials without the `:` between user and password.
    #[error("the Basic credentials have no ':' between user and password")]
    NoColon,
}

impl CredentialError {
    /// Whether the client sent no credential at all (as opposed to a malformed one).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing)
    }
}

/// A credential from an `Authorization` header. `Debug` never shows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Bearer <token>`.
    Bearer(Secret),
    /// `Basic`: the user name (anything, git-jit ignores it) and the password (the token).
    Basic {
        /// The user name, as sent.
        user: String,
        /// The password: the token.
        password: Secret,
    },
}

impl Credential {
    /// Parses an `Authorization` header value.
    pub fn parse(value: &str) -> Result<Self, CredentialError> {
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(CredentialError::TooLong(value.len()));
        }
        let (scheme, rest) = value
            .split_once(' ')
            .ok_or(CredentialError::NoCredentials)?;
        let rest = rest.trim();
        let credential = if scheme.eq_ignore_ascii_case("bearer") {
            Self::Bearer(Secret::new(rest))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(rest).map_err(|_| CredentialError::Base64)?;
            let decoded = String::from_utf8(decoded).map_err(|_| CredentialError::NotUtf8)?;
            let (user, password) = decoded.split_once(':').ok_or(CredentialError::NoColon)?;
            Self::Basic {
                user: user.to_owned(),
                password: Secret::new(password),
            }
        } else {
            return Err(CredentialError::UnknownScheme);
        };
        if credential.token().expose().is_empty() {
            return Err(CredentialError::Missing);
        }
        Ok(credential)
    }

    /// The token: the Bearer token or the Basic password.
    pub fn token(&self) -> &Secret {
        match self {
            Self::Bearer(t) => t,
            Self::Basic { password, .. } => password,
        }
    }

    /// Consumes the credential, keeping the token.
    pub fn into_token(self) -> Secret {
        match self {
            Self::Bearer(t) => t,
            Self::Basic { password, .. } => password,
        }
    }

    /// The `Authorization` value carrying this credential: itself a secret.
    pub fn to_header_value(&self) -> Secret {
        match self {
            Self::Bearer(t) => Secret::new(format!("Bearer {}", t.expose())),
            Self::Basic { user, password } => Secret::new(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{}", password.expose()))
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrng::Rng;

    fn basic(s: &str) -> String {
        format!("Basic {}", STANDARD.encode(s))
    }

    #[test]
    fn parses_bearer_and_basic_case_insensitively() {
        for v in ["Bearer tok", "bearer tok", "BEARER   tok  "] {
            assert_eq!(
                Credential::parse(v),
                Ok(Credential::Bearer(Secret::new("tok"))),
                "{v}"
            );
        }
        let c = Credential::parse(&basic("x-access-token:tok:with:colons")).expect("valid");
        assert_eq!(
            c,
            Credential::Basic {
                user: "x-access-token".into(),
                password: Secret::new("tok:with:colons")
            }
        );
        assert_eq!(c.token().expose(), "tok:with:colons");
        let c = Credential::parse(&basic(":tok").replace("Basic", "bAsIc")).expect("valid");
        assert_eq!(c.into_token().expose(), "tok");
    }

    /// Each refusal, named.
    #[test]
    fn bad_credentials_table() {
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        let cases: Vec<(String, CredentialError)> = vec![
            ("Bearer ".into(), CredentialError::Missing),
            ("Bearer    ".into(), CredentialError::Missing),
            (basic("user:"), CredentialError::Missing),
            (basic(":"), CredentialError::Missing),
            (long.clone(), CredentialError::TooLong(long.len())),
            ("".into(), CredentialError::NoCredentials),
            ("Bearer".into(), CredentialError::NoCredentials),
            ("Bearer\ttok".into(), CredentialError::NoCredentials),
            ("tok".into(), CredentialError::NoCredentials),
            ("Token tok".into(), CredentialError::UnknownScheme),
            ("Digest username=x".into(), CredentialError::UnknownScheme),
            (" Bearer tok".into(), CredentialError::UnknownScheme),
            ("Basic !!!".into(), CredentialError::Base64),
            ("Basic dXNlcjp0b2s".into(), CredentialError::Base64),
            (
                format!("Basic {}", STANDARD.encode([b'u', b':', 0xff])),
                CredentialError::NotUtf8,
            ),
            (basic("no-colon"), CredentialError::NoColon),
        ];
        for (input, want) in cases {
            assert_eq!(Credential::parse(&input), Err(want.clone()), "{input:?}");
            assert_eq!(want.is_missing(), want == CredentialError::Missing);
        }
    }

    #[test]
    fn never_shows_the_token() {
        let c = Credential::parse(&basic("alice:s3cr3t")).expect("valid");
        let text = format!("{c:?} {:?} {}", c.to_header_value(), c.to_header_value());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("alice"), "{text}");
        let c = Credential::parse("Bearer s3cr3t").expect("valid");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = Credential::parse("s3cr3t-as-scheme s3cr3t").expect_err("unknown scheme");
        assert!(!format!("{e} {e:?}").contains("s3cr3t"));
    }

    /// Build → header → parse is the identity; arbitrary values never panic.
    #[test]
    fn pseudo_random_credentials_round_trip() {
        const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=";
        const PASSWORD: &str = "aZ09 :-_.~+/=\"\\é🙂\t";
        const USER: &str = "aZ09 -_.@é";
        let mut rng = Rng::new(0xc4ed_e471_a100);
        for _ in 0..3000 {
            let c = if rng.one_in(2) {
                Credential::Bearer(Secret::new(rng.string(TOKEN, 1, 200)))
            } else {
                Credential::Basic {
                    user: rng.string(USER, 0, 20),
                    password: Secret::new(rng.string(PASSWORD, 1, 100)),
                }
            };
            let v = c.to_header_value();
            assert_eq!(Credential::parse(v.expose()).as_ref(), Ok(&c));
        }
        const DICT: &[&str] = &[
            "Bearer",
            "Basic",
            " ",
            "dXNlcjp0b2s=",
            "Og==",
            ":",
            "=",
            "é",
        ];
        for _ in 0..3000 {
            let _ = Credential::parse(&rng.input(DICT, 6));
        }
    }
}
