//! Switchboard's pure rules: no I/O, no framework. Everything here is deterministic and
//! property-tested; the other crates parse input into these types at their edges.
//!
//! - [`accounts`]: sign-in emails, password rules, tenant roles.
//! - [`ids`]: typed UUIDv7 row ids.
//! - [`message`]: direction, author, delivery status (forward-only) and media of a text.
//! - [`phone`]: ITU-T E.164 numbers and Twilio `whatsapp:` addresses.
//! - [`segments`]: SMS encoding and segment counts (3GPP TS 23.038 / 23.040).
//! - [`compliance`]: STOP/START/HELP keywords and replies (CTIA, Twilio, FCC 24-24).
//! - [`template`]: `{name}` message templates.
//! - [`signature`]: Twilio and Stripe webhook signature checks.
//! - [`script`]: the lead-qualification bot as data.

#![warn(missing_docs)]

pub mod accounts;
pub mod compliance;
pub mod ids;
pub mod message;
pub mod phone;
pub mod script;
pub mod segments;
pub mod signature;
pub mod template;

pub use compliance::{Keyword, KeywordKind};
pub use ids::*;
pub use phone::{Channel, E164, PhoneError, parse_address};
pub use script::{Answer, Choice, Script, ScriptState, Step, Turn};
pub use segments::{Encoding, SegmentCount};
pub use signature::stripe::StripeSignatureError;
