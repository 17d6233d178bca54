//! SMS segment counting, per 3GPP TS 23.038 (alphabets) and 3GPP TS 23.040 (concatenation).
//!
//! A single SMS carries 140 octets: 160 GSM-7 septets or 70 UCS-2 code units. A longer message
//! is split into concatenated segments, each losing 6 octets to the User Data Header: 153
//! septets or 67 code units per segment. Carriers (and Twilio) bill per segment.

use serde::{Deserialize, Serialize};

/// GSM 7-bit default alphabet (3GPP TS 23.038 §6.2.1), in table order, without the escape
/// code 0x1B: 127 characters that cost one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 7-bit default alphabet extension table (3GPP TS 23.038 §6.2.1.1): characters sent as
/// the escape code 0x1B plus one septet, so they cost two septets each.
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// Septets per single (unsegmented) GSM-7 message.
const GSM7_SINGLE: u32 = 160;
/// Septets per segment of a concatenated GSM-7 message (160 minus the 7-septet UDH).
const GSM7_MULTI: u32 = 153;
/// UTF-16 code units per single UCS-2 message.
const UCS2_SINGLE: u32 = 70;
/// UTF-16 code units per segment of a concatenated UCS-2 message (70 minus the 3-unit UDH).
const UCS2_MULTI: u32 = 67;

/// The character encoding a message body will be sent in (3GPP TS 23.038 data coding scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 7-bit default alphabet with its extension table; units are septets.
    Gsm7,
    /// UCS-2 (sent as UTF-16, so characters outside the BMP take two units); units are UTF-16
    /// code units.
    Ucs2,
}

impl Encoding {
    /// The lower-case name stored with a message (`gsm7`, `ucs2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "gsm7",
            Self::Ucs2 => "ucs2",
        }
    }
}

/// How a message body will be sent: its encoding, its length in that encoding's units
/// (septets for GSM-7, UTF-16 code units for UCS-2) and the number of SMS segments billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentCount {
    /// GSM-7 if every character is in the GSM 7-bit alphabet or its extension, else UCS-2.
    pub encoding: Encoding,
    /// Length in septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: u32,
    /// SMS segments: 0 for an empty body, 1 up to 160 septets / 70 units, then one per 153
    /// septets / 67 units.
    pub segments: u32,
}

/// Septets `c` costs in GSM-7 (3GPP TS 23.038): 1 for the default alphabet, 2 for the
/// extension table (`^ { } \ [ ~ ] | €` and form feed), `None` if it cannot be sent in GSM-7.
pub fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Counts the SMS segments of `body` (3GPP TS 23.038 / 23.040).
///
/// GSM-7 is used when every character is in the GSM 7-bit alphabet or its extension table,
/// otherwise UCS-2 (one emoji makes the whole message UCS-2). Multi-segment messages never
/// split an escape pair (GSM-7) or a surrogate pair (UCS-2) across segments, so a segment may
/// carry one unit less than its capacity.
pub fn count(body: &str) -> SegmentCount {
    let septets: Option<Vec<u32>> = body.chars().map(gsm7_septets).collect();
    match septets {
        Some(costs) => pack(Encoding::Gsm7, &costs, GSM7_SINGLE, GSM7_MULTI),
        None => {
            let costs: Vec<u32> = body.chars().map(|c| c.len_utf16() as u32).collect();
            pack(Encoding::Ucs2, &costs, UCS2_SINGLE, UCS2_MULTI)
        }
    }
}

/// Greedily packs indivisible per-character costs into segments.
fn pack(encoding: Encoding, costs: &[u32], single: u32, multi: u32) -> SegmentCount {
    let units: u32 = costs.iter().sum();
    let segments = if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        let mut segments = 1;
        let mut used = 0;
        for &cost in costs {
            if used + cost > multi {
                segments += 1;
                used = 0;
            }
            used += cost;
        }
        segments
    };
    SegmentCount {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gsm(units: u32, segments: u32) -> SegmentCount {
        SegmentCount {
            encoding: Encoding::Gsm7,
            units,
            segments,
        }
    }

    fn ucs2(units: u32, segments: u32) -> SegmentCount {
        SegmentCount {
            encoding: Encoding::Ucs2,
            units,
            segments,
        }
    }

    #[test]
    fn alphabet_tables_have_the_spec_sizes() {
        let basic: std::collections::BTreeSet<char> = GSM7_BASIC.chars().collect();
        assert_eq!(basic.len(), 127);
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
        assert!(GSM7_EXTENSION.chars().all(|c| !basic.contains(&c)));
    }

    #[test]
    fn empty_body_is_zero_segments() {
        assert_eq!(count(""), gsm(0, 0));
    }

    #[test]
    fn gsm7_boundaries() {
        assert_eq!(count(&"a".repeat(160)), gsm(160, 1));
        assert_eq!(count(&"a".repeat(161)), gsm(161, 2));
        assert_eq!(count(&"a".repeat(306)), gsm(306, 2));
        assert_eq!(count(&"a".repeat(307)), gsm(307, 3));
        assert_eq!(count("Hello, world! @£$ ÄÖÑÜ"), gsm(22, 1));
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        assert_eq!(count("€"), gsm(2, 1));
        assert_eq!(count("{}[]"), gsm(8, 1));
        assert_eq!(count(&"€".repeat(80)), gsm(160, 1));
        assert_eq!(count(&format!("{}€", "a".repeat(159))), gsm(161, 2));
    }

    #[test]
    fn escape_pairs_are_not_split() {
        // 152 septets then '€': the pair would straddle septets 153/154, so it moves to
        // segment two.
        let body = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(count(&body), gsm(306, 3));
        let body = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(count(&body), gsm(306, 2));
    }

    #[test]
    fn one_non_gsm_character_switches_to_ucs2() {
        assert_eq!(count("On my way 😀"), ucs2(12, 1));
        assert_eq!(count("ç"), ucs2(1, 1));
        assert_eq!(count(&"日".repeat(70)), ucs2(70, 1));
        assert_eq!(count(&"日".repeat(71)), ucs2(71, 2));
        assert_eq!(count(&"日".repeat(134)), ucs2(134, 2));
        assert_eq!(count(&"日".repeat(135)), ucs2(135, 3));
    }

    #[test]
    fn surrogate_pairs_are_not_split() {
        // 66 units then an emoji (2 units) straddling 67/68: it moves to segment two.
        let body = format!("{}😀{}", "日".repeat(66), "日".repeat(66));
        assert_eq!(count(&body), ucs2(134, 3));
        assert_eq!(count(&"😀".repeat(35)), ucs2(70, 1));
        assert_eq!(count(&"😀".repeat(36)), ucs2(72, 2));
    }

    fn gsm_char() -> impl Strategy<Value = char> {
        let all: Vec<char> = GSM7_BASIC.chars().chain(GSM7_EXTENSION.chars()).collect();
        prop::sample::select(all)
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let c = count(&s);
            let capacity = match c.encoding { Encoding::Gsm7 => GSM7_MULTI, Encoding::Ucs2 => UCS2_MULTI };
            prop_assert!(c.segments * capacity >= c.units);
        }

        #[test]
        fn short_gsm_strings_are_one_segment(chars in prop::collection::vec(gsm_char(), 1..160)) {
            let mut body = String::new();
            let mut septets = 0;
            for c in chars {
                let cost = gsm7_septets(c).unwrap();
                if septets + cost > 160 { break; }
                septets += cost;
                body.push(c);
            }
            prop_assert_eq!(count(&body), gsm(septets, 1));
        }

        #[test]
        fn segments_are_monotonic_when_appending(
            chars in prop::collection::vec(prop_oneof![3 => gsm_char(), 1 => any::<char>()], 0..400)
        ) {
            let mut body = String::new();
            let mut last = 0;
            for c in chars {
                body.push(c);
                let now = count(&body).segments;
                prop_assert!(now >= last, "{:?} went from {} to {}", body, last, now);
                last = now;
            }
        }
    }
}
