//! Phone numbers in ITU-T E.164 form and Twilio channel addresses.
//!
//! Everything that enters the system as a phone number (webhook `From`/`To`, a form field, a CSV
//! import) is parsed into [`E164`] at the edge; past that point a number is always canonical
//! (`+` followed by digits only), so it can be compared, indexed and sent to Twilio as is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

/// Shortest number we accept, in digits after the `+` (country code included). ITU-T E.164
/// sets no minimum; 7 is the shortest subscriber number plus country code in real use.
const MIN_DIGITS: usize = 7;
/// Longest number, in digits after the `+`: ITU-T E.164 §6 allows at most 15.
const MAX_DIGITS: usize = 15;
/// Digits after the `+` of a North American Numbering Plan number: `1` + NPA(3) + NXX(3) +
/// line(4).
const NANP_DIGITS: usize = 11;

/// A phone number in canonical ITU-T E.164 form: `+`, a country code not starting with 0, and
/// 7 to 15 digits in total (for example `+14155550100`).
///
/// Numbers with country code 1 (the North American Numbering Plan) must have exactly 11 digits,
/// and their area code (NPA) and exchange (NXX) must start with 2-9, per the NANP numbering
/// rules (ATIS-0300076). Built only by [`E164::parse`] (also used by [`FromStr`] and
/// `Deserialize`); serialized as the plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct E164(String);

/// Why a string is not an E.164 phone number. Each message is a short predicate meant to follow
/// the field name ("phone must start with + and a country code").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but whitespace and separators.
    #[error("is empty")]
    Empty,
    /// The first character (after separators are dropped) is not `+`.
    #[error("must start with + and a country code")]
    MissingPlus,
    /// Something other than an ASCII digit follows the `+`.
    #[error("may contain only digits after the +")]
    InvalidCharacter,
    /// Fewer than 7 digits after the `+`.
    #[error("is too short: expected 7 to 15 digits")]
    TooShort,
    /// More than 15 digits after the `+` (ITU-T E.164 maximum).
    #[error("is too long: E.164 allows at most 15 digits")]
    TooLong,
    /// The country code starts with 0, which ITU-T E.164 never assigns.
    #[error("must not have a country code starting with 0")]
    LeadingZero,
    /// A `+1` (NANP) number without exactly 10 digits after the country code.
    #[error("must have 10 digits after +1")]
    NanpLength,
    /// A `+1` (NANP) number whose area code starts with 0 or 1.
    #[error("must have an area code starting with 2-9")]
    NanpAreaCode,
    /// A `+1` (NANP) number whose exchange code starts with 0 or 1.
    #[error("must have an exchange starting with 2-9")]
    NanpExchange,
    /// A Twilio address with a channel prefix other than `whatsapp:` (e.g. `messenger:`).
    #[error("must be a phone number or a whatsapp: address")]
    UnsupportedChannel,
}

impl E164 {
    /// Parses a phone number typed or received in any common format into E.164.
    ///
    /// Surrounding whitespace is trimmed; spaces, `-`, `.`, `(` and `)` anywhere are ignored
    /// (`+1 (415) 555-0100` → `+14155550100`). A leading `+` is required: without it the
    /// country is ambiguous, so national formats like `415-555-0100` are rejected.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let compact: String = input
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        if compact.is_empty() {
            return Err(PhoneError::Empty);
        }
        let digits = compact.strip_prefix('+').ok_or(PhoneError::MissingPlus)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::InvalidCharacter);
        }
        if digits.len() < MIN_DIGITS {
            return Err(PhoneError::TooShort);
        }
        if digits.len() > MAX_DIGITS {
            return Err(PhoneError::TooLong);
        }
        let d = digits.as_bytes();
        match d[0] {
            b'0' => return Err(PhoneError::LeadingZero),
            b'1' => {
                if d.len() != NANP_DIGITS {
                    return Err(PhoneError::NanpLength);
                }
                if d[1] < b'2' {
                    return Err(PhoneError::NanpAreaCode);
                }
                if d[4] < b'2' {
                    return Err(PhoneError::NanpExchange);
                }
            }
            _ => {}
        }
        Ok(Self(compact))
    }

    /// The canonical form, e.g. `"+14155550100"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for E164 {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// The messaging channel of a Twilio address: plain SMS/MMS (`+14155550100`) or WhatsApp
/// (`whatsapp:+14155550100`), per Twilio's Messaging API address formats. Serialized as
/// `"sms"` / `"whatsapp"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// SMS or MMS; the address is the bare E.164 number.
    Sms,
    /// WhatsApp Business; the address is `whatsapp:` followed by the E.164 number.
    WhatsApp,
}

const WHATSAPP_PREFIX: &str = "whatsapp:";

impl Channel {
    /// The Twilio address of `number` on this channel: `+14155550100` or
    /// `whatsapp:+14155550100`.
    pub fn address(self, number: &E164) -> String {
        match self {
            Channel::Sms => number.0.clone(),
            Channel::WhatsApp => format!("{WHATSAPP_PREFIX}{number}"),
        }
    }
}

/// Splits a Twilio `From`/`To` address into its channel and number: `"+17135550123"` is
/// `(Sms, +17135550123)`, `"whatsapp:+17135550123"` is `(WhatsApp, +17135550123)`. The
/// `whatsapp:` prefix is matched case-insensitively; any other `scheme:` prefix (Twilio also
/// uses `messenger:`, `client:`, `sip:`) is [`PhoneError::UnsupportedChannel`].
pub fn parse_address(address: &str) -> Result<(Channel, E164), PhoneError> {
    let address = address.trim();
    let (channel, rest) = match address.get(..WHATSAPP_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(WHATSAPP_PREFIX) => {
            (Channel::WhatsApp, &address[WHATSAPP_PREFIX.len()..])
        }
        _ if address.contains(':') => return Err(PhoneError::UnsupportedChannel),
        _ => (Channel::Sms, address),
    };
    Ok((channel, E164::parse(rest)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_numbers() {
        for n in [
            "+14155550100",
            "+15005550006",
            "+12349013030",
            "+18005551212",
            "+442071838750",
            "+4930123456",
            "+861012345678901",
        ] {
            assert_eq!(E164::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn strips_separators_and_whitespace() {
        let n = E164::parse("  +1 (415) 555-0100 ").unwrap();
        assert_eq!(n.as_str(), "+14155550100");
        assert_eq!(E164::parse("+1.415.555.0100").unwrap(), n);
    }

    #[test]
    fn rejects_with_specific_errors() {
        use PhoneError::*;
        let cases = [
            ("", Empty),
            (" ( ) ", Empty),
            ("4155550100", MissingPlus),
            ("1+4155550100", MissingPlus),
            ("+1415555010a", InvalidCharacter),
            ("++14155550100", InvalidCharacter),
            ("+1415\t5550100", InvalidCharacter),
            ("+123456", TooShort),
            ("+4412345678901234", TooLong),
            ("+0441234567", LeadingZero),
            ("+1415555010", NanpLength),
            ("+141555501000", NanpLength),
            ("+11155550100", NanpAreaCode),
            ("+10155550100", NanpAreaCode),
            ("+14151550100", NanpExchange),
            ("+14150550100", NanpExchange),
        ];
        for (input, err) in cases {
            assert_eq!(E164::parse(input), Err(err), "{input:?}");
        }
    }

    #[test]
    fn error_messages_read_as_sentences() {
        assert_eq!(
            PhoneError::MissingPlus.to_string(),
            "must start with + and a country code"
        );
    }

    #[test]
    fn serde_goes_through_parse() {
        let n = E164::parse("+14155550100").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+14155550100\"");
        let back: E164 = serde_json::from_str("\"+1 415 555 0100\"").unwrap();
        assert_eq!(back, n);
        assert!(serde_json::from_str::<E164>("\"4155550100\"").is_err());
        assert_eq!("+14155550100".parse::<E164>().unwrap(), n);
        assert_eq!(n.to_string(), "+14155550100");
        assert_eq!(AsRef::<str>::as_ref(&n), "+14155550100");
    }

    #[test]
    fn parses_twilio_addresses() {
        let n = E164::parse("+17135550123").unwrap();
        assert_eq!(
            parse_address("+17135550123").unwrap(),
            (Channel::Sms, n.clone())
        );
        assert_eq!(
            parse_address("whatsapp:+17135550123").unwrap(),
            (Channel::WhatsApp, n.clone())
        );
        assert_eq!(
            parse_address("WhatsApp:+17135550123").unwrap().0,
            Channel::WhatsApp
        );
        assert_eq!(
            parse_address("messenger:12345"),
            Err(PhoneError::UnsupportedChannel)
        );
        assert_eq!(
            parse_address("whatsapp:17135550123"),
            Err(PhoneError::MissingPlus)
        );
        assert_eq!(Channel::WhatsApp.address(&n), "whatsapp:+17135550123");
        assert_eq!(Channel::Sms.address(&n), "+17135550123");
    }

    /// Digits (after the `+`) of a valid number: NANP or any other country code.
    fn valid_digits() -> impl Strategy<Value = String> {
        prop_oneof!["1[2-9][0-9]{2}[2-9][0-9]{6}", "[2-9][0-9]{6,14}"]
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = E164::parse(&s);
            let _ = parse_address(&s);
        }

        #[test]
        fn canonical_form_round_trips(digits in valid_digits()) {
            let n = E164::parse(&format!("+{digits}")).unwrap();
            let displayed = n.to_string();
            prop_assert_eq!(E164::parse(&displayed).unwrap(), n.clone());
            prop_assert_eq!(n.as_str(), format!("+{digits}"));
        }

        #[test]
        fn formatted_variants_parse_to_the_same_number(
            digits in valid_digits(),
            seps in prop::collection::vec(prop::sample::select(vec!["", " ", "-", ".", "(", ")", " - "]), 16),
            pad in "[ \t\n]{0,3}",
        ) {
            let canonical = E164::parse(&format!("+{digits}")).unwrap();
            let mut formatted = format!("{pad}+");
            for (d, sep) in digits.chars().zip(&seps) {
                formatted.push_str(sep);
                formatted.push(d);
            }
            formatted.push_str(&pad);
            prop_assert_eq!(E164::parse(&formatted).unwrap(), canonical);
        }
    }
}
