//! Provider APIs behind traits. Each has a real HTTP client with a configurable base URL (so
//! tests point it at a loopback mock or Prism) and, where it makes sense, the built-in
//! simulator used when no credentials are configured.

pub mod mail;
pub mod oidc;
pub mod simulator;
pub mod sms;
pub mod twilio;

pub use sms::{Accepted, OutboundSms, SendError, SmsProvider};
