//! `[[notify.webhook]]`: where approval notifications go, as written in the config file.
//! Plain data, checked when the file is parsed, so `check-config` and `serve` name a bad key
//! the same way; [`crate::notify`] loads the signing secrets and sends.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use reqwest::Url;
use serde::Deserialize;

use super::KeyProblem;
use super::policy::check_name;

/// The event names a webhook may filter on, as they appear in `X-Jit-Event` and the JSON
/// payload's `event` field.
pub const EVENT_NAMES: [&str; 6] = [
    "request.created",
    "request.approved",
    "request.denied",
    "request.cancelled",
    "request.expired",
    "request.break_glass",
];

/// Longest `timeout_secs` accepted: a delivery retries for about a minute in all.
pub const MAX_TIMEOUT_SECS: u64 = 30;

/// `[notify]`: the webhooks told of each approval request and decision. Only exists valid:
/// parsing checks every entry (see [`NotifyConfig::validate`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, try_from = "NotifyFile")]
pub struct NotifyConfig {
    /// `[[notify.webhook]]`: each receives every event its `events` filter lets through.
    pub webhook: Vec<WebhookConfig>,
}

/// `[notify]` as written, before its entries are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    #[serde(default)]
    webhook: Vec<WebhookConfig>,
}

impl TryFrom<NotifyFile> for NotifyConfig {
    type Error = KeyProblem;

    fn try_from(file: NotifyFile) -> Result<Self, KeyProblem> {
        let config = Self {
            webhook: file.webhook,
        };
        config.validate()?;
        Ok(config)
    }
}

/// One `[[notify.webhook]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (`[A-Za-z0-9_.-]`, 1 to 64 characters): the `webhook` label of the
    /// metrics and the name in log lines (the URL is never logged: it may hold a credential,
    /// as Slack's do).
    pub name: String,
    /// Where events are POSTed: `https://…`, or `http://…` to a loopback host only.
    pub url: String,
    /// The payload: `json` (default, the event itself) or `slack` (`{"text": …}`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding the HMAC-SHA256 key the payloads are signed with.
    /// Exactly one of `secret_env` and `secret_file` is required.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HMAC-SHA256 key (a trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The events sent to this webhook (names as in [`EVENT_NAMES`]). Default: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Seconds one attempt may take, connection included (1 to 30). Default 5.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    5
}

/// `notify.webhook[].format`: the shape of the payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event as a JSON object (docs/notifications.md).
    #[default]
    Json,
    /// A Slack-compatible `{"text": "…"}` message.
    Slack,
}

/// Where a webhook's signing secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// An environment variable.
    Env(&'a str),
    /// A file.
    File(&'a std::path::Path),
}

impl WebhookConfig {
    /// Where the signing secret is read from; `key` is this entry's key prefix.
    pub fn secret_source(&self, key: &str) -> Result<SecretSource<'_>, KeyProblem> {
        match (&self.secret_env, &self.secret_file) {
            (Some(var), None) if !var.is_empty() => Ok(SecretSource::Env(var)),
            (None, Some(file)) if !file.as_os_str().is_empty() => Ok(SecretSource::File(file)),
            _ => Err(KeyProblem::new(
                format!("{key}.secret_env"),
                "set exactly one of secret_env or secret_file (the key payloads are signed with)",
            )),
        }
    }
}

impl NotifyConfig {
    /// Checks every entry without touching the environment or the disk; the problem names
    /// its key (`notify.webhook[1].url`).
    pub fn validate(&self) -> Result<(), KeyProblem> {
        let mut names = BTreeSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            let key = format!("notify.webhook[{i}]");
            check_name(&format!("{key}.name"), &w.name)?;
            if !names.insert(w.name.as_str()) {
                return Err(KeyProblem::new(
                    format!("{key}.name"),
                    format!("{:?} names an earlier webhook too", w.name),
                ));
            }
            check_url(&w.url).map_err(|p| KeyProblem::new(format!("{key}.url"), p))?;
            w.secret_source(&key)?;
            if let Some(events) = &w.events {
                if events.is_empty() {
                    return Err(KeyProblem::new(
                        format!("{key}.events"),
                        "must list at least one event (leave it out for all)",
                    ));
                }
                for (j, e) in events.iter().enumerate() {
                    if !EVENT_NAMES.contains(&e.as_str()) {
                        return Err(KeyProblem::new(
                            format!("{key}.events[{j}]"),
                            format!("{e:?} is not an event; use {}", EVENT_NAMES.join(", ")),
                        ));
                    }
                }
            }
            if !(1..=MAX_TIMEOUT_SECS).contains(&w.timeout_secs) {
                return Err(KeyProblem::new(
                    format!("{key}.timeout_secs"),
                    format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a webhook URL. Problems never repeat the URL: its path or query may be a
/// credential (a Slack webhook URL is one).
fn check_url(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let Some(host) = parsed.host_str() else {
        return Err("must name a host".into());
    };
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "http:// is allowed only to a loopback host, not {host:?}: use https://"
            ));
        }
        other => return Err(format!("scheme {other:?}: use https://")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if parsed.fragment().is_some() {
        return Err("must not carry a #fragment".into());
    }
    Ok(())
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NotifyConfig, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            notify: NotifyConfig,
        }
        toml::from_str::<File>(text)
            .map(|f| f.notify)
            .map_err(|e| e.message().to_owned())
    }

    const GOOD: &str = r#"
[[notify.webhook]]
name = "security-slack"
url = "https://hooks.slack.com/services/T0/B0/XYZ"
format = "slack"
secret_env = "JIT_WEBHOOK_SECRET"
events = ["request.created", "request.break_glass"]

[[notify.webhook]]
name = "local"
url = "http://127.0.0.1:9000/hook"
secret_file = "/run/secrets/hook"
timeout_secs = 2
"#;

    #[test]
    fn good_entries_and_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.webhook.len(), 2);
        let (slack, local) = (&c.webhook[0], &c.webhook[1]);
        assert_eq!(slack.format, WebhookFormat::Slack);
        assert_eq!(slack.timeout_secs, 5);
        assert_eq!(
            slack.events.as_deref(),
            Some(
                &[
                    "request.created".to_owned(),
                    "request.break_glass".to_owned()
                ][..]
            )
        );
        assert_eq!(local.format, WebhookFormat::Json);
        assert_eq!(local.events, None);
        assert_eq!(
            local.secret_source("k"),
            Ok(SecretSource::File(std::path::Path::new(
                "/run/secrets/hook"
            )))
        );
        assert!(parse("").expect("no section").webhook.is_empty());
    }

    #[test]
    fn problems_name_the_key() {
        let cases = [
            (
                GOOD.replace("security-slack", "sec slack"),
                "notify.webhook[0].name",
            ),
            (
                GOOD.replace("\"local\"", "\"security-slack\""),
                "notify.webhook[1].name: \"security-slack\" names an earlier webhook",
            ),
            (
                GOOD.replace(
                    "https://hooks.slack.com/services/T0/B0/XYZ",
                    "hooks.slack.com",
                ),
                "notify.webhook[0].url: not a URL",
            ),
            (
                GOOD.replace("https://hooks", "http://hooks"),
                "notify.webhook[0].url: http:// is allowed only to a loopback host",
            ),
            (
                GOOD.replace("https://hooks", "ftp://hooks"),
                "notify.webhook[0].url: scheme \"ftp\"",
            ),
            (
                GOOD.replace("https://hooks", "https://u:p@hooks"),
                "notify.webhook[0].url: must not carry a user name",
            ),
            (
                GOOD.replace("secret_env = \"JIT_WEBHOOK_SECRET\"", ""),
                "notify.webhook[0].secret_env: set exactly one",
            ),
            (
                GOOD.replace("secret_env = \"JIT_WEBHOOK_SECRET\"", "secret_env = \"\""),
                "notify.webhook[0].secret_env: set exactly one",
            ),
            (
                GOOD.replace("timeout_secs = 2", "timeout_secs = 2\nsecret_env = \"X\""),
                "notify.webhook[1].secret_env: set exactly one",
            ),
            (
                GOOD.replace("\"request.break_glass\"]", "\"request.made\"]"),
                "notify.webhook[0].events[1]: \"request.made\" is not an event",
            ),
            (
                GOOD.replace("[\"request.created\", \"request.break_glass\"]", "[]"),
                "notify.webhook[0].events: must list at least one",
            ),
            (
                GOOD.replace("timeout_secs = 2", "timeout_secs = 0"),
                "notify.webhook[1].timeout_secs",
            ),
            (
                GOOD.replace("timeout_secs = 2", "timeout_secs = 31"),
                "notify.webhook[1].timeout_secs",
            ),
            (
                GOOD.replace("format = \"slack\"", "format = \"xml\""),
                "unknown variant `xml`",
            ),
            (
                GOOD.replace("timeout_secs", "timeout"),
                "unknown field `timeout`",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(needle);
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn url_problems_never_repeat_the_url() {
        let err = parse(&GOOD.replace("https://hooks", "http://hooks")).expect_err("http");
        assert!(!err.contains("XYZ"), "{err}");
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "http://localhost:1/h",
            "http://127.0.0.2/h",
            "http://[::1]:8/h",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/h",
            "http://localhost.evil.com/h",
            "http://[::2]/h",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_entry_fails_the_whole_file_naming_file_and_key() {
        let text = format!(
            "[broker]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://jit.example.com\"\n\
             keys_dir = \"keys\"\n{}",
            GOOD.replace("https://hooks", "http://hooks")
        );
        let err = super::super::Config::parse(&text, std::path::Path::new("broker.toml"))
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("broker.toml: "), "{err}");
        assert!(
            err.contains("notify.webhook[0].url: http:// is allowed only to a loopback host"),
            "{err}"
        );
    }
}
