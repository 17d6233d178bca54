//! Twilio's Programmable Messaging REST API (2010-04-01), the two calls we make:
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form: `To`, `From`, `Body`,
//!   `StatusCallback`; HTTP basic auth AccountSid:AuthToken) -> 201 with the message resource.
//! - `GET  /2010-04-01/Accounts/{AccountSid}/Messages.json?To=…&From=…&DateSent>=…` to find a
//!   message whose create call timed out.
//!
//! and, from the settings page, `GET /2010-04-01/Accounts/{AccountSid}.json` ("test
//! connection") and `GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json?PhoneNumber=…`
//! (is a number on the account before a tenant adds it).
//!
//! Errors come back as `{"code": 21610, "message": "…", "more_info": "…", "status": 400}`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use switchboard_domain::message::MessageStatus;

use crate::sms::{Accepted, OutboundSms, SendError, SmsProvider};

/// Seconds of clock difference between us and Twilio tolerated when matching a message
/// created by an attempt whose answer we never got.
pub const RECONCILE_SKEW_SECS: i64 = 10;

/// Messages asked for when looking for an earlier attempt: the most Twilio's list serves in
/// one page (its `PageSize` limit is 1,000).
const RECONCILE_PAGE_SIZE: &str = "1000";

/// What Twilio puts before the body of every text a trial account sends; the message's
/// `body` then carries it, so an earlier attempt from a trial account is matched without it.
const TRIAL_PREFIX: &str = "Sent from your Twilio trial account - ";

/// An HTTP client for Twilio, shared by every account (connection pool, TLS sessions).
#[derive(Clone, Debug)]
pub struct TwilioHttp {
    http: reqwest::Client,
    base: String,
}

impl TwilioHttp {
    /// A client for the API at `base` (`https://api.twilio.com`, or a mock's URL), allowing
    /// `timeout` for a whole call (connecting included). Twilio answers in well under a
    /// second; past the timeout the outcome of a send is unknown.
    ///
    /// # Panics
    /// Never in practice: building a reqwest client with these options cannot fail.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// A provider sending through `account_sid` with `auth_token`.
    pub fn account(&self, account_sid: &str, auth_token: SecretString) -> TwilioSms {
        TwilioSms {
            http: self.clone(),
            account_sid: account_sid.to_string(),
            auth_token,
        }
    }
}

/// Sends through one Twilio account.
#[derive(Clone, Debug)]
pub struct TwilioSms {
    http: TwilioHttp,
    account_sid: String,
    auth_token: SecretString,
}

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    date_created: Option<String>,
    #[serde(default)]
    error_code: Option<i32>,
    #[serde(default)]
    error_message: Option<String>,
}

#[derive(Deserialize)]
struct MessageList {
    #[serde(default)]
    messages: Vec<MessageResource>,
}

/// One entry of the IncomingPhoneNumbers list (the field we read).
#[derive(Deserialize)]
struct IncomingNumber {
    phone_number: String,
}

#[derive(Deserialize)]
struct IncomingNumberList {
    #[serde(default)]
    incoming_phone_numbers: Vec<IncomingNumber>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i32>,
    message: Option<String>,
}

/// What Twilio says about an account (`GET /2010-04-01/Accounts/{AccountSid}.json`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    pub friendly_name: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
}

impl TwilioSms {
    /// Fetches the account with its own credentials: the "test connection" of the settings.
    ///
    /// # Errors
    /// [`SendError::Rejected`] for wrong credentials (401, Twilio error 20003); transport
    /// errors and 5xx as [`SendError::Unavailable`].
    pub async fn fetch_account(&self) -> Result<AccountInfo, SendError> {
        call(self.request(Method::GET, ".json")).await
    }

    /// True when `e164` is one of the account's own numbers (an IncomingPhoneNumber of this
    /// account, not of a subaccount), so Twilio signs its webhooks with this account's token.
    ///
    /// # Errors
    /// [`SendError::Rejected`] for wrong credentials (401, Twilio error 20003); transport
    /// errors and 5xx as [`SendError::Unavailable`]; 429 as [`SendError::RateLimited`].
    pub async fn holds_number(&self, e164: &str) -> Result<bool, SendError> {
        let list: IncomingNumberList = call(
            self.request(Method::GET, "/IncomingPhoneNumbers.json")
                .query(&[("PhoneNumber", e164)]),
        )
        .await?;
        Ok(list
            .incoming_phone_numbers
            .iter()
            .any(|n| n.phone_number == e164))
    }

    /// A `method` request to `path` under this account's resource
    /// (`{base}/2010-04-01/Accounts/{AccountSid}{path}`), with its basic auth.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!(
            "{}/2010-04-01/Accounts/{}{path}",
            self.http.base, self.account_sid
        );
        self.http
            .http
            .request(method, url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
    }

    fn accepted(m: MessageResource) -> Accepted {
        Accepted {
            status: MessageStatus::from_twilio(&m.status).unwrap_or(MessageStatus::Queued),
            sid: m.sid,
            error_code: m.error_code,
            error_message: m.error_message,
        }
    }
}

/// Sends `req`: a success's JSON body as `T`; a non-success as the [`SendError`] it means
/// ([`error_from`]); no answer, or one that does not read as `T`, as
/// [`SendError::Unavailable`].
async fn call<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, SendError> {
    let resp = req.send().await.map_err(transport)?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    resp.json().await.map_err(|e| SendError::Unavailable {
        status: None,
        message: format!("unreadable answer: {e}"),
    })
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an HTTP-date (RFC 9110
/// §10.2.3; IMF-fixdate, which RFC 2822 parsing reads), a date in the past being no wait.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Classifies a non-success response.
async fn error_from(resp: reqwest::Response) -> SendError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, Utc::now()));
    let text = resp.text().await.unwrap_or_default();
    let parsed: Option<TwilioError> = serde_json::from_str(&text).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let message = parsed
        .and_then(|e| e.message)
        .unwrap_or_else(|| text.chars().take(200).collect());
    if status == StatusCode::TOO_MANY_REQUESTS || code == Some(20429) {
        SendError::RateLimited { retry_after }
    } else if status.is_client_error() {
        SendError::Rejected {
            status: status.as_u16(),
            code,
            message,
        }
    } else {
        SendError::Unavailable {
            status: Some(status.as_u16()),
            message,
        }
    }
}

fn transport(e: reqwest::Error) -> SendError {
    SendError::Unavailable {
        status: None,
        message: if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            e.without_url().to_string()
        },
    }
}

#[async_trait]
impl SmsProvider for TwilioSms {
    #[tracing::instrument(skip_all, fields(provider = "twilio"))]
    async fn send(&self, sms: &OutboundSms) -> Result<Accepted, SendError> {
        let m: MessageResource = call(self.request(Method::POST, "/Messages.json").form(&[
            ("To", sms.to.as_str()),
            ("From", sms.from.as_str()),
            ("Body", sms.body.as_str()),
            ("StatusCallback", sms.status_callback.as_str()),
        ]))
        .await?;
        Ok(Self::accepted(m))
    }

    #[tracing::instrument(skip_all, fields(provider = "twilio"))]
    async fn find_recent(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, SendError> {
        // No DateSent filter: a message Twilio still holds as queued/accepted has no
        // date_sent and would be missed. The list is sorted by date_sent, newest first, and
        // Twilio does not say where the undated ones go: the largest page it serves
        // ([`RECONCILE_PAGE_SIZE`]) keeps a long conversation's older texts from pushing the
        // one we look for off the page. The time is checked here. This runs only after an
        // attempt whose outcome is unknown.
        let list: MessageList = call(self.request(Method::GET, "/Messages.json").query(&[
            ("To", sms.to.as_str()),
            ("From", sms.from.as_str()),
            ("PageSize", RECONCILE_PAGE_SIZE),
        ]))
        .await?;
        // date_created is RFC 2822 ("Sat, 21 Nov 2026 12:00:00 +0000"), whole seconds; allow
        // for that and a little clock skew. A date that does not parse never matches.
        let earliest = since - chrono::Duration::seconds(RECONCILE_SKEW_SECS);
        Ok(list
            .messages
            .into_iter()
            .filter(|m| {
                m.body
                    .as_deref()
                    .is_some_and(|b| b.strip_prefix(TRIAL_PREFIX).unwrap_or(b) == sms.body.as_str())
                    && m.date_created
                        .as_deref()
                        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                        .is_some_and(|d| d >= earliest)
            })
            .map(Self::accepted)
            .collect())
    }

    fn name(&self) -> &'static str {
        "twilio"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{basic_auth, body_string_contains, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const SID: &str = "AC00000000000000000000000000000000";

    fn sms() -> OutboundSms {
        OutboundSms {
            to: "+17135550123".into(),
            from: "+14155550100".into(),
            body: "Hi there & welcome".into(),
            status_callback: "https://sb.example.com/webhooks/twilio/status".into(),
        }
    }

    async fn client(server: &MockServer) -> TwilioSms {
        TwilioHttp::new(&server.uri(), Duration::from_secs(5))
            .account(SID, SecretString::from("token"))
    }

    #[tokio::test]
    async fn send_posts_the_form_with_basic_auth() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
            .and(basic_auth(SID, "token"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("To=%2B17135550123"))
            .and(body_string_contains("From=%2B14155550100"))
            .and(body_string_contains("Body=Hi+there+%26+welcome"))
            .and(body_string_contains(
                "StatusCallback=https%3A%2F%2Fsb.example.com%2Fwebhooks%2Ftwilio%2Fstatus",
            ))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let got = client(&server).await.send(&sms()).await.unwrap();
        assert_eq!(
            got,
            Accepted {
                sid: "SM1".into(),
                status: MessageStatus::Queued,
                error_code: None,
                error_message: None,
            }
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 11:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
            })))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503).set_body_string("down"))
            .mount(&server)
            .await;
        let c = client(&server).await;
        match c.send(&sms()).await {
            Err(SendError::Rejected {
                status: 400,
                code: Some(21610),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match c.send(&sms()).await {
            Err(SendError::RateLimited {
                retry_after: Some(d),
            }) => assert_eq!(d, Duration::from_secs(3)),
            other => panic!("{other:?}"),
        }
        match c.send(&sms()).await {
            Err(SendError::Unavailable {
                status: Some(503), ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn find_recent_matches_body_and_time() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
            .and(query_param("PageSize", "1000"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"messages": [
                {"sid": "SMold", "status": "delivered", "body": "Hi there & welcome", "date_created": "Sat, 21 Nov 2026 10:00:00 +0000"},
                {"sid": "SMother", "status": "sent", "body": "something else", "date_created": "Sat, 21 Nov 2026 12:00:00 +0000"},
                {"sid": "SMnew", "status": "sent", "body": "Hi there & welcome", "date_created": "Sat, 21 Nov 2026 12:00:05 +0000"},
                {"sid": "SMundated", "status": "queued", "body": "Hi there & welcome", "date_created": "soon"},
                {"sid": "SMtrial", "status": "queued", "body": "Sent from your Twilio trial account - Hi there & welcome", "date_created": "Sat, 21 Nov 2026 12:00:06 +0000"}
            ]})))
            .mount(&server)
            .await;
        let since = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let got = client(&server)
            .await
            .find_recent(&sms(), since)
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Accepted {
                    sid: "SMnew".into(),
                    status: MessageStatus::Sent,
                    error_code: None,
                    error_message: None,
                },
                Accepted {
                    sid: "SMtrial".into(),
                    status: MessageStatus::Queued,
                    error_code: None,
                    error_message: None,
                }
            ],
            "the old, the other and the undated messages do not match; a trial account's prefix does not hide one"
        );
    }
}
