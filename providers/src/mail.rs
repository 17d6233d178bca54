//! Outgoing mail through Resend (`POST {RESEND_API_BASE}/emails`, Bearer API key, JSON body
//! `{from, to: [..], subject, text}`; answers `{"id": …}`). Without a key, the services keep
//! mail in the simulator mailbox instead.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Seconds allowed for one call to Resend.
pub const MAIL_TIMEOUT_SECS: u64 = 10;

/// A client for Resend's API.
#[derive(Clone, Debug)]
pub struct ResendMail {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

/// Why a mail was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("Resend refused the mail (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("Resend could not be reached: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

impl ResendMail {
    /// A client for the API at `base` with `key`.
    ///
    /// # Panics
    /// Never in practice: building a reqwest client with these options cannot fail.
    pub fn new(base: &str, key: SecretString) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(MAIL_TIMEOUT_SECS))
                .build()
                .expect("reqwest client"),
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// Sends one plain-text mail; returns Resend's id for it.
    ///
    /// # Errors
    /// [`MailError::Rejected`] for a 4xx (bad address, bad key); [`MailError::Unavailable`]
    /// for transport errors and 5xx.
    pub async fn send(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        text: &str,
    ) -> Result<String, MailError> {
        let resp = self
            .http
            .post(format!("{}/emails", self.base))
            .bearer_auth(self.key.expose_secret())
            .json(&serde_json::json!({
                "from": from,
                "to": [to],
                "subject": subject,
                "text": text,
            }))
            .send()
            .await
            .map_err(|e| MailError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json::<Sent>()
                .await
                .map(|s| s.id)
                .map_err(|e| MailError::Unavailable(e.to_string()));
        }
        let message: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        if status.is_client_error() {
            Err(MailError::Rejected {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(MailError::Unavailable(format!("HTTP {status}: {message}")))
        }
    }
}
