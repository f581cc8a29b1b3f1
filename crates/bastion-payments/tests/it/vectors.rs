//! Every vector in tests/vectors/webhooks.json, with its exact expected outcome.

use bastion_payments::webhook::{
    DEFAULT_TOLERANCE_SECS, ProviderKind, StandardSecret, StripeSecret, WebhookError,
    WebhookVerifier, standard, stripe,
};
use serde_json::Value;

use crate::{clock_at, repo_root};

fn vectors() -> Value {
    let path = repo_root().join("tests/vectors/webhooks.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap()
}

#[test]
fn stripe_vectors() {
    let all = vectors();
    let list = all["stripe"].as_array().unwrap();
    assert!(!list.is_empty());
    for v in list {
        let secret = StripeSecret::parse(s(v, "secret")).unwrap();
        let t = v["timestamp"].as_i64().unwrap();
        let body = s(v, "payload").as_bytes();
        // Signing gives exactly the published signature and header.
        assert_eq!(stripe::v1_signature(&secret, t, body), s(v, "v1"));
        let header = stripe::sign(&secret, t, body);
        assert_eq!(header, format!("t={t},v1={}", s(v, "v1")));
        // Verification at the signing time accepts and returns the signed timestamp.
        let ok = stripe::verify(
            &header,
            body,
            std::slice::from_ref(&secret),
            DEFAULT_TOLERANCE_SECS,
            t,
        );
        assert_eq!(ok, Ok(t));
        // ...and refuses the same header against a body with one byte more.
        let mut longer = body.to_vec();
        longer.push(b' ');
        assert_eq!(
            stripe::verify(&header, &longer, &[secret], DEFAULT_TOLERANCE_SECS, t),
            Err(WebhookError::NoMatchingSignature)
        );
        // Through the verifier: the signature is good, but the vector's body lacks the
        // event `type` and `created`, so it is refused as an event, not as a signature.
        let (_, clock) = clock_at(t);
        let verifier =
            WebhookVerifier::new(ProviderKind::Stripe, &[s(v, "secret")], 300, clock).unwrap();
        let err = verifier
            .verify(&[("Stripe-Signature", header.as_bytes())], body)
            .unwrap_err();
        assert!(matches!(err, WebhookError::InvalidEvent(_)), "{err:?}");
    }
}

#[test]
fn standard_webhooks_vectors() {
    let all = vectors();
    let list = all["standard_webhooks"].as_array().unwrap();
    assert!(!list.is_empty());
    for v in list {
        let secret = StandardSecret::parse(s(v, "secret")).unwrap();
        let id = s(v, "msg_id");
        let t = v["timestamp"].as_i64().unwrap();
        let body = s(v, "payload").as_bytes();
        assert_eq!(standard::sign(&secret, id, t, body), s(v, "signature"));
        let ts = t.to_string();
        let ok = standard::verify(
            id,
            &ts,
            s(v, "signature"),
            body,
            std::slice::from_ref(&secret),
            DEFAULT_TOLERANCE_SECS,
            t,
        );
        assert_eq!(ok, Ok(t));
        // Another message id under the same signature fails.
        assert_eq!(
            standard::verify(
                "msg_other",
                &ts,
                s(v, "signature"),
                body,
                &[secret],
                DEFAULT_TOLERANCE_SECS,
                t
            ),
            Err(WebhookError::NoMatchingSignature)
        );
    }
}
