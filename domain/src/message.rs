//! Message vocabulary: direction, who authored it, its delivery status and attached media.
//!
//! Status order follows Twilio's message lifecycle
//! (<https://www.twilio.com/docs/messaging/api/message-resource#message-status-values>):
//! status callbacks may arrive out of order, so a status only ever moves forward.

use serde::{Deserialize, Serialize};

/// Which way a text travelled, seen from the business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(
        rs_type = "String",
        db_type = "String(sea_orm::sea_query::StringLen::None)"
    )
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a customer to one of the tenant's numbers.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "inbound"))]
    Inbound,
    /// From one of the tenant's numbers to a customer.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "outbound"))]
    Outbound,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(
        rs_type = "String",
        db_type = "String(sea_orm::sea_query::StringLen::None)"
    )
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The customer (every inbound message).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "customer"))]
    Customer,
    /// A bot reply.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "bot"))]
    Bot,
    /// A person typing in the inbox or calling the API.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "manual"))]
    Manual,
    /// An automatic compliance reply (STOP/START/HELP confirmations).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "compliance"))]
    Compliance,
    /// A lead alert to the business owner's notification phone
    /// ([`crate::script::OwnerAlert`]), in the owner's own conversation with the number.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "alert"))]
    Alert,
}

/// Delivery status of a message.
///
/// Outbound: `queued` (in our outbox) -> `sending` (handed to the provider, no answer yet) ->
/// `sent` -> `delivered` (or `undelivered` / `failed`, with an error code); `suppressed` when
/// we refused to send (the contact opted out). Inbound messages are `received`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(
        rs_type = "String",
        db_type = "String(sea_orm::sea_query::StringLen::None)"
    )
)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Stored in our outbox, not yet handed to the provider.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "queued"))]
    Queued,
    /// A send request is in flight (or its outcome is unknown after a timeout).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "sending"))]
    Sending,
    /// The provider accepted it and handed it to the carrier.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "sent"))]
    Sent,
    /// The carrier confirmed delivery to the handset.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "delivered"))]
    Delivered,
    /// The carrier could not deliver it (e.g. Twilio error 30003, 30007).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "undelivered"))]
    Undelivered,
    /// The send failed (e.g. Twilio error 21211 invalid number, 21610 unsubscribed).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "failed"))]
    Failed,
    /// Not sent because the recipient opted out (checked at send time).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "suppressed"))]
    Suppressed,
    /// WhatsApp only: the recipient read it.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "read"))]
    Read,
    /// An inbound message.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "received"))]
    Received,
}

/// A text that is only a picture (or other media): nothing but whitespace in its body. Its
/// inbox preview is a media marker, and it answers no question of the bot.
pub fn is_media_only(body: &str, has_media: bool) -> bool {
    has_media && body.trim().is_empty()
}

impl Direction {
    /// The lower-case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl Source {
    /// The lower-case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Bot => "bot",
            Self::Manual => "manual",
            Self::Compliance => "compliance",
            Self::Alert => "alert",
        }
    }
}

impl MessageStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [MessageStatus; 9] = [
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Suppressed,
        Self::Read,
        Self::Received,
    ];

    /// The lower-case wire name (as Twilio spells it where Twilio has it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Read => "read",
            Self::Received => "received",
        }
    }

    /// Parses a Twilio `MessageStatus` / `status` value. Twilio's `accepted` and `scheduled`
    /// map to `queued`; `canceled` maps to `failed`; `receiving` to `received`; `partially_delivered`
    /// to `undelivered`. Unknown values give `None`.
    pub fn from_twilio(s: &str) -> Option<Self> {
        Some(match s {
            "queued" | "accepted" | "scheduled" => Self::Queued,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "undelivered" | "partially_delivered" => Self::Undelivered,
            "failed" | "canceled" => Self::Failed,
            "read" => Self::Read,
            "received" | "receiving" => Self::Received,
            _ => return None,
        })
    }

    /// Position in the lifecycle; a status may only be replaced by one of higher rank.
    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Sending => 1,
            Self::Sent => 2,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Suppressed => 3,
            Self::Read => 4,
            Self::Received => 5,
        }
    }

    /// True when `next` may replace `self`: strictly later in the lifecycle. A late `sent`
    /// after `delivered` is ignored; `failed`, `undelivered` and `suppressed` are final
    /// (only WhatsApp's `read` may follow `delivered`).
    pub fn can_advance_to(self, next: MessageStatus) -> bool {
        if matches!(
            self,
            Self::Failed | Self::Undelivered | Self::Suppressed | Self::Received
        ) {
            return false;
        }
        if next == Self::Read {
            return self == Self::Delivered || self.rank() < 3;
        }
        next.rank() > self.rank() && next != Self::Received
    }

    /// The later of `self` and `other` in the lifecycle (`self` when neither is later).
    pub fn max_with(self, other: MessageStatus) -> MessageStatus {
        if self.can_advance_to(other) {
            other
        } else {
            self
        }
    }
}

/// One media attachment of an MMS (`MediaUrlN` + `MediaContentTypeN` in Twilio's webhook).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Where the provider hosts the file.
    pub url: String,
    /// Its MIME type, e.g. `image/jpeg`.
    pub content_type: String,
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn status_only_moves_forward() {
        assert!(Queued.can_advance_to(Sending));
        assert!(Queued.can_advance_to(Delivered));
        assert!(Sent.can_advance_to(Delivered));
        assert!(!Delivered.can_advance_to(Sent));
        assert!(!Delivered.can_advance_to(Delivered));
        assert!(!Failed.can_advance_to(Delivered));
        assert!(!Undelivered.can_advance_to(Delivered));
        assert!(Delivered.can_advance_to(Read));
        assert!(!Suppressed.can_advance_to(Sent));
        assert!(!Queued.can_advance_to(Received));
    }

    #[test]
    fn twilio_names_parse() {
        assert_eq!(MessageStatus::from_twilio("accepted"), Some(Queued));
        assert_eq!(MessageStatus::from_twilio("undelivered"), Some(Undelivered));
        assert_eq!(MessageStatus::from_twilio("bogus"), None);
        for s in [
            Queued,
            Sending,
            Sent,
            Delivered,
            Undelivered,
            Failed,
            Read,
            Received,
        ] {
            assert_eq!(MessageStatus::from_twilio(s.as_str()), Some(s));
        }
    }
}
