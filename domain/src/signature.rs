//! Webhook signature checks for Twilio (`X-Twilio-Signature`) and Stripe (`Stripe-Signature`).
//!
//! Both take exactly what arrived on the wire (URL, form params or raw body, header) and return
//! whether it was signed by the holder of the secret; comparisons are constant-time.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings (the lengths are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Twilio request validation, as implemented by Twilio's official SDKs' `RequestValidator`
/// (see Twilio's "Webhooks security" docs).
pub mod twilio {
    /// A Twilio account SID: `AC` followed by 32 hexadecimal digits.
    pub fn is_account_sid(sid: &str) -> bool {
        sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// What we accept as an auth token (trimmed): 16 to 128 characters; Twilio's are 32.
    /// Webhooks are verified with it, so an empty or short one, a key anyone can compute or
    /// guess, is never taken.
    pub fn is_auth_token(token: &str) -> bool {
        (16..=128).contains(&token.len())
    }

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use sha1::Sha1;
    use sha2::{Digest, Sha256};

    use super::{Hmac, Mac, ct_eq};

    /// The `X-Twilio-Signature` value for a request: base64 (standard alphabet, padded) of
    /// HMAC-SHA1 keyed with the account's auth token over the full URL (scheme, host, path and
    /// query, exactly as Twilio requested it) followed by, for each POST parameter name in
    /// sorted (byte) order and each of its distinct values in sorted order, the name then the
    /// value. Pass no params for GET requests and JSON bodies.
    pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
        // Sorted by name, then value; a repeated (name, value) pair counts once.
        let mut pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(url.as_bytes());
        for (name, value) in pairs {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` (the `X-Twilio-Signature` header) matches [`compute`] for `url` as
    /// given, or — like Twilio's SDK validators — for `url` with its port removed
    /// (`https://h:443/p` or `https://h:8443/p` → `https://h/p`) or, without one, the default
    /// port added (`https://h/p` → `https://h:443/p`; 80 for `http`). Userinfo, path and
    /// query are kept byte for byte.
    pub fn verify(
        auth_token: &str,
        url: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        let check = |u: &str| {
            ct_eq(
                compute(auth_token, u, params).as_bytes(),
                signature.as_bytes(),
            )
        };
        check(url) || toggle_port(url).is_some_and(|u| check(&u))
    }

    /// Validates a webhook with a JSON body (Twilio Conversations, Event Streams, etc.): the URL
    /// carries `bodySHA256=<hex SHA-256 of the raw body>` in its query, the signature is
    /// [`compute`] over that URL with no params (default-port variants accepted as in
    /// [`verify`]), and SHA-256 of `body` must equal the hex value. A URL without
    /// `bodySHA256` is rejected.
    pub fn verify_json_body(auth_token: &str, url: &str, body: &[u8], signature: &str) -> bool {
        let Some(expected) = body_sha256_param(url).and_then(|h| hex::decode(h).ok()) else {
            return false;
        };
        let body_ok = ct_eq(Sha256::digest(body).as_slice(), &expected);
        let signature_ok = verify(auth_token, url, &[], signature);
        body_ok && signature_ok
    }

    /// The `bodySHA256` query parameter of `url`, if any.
    fn body_sha256_param(url: &str) -> Option<String> {
        let without_fragment = url.split('#').next().unwrap_or(url);
        let (_, query) = without_fragment.split_once('?')?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "bodySHA256")
            .map(|(_, value)| value.into_owned())
    }

    /// `url` with its port removed if one is present (any port: Twilio's SDK validators also
    /// accept the URL without a non-default one), or the scheme's default port (https 443,
    /// http 80) added if none is. `None` for other schemes or a string without `scheme://`.
    fn toggle_port(url: &str) -> Option<String> {
        let (scheme, after_scheme) = url.split_once("://")?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => "443",
            "http" => "80",
            _ => return None,
        };
        let authority_start = scheme.len() + "://".len();
        let authority_len = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let authority_end = authority_start + authority_len;
        let authority = &url[authority_start..authority_end];
        // The host starts after any userinfo (which may itself contain ':').
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host_port = &authority[host_start..];
        // A ':' inside an IPv6 literal ("[::1]") is not a port separator.
        let port_colon = host_port
            .rfind(':')
            .filter(|&i| !host_port[i..].contains(']'));
        match port_colon {
            Some(i) => {
                let colon = authority_start + host_start + i;
                Some(format!("{}{}", &url[..colon], &url[authority_end..]))
            }
            None => Some(format!(
                "{}:{default_port}{}",
                &url[..authority_end],
                &url[authority_end..]
            )),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn removes_any_port_and_adds_the_default_one() {
            let cases = [
                ("https://h.com/p?q=1", Some("https://h.com:443/p?q=1")),
                ("https://h.com:443/p?q=1", Some("https://h.com/p?q=1")),
                ("http://h.com", Some("http://h.com:80")),
                ("http://h.com:80", Some("http://h.com")),
                ("HTTPS://h.com?x=a:443", Some("HTTPS://h.com:443?x=a:443")),
                (
                    "https://u:p@h.com/a:443",
                    Some("https://u:p@h.com:443/a:443"),
                ),
                ("https://u:443@h.com:443/p", Some("https://u:443@h.com/p")),
                ("https://[::1]/p", Some("https://[::1]:443/p")),
                ("https://[::1]:443/p", Some("https://[::1]/p")),
                ("https://h.com#frag", Some("https://h.com:443#frag")),
                ("https://h.com:8443/p", Some("https://h.com/p")),
                ("http://h.com:443/p", Some("http://h.com/p")),
                ("ftp://h.com/p", None),
                ("not a url", None),
            ];
            for (url, expected) in cases {
                assert_eq!(toggle_port(url).as_deref(), expected, "{url}");
            }
        }

        #[test]
        fn accepts_signature_over_url_with_port_added() {
            let params = vec![("Body".to_owned(), "hi".to_owned())];
            let signed = compute("token", "https://h.com:443/sms?t=1", &params);
            assert!(verify("token", "https://h.com/sms?t=1", &params, &signed));
            assert!(verify(
                "token",
                "https://h.com:443/sms?t=1",
                &params,
                &signed
            ));
            assert!(!verify(
                "token",
                "https://h.com:8443/sms?t=1",
                &params,
                &signed
            ));
            // APP_URL with a non-default port: signed with or without it.
            let without = compute("token", "https://h.com/sms", &params);
            assert!(verify("token", "https://h.com:8443/sms", &params, &without));
        }

        #[test]
        fn repeated_params_use_distinct_sorted_values() {
            let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect()
            };
            let a = compute("t", "https://h/", &p(&[("B", "2"), ("A", "y"), ("A", "x")]));
            let b = compute(
                "t",
                "https://h/",
                &p(&[("A", "x"), ("B", "2"), ("A", "y"), ("A", "x")]),
            );
            assert_eq!(a, b);
            // Equivalent to signing the concatenation by hand.
            let mut mac = Hmac::<Sha1>::new_from_slice(b"t").unwrap();
            mac.update(b"https://h/AxAyB2");
            assert_eq!(a, STANDARD.encode(mac.finalize().into_bytes()));
        }

        #[test]
        fn rejects_garbage_signatures() {
            assert!(!verify("t", "https://h/", &[], ""));
            assert!(!verify("t", "https://h/", &[], "not base64 at all"));
        }

        #[test]
        fn json_body_requires_matching_hash() {
            let body = br#"{"a":1}"#;
            let hash = hex::encode(Sha256::digest(body));
            let url = format!("https://h.com/events?bodySHA256={hash}");
            let sig = compute("t", &url, &[]);
            assert!(verify_json_body("t", &url, body, &sig));
            assert!(!verify_json_body("t", &url, br#"{"a":2}"#, &sig));
            let bare = "https://h.com/events";
            assert!(!verify_json_body("t", bare, body, &compute("t", bare, &[])));
        }
    }
}

/// Stripe webhook signatures (`Stripe-Signature` header), as documented in Stripe's "Verify
/// webhook signatures" guide and implemented by its official SDKs.
pub mod stripe {
    use sha2::Sha256;

    use super::{Hmac, Mac, ct_eq};

    /// Why a Stripe webhook was rejected.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum StripeSignatureError {
        /// The header has no `t=<unix seconds>` (or more than one, or a non-integer one).
        #[error("Stripe-Signature header has no valid timestamp")]
        Malformed,
        /// The header has no `v1=` signature (only `v0`, or none).
        #[error("Stripe-Signature header has no v1 signature")]
        NoV1Signature,
        /// No `v1` signature matches the payload under this secret.
        #[error("no v1 signature matches the payload")]
        Mismatch,
        /// The signature is genuine but its timestamp is outside the tolerance (replay guard).
        #[error("signature timestamp is outside the tolerance")]
        Stale,
    }

    /// The `v1` signature Stripe sends: lowercase hex of HMAC-SHA256 keyed with the endpoint
    /// secret as given (the whole `whsec_...` string, as Stripe's SDKs use it) over
    /// `"{timestamp}.{payload}"`.
    pub fn compute(secret: &str, payload: &[u8], timestamp: i64) -> String {
        hex::encode(mac(secret, payload, timestamp))
    }

    fn mac(secret: &str, payload: &[u8], timestamp: i64) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    /// Verifies a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`)
    /// for the raw request body `payload`.
    ///
    /// Accepts if ANY `v1` matches (Stripe sends one per active secret while a secret is being
    /// rolled); `v0` and unknown schemes are ignored. A matching signature whose timestamp is
    /// more than `tolerance_secs` seconds from `now_unix` in either direction is
    /// [`StripeSignatureError::Stale`] (Stripe's SDKs default to 300 s).
    pub fn verify(
        secret: &str,
        payload: &[u8],
        header: &str,
        now_unix: i64,
        tolerance_secs: i64,
    ) -> Result<(), StripeSignatureError> {
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                continue;
            };
            match key {
                "t" if timestamp.is_none() => {
                    timestamp = Some(
                        value
                            .parse::<i64>()
                            .map_err(|_| StripeSignatureError::Malformed)?,
                    );
                }
                "t" => return Err(StripeSignatureError::Malformed),
                "v1" => candidates.push(value),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(StripeSignatureError::Malformed)?;
        if candidates.is_empty() {
            return Err(StripeSignatureError::NoV1Signature);
        }
        let expected = mac(secret, payload, timestamp);
        let matched = candidates.iter().fold(false, |found, candidate| {
            let ok = hex::decode(candidate).is_ok_and(|sig| ct_eq(&sig, &expected));
            found | ok
        });
        if !matched {
            return Err(StripeSignatureError::Mismatch);
        }
        let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
        if now_unix.abs_diff(timestamp) > tolerance {
            return Err(StripeSignatureError::Stale);
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const NOW: i64 = 1_700_000_000;

        fn header(secret: &str, payload: &[u8], t: i64) -> String {
            format!("t={t},v1={}", compute(secret, payload, t))
        }

        #[test]
        fn accepts_fresh_signature() {
            let h = header("whsec_x", b"{}", NOW);
            assert_eq!(verify("whsec_x", b"{}", &h, NOW + 300, 300), Ok(()));
            assert_eq!(verify("whsec_x", b"{}", &h, NOW - 300, 300), Ok(()));
            let spaced = h.replace(',', ", ");
            assert_eq!(verify("whsec_x", b"{}", &spaced, NOW, 300), Ok(()));
        }

        #[test]
        fn distinguishes_failures() {
            use StripeSignatureError::*;
            let h = header("whsec_x", b"{}", NOW);
            assert_eq!(verify("whsec_x", b"{}", &h, NOW + 301, 300), Err(Stale));
            assert_eq!(verify("whsec_x", b"{}", &h, NOW - 301, 300), Err(Stale));
            // A negative tolerance counts as zero.
            assert_eq!(verify("whsec_x", b"{}", &h, NOW, -5), Ok(()));
            assert_eq!(verify("whsec_x", b"{}", &h, NOW + 1, -5), Err(Stale));
            assert_eq!(verify("whsec_y", b"{}", &h, NOW, 300), Err(Mismatch));
            assert_eq!(verify("whsec_x", b"{ }", &h, NOW, 300), Err(Mismatch));
            assert_eq!(verify("whsec_x", b"{}", "", NOW, 300), Err(Malformed));
            assert_eq!(verify("whsec_x", b"{}", "v1=ab", NOW, 300), Err(Malformed));
            assert_eq!(
                verify("whsec_x", b"{}", "t=abc,v1=ab", NOW, 300),
                Err(Malformed)
            );
            let twice = format!("t={NOW},{h}");
            assert_eq!(verify("whsec_x", b"{}", &twice, NOW, 300), Err(Malformed));
            let v0 = format!("t={NOW},v0={}", compute("whsec_x", b"{}", NOW));
            assert_eq!(verify("whsec_x", b"{}", &v0, NOW, 300), Err(NoV1Signature));
            let junk = format!("t={NOW},v1=zz,v1=");
            assert_eq!(verify("whsec_x", b"{}", &junk, NOW, 300), Err(Mismatch));
        }
    }
}

#[cfg(test)]
mod fixture_tests {
    //! Every vector in `testkit/fixtures/signatures.json` (computed with Twilio's and Stripe's
    //! official Python SDKs) must verify if valid and be rejected otherwise.

    use serde_json::Value;

    const FIXTURES: &str = include_str!("../../testkit/fixtures/signatures.json");

    fn fixtures() -> Value {
        serde_json::from_str(FIXTURES).expect("signatures.json is valid JSON")
    }

    /// A boolean that may have been written as `true`, `"True"`, `"1"`, etc.
    fn truthy(v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_i64() != Some(0),
            Value::String(s) => {
                matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
            }
            _ => panic!("not a boolean: {v}"),
        }
    }

    /// An integer that may have been written as `1700000100` or `"1700000100"`.
    fn int(v: &Value) -> i64 {
        match v {
            Value::Number(n) => n.as_i64().expect("integer"),
            Value::String(s) => s.trim().parse().expect("integer string"),
            _ => panic!("not an integer: {v}"),
        }
    }

    fn string(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Form params as name/value pairs; an array value means a repeated parameter.
    fn params(v: &Value) -> Vec<(String, String)> {
        let Some(map) = v.as_object() else {
            return Vec::new();
        };
        map.iter()
            .flat_map(|(name, value)| match value {
                Value::Array(items) => items.iter().map(|i| (name.clone(), string(i))).collect(),
                other => vec![(name.clone(), string(other))],
            })
            .collect()
    }

    fn vectors<'a>(all: &'a Value, key: &str) -> &'a [Value] {
        let list = all[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key:?} vectors"));
        assert!(!list.is_empty(), "{key:?} has no vectors");
        list
    }

    #[test]
    fn twilio_form_vectors() {
        let all = fixtures();
        for v in vectors(&all, "twilio") {
            let ok = super::twilio::verify(
                &string(&v["auth_token"]),
                &string(&v["url"]),
                &params(&v["params"]),
                &string(&v["signature"]),
            );
            assert_eq!(ok, truthy(&v["valid"]), "twilio vector {}", v["name"]);
        }
    }

    #[test]
    fn twilio_json_vectors() {
        use sha2::{Digest, Sha256};
        let all = fixtures();
        for v in vectors(&all, "twilio_json") {
            let body = string(&v["body"]);
            if let Some(hash) = v.get("body_sha256_hex") {
                assert_eq!(hex::encode(Sha256::digest(body.as_bytes())), string(hash));
            }
            let ok = super::twilio::verify_json_body(
                &string(&v["auth_token"]),
                &string(&v["url"]),
                body.as_bytes(),
                &string(&v["signature"]),
            );
            assert_eq!(ok, truthy(&v["valid"]), "twilio_json vector {}", v["name"]);
        }
    }

    #[test]
    fn stripe_vectors() {
        let all = fixtures();
        for v in vectors(&all, "stripe") {
            let result = super::stripe::verify(
                &string(&v["secret"]),
                string(&v["payload"]).as_bytes(),
                &string(&v["header"]),
                int(&v["now"]),
                int(&v["tolerance_s"]),
            );
            assert_eq!(
                result.is_ok(),
                truthy(&v["valid"]),
                "stripe vector {}: {result:?}",
                v["name"]
            );
        }
    }
}
