//! Webhooks from the sandbox: signed the Stripe way, verified by bastion-payments'
//! `WebhookVerifier`, retried with backoff, bounded.

use std::sync::Arc;

use axum::http::HeaderMap;
use bastion_payments::psp::{CreateRefund, Psp};
use bastion_payments::webhook::{ProviderKind, StripeEvent, WebhookError, WebhookVerifier};
use bastion_types::{FixedClock, TenantId};

use crate::{Receiver, T0, WHSEC, create, key, start};

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(
        ProviderKind::Stripe,
        &[WHSEC],
        300,
        Arc::new(FixedClock::new(T0)),
    )
    .unwrap()
}

fn verify(v: &WebhookVerifier, headers: &HeaderMap, body: &[u8]) -> Result<String, WebhookError> {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    v.verify(&pairs, body).map(|e| e.provider_event_type)
}

#[tokio::test]
async fn events_are_signed_and_verify_and_tampering_fails() {
    let (rx, url) = Receiver::start(0).await;
    let sb = start(&[url]).await;
    let psp = sb.psp();
    let ok = psp
        .create_payment_intent(&create(1000, "pm_card_visa", "pay_w1"), &key("w1"))
        .await
        .unwrap();
    rx.wait_for(1).await;
    psp.create_payment_intent(
        &create(1000, "pm_card_chargeDeclined", "pay_w2"),
        &key("w2"),
    )
    .await
    .unwrap_err();
    rx.wait_for(2).await;
    psp.create_payment_intent(
        &create(1000, "pm_card_threeDSecure2Required", "pay_w3"),
        &key("w3"),
    )
    .await
    .unwrap();
    rx.wait_for(3).await;
    psp.create_refund(
        &CreateRefund {
            payment_intent: ok.id.clone(),
            amount_minor: 400,
            tenant: TenantId::parse("0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f").unwrap(),
            refund_id: "ref_w".to_owned(),
        },
        &key("w4"),
    )
    .await
    .unwrap();
    let got = rx.wait_for(4).await;
    let v = verifier();
    let types: Vec<String> = got.iter().map(|(h, b)| verify(&v, h, b).unwrap()).collect();
    assert_eq!(
        types,
        [
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "charge.refunded"
        ]
    );
    // The events carry what a consumer needs.
    let first = StripeEvent::parse(&got[0].1).unwrap();
    assert_eq!(first.object_id.as_deref(), Some(ok.id.as_str()));
    assert_eq!(first.object_status.as_deref(), Some("succeeded"));
    assert_eq!(first.created, T0);
    let refunded: serde_json::Value = serde_json::from_slice(&got[3].1).unwrap();
    assert_eq!(refunded["data"]["object"]["amount_refunded"], 400);
    assert_eq!(
        refunded["data"]["object"]["metadata"]["bastion_payment_id"],
        "pay_w1"
    );
    // A tampered body, a wrong secret, a stale delivery: refused.
    let (h, b) = &got[0];
    let mut tampered = b.to_vec();
    let at = tampered.iter().position(|c| *c == b'1').unwrap();
    tampered[at] = b'9';
    assert_eq!(
        verify(&v, h, &tampered),
        Err(WebhookError::NoMatchingSignature)
    );
    let other = WebhookVerifier::new(
        ProviderKind::Stripe,
        &["whsec_some_other_secret"],
        300,
        Arc::new(FixedClock::new(T0)),
    )
    .unwrap();
    assert_eq!(verify(&other, h, b), Err(WebhookError::NoMatchingSignature));
    let later = WebhookVerifier::new(
        ProviderKind::Stripe,
        &[WHSEC],
        300,
        Arc::new(FixedClock::new(T0 + 301)),
    )
    .unwrap();
    assert!(matches!(
        verify(&later, h, b),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
    // Every attempt is logged.
    let log = sb.wait_log(4).await;
    assert_eq!(log.len(), 4);
    assert!(
        log.iter()
            .all(|d| d.delivered && d.attempt == 1 && d.status == Some(200))
    );
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_given_up() {
    // The receiver fails the first two attempts: the third (last) succeeds.
    let (rx, url) = Receiver::start(2).await;
    let sb = start(&[url]).await;
    sb.psp()
        .create_payment_intent(&create(1000, "pm_card_visa", "pay_r1"), &key("r1"))
        .await
        .unwrap();
    let got = rx.wait_for(3).await;
    let v = verifier();
    for (h, b) in &got {
        assert_eq!(verify(&v, h, b).unwrap(), "payment_intent.succeeded");
    }
    // Same event each time (one id), re-signed per attempt.
    let ids: Vec<String> = got
        .iter()
        .map(|(_, b)| StripeEvent::parse(b).unwrap().id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let log = sb.wait_log(3).await;
    let attempts: Vec<(u32, Option<u16>, bool)> = log
        .iter()
        .map(|d| (d.attempt, d.status, d.delivered))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Some(500), false),
            (2, Some(500), false),
            (3, Some(200), true)
        ]
    );

    // A receiver that always fails: exactly attempts_max (3) attempts, then it stops.
    let (rx, url) = Receiver::start(usize::MAX).await;
    let sb = start(&[url]).await;
    sb.psp()
        .create_payment_intent(&create(1000, "pm_card_visa", "pay_r2"), &key("r2"))
        .await
        .unwrap();
    rx.wait_for(3).await;
    sb.wait_log(3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rx.snapshot().len(), 3);
    assert!(sb.sandbox.deliveries().iter().all(|d| !d.delivered));

    // An unreachable endpoint: attempted, logged without a status.
    let sb = start(&["http://127.0.0.1:9/hook".to_owned()]).await;
    sb.psp()
        .create_payment_intent(&create(1000, "pm_card_visa", "pay_r3"), &key("r3"))
        .await
        .unwrap();
    let log = sb.wait_log(3).await;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d.status.is_none() && !d.delivered));
}

#[tokio::test]
async fn idempotent_replays_send_no_second_event() {
    let (rx, url) = Receiver::start(0).await;
    let sb = start(&[url]).await;
    let req = create(1000, "pm_card_visa", "pay_once");
    sb.psp()
        .create_payment_intent(&req, &key("once"))
        .await
        .unwrap();
    sb.psp()
        .create_payment_intent(&req, &key("once"))
        .await
        .unwrap();
    rx.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(rx.snapshot().len(), 1);
}
