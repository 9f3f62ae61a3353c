//! Where a broker's tokens may go. A token is answered to git only for the scheme, host, port
//! and path prefix it was obtained for: the configured broker's URL (the broker is also the
//! gateway) or a Git server recorded by `git jit setup` (an nginx `auth_request` front). The
//! path must lie under the URL's path on a segment boundary; what follows the prefix is the
//! repository git is talking to.

use reqwest::Url;

use crate::broker::{BrokerError, parse_base};
use crate::protocol::Request;

/// Why a credential request is not one for the configured broker.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// git asked about a URL that is not http(s) or has no host.
    #[error(
        "not answering for protocol {protocol:?}, host {host:?}: only http(s) URLs of the broker"
    )]
    NotHttp {
        /// The protocol git sent.
        protocol: Option<String>,
        /// The host git sent.
        host: Option<String>,
    },
    /// git asked about another scheme, host or port.
    #[error(
        "not answering for {asked:?}: tokens from {broker} go only to {allowed} (`git jit setup <URL>` adds a Git server)"
    )]
    OtherOrigin {
        /// What git asked about (`https://host:port`).
        asked: String,
        /// The configured broker.
        broker: String,
        /// Where its tokens may go.
        allowed: String,
    },
    /// git asked about a path outside the configured prefix, or sent no path where one is
    /// needed to tell.
    #[error(
        "not answering for {asked:?}: tokens from {broker} go only to {allowed} (`git jit setup <URL>` adds a Git server)"
    )]
    OutsidePrefix {
        /// What git asked about (`https://host/path`, or `https://host` without a path).
        asked: String,
        /// The configured broker.
        broker: String,
        /// Where its tokens may go.
        allowed: String,
    },
}

/// One place a broker's tokens may go: an origin and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    url: Url,
}

impl Destination {
    /// Parses a configured URL with the same rules as the broker's (http(s), https beyond
    /// loopback, no query or fragment).
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        Ok(Self {
            url: parse_base(url)?,
        })
    }

    /// The path prefix without its slashes (`""` at the root, `git` for `https://h/git`).
    fn prefix(&self) -> &str {
        self.url.path().trim_matches('/')
    }

    /// The part of git's `path` under this destination, when git's URL is this
    /// destination's or below it. `Some(None)`: the origin matches and git sent no path,
    /// which is enough only at the root.
    fn locate<'p>(&self, asked: &Url, path: Option<&'p str>) -> Option<Option<&'p str>> {
        if asked.origin() != self.url.origin() {
            return None;
        }
        let prefix = self.prefix();
        match path {
            None if prefix.is_empty() => Some(None),
            None => None,
            Some(p) if prefix.is_empty() => Some(Some(p)),
            Some(p) => p
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(Some),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

/// The origin of git's request as a URL (`https://host:port/`).
fn asked_origin(req: &Request) -> Result<Url, OriginError> {
    let not_http = || OriginError::NotHttp {
        protocol: req.protocol.clone(),
        host: req.host.clone(),
    };
    let (Some(p @ ("http" | "https")), Some(host)) = (req.protocol.as_deref(), req.host.as_deref())
    else {
        return Err(not_http());
    };
    // A host with a path, query, user or fragment in it is not a host.
    if host.is_empty() || host.contains(['/', '?', '#', '@', '\\']) {
        return Err(not_http());
    }
    let url = Url::parse(&format!("{p}://{host}/")).map_err(|_| not_http())?;
    if url.host().is_none() {
        return Err(not_http());
    }
    Ok(url)
}

/// The repository part of git's `path` when git's URL lies under one of `allowed` (the
/// broker first); otherwise why not. `broker` names the broker in the message.
pub fn locate<'r>(
    allowed: &[Destination],
    broker: &str,
    req: &'r Request,
) -> Result<Option<&'r str>, OriginError> {
    let asked = asked_origin(req)?;
    if let Some(found) = allowed
        .iter()
        .find_map(|d| d.locate(&asked, req.path.as_deref()))
    {
        return Ok(found);
    }
    let list = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let origin = asked.as_str().trim_end_matches('/').to_owned();
    if allowed.iter().any(|d| d.url.origin() == asked.origin()) {
        let asked = match req.path.as_deref() {
            Some(p) => format!("{origin}/{p}"),
            None => format!("{origin} (git sent no path; run `git jit setup <URL>`)"),
        };
        return Err(OriginError::OutsidePrefix {
            asked,
            broker: broker.to_owned(),
            allowed: list,
        });
    }
    Err(OriginError::OtherOrigin {
        asked: origin,
        broker: broker.to_owned(),
        allowed: list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(protocol: &str, host: &str, path: Option<&str>) -> Request {
        Request {
            protocol: Some(protocol.into()),
            host: Some(host.into()),
            path: path.map(str::to_owned),
            ..Request::default()
        }
    }

    fn dests(urls: &[&str]) -> Vec<Destination> {
        urls.iter()
            .map(|u| Destination::parse(u).expect("url"))
            .collect()
    }

    #[test]
    fn same_origin_at_the_root() {
        let d = dests(&["https://git.example.com"]);
        let r = req("https", "git.example.com", Some("acme/api.git"));
        assert_eq!(locate(&d, "b", &r).expect("ours"), Some("acme/api.git"));
        // The default port and the host's case are the same origin.
        let r = req("https", "GIT.example.com:443", Some("acme/api.git"));
        assert_eq!(locate(&d, "b", &r).expect("ours"), Some("acme/api.git"));
        let r = req("https", "git.example.com", None);
        assert_eq!(locate(&d, "b", &r).expect("ours"), None);
    }

    /// Regression: the helper answered a request for another host with the broker's token.
    #[test]
    fn another_scheme_host_or_port_is_not_answered() {
        let d = dests(&["https://git.example.com", "http://127.0.0.1:8081"]);
        for (protocol, host) in [
            ("https", "evil.example"),
            ("https", "git.example.com.evil.example"),
            ("https", "git.example.com:8443"),
            ("http", "git.example.com"),
            ("http", "127.0.0.1:8082"),
            ("https", "127.0.0.1:8081"),
            ("http", "localhost:8081"),
        ] {
            let r = req(protocol, host, Some("acme/api.git"));
            let e = locate(&d, "https://git.example.com", &r).expect_err(host);
            assert!(matches!(e, OriginError::OtherOrigin { .. }), "{host}: {e}");
            assert!(e.to_string().contains(host), "{e}");
        }
        let r = req("http", "127.0.0.1:8081", Some("acme/api.git"));
        assert!(locate(&d, "b", &r).is_ok(), "a recorded server");
    }

    #[test]
    fn odd_hosts_and_protocols_are_refused() {
        let d = dests(&["https://git.example.com"]);
        for (protocol, host) in [
            ("ftp", "git.example.com"),
            ("https", ""),
            ("https", "git.example.com/x"),
            ("https", "user@git.example.com"),
            ("https", "evil.example#git.example.com"),
            ("https", "evil.example?git.example.com"),
            ("https", "evil.example\\git.example.com"),
        ] {
            let r = req(protocol, host, Some("acme/api.git"));
            assert!(
                locate(&d, "b", &r).is_err(),
                "{protocol}://{host} was answered"
            );
        }
        assert!(locate(&d, "b", &Request::default()).is_err());
    }

    #[test]
    fn path_prefix_on_segment_boundaries() {
        let d = dests(&["https://h.example/git"]);
        let r = req("https", "h.example", Some("git/acme/api.git"));
        assert_eq!(locate(&d, "b", &r).expect("ours"), Some("acme/api.git"));
        for path in [
            Some("gitx/acme/api.git"),
            Some("acme/api.git"),
            Some("evil/git/acme/api.git"),
            Some("git"),
            None,
        ] {
            let r = req("https", "h.example", path);
            let e = locate(&d, "b", &r).expect_err("outside");
            assert!(matches!(e, OriginError::OutsidePrefix { .. }), "{path:?}");
        }
    }

    const HOSTS: &[&[u8]] = &[
        b"h.example",
        b"H.EXAMPLE",
        b"evil.example",
        b".",
        b":",
        b"443",
        b"8443",
        b"@",
        b"/",
        b"\\",
        b"#",
        b"?",
        b"%2e",
        b"[::1]",
        b"127.0.0.1",
        b"xn--",
        b"\xc3\xa9",
    ];
    const PATHS: &[&[u8]] = &[
        b"git", b"gitx", b"/", b"acme", b"api.git", b"..", b"%2f", b"evil",
    ];

    /// Pseudo-random hosts and paths never panic, and whatever is answered lies at the
    /// destination's origin and under its prefix.
    #[test]
    fn random_requests_are_answered_only_under_the_destination() {
        let d = dests(&["https://h.example/git"]);
        let mut rng = crate::arbitrary::Rng::new(0x6f72_6967_696e);
        let mut answered = 0;
        for _ in 0..5000 {
            // Half of them start like the destination, to reach the interesting edges.
            let mut host = if rng.below(2) == 0 { "h.example" } else { "" }.to_owned();
            host.push_str(&String::from_utf8_lossy(&rng.input(HOSTS, 3)));
            let mut path = if rng.below(2) == 0 { "git/" } else { "" }.to_owned();
            path.push_str(&String::from_utf8_lossy(&rng.input(PATHS, 4)));
            let r = req("https", &host, Some(&path));
            if let Ok(rest) = locate(&d, "b", &r) {
                answered += 1;
                let u = Url::parse(&format!("https://{host}/"))
                    .expect("a host that was answered parses");
                assert_eq!(u.host_str(), Some("h.example"), "{host}");
                assert_eq!(u.port_or_known_default(), Some(443), "{host}");
                let rest = rest.expect("a path");
                assert_eq!(format!("git/{rest}"), path);
            }
        }
        assert!(answered > 0, "nothing was answered");
    }
}
