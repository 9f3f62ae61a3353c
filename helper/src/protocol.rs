//! Git's credential helper protocol: parsing what git sends on `get`/`store`/`erase` and
//! emitting the answer. Strict: NUL bytes, carriage returns, duplicate keys and oversized
//! input are refused; unknown keys are ignored, as git's own helpers do.

use std::io::{BufRead, Write};

use jit_proto::Secret;

/// The longest line accepted from git. Challenges and tokens are far below this.
const MAX_LINE: usize = 64 * 1024;
/// The most lines accepted in one request.
const MAX_LINES: usize = 256;

/// Why a credential request could not be read or an answer not written.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading stdin or writing stdout failed.
    #[error("credential protocol I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A line was not valid UTF-8.
    #[error("credential protocol line {0} is not UTF-8")]
    NotUtf8(usize),
    /// A line contained a NUL byte.
    #[error("credential protocol line {0} contains a NUL byte")]
    Nul(usize),
    /// A line contained a carriage return (newline injection).
    #[error("credential protocol line {0} contains a carriage return")]
    CarriageReturn(usize),
    /// A line had no `=`.
    #[error("credential protocol line {0} has no '='")]
    NoEquals(usize),
    /// A line had an empty key.
    #[error("credential protocol line {0} has an empty key")]
    EmptyKey(usize),
    /// A single-valued key appeared twice.
    #[error("credential protocol key {0:?} appears twice")]
    Duplicate(String),
    /// A line or the whole request was too long.
    #[error("credential protocol input is too large")]
    TooLarge,
    /// A value to be written contains a newline or NUL.
    #[error("refusing to write a credential value containing a newline or NUL")]
    Injection,
}

/// What git told the helper: the parts of the URL, any challenge headers and capabilities.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// `https`, `http`, …
    pub protocol: Option<String>,
    /// `host[:port]`.
    pub host: Option<String>,
    /// The repository path (only with `credential.useHttpPath=true`).
    pub path: Option<String>,
    /// A username, if git has one.
    pub username: Option<String>,
    /// A password, on `store`/`erase`.
    pub password: Option<Secret>,
    /// A pre-encoded credential, on `store`/`erase` with the authtype capability.
    pub credential: Option<Secret>,
    /// The auth type that went with `credential`.
    pub authtype: Option<String>,
    /// One entry per `WWW-Authenticate` header of the server's 401, in order.
    pub wwwauth: Vec<String>,
    /// Capabilities git offers (`authtype`, `state`).
    pub capabilities: Vec<String>,
}

impl Request {
    /// Reads one request, up to a blank line or end of input.
    pub fn read<R: BufRead>(mut input: R) -> Result<Self, ProtocolError> {
        let mut req = Request::default();
        let mut buf = Vec::new();
        for lineno in 1..=MAX_LINES + 1 {
            buf.clear();
            let mut limited = <&mut R as std::io::Read>::take(&mut input, MAX_LINE as u64 + 1);
            let n = limited.read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(req);
            }
            if lineno > MAX_LINES || (n > MAX_LINE && buf.last() != Some(&b'\n')) {
                return Err(ProtocolError::TooLarge);
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.is_empty() {
                return Ok(req);
            }
            if buf.contains(&0) {
                return Err(ProtocolError::Nul(lineno));
            }
            if buf.contains(&b'\r') {
                return Err(ProtocolError::CarriageReturn(lineno));
            }
            let line = std::str::from_utf8(&buf).map_err(|_| ProtocolError::NotUtf8(lineno))?;
            let (key, value) = line
                .split_once('=')
                .ok_or(ProtocolError::NoEquals(lineno))?;
            if key.is_empty() {
                return Err(ProtocolError::EmptyKey(lineno));
            }
            req.set(key, value)?;
        }
        Err(ProtocolError::TooLarge)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ProtocolError> {
        fn once<T>(slot: &mut Option<T>, key: &str, v: T) -> Result<(), ProtocolError> {
            if slot.is_some() {
                return Err(ProtocolError::Duplicate(key.to_owned()));
            }
            *slot = Some(v);
            Ok(())
        }
        match key {
            "protocol" => once(&mut self.protocol, key, value.to_owned()),
            "host" => once(&mut self.host, key, value.to_owned()),
            "path" => once(&mut self.path, key, value.to_owned()),
            "username" => once(&mut self.username, key, value.to_owned()),
            "password" => once(&mut self.password, key, Secret::new(value)),
            "credential" => once(&mut self.credential, key, Secret::new(value)),
            "authtype" => once(&mut self.authtype, key, value.to_owned()),
            "wwwauth[]" => push(&mut self.wwwauth, value),
            "capability[]" => push(&mut self.capabilities, value),
            _ => Ok(()),
        }
    }
}

/// Appends to an array key; an empty value resets the array, as in git's protocol.
fn push(array: &mut Vec<String>, value: &str) -> Result<(), ProtocolError> {
    if value.is_empty() {
        array.clear();
    } else {
        array.push(value.to_owned());
    }
    Ok(())
}

impl Request {
    /// Whether git offered a capability (`authtype`).
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Writes the request as git would send it, ending in a blank line; reading it back
    /// gives an equal request (the fuzz targets and property tests check this). Nothing is
    /// written if a value would inject a line.
    pub fn write<W: Write>(&self, mut out: W) -> Result<(), ProtocolError> {
        let mut lines: Vec<(&str, &str)> = Vec::new();
        lines.extend(
            self.capabilities
                .iter()
                .map(|c| ("capability[]", c.as_str())),
        );
        for (k, v) in [
            ("protocol", self.protocol.as_deref()),
            ("host", self.host.as_deref()),
            ("path", self.path.as_deref()),
            ("username", self.username.as_deref()),
            ("password", self.password.as_ref().map(Secret::expose)),
            ("credential", self.credential.as_ref().map(Secret::expose)),
            ("authtype", self.authtype.as_deref()),
        ] {
            if let Some(v) = v {
                lines.push((k, v));
            }
        }
        lines.extend(self.wwwauth.iter().map(|w| ("wwwauth[]", w.as_str())));
        let mut text = String::new();
        for (k, v) in lines {
            if v.contains(['\n', '\r', '\0']) {
                return Err(ProtocolError::Injection);
            }
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        text.push('\n');
        out.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// The helper's answer to `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A token for git to send as `Authorization: Bearer` (git offered `authtype`).
    Bearer {
        /// The broker's token.
        token: Secret,
        /// When it expires (seconds since the epoch).
        expires_at: i64,
    },
    /// A token for git to send as Basic auth's password (older git).
    Basic {
        /// The username to send; the gateway ignores it.
        username: String,
        /// The broker's token.
        token: Secret,
        /// When it expires (seconds since the epoch).
        expires_at: i64,
    },
    /// Tell git to stop: no credential will come from anywhere.
    Quit,
}

/// The username sent with the token when git cannot send a Bearer header.
pub const BASIC_USERNAME: &str = "x-jit";

impl Answer {
    /// The answer for a token, shaped by what git offered.
    pub fn for_token(req: &Request, token: Secret, expires_at: i64) -> Self {
        if req.offers("authtype") {
            Answer::Bearer { token, expires_at }
        } else {
            Answer::Basic {
                username: BASIC_USERNAME.to_owned(),
                token,
                expires_at,
            }
        }
    }

    /// Writes the answer in git's format. Nothing is written if a value would inject a line.
    pub fn write<W: Write>(&self, mut out: W) -> Result<(), ProtocolError> {
        let mut lines: Vec<(&str, &str)> = Vec::new();
        let expiry;
        match self {
            Answer::Bearer { token, expires_at } => {
                expiry = expires_at.to_string();
                lines.extend([
                    ("capability[]", "authtype"),
                    ("authtype", "Bearer"),
                    ("credential", token.expose()),
                    ("password_expiry_utc", &expiry),
                    ("ephemeral", "1"),
                ]);
            }
            Answer::Basic {
                username,
                token,
                expires_at,
            } => {
                expiry = expires_at.to_string();
                lines.extend([
                    ("username", username.as_str()),
                    ("password", token.expose()),
                    ("password_expiry_utc", &expiry),
                ]);
            }
            Answer::Quit => lines.push(("quit", "1")),
        }
        let mut text = String::new();
        for (k, v) in lines {
            if v.contains(['\n', '\r', '\0']) || v.is_empty() {
                return Err(ProtocolError::Injection);
            }
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Request, ProtocolError> {
        Request::read(s)
    }

    #[test]
    fn parses_what_git_2_47_sends() {
        let req = parse(
            b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=git.example:8443\n\
              path=acme/api.git\nwwwauth[]=Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"\n\
              wwwauth[]=Basic realm=\"git-jit\"\n\n",
        )
        .expect("valid");
        assert_eq!(req.protocol.as_deref(), Some("https"));
        assert_eq!(req.host.as_deref(), Some("git.example:8443"));
        assert_eq!(req.path.as_deref(), Some("acme/api.git"));
        assert_eq!(req.wwwauth.len(), 2);
        assert!(req.offers("authtype"));
        assert!(req.offers("state"));
        assert!(!req.offers("other"));
    }

    #[test]
    fn stops_at_blank_line_and_eof() {
        let req = parse(b"host=a\n\nhost=b\n").expect("valid");
        assert_eq!(req.host.as_deref(), Some("a"));
        let req = parse(b"host=a").expect("valid without final newline");
        assert_eq!(req.host.as_deref(), Some("a"));
        assert_eq!(parse(b"").expect("empty"), Request::default());
    }

    #[test]
    fn value_may_contain_equals() {
        let req = parse(b"password=a=b==\n").expect("valid");
        assert_eq!(req.password.as_ref().map(Secret::expose), Some("a=b=="));
    }

    #[test]
    fn ignores_unknown_keys() {
        let req = parse(b"state[]=x\nurl=https://h/p\nfuture_key=1\nhost=h\n").expect("valid");
        assert_eq!(req.host.as_deref(), Some("h"));
    }

    #[test]
    fn empty_array_value_resets() {
        let req = parse(b"wwwauth[]=Basic\nwwwauth[]=\nwwwauth[]=Bearer\n").expect("valid");
        assert_eq!(req.wwwauth, vec!["Bearer".to_owned()]);
    }

    #[test]
    fn refuses_injection_and_garbage() {
        let cases: &[(&[u8], &str)] = &[
            (b"host=a\0b\n", "NUL"),
            (b"host=a\rpath=x\n", "carriage return"),
            (b"host=a\r\n", "carriage return"),
            (b"hosta\n", "no '='"),
            (b"=x\n", "empty key"),
            (b"host=a\nhost=b\n", "twice"),
            (b"password=a\npassword=b\n", "twice"),
            (b"host=\xff\n", "UTF-8"),
        ];
        for (input, want) in cases {
            let err = parse(input).expect_err("must be refused").to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn refuses_oversized_input() {
        let mut long = b"host=".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        long.push(b'\n');
        assert!(matches!(parse(&long), Err(ProtocolError::TooLarge)));
        let many = "capability[]=x\n".repeat(MAX_LINES + 1);
        assert!(matches!(
            parse(many.as_bytes()),
            Err(ProtocolError::TooLarge)
        ));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let req = parse(b"password=hunter2\ncredential=tok\n").expect("valid");
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("tok\""), "{dbg}");
    }

    fn emit(a: &Answer) -> String {
        let mut out = Vec::new();
        a.write(&mut out).expect("writes");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn bearer_answer_when_git_offers_authtype() {
        let req = parse(b"capability[]=authtype\n").expect("valid");
        let a = Answer::for_token(&req, Secret::new("t0k"), 1_700_000_000);
        assert_eq!(
            emit(&a),
            "capability[]=authtype\nauthtype=Bearer\ncredential=t0k\n\
             password_expiry_utc=1700000000\nephemeral=1\n"
        );
    }

    #[test]
    fn basic_answer_for_older_git() {
        let a = Answer::for_token(&Request::default(), Secret::new("t0k"), 42);
        let text = emit(&a);
        assert_eq!(
            text,
            "username=x-jit\npassword=t0k\npassword_expiry_utc=42\n"
        );
        assert!(
            !text.contains("ephemeral"),
            "ephemeral needs the authtype capability"
        );
    }

    #[test]
    fn quit_answer() {
        assert_eq!(emit(&Answer::Quit), "quit=1\n");
    }

    #[test]
    fn refuses_to_emit_injected_values() {
        for bad in ["a\nusername=evil", "a\rb", "a\0b", ""] {
            let a = Answer::Bearer {
                token: Secret::new(bad),
                expires_at: 1,
            };
            let mut out = Vec::new();
            assert!(matches!(a.write(&mut out), Err(ProtocolError::Injection)));
            assert!(out.is_empty(), "nothing partial is written");
        }
    }

    /// Grammar fragments for the pseudo-random inputs.
    const DICTIONARY: &[&[u8]] = &[
        b"protocol=",
        b"host=",
        b"path=",
        b"username=",
        b"password=",
        b"credential=",
        b"authtype=",
        b"wwwauth[]=",
        b"capability[]=",
        b"url=",
        b"\n",
        b"\n\n",
        b"=",
        b"\r",
        b"\0",
        b"https",
        b"git.example:8443",
        b"acme/api.git",
        b"authtype",
        b"Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
        b"\xff",
        b"\xc3\xa9",
    ];

    /// The stable twin of `fuzz/fuzz_targets/credential_protocol.rs`.
    #[test]
    fn random_input_never_panics_and_accepted_input_round_trips() {
        let mut rng = crate::arbitrary::Rng::new(0x6a69_742d_7072_6f74);
        let mut accepted = 0;
        for _ in 0..5000 {
            let input = rng.input(DICTIONARY, 24);
            let Ok(req) = parse(&input) else { continue };
            accepted += 1;
            let mut again = Vec::new();
            req.write(&mut again).expect("accepted values are writable");
            assert_eq!(
                parse(&again).expect("written request parses"),
                req,
                "{input:?} -> {again:?}"
            );
            let _ = crate::challenge::needed_scope(&req.wwwauth, req.path.as_deref());
            Answer::for_token(&req, Secret::new("t"), 1)
                .write(std::io::sink())
                .expect("the answer to an accepted request is writable");
        }
        assert!(accepted > 400, "only {accepted} inputs were accepted");
    }

    #[test]
    fn write_refuses_injection() {
        let req = Request {
            host: Some("a\nhost=b".into()),
            ..Request::default()
        };
        assert!(matches!(
            req.write(Vec::new()),
            Err(ProtocolError::Injection)
        ));
    }
}
