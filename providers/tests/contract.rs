//! Contract test: our Twilio client's requests, checked by Prism against Twilio's published
//! OpenAPI spec (testkit/specs/twilio_api_v2010.prism.json). `.ci/run` starts Prism and sets
//! `PRISM_TWILIO_URL` and `PRISM_LOG`; run by hand with
//! `cargo test -p switchboard-providers --test contract -- --ignored`.
//!
//! Prism answers 422 (401 without auth) when a request breaks the spec and logs
//! `[VALIDATOR] ✖ error` for it; both fail this test. Prism's complaints about Twilio's own
//! example *responses* (`Violation: response.…`) are not ours and are skipped.

use chrono::Utc;
use secrecy::SecretString;
use switchboard_providers::twilio::TwilioHttp;
use switchboard_providers::{OutboundSms, SmsProvider};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} must be set: this suite runs against Prism (see .ci/run)")
    })
}

/// Request violations Prism logged (lines of its log, response-example complaints excluded).
fn request_violations(log: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .expect("Prism log")
        .lines()
        .filter(|l| {
            l.contains("[VALIDATOR]") && l.contains('✖') && !l.contains("Violation: response.")
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs Prism: run by .ci/run"]
async fn twilio_client_requests_match_twilios_openapi_spec() {
    let base = required_env("PRISM_TWILIO_URL");
    let log = required_env("PRISM_LOG");
    let client = TwilioHttp::new(&base, std::time::Duration::from_secs(10)).account(
        "AC0123456789abcdef0123456789abcdef",
        SecretString::from("token"),
    );
    let sms = OutboundSms {
        to: "+17135550123".into(),
        from: "+14155550100".into(),
        body: "Hi from Switchboard 👍 — reply STOP to opt out".into(),
        status_callback:
            "https://sb.example.com/webhooks/twilio/status?m=0194a1d2-0000-7000-8000-000000000001"
                .into(),
    };
    let accepted = client
        .send(&sms)
        .await
        .expect("create message accepted by Prism");
    assert!(accepted.sid.starts_with("SM"), "{accepted:?}");
    client
        .find_recent(&sms, Utc::now())
        .await
        .expect("list messages accepted by Prism");
    client
        .holds_number("+14155550100")
        .await
        .expect("list incoming phone numbers accepted by Prism");
    client
        .fetch_account()
        .await
        .expect("fetch account accepted by Prism");

    let violations = request_violations(&log);
    assert!(
        violations.is_empty(),
        "Prism rejected our requests:\n{}",
        violations.join("\n")
    );
}
