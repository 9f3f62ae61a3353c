//! The security console's machinery below the HTTP floor: who is signed in ([`session`]),
//! signing in with the company's IdP ([`login`], OpenID Connect authorization code with PKCE
//! and nonce), the embedded stylesheet and script ([`assets`]), the pages ([`pages`],
//! server-rendered with maud, readable with JavaScript off), the repository timeline
//! ([`timeline`], inline SVG drawn from the audit trail) and the headers every console
//! answer carries ([`secure_headers`]). The handlers that join these to the admin API and the
//! approval service are in `http::console`.

pub mod assets;
pub mod login;
pub mod pages;
pub mod session;
pub mod timeline;

use axum::http::{HeaderMap, HeaderValue, header};
use openidconnect::url;

/// Where the console is served.
pub const BASE: &str = "/console";

/// The console's Content-Security-Policy: its own script and stylesheet only, no inline
/// script or style, no framing, forms post only back to the broker.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Sets the security headers of every console answer; pages (everything but the
/// content-addressed assets) are never cached.
pub fn secure_headers(headers: &mut HeaderMap, cacheable: bool) {
    let set = |h: &mut HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if !cacheable {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
}

/// How the console talks to browsers at the broker's public URL: its origin (which
/// state-changing requests must come from) and its session cookie.
#[derive(Debug, Clone)]
pub struct Site {
    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    pub origin: String,
    /// The public URL without a trailing `/`.
    pub public_url: String,
    /// Whether the cookie is `Secure` (https), else plain http on loopback.
    pub secure: bool,
}

impl Site {
    /// The site of `public_url`: https, or plain http on a loopback host (development). Any
    /// other public URL has no console: a session cookie would travel in clear text.
    pub fn new(public_url: &str) -> Result<Self, String> {
        let url = url::Url::parse(public_url)
            .map_err(|e| format!("server.public_url {public_url:?}: {e}"))?;
        let secure = match url.scheme() {
            "https" => true,
            "http" if is_loopback(&url) => false,
            _ => {
                return Err(format!(
                    "the console needs an https public URL (plain http only on loopback), not {public_url:?}"
                ));
            }
        };
        Ok(Self {
            origin: url.origin().ascii_serialization(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            secure,
        })
    }

    /// The session cookie's name: `__Host-` bound to this exact host on https.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-jit_console"
        } else {
            "jit_console"
        }
    }

    /// The `Set-Cookie` value carrying session `id` for `max_age_secs`.
    pub fn session_cookie(&self, id: &str, max_age_secs: i64) -> String {
        // `__Host-` requires `Path=/`; on loopback http the cookie stays under the console.
        let (path, secure) = if self.secure {
            ("/", "; Secure")
        } else {
            (BASE, "")
        };
        format!(
            "{}={id}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        )
    }

    /// The `Set-Cookie` value that deletes the session cookie.
    pub fn clear_session_cookie(&self) -> String {
        self.session_cookie("", 0)
    }

    /// The name of the short-lived cookie binding a login in progress to the browser that
    /// started it. `SameSite=Lax`: it must come back on the IdP's redirect, a cross-site
    /// navigation on which a `Strict` cookie is withheld.
    pub fn login_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-jit_console_login"
        } else {
            "jit_console_login"
        }
    }

    /// The `Set-Cookie` value of the login binding (`value` empty and age 0 deletes it).
    pub fn login_cookie(&self, value: &str, max_age_secs: i64) -> String {
        let (path, secure) = if self.secure {
            ("/", "; Secure")
        } else {
            (BASE, "")
        };
        format!(
            "{}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}",
            self.login_cookie_name()
        )
    }

    /// Where the IdP sends the browser back.
    pub fn redirect_uri(&self) -> String {
        format!("{}{BASE}/callback", self.public_url)
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A Unix time in milliseconds as RFC 3339 UTC (seconds precision).
pub fn utc(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// A Unix time in milliseconds as people read it, saying its zone: `2023-11-14 22:13:20 UTC`
/// (what a page shows until its script puts it in the viewer's zone, and on hover).
pub fn utc_text(ms: i64) -> String {
    let iso = utc(ms);
    match iso.strip_suffix('Z') {
        Some(t) => format!("{} UTC", t.replacen('T', " ", 1)),
        None => iso,
    }
}

/// The value of cookie `name` in `headers`, if sent.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_cookies_are_host_bound_and_secure() {
        let site = Site::new("https://jit.example.com/").expect("site");
        assert_eq!(site.origin, "https://jit.example.com");
        let c = site.session_cookie("abc", 60);
        assert_eq!(
            c,
            "__Host-jit_console=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(site.login_cookie("x", 600).contains("SameSite=Lax; Secure"));
        assert_eq!(
            site.redirect_uri(),
            "https://jit.example.com/console/callback"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let site = Site::new("http://127.0.0.1:8080").expect("loopback");
        assert!(!site.secure);
        assert_eq!(site.origin, "http://127.0.0.1:8080");
        let c = site.session_cookie("abc", 60);
        assert!(c.starts_with("jit_console=abc; Path=/console;"), "{c}");
        assert!(!c.contains("Secure"));
        let e = Site::new("http://jit.example.com").expect_err("clear text");
        assert!(e.contains("needs an https public URL"), "{e}");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xjit_console=no; jit_console=yes"),
        );
        assert_eq!(cookie(&h, "jit_console"), Some("yes"));
        assert_eq!(cookie(&h, "other"), None);
    }
}
