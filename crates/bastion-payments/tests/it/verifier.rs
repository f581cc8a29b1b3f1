//! WebhookVerifier: headers, limits, events out, errors that leak nothing.

use bastion_payments::webhook::{
    BODY_BYTES_MAX_LIMIT, DEFAULT_BODY_BYTES_MAX, ProviderKind, SECRETS_MAX, StandardSecret,
    StripeSecret, TOLERANCE_SECS_MAX, VerifiedEvent, WebhookError, WebhookVerifier, standard,
    stripe,
};

use crate::{clock_at, pairs, standard_event, stripe_event};

const STRIPE_SECRET: &str = "whsec_4f2b1c9e8d7a6b5c4d3e2f1a0b9c8d7e";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T: i64 = 1_700_000_000;

fn stripe_verifier(now: i64) -> WebhookVerifier {
    let (_, clock) = clock_at(now);
    WebhookVerifier::new(ProviderKind::Stripe, &[STRIPE_SECRET], 300, clock).unwrap()
}

fn standard_verifier(now: i64) -> WebhookVerifier {
    let (_, clock) = clock_at(now);
    WebhookVerifier::new(
        ProviderKind::StandardWebhooks,
        &[STANDARD_SECRET],
        300,
        clock,
    )
    .unwrap()
}

#[test]
fn stripe_delivery_becomes_a_verified_event() {
    let body = stripe_event("evt_1", "payment_intent.succeeded", T - 5, "succeeded");
    let secret = StripeSecret::parse(STRIPE_SECRET).unwrap();
    let headers = [
        ("content-type", "application/json".to_owned()),
        (
            "STRIPE-SIGNATURE",
            stripe::sign(&secret, T, body.as_bytes()),
        ),
    ];
    let event = stripe_verifier(T + 10)
        .verify(&pairs(&headers), body.as_bytes())
        .unwrap();
    assert_eq!(event.provider, ProviderKind::Stripe);
    assert_eq!(event.id, "evt_1");
    assert_eq!(event.provider_event_type, "payment_intent.succeeded");
    assert_eq!(event.created, T - 5);
    assert_eq!(event.signed_at, T);
    assert_eq!(event.body, body.as_bytes());
}

#[test]
fn standard_delivery_becomes_a_verified_event() {
    let body = standard_event("invoice.paid", "2023-11-14T22:13:15.5Z");
    let secret = StandardSecret::parse(STANDARD_SECRET).unwrap();
    let headers = [
        ("Webhook-Id", "msg_1".to_owned()),
        ("Webhook-Timestamp", T.to_string()),
        (
            "Webhook-Signature",
            standard::sign(&secret, "msg_1", T, body.as_bytes()),
        ),
    ];
    let event: VerifiedEvent = standard_verifier(T - 10)
        .verify(&pairs(&headers), body.as_bytes())
        .unwrap();
    assert_eq!(event.provider, ProviderKind::StandardWebhooks);
    assert_eq!(event.id, "msg_1");
    assert_eq!(event.provider_event_type, "invoice.paid");
    assert_eq!(event.created, T - 5);
    assert_eq!(event.signed_at, T);
}

#[test]
fn clock_moves_are_seen() {
    let body = stripe_event("evt_1", "charge.succeeded", T, "succeeded");
    let secret = StripeSecret::parse(STRIPE_SECRET).unwrap();
    let headers = [(
        "stripe-signature",
        stripe::sign(&secret, T, body.as_bytes()),
    )];
    let (fixed, clock) = clock_at(T);
    let v = WebhookVerifier::new(ProviderKind::Stripe, &[STRIPE_SECRET], 300, clock).unwrap();
    assert!(v.verify(&pairs(&headers), body.as_bytes()).is_ok());
    fixed.advance(301);
    assert!(matches!(
        v.verify(&pairs(&headers), body.as_bytes()),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
}

#[test]
fn missing_duplicate_and_non_utf8_headers() {
    let body = stripe_event("evt_1", "charge.succeeded", T, "succeeded");
    let v = stripe_verifier(T);
    assert_eq!(
        v.verify(&[], body.as_bytes()),
        Err(WebhookError::MissingHeader("stripe-signature"))
    );
    let sig = stripe::sign(
        &StripeSecret::parse(STRIPE_SECRET).unwrap(),
        T,
        body.as_bytes(),
    );
    let twice = [("stripe-signature", sig.clone()), ("Stripe-Signature", sig)];
    assert!(matches!(
        v.verify(&pairs(&twice), body.as_bytes()),
        Err(WebhookError::Malformed(_))
    ));
    let binary: [(&str, &[u8]); 1] = [("stripe-signature", b"t=1,v1=\xff")];
    assert!(matches!(
        v.verify(&binary, body.as_bytes()),
        Err(WebhookError::Malformed(_))
    ));

    let s = standard_verifier(T);
    let all = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", T.to_string()),
        ("webhook-signature", "v1,".to_owned()),
    ];
    for (skip, name) in [
        (0, "webhook-id"),
        (1, "webhook-timestamp"),
        (2, "webhook-signature"),
    ] {
        let some: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, h)| h.clone())
            .collect();
        assert_eq!(
            s.verify(&pairs(&some), b"{}"),
            Err(WebhookError::MissingHeader(name))
        );
    }
    // P1 through the verifier.
    assert!(matches!(
        s.verify(&pairs(&all), b"{}"),
        Err(WebhookError::Malformed(_))
    ));
}

#[test]
fn body_limit_is_checked_first() {
    let v = stripe_verifier(T).with_body_bytes_max(16).unwrap();
    assert_eq!(v.body_bytes_max(), 16);
    assert_eq!(
        v.verify(&[], &[b'x'; 17]),
        Err(WebhookError::BodyTooLarge { len: 17, max: 16 })
    );
    assert_eq!(
        v.verify(&[], &[b'x'; 16]),
        Err(WebhookError::MissingHeader("stripe-signature"))
    );
    let big = vec![b' '; DEFAULT_BODY_BYTES_MAX + 1];
    assert!(matches!(
        stripe_verifier(T).verify(&[], &big),
        Err(WebhookError::BodyTooLarge { .. })
    ));
    assert!(stripe_verifier(T).with_body_bytes_max(0).is_err());
    assert!(
        stripe_verifier(T)
            .with_body_bytes_max(BODY_BYTES_MAX_LIMIT + 1)
            .is_err()
    );
}

#[test]
fn configuration_is_checked() {
    let (_, clock) = clock_at(T);
    let many = vec![STRIPE_SECRET; SECRETS_MAX + 1];
    for (provider, secrets, tolerance) in [
        (ProviderKind::Stripe, vec![], 300),
        (ProviderKind::Stripe, many.clone(), 300),
        (ProviderKind::Stripe, vec!["not_a_secret"], 300),
        (
            ProviderKind::Stripe,
            vec![STRIPE_SECRET],
            TOLERANCE_SECS_MAX + 1,
        ),
        // A Stripe-style secret is not base64 of 24+ bytes.
        (
            ProviderKind::StandardWebhooks,
            vec!["whsec_test_secret"],
            300,
        ),
    ] {
        assert!(
            WebhookVerifier::new(provider, &secrets, tolerance, clock.clone()).is_err(),
            "{provider:?} {tolerance}"
        );
    }
    let v = WebhookVerifier::new(
        ProviderKind::StandardWebhooks,
        &[STANDARD_SECRET, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
        TOLERANCE_SECS_MAX,
        clock,
    )
    .unwrap();
    assert_eq!(v.provider(), ProviderKind::StandardWebhooks);
    assert_eq!(v.secret_count(), 2);
    assert_eq!(v.tolerance_secs(), TOLERANCE_SECS_MAX);
}

#[test]
fn wrong_event_shape_after_a_good_signature() {
    let secret = StripeSecret::parse(STRIPE_SECRET).unwrap();
    for body in [
        "not json",
        r#"{"id":"evt_1","type":"x","created":1}"#, // no data.object
        r#"{"id":"ch_1","type":"x","created":1,"data":{"object":{}}}"#, // not an event id
        r#"{"id":"evt_1","type":"","created":1,"data":{"object":{}}}"#,
        r#"{"id":"evt_1","type":"x","created":-1,"data":{"object":{}}}"#,
        r#"{"id":"evt_1","object":"charge","type":"x","created":1,"data":{"object":{}}}"#,
    ] {
        let headers = [(
            "stripe-signature",
            stripe::sign(&secret, T, body.as_bytes()),
        )];
        let err = stripe_verifier(T)
            .verify(&pairs(&headers), body.as_bytes())
            .unwrap_err();
        assert!(
            matches!(err, WebhookError::InvalidEvent(_)),
            "{body}: {err:?}"
        );
    }
}

#[test]
fn errors_and_debug_never_show_secrets_or_expected_signatures() {
    let body = stripe_event("evt_1", "charge.succeeded", T, "succeeded");
    let secret = StripeSecret::parse(STRIPE_SECRET).unwrap();
    let expected = stripe::v1_signature(&secret, T, body.as_bytes());
    let v = stripe_verifier(T);
    let secret_tail = STRIPE_SECRET.trim_start_matches("whsec_");
    let forged = [("stripe-signature", format!("t={T},v1={}", "0".repeat(64)))];
    let stale = [(
        "stripe-signature",
        stripe::sign(&secret, T - 1000, body.as_bytes()),
    )];
    for headers in [&forged, &stale] {
        let err = v.verify(&pairs(headers), body.as_bytes()).unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(secret_tail), "{shown}");
            assert!(!shown.contains(&expected), "{shown}");
            assert!(!shown.contains(&expected[..16]), "{shown}");
        }
    }
    for shown in [
        format!("{v:?}"),
        format!("{secret:?}"),
        format!("{:?}", StandardSecret::parse(STANDARD_SECRET).unwrap()),
        format!("{:?}", standard_verifier(T)),
    ] {
        assert!(!shown.contains(secret_tail), "{shown}");
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
    }
}
