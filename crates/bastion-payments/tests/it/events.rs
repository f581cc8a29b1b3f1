//! Stripe event parsing: the fields for deduplication and ordering (for P6/P7 later).

use bastion_payments::webhook::{StandardEvent, StripeEvent, WebhookError};

use crate::{standard_event, stripe_event};

#[test]
fn stripe_event_fields() {
    let body = stripe_event(
        "evt_9",
        "payment_intent.processing",
        1_700_000_100,
        "processing",
    );
    let e = StripeEvent::parse(body.as_bytes()).unwrap();
    assert_eq!(e.id, "evt_9");
    assert_eq!(e.event_type, "payment_intent.processing");
    assert_eq!(e.created, 1_700_000_100);
    assert_eq!(e.livemode, Some(false));
    assert_eq!(e.object_id.as_deref(), Some("pi_123"));
    assert_eq!(e.object_type.as_deref(), Some("payment_intent"));
    assert_eq!(e.object_status.as_deref(), Some("processing"));
    assert_eq!(e.object_created, Some(1_700_000_000));
}

#[test]
fn stripe_events_about_objects_without_id_or_status() {
    let body = br#"{"id":"evt_b","type":"balance.available","created":5,"data":{"object":{"object":"balance","available":[]}},"extra":{"ignored":true}}"#;
    let e = StripeEvent::parse(body).unwrap();
    assert_eq!(e.object_id, None);
    assert_eq!(e.object_status, None);
    assert_eq!(e.object_type.as_deref(), Some("balance"));
}

#[test]
fn newer_event_sorts_after_older_one() {
    // The raw material for P6: the later layer orders by `created` per object id.
    let older = StripeEvent::parse(
        stripe_event("evt_a", "payment_intent.processing", 100, "processing").as_bytes(),
    )
    .unwrap();
    let newer = StripeEvent::parse(
        stripe_event("evt_b", "payment_intent.succeeded", 101, "succeeded").as_bytes(),
    )
    .unwrap();
    assert_eq!(older.object_id, newer.object_id);
    assert!(newer.created > older.created);
}

#[test]
fn stripe_event_rejects_wrong_types() {
    for body in [
        r#"[]"#,
        r#"{"id":1,"type":"x","created":1,"data":{"object":{}}}"#,
        r#"{"id":"evt_1","type":"x","created":"1","data":{"object":{}}}"#,
        r#"{"id":"evt_1","type":"x","created":1.5,"data":{"object":{}}}"#,
        r#"{"id":"evt_1","type":"x","created":1,"data":{"object":[]}}"#,
        r#"{"id":"evt_1","type":"x","created":1,"data":{"object":{"id":5}}}"#,
    ] {
        assert!(
            matches!(
                StripeEvent::parse(body.as_bytes()),
                Err(WebhookError::InvalidEvent(_))
            ),
            "{body}"
        );
    }
    let long_id = format!(
        r#"{{"id":"evt_{}","type":"x","created":1,"data":{{"object":{{}}}}}}"#,
        "a".repeat(300)
    );
    assert!(StripeEvent::parse(long_id.as_bytes()).is_err());
}

#[test]
fn standard_event_fields() {
    let e = StandardEvent::parse(standard_event("invoice.paid", "2022-04-07T21:39:13Z").as_bytes())
        .unwrap();
    assert_eq!(e.event_type, "invoice.paid");
    assert_eq!(e.occurred_at, 1_649_367_553);
    for bad in [
        r#"{"type":"x"}"#,
        r#"{"timestamp":"2022-04-07T21:39:13Z"}"#,
        r#"{"type":"x","timestamp":1649367553}"#,
        r#"{"type":"x","timestamp":"yesterday"}"#,
    ] {
        assert!(StandardEvent::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}
