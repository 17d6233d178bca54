//! The built-in simulator: used when neither the tenant nor the platform has Twilio
//! credentials. It "delivers" every text at once; the simulator page shows the customer's side
//! of the thread from our own message rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use switchboard_domain::message::MessageStatus;

use crate::sms::{Accepted, OutboundSms, SendError, SmsProvider};

/// Prefix of the MessageSids the simulator invents (`SMsim…`), so they are recognisable.
pub const SID_PREFIX: &str = "SMsim";

/// A provider that accepts and delivers everything.
#[derive(Clone, Debug, Default)]
pub struct SimulatorSms;

/// A fresh simulator MessageSid: `SMsim` + 32 hex characters.
pub fn new_sid() -> String {
    format!("{SID_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

#[async_trait]
impl SmsProvider for SimulatorSms {
    async fn send(&self, _sms: &OutboundSms) -> Result<Accepted, SendError> {
        Ok(Accepted {
            sid: new_sid(),
            status: MessageStatus::Delivered,
            error_code: None,
            error_message: None,
        })
    }

    async fn find_recent(
        &self,
        _sms: &OutboundSms,
        _since: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, SendError> {
        // Simulator sends never fail with an unknown outcome.
        Ok(Vec::new())
    }

    fn name(&self) -> &'static str {
        "simulator"
    }
}
