//! Opt-out, opt-in and help keywords, and the carrier-style replies to them.
//!
//! Keyword lists: Twilio's default opt-out handling (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,
//! QUIT; START, YES, UNSTOP; HELP, INFO), the CTIA Messaging Principles and Best Practices
//! (opt-out and HELP must always be honoured), and the FCC's 2024 TCPA revocation order
//! (FCC 24-24), which names REVOKE and OPTOUT as words that revoke consent.
//!
//! When a Twilio number has Advanced Opt-Out enabled, Twilio itself answers these keywords
//! and reports what it did in the webhook's `OptOutType` ([`from_twilio_opt_out_type`]); the
//! replies here are for numbers where it does not.

use serde::{Deserialize, Serialize};

/// What a keyword asks for.
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
#[serde(rename_all = "snake_case")]
pub enum KeywordKind {
    /// Stop all messages from this sender (CTIA; TCPA consent revocation).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "opt_out"))]
    OptOut,
    /// Resume messages after an opt-out.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "opt_in"))]
    OptIn,
    /// Ask who is texting and how to stop (CTIA requires a HELP response).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "help"))]
    Help,
}

impl KeywordKind {
    /// The snake_case name stored in the database (`opt_out`, `opt_in`, `help`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::OptIn => "opt_in",
            Self::Help => "help",
        }
    }
}

/// A recognised keyword: its kind and its canonical upper-case spelling (e.g. `"STOP"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keyword {
    /// What the keyword asks for.
    pub kind: KeywordKind,
    /// The canonical upper-case keyword, e.g. `"UNSUBSCRIBE"`.
    pub word: &'static str,
}

const fn kw(kind: KeywordKind, word: &'static str) -> Keyword {
    Keyword { kind, word }
}

/// Every keyword [`detect`] recognises: Twilio's defaults plus REVOKE and OPTOUT (FCC 24-24).
pub const KEYWORDS: &[Keyword] = &[
    kw(KeywordKind::OptOut, "STOP"),
    kw(KeywordKind::OptOut, "STOPALL"),
    kw(KeywordKind::OptOut, "UNSUBSCRIBE"),
    kw(KeywordKind::OptOut, "CANCEL"),
    kw(KeywordKind::OptOut, "END"),
    kw(KeywordKind::OptOut, "QUIT"),
    kw(KeywordKind::OptOut, "REVOKE"),
    kw(KeywordKind::OptOut, "OPTOUT"),
    kw(KeywordKind::OptIn, "START"),
    kw(KeywordKind::OptIn, "YES"),
    kw(KeywordKind::OptIn, "UNSTOP"),
    kw(KeywordKind::Help, "HELP"),
    kw(KeywordKind::Help, "INFO"),
];

/// Recognises a message that is exactly one keyword, the way carriers and Twilio do.
///
/// Surrounding whitespace, punctuation and symbols (anything not alphanumeric) are trimmed from
/// both ends; what remains must be a single word matching a keyword ASCII-case-insensitively,
/// full-width letters (U+FF21-FF5A, as CJK keyboards type them) read as their ASCII forms: an
/// opt-out typed that way is still an opt-out. OPTOUT and STOPALL may also be written as two
/// words (OPT OUT, STOP ALL) joined by one space (ideographic included), hyphen or
/// underscore: the FCC's revocation order (FCC 24-24, 47 CFR 64.1200(a)(10)) names "opt out"
/// itself. `"Stop!"`, `"  stop. "`, `"ＳＴＯＰ"` and `"Opt-out"` match; `"stop please"`,
/// `"stopp"`, `"opt out now"`, `"op tout"` and `""` do not.
pub fn detect(body: &str) -> Option<Keyword> {
    let text = body.trim_matches(|c: char| !c.is_alphanumeric());
    if let Some(keyword) = keyword_spelled(text, "") {
        return Some(keyword);
    }
    let (first, second) = text.split_once([' ', '\u{3000}', '-', '_'])?;
    let keyword = keyword_spelled(first, second)?;
    TWO_WORDS
        .iter()
        .any(|&(word, split)| word == keyword.word && first.chars().count() == split)
        .then_some(keyword)
}

/// The keywords that may be written as two words (see [`detect`]), and the length of their
/// first word: OPT OUT, STOP ALL.
const TWO_WORDS: &[(&str, usize)] = &[("OPTOUT", 3), ("STOPALL", 4)];

/// The keyword spelled by `first` followed by `second`.
fn keyword_spelled(first: &str, second: &str) -> Option<Keyword> {
    let spelled = || first.chars().chain(second.chars()).map(fold_full_width);
    // Counting stops past the longest keyword (UNSUBSCRIBE, 11), so a long text costs nothing.
    let len = spelled().take(16).count();
    KEYWORDS
        .iter()
        .find(|k| {
            k.word.len() == len
                && k.word
                    .chars()
                    .zip(spelled())
                    .all(|(a, b)| a.eq_ignore_ascii_case(&b))
        })
        .copied()
}

/// A full-width ASCII form (U+FF01-FF5E) as its ASCII character; anything else unchanged.
fn fold_full_width(c: char) -> char {
    match u32::from(c) {
        full @ 0xFF01..=0xFF5E => char::from_u32(full - 0xFF01 + 0x21).unwrap_or(c),
        _ => c,
    }
}

/// Maps Twilio Advanced Opt-Out's `OptOutType` webhook parameter (`"STOP"`, `"START"`,
/// `"HELP"`, per Twilio's Messaging webhook docs) to a [`KeywordKind`]; anything else is `None`.
pub fn from_twilio_opt_out_type(value: &str) -> Option<KeywordKind> {
    let value = value.trim();
    [
        ("STOP", KeywordKind::OptOut),
        ("START", KeywordKind::OptIn),
        ("HELP", KeywordKind::Help),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(value))
    .map(|(_, kind)| kind)
}

/// Prefixes a reply with the business name, as CTIA asks (the sender must be identifiable).
fn branded(business: &str, text: &str) -> String {
    match business.trim() {
        "" => text.to_owned(),
        name => format!("{name}: {text}"),
    }
}

/// Reply to an opt-out (CTIA: one final confirmation, no further messages). One GSM-7 segment
/// for a GSM-7 business name of up to 30 characters.
pub fn opt_out_confirmation(business: &str) -> String {
    branded(
        business,
        "You're unsubscribed and will get no more messages. Reply START to resubscribe.",
    )
}

/// Reply to an opt-in after an opt-out. One GSM-7 segment for a GSM-7 business name of up to
/// 30 characters.
pub fn opt_in_confirmation(business: &str) -> String {
    branded(
        business,
        "You're resubscribed. Msg&data rates may apply. Reply HELP for help, STOP to opt out.",
    )
}

/// Reply to HELP/INFO (CTIA: identify the sender and say how to opt out). One GSM-7 segment
/// for a GSM-7 business name of up to 30 characters.
pub fn help_reply(business: &str) -> String {
    branded(
        business,
        "Reply here to reach us. Msg&data rates may apply. Reply STOP to opt out, START to opt back in.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::{Encoding, count};
    use proptest::prelude::*;

    #[test]
    fn detects_single_keywords() {
        for body in [
            "Stop!",
            "  stop. ",
            "STOP",
            "\"stop\"",
            "¡Stop!",
            "stop 🛑",
            "ＳＴＯＰ",
            "ｓｔｏｐ！",
            "Sｔop",
        ] {
            assert_eq!(
                detect(body),
                Some(Keyword {
                    kind: KeywordKind::OptOut,
                    word: "STOP"
                }),
                "{body:?}"
            );
        }
        assert_eq!(detect("unsubscribe").unwrap().word, "UNSUBSCRIBE");
        assert_eq!(detect("OptOut").unwrap().kind, KeywordKind::OptOut);
        assert_eq!(detect("revoke").unwrap().kind, KeywordKind::OptOut);
        for body in [
            "opt out",
            "Opt-Out.",
            "OPT_OUT",
            "ｏｐｔ ｏｕｔ",
            "ｏｐｔ\u{3000}ｏｕｔ",
        ] {
            assert_eq!(detect(body).unwrap().word, "OPTOUT", "{body:?}");
        }
        assert_eq!(detect("stop all").unwrap().word, "STOPALL");
        assert_eq!(detect("stop-all").unwrap().word, "STOPALL");
        assert_eq!(detect("Yes.").unwrap().kind, KeywordKind::OptIn);
        assert_eq!(detect("unstop").unwrap().kind, KeywordKind::OptIn);
        assert_eq!(detect("info?").unwrap().kind, KeywordKind::Help);
    }

    #[test]
    fn ignores_anything_else() {
        for body in [
            "stop please",
            "stopp",
            "",
            "   ",
            "!!!",
            "don't stop",
            "s t o p",
            "opt out now",
            "opt-out-now",
            "opt  out",
            "opt - out",
            "stop-stop",
            "op tout",
            "st opall",
            "ſtop",
        ] {
            assert_eq!(detect(body), None, "{body:?}");
        }
    }

    #[test]
    fn maps_twilio_opt_out_type() {
        assert_eq!(from_twilio_opt_out_type("STOP"), Some(KeywordKind::OptOut));
        assert_eq!(from_twilio_opt_out_type("START"), Some(KeywordKind::OptIn));
        assert_eq!(from_twilio_opt_out_type("HELP"), Some(KeywordKind::Help));
        assert_eq!(from_twilio_opt_out_type("help"), Some(KeywordKind::Help));
        assert_eq!(from_twilio_opt_out_type(""), None);
        assert_eq!(from_twilio_opt_out_type("QUIT"), None);
    }

    #[test]
    fn replies_fit_one_gsm7_segment() {
        let business = "Abcdefghij Klmnopqrst Plumbing";
        assert_eq!(business.len(), 30);
        for reply in [
            opt_out_confirmation(business),
            opt_in_confirmation(business),
            help_reply(business),
        ] {
            assert!(reply.starts_with("Abcdefghij Klmnopqrst Plumbing: "));
            let c = count(&reply);
            assert_eq!(c.encoding, Encoding::Gsm7, "{reply}");
            assert_eq!(c.segments, 1, "{reply} is {} septets", c.units);
        }
        assert!(opt_out_confirmation("Acme").contains("START"));
        assert!(opt_in_confirmation("Acme").contains("STOP"));
        assert!(help_reply("Acme").contains("STOP"));
        assert!(help_reply("  ").starts_with("Reply here"));
    }

    fn keyword() -> impl Strategy<Value = Keyword> {
        prop::sample::select(KEYWORDS.to_vec())
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = detect(&s);
            let _ = from_twilio_opt_out_type(&s);
        }

        #[test]
        fn keywords_survive_case_and_surrounding_noise(
            k in keyword(),
            flips in prop::collection::vec(any::<bool>(), 11),
            prefix in "[ \t\n!?.,;:()\"'*#-]{0,5}",
            suffix in "[ \t\n!?.,;:()\"'*#-]{0,5}|[😀🛑]",
        ) {
            let word: String = k.word.chars().zip(flips.iter().cycle())
                .map(|(c, &up)| if up { c } else { c.to_ascii_lowercase() })
                .collect();
            prop_assert_eq!(detect(&format!("{prefix}{word}{suffix}")), Some(k));
        }

        #[test]
        fn detection_is_invariant_under_case_and_padding(s in any::<String>(), pad in "[ .!?]{0,3}") {
            let d = detect(&s);
            prop_assert_eq!(detect(&s.to_ascii_uppercase()), d);
            prop_assert_eq!(detect(&s.to_ascii_lowercase()), d);
            prop_assert_eq!(detect(&format!("{pad}{s}{pad}")), d);
        }
    }
}
