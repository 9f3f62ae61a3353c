//! One `[[notify.webhook]]` ready to send to: its signing key loaded from the environment or
//! a file, its own HTTP client (no redirects, the entry's timeout). Its URL and key are never
//! printed: a Slack webhook URL is itself a credential.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jit_proto::Secret;
use reqwest::Url;
use ring::hmac;

use super::NotifyError;
use super::event::NotifyKind;
use crate::config::{KeyProblem, NotifyConfig, SecretSource, WebhookConfig, WebhookFormat};

/// Shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A webhook with its key and client.
pub struct Webhook {
    /// The configured name: metrics label and log field.
    pub(crate) name: Arc<str>,
    pub(crate) url: Url,
    pub(crate) format: WebhookFormat,
    pub(crate) key: hmac::Key,
    /// The kinds sent here; `None`: all.
    events: Option<Vec<NotifyKind>>,
    pub(crate) client: reqwest::Client,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether events of `kind` go here.
    pub fn wants(&self, kind: NotifyKind) -> bool {
        self.events.as_ref().is_none_or(|list| list.contains(&kind))
    }
}

/// Loads every webhook of `config`, reading each signing secret through `env` (the process
/// environment in production) or from its file. A missing, empty or short secret is named
/// by its key and variable or file, its value never.
pub fn load(
    config: &NotifyConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Webhook>, NotifyError> {
    config.validate()?;
    config
        .webhook
        .iter()
        .enumerate()
        .map(|(index, w)| {
            let prefix = format!("notify.webhook[{index}]");
            let key = signing_key(w, &prefix, &env)?;
            let url = Url::parse(&w.url).map_err(|e| {
                KeyProblem::new(format!("{prefix}.url"), format!("not a URL ({e})"))
            })?;
            let timeout = Duration::from_secs(w.timeout_secs);
            let client = crate::outbound::client_builder()
                .connect_timeout(timeout)
                .timeout(timeout)
                .user_agent(crate::outbound::USER_AGENT)
                .build()
                .map_err(|source| NotifyError::Client { index, source })?;
            Ok(Webhook {
                name: Arc::from(w.name.as_str()),
                url,
                format: w.format,
                key,
                events: w.events.as_ref().map(|names| {
                    NotifyKind::ALL
                        .into_iter()
                        .filter(|k| names.iter().any(|n| n == k.as_str()))
                        .collect()
                }),
                client,
            })
        })
        .collect()
}

fn signing_key(
    w: &WebhookConfig,
    prefix: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<hmac::Key, KeyProblem> {
    let (value, key) = match w.secret_source(prefix)? {
        SecretSource::Env(var) => {
            let key = format!("{prefix}.secret_env");
            let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                KeyProblem::new(
                    &key,
                    format!("environment variable {var} is not set or empty"),
                )
            })?;
            (Secret::new(value), key)
        }
        SecretSource::File(file) => {
            let key = format!("{prefix}.secret_file");
            let value = std::fs::read_to_string(file).map_err(|e| {
                KeyProblem::new(&key, format!("cannot read {}: {e}", file.display()))
            })?;
            (Secret::new(value), key)
        }
    };
    let secret = value.expose().trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(KeyProblem::new(key, "the secret is empty"));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyProblem::new(
            key,
            format!(
                "the secret is shorter than {MIN_SECRET_BYTES} bytes; make one with `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NotifyConfig {
        #[derive(serde::Deserialize)]
        struct File {
            notify: NotifyConfig,
        }
        let text = format!(
            "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\n{extra}"
        );
        toml::from_str::<File>(&text).expect("valid").notify
    }

    const SECRET: &str = "0123456789abcdef0123";

    fn problem(c: &NotifyConfig, env: impl Fn(&str) -> Option<String>) -> String {
        load(c, env).expect_err("refused").to_string()
    }

    #[test]
    fn missing_empty_or_short_secrets_name_the_key_never_the_value() {
        let c = config("secret_env = \"HOOK_SECRET\"");
        assert_eq!(
            problem(&c, |_| None),
            "notify.webhook[0].secret_env: environment variable HOOK_SECRET is not set or empty"
        );
        assert!(problem(&c, |_| Some(String::new())).contains("HOOK_SECRET is not set or empty"));
        let short = problem(&c, |_| Some("hunter2-short".into()));
        assert!(short.starts_with("notify.webhook[0].secret_env: the secret is shorter than 16"));
        assert!(!short.contains("hunter2"), "{short}");
        let hooks = load(&c, |k| (k == "HOOK_SECRET").then(|| SECRET.to_owned())).expect("ok");
        assert_eq!(hooks[0].name(), "ops");
        let debug = format!("{hooks:?}");
        assert!(
            !debug.contains("hooks.example.com") && !debug.contains(SECRET),
            "{debug}"
        );
    }

    #[test]
    fn secret_files_are_read_without_their_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).expect("write");
        let c = config(&format!("secret_file = {:?}", file.display().to_string()));
        let hooks = load(&c, |_| None).expect("ok");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()), b"m");
        assert_eq!(
            hmac::sign(&hooks[0].key, b"m").as_ref(),
            expected.as_ref(),
            "the newline is not part of the key"
        );
        std::fs::write(&file, "\n").expect("write");
        assert_eq!(
            problem(&c, |_| None),
            "notify.webhook[0].secret_file: the secret is empty"
        );
        let missing = config("secret_file = \"/nonexistent/jit-secret\"");
        assert!(
            problem(&missing, |_| None)
                .starts_with("notify.webhook[0].secret_file: cannot read /nonexistent/jit-secret")
        );
    }

    #[test]
    fn the_event_filter_is_compiled() {
        let c = config("secret_env = \"S\"\nevents = [\"request.break_glass\"]");
        let hooks = load(&c, |_| Some(SECRET.into())).expect("ok");
        assert!(hooks[0].wants(NotifyKind::BreakGlass));
        assert!(!hooks[0].wants(NotifyKind::RequestCreated));
    }
}
