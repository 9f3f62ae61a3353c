//! The broker, asked `POST /ssh/check` as an introspection client (HTTP Basic with the
//! configured id and secret) or, without one, as a loopback caller.

use jit_proto::ssh::{SshCheck, SshDecision};

use crate::{GateConfig, GateError};

/// Longest secret file read, in bytes.
const MAX_SECRET: usize = 4096;

/// A client of one broker.
pub struct Broker {
    url: String,
    client: reqwest::Client,
    basic: Option<(String, String)>,
}

impl Broker {
    /// The broker `config` names, with its client secret read.
    pub fn new(config: &GateConfig) -> Result<Self, GateError> {
        let basic = match &config.client {
            None => None,
            Some((id, file)) => {
                let secret = std::fs::read_to_string(file).map_err(|e| {
                    GateError::Broker(format!(
                        "cannot read the client secret {}: {e}",
                        file.display()
                    ))
                })?;
                let secret = secret.trim();
                if secret.is_empty() || secret.len() > MAX_SECRET {
                    return Err(GateError::Broker(format!(
                        "the client secret file {} is empty or too long",
                        file.display()
                    )));
                }
                Some((id.clone(), secret.to_owned()))
            }
        };
        let client = jit_helper::http_client().map_err(|e| GateError::Broker(e.to_string()))?;
        Ok(Self {
            url: format!("{}/ssh/check", config.broker.trim_end_matches('/')),
            client,
            basic,
        })
    }

    /// Asks the question; any answer but a decision is an error (the gate then refuses).
    pub async fn ask(&self, q: &SshCheck) -> Result<SshDecision, GateError> {
        let mut request = self.client.post(&self.url).json(q);
        if let Some((id, secret)) = &self.basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request
            .send()
            .await
            .map_err(|e| GateError::Broker(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let reason: String = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error_description"].as_str().map(str::to_owned))
                .unwrap_or(body)
                .chars()
                .take(300)
                .filter(|c| !c.is_control())
                .collect();
            return Err(GateError::Broker(format!("HTTP {status}: {reason}")));
        }
        response
            .json::<SshDecision>()
            .await
            .map_err(|e| GateError::Broker(format!("unreadable answer: {}", e.without_url())))
    }
}
