//! Stripe-Signature: strict parsing, the two-sided window (P2), raw bytes (P3), rotation.

use bastion_payments::webhook::stripe::{self, HEADER_BYTES_MAX, HEADER_ELEMENTS_MAX};
use bastion_payments::webhook::{StripeSecret, WebhookError};

const SECRET: &str = "whsec_test_secret";
const T: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

fn secret() -> StripeSecret {
    StripeSecret::parse(SECRET).unwrap()
}

fn verify_at(header: &str, body: &[u8], now: i64) -> Result<i64, WebhookError> {
    stripe::verify(header, body, &[secret()], 300, now)
}

#[test]
fn p2_301_seconds_in_the_future_or_past_is_rejected() {
    let header = stripe::sign(&secret(), T, BODY);
    // Exactly at the edges: accepted.
    assert_eq!(verify_at(&header, BODY, T + 300), Ok(T));
    assert_eq!(verify_at(&header, BODY, T - 300), Ok(T));
    // 301 s in the past (receiver is 301 s later): rejected.
    assert_eq!(
        verify_at(&header, BODY, T + 301),
        Err(WebhookError::TimestampOutsideTolerance {
            timestamp: T,
            now: T + 301,
            tolerance_secs: 300
        })
    );
    // 301 s in the future (receiver is 301 s earlier): rejected too, unlike stripe-node.
    assert_eq!(
        verify_at(&header, BODY, T - 301),
        Err(WebhookError::TimestampOutsideTolerance {
            timestamp: T,
            now: T - 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn p3_pretty_printed_body_verifies_on_raw_bytes_only() {
    let pretty = b"{\n  \"id\": \"evt_1\",\n  \"object\": \"event\"\n}\n";
    let header = stripe::sign(&secret(), T, pretty);
    assert_eq!(verify_at(&header, pretty, T), Ok(T));
    // Re-serializing the JSON (what a framework's body parser does) breaks it.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(pretty).unwrap()).unwrap();
    assert_ne!(reserialized.as_slice(), pretty.as_slice());
    assert_eq!(
        verify_at(&header, &reserialized, T),
        Err(WebhookError::NoMatchingSignature)
    );
    // CRLF instead of LF: different bytes, refused.
    let crlf = String::from_utf8(pretty.to_vec())
        .unwrap()
        .replace('\n', "\r\n");
    assert_eq!(
        verify_at(&header, crlf.as_bytes(), T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn rotation_accepts_any_configured_secret_and_any_v1() {
    let old = StripeSecret::parse("whsec_old_secret").unwrap();
    let new = StripeSecret::parse("whsec_new_secret").unwrap();
    let other = StripeSecret::parse("whsec_other").unwrap();
    // Stripe sends one v1 per active secret while rolling.
    let header = format!(
        "t={T},v1={},v1={}",
        stripe::v1_signature(&old, T, BODY),
        stripe::v1_signature(&new, T, BODY)
    );
    for secrets in [
        vec![old.clone()],
        vec![new.clone()],
        vec![other.clone(), new],
    ] {
        assert_eq!(stripe::verify(&header, BODY, &secrets, 300, T), Ok(T));
    }
    assert_eq!(
        stripe::verify(&header, BODY, &[other], 300, T),
        Err(WebhookError::NoMatchingSignature)
    );
    assert_eq!(
        stripe::verify(&header, BODY, &[], 300, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn v0_and_unknown_schemes_are_ignored() {
    let good = stripe::v1_signature(&secret(), T, BODY);
    let bad = "0".repeat(64);
    // A valid-looking v0 alone never verifies (downgrade protection).
    let v0_only = format!("t={T},v0={good}");
    assert_eq!(
        verify_at(&v0_only, BODY, T),
        Err(WebhookError::NoMatchingSignature)
    );
    // v0 next to a good v1: fine. A bad v1 next to a good v1: fine (rotation).
    assert_eq!(
        verify_at(&format!("t={T},v1={good},v0={bad}"), BODY, T),
        Ok(T)
    );
    assert_eq!(
        verify_at(&format!("t={T},v1={bad},v1={good}"), BODY, T),
        Ok(T)
    );
    assert_eq!(verify_at(&format!("v1={good},t={T}"), BODY, T), Ok(T));
    assert_eq!(
        verify_at(&format!("t={T},v1={bad}"), BODY, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn malformed_headers_are_refused() {
    let good = stripe::v1_signature(&secret(), T, BODY);
    let cases = [
        String::new(),
        format!("v1={good}"),                        // no timestamp
        format!("t={T},t={T},v1={good}"),            // two timestamps
        format!("t={T}, v1={good}"),                 // space
        format!("t={T},v1={good},"),                 // empty element
        format!("t={T},,v1={good}"),                 // empty element
        format!("t={T},v1="),                        // empty value
        format!("t={T},v1"),                         // no '='
        format!("t={T},=abc,v1={good}"),             // empty key
        format!("t={T},V1={good}"),                  // upper-case key
        format!("t=0{T},v1={good}"),                 // leading zero
        format!("t=+{T},v1={good}"),                 // sign
        format!("t=-{T},v1={good}"),                 // negative
        format!("t={T}.5,v1={good}"),                // fraction
        format!("t={T},v1={}", &good[..63]),         // truncated v1
        format!("t={T},v1={good}0"),                 // over-long v1
        format!("t={T},v1={}", good.to_uppercase()), // upper-case hex
        format!("t={T},v1={}", "g".repeat(64)),      // not hex
        format!("t=1234567890123456789,v1={good}"),  // 19 digits
    ];
    for header in &cases {
        let err = verify_at(header, BODY, T).unwrap_err();
        assert!(
            matches!(err, WebhookError::Malformed(_)),
            "{header:?} gave {err:?}"
        );
    }
    // t present, no v1 at all: there is nothing to match.
    assert_eq!(
        verify_at(&format!("t={T}"), BODY, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn header_length_and_element_count_are_bounded() {
    let good = stripe::v1_signature(&secret(), T, BODY);
    // HEADER_ELEMENTS_MAX elements: fine; one more: refused even though v1 is first.
    let mut parts = vec![format!("t={T}"), format!("v1={good}")];
    while parts.len() < HEADER_ELEMENTS_MAX {
        parts.push("v0=ab".to_owned());
    }
    assert_eq!(verify_at(&parts.join(","), BODY, T), Ok(T));
    parts.push("v0=ab".to_owned());
    assert_eq!(
        verify_at(&parts.join(","), BODY, T),
        Err(WebhookError::Malformed(
            "stripe-signature header has too many elements"
        ))
    );
    let long = format!("t={T},v1={good},x={}", "a".repeat(HEADER_BYTES_MAX));
    assert_eq!(
        verify_at(&long, BODY, T),
        Err(WebhookError::Malformed(
            "stripe-signature header is too long"
        ))
    );
}

#[test]
fn signature_is_checked_before_the_window() {
    // A forged header with a stale timestamp says "no matching signature", so
    // TimestampOutsideTolerance always means an authentic but late or early delivery.
    let forged = format!("t={},v1={}", T - 10_000, "ab".repeat(32));
    assert_eq!(
        verify_at(&forged, BODY, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn secrets_are_parsed_strictly() {
    for bad in [
        "",
        "whsec_",
        "test_secret",
        "WHSEC_abc",
        "whsec_abc\n",
        "whsec_a b",
        "whsec_é",
    ] {
        assert!(StripeSecret::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("whsec_{}", "a".repeat(300));
    assert!(StripeSecret::parse(&long).is_err());
    assert!(StripeSecret::parse("whsec_x").is_ok());
}
