//! `StripePsp` (bastion-payments) against the sandbox over real HTTP.

use bastion_payments::psp::{
    BalanceTransactionKind, CreateRefund, PaymentIntentStatus, Psp, PspError, TimeRange,
};
use bastion_types::TenantId;
use reqwest::Method;

use crate::{T0, create, key, start};

fn refund(pi: &str, amount: i64, id: &str) -> CreateRefund {
    CreateRefund {
        payment_intent: pi.to_owned(),
        amount_minor: amount,
        tenant: TenantId::parse("0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f").unwrap(),
        refund_id: id.to_owned(),
    }
}

#[tokio::test]
async fn visa_succeeds_with_metadata_and_a_charge() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(
            &create(1234, "pm_card_visa", "7f0c7c1e-3b8e-4d7e-9d55-0a4cbb1c2d3e"),
            &key("k-visa"),
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    assert_eq!(pi.amount_minor, 1234);
    assert_eq!(pi.currency.as_str(), "EUR");
    assert!(pi.next_action.is_none());
    assert!(pi.latest_charge.as_deref().unwrap().starts_with("ch_"));
    let again = psp.retrieve_payment_intent(&pi.id).await.unwrap();
    assert_eq!(again, pi);
    // Metadata reached the PSP in Stripe's bracket form.
    let (status, raw, _) = sb
        .raw(
            Method::GET,
            &format!("/v1/payment_intents/{}", pi.id),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        raw["metadata"]["tenant"],
        "0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f"
    );
    assert_eq!(
        raw["metadata"]["bastion_payment_id"],
        "7f0c7c1e-3b8e-4d7e-9d55-0a4cbb1c2d3e"
    );
    assert_eq!(raw["currency"], "eur");
}

#[tokio::test]
async fn declines_are_typed_errors() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let err = psp
        .create_payment_intent(
            &create(500, "pm_card_chargeDeclined", "pay_d"),
            &key("k-d1"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::Declined {
            code: "generic_decline".to_owned()
        }
    );
    let err = psp
        .create_payment_intent(
            &create(500, "pm_card_chargeDeclinedInsufficientFunds", "pay_d2"),
            &key("k-d2"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::Declined {
            code: "insufficient_funds".to_owned()
        }
    );
    // An unknown token is an invalid request, not a decline.
    let err = psp
        .create_payment_intent(&create(500, "pm_card_unknown", "pay_d3"), &key("k-d3"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 400, .. }),
        "{err:?}"
    );
    // Retrieving an unknown id: 404.
    let err = psp.retrieve_payment_intent("pi_nope").await.unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 404, .. }),
        "{err:?}"
    );
    // A path-injection id never leaves Bastion.
    let err = psp
        .retrieve_payment_intent("../v1/refunds")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 0, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn three_ds_requires_action_until_authenticated() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(
            &create(2500, "pm_card_threeDSecure2Required", "pay_3ds"),
            &key("k-3ds"),
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresAction);
    let next = pi.next_action.clone().unwrap();
    assert_eq!(next["type"], "use_stripe_sdk");
    assert!(pi.latest_charge.is_none(), "no charge before 3DS");
    // Confirming again does not bypass 3DS.
    let err = psp
        .confirm_payment_intent(&pi.id, &key("k-3ds-c"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 400, .. }),
        "{err:?}"
    );
    // The client secret is redacted in Debug output.
    let secret = pi.client_secret.clone().unwrap();
    assert!(!format!("{pi:?}").contains(secret.expose()));
    // A wrong client secret cannot complete it.
    let path = format!("/v1/payment_intents/{}/_authenticate", pi.id);
    let (status, _, _) = sb
        .raw(
            Method::POST,
            &path,
            &[("client_secret", "pi_x_secret_wrong"), ("success", "true")],
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, body, _) = sb
        .raw(
            Method::POST,
            &path,
            &[("client_secret", secret.expose()), ("success", "true")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = psp.retrieve_payment_intent(&pi.id).await.unwrap();
    assert_eq!(done.status, PaymentIntentStatus::Succeeded);
    assert!(done.next_action.is_none());
    assert!(done.latest_charge.is_some());
}

#[tokio::test]
async fn failed_authentication_leaves_it_unpaid() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(
            &create(900, "pm_card_authenticationRequired", "pay_3f"),
            &key("k-3f"),
        )
        .await
        .unwrap();
    let secret = pi.client_secret.clone().unwrap();
    let path = format!("/v1/payment_intents/{}/_authenticate", pi.id);
    let (status, _, _) = sb
        .raw(
            Method::POST,
            &path,
            &[("client_secret", secret.expose()), ("success", "false")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    let after = psp.retrieve_payment_intent(&pi.id).await.unwrap();
    assert_eq!(after.status, PaymentIntentStatus::RequiresPaymentMethod);
}

#[tokio::test]
async fn confirm_an_unconfirmed_intent() {
    let sb = start(&[]).await;
    let (status, body, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "eur"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "requires_confirmation");
    let id = body["id"].as_str().unwrap();
    let pi = sb
        .psp()
        .confirm_payment_intent(id, &key("k-conf"))
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
}

#[tokio::test]
async fn refunds_never_exceed_the_capture() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(&create(10_000, "pm_card_visa", "pay_r"), &key("k-r"))
        .await
        .unwrap();
    let r1 = psp
        .create_refund(&refund(&pi.id, 6_000, "ref_1"), &key("k-r1"))
        .await
        .unwrap();
    assert_eq!(r1.amount_minor, 6_000);
    assert_eq!(r1.status, "succeeded");
    assert_eq!(r1.payment_intent.as_deref(), Some(pi.id.as_str()));
    assert_eq!(r1.charge, pi.latest_charge);
    // P5 on the PSP side: a second 60.00 exceeds the remaining 40.00.
    let err = psp
        .create_refund(&refund(&pi.id, 6_000, "ref_2"), &key("k-r2"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::InvalidRequest {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            code: Some("amount_too_large".to_owned())
        }
    );
    let r3 = psp
        .create_refund(&refund(&pi.id, 4_000, "ref_3"), &key("k-r3"))
        .await
        .unwrap();
    assert_eq!(r3.amount_minor, 4_000);
    let err = psp
        .create_refund(&refund(&pi.id, 1, "ref_4"), &key("k-r4"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 400, .. }),
        "{err:?}"
    );
    // A declined payment has nothing to refund.
    let (_, declined, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "eur"),
                ("payment_method", "pm_card_chargeDeclined"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    let declined_id = declined["error"]["payment_intent"]["id"].as_str().unwrap();
    let err = psp
        .create_refund(&refund(declined_id, 100, "ref_5"), &key("k-r5"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PspError::InvalidRequest { status: 400, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn idempotency_key_is_forwarded_and_honoured() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let req = create(4200, "pm_card_visa", "pay_idem");
    let a = psp
        .create_payment_intent(&req, &key("charge-pay_idem"))
        .await
        .unwrap();
    let b = psp
        .create_payment_intent(&req, &key("charge-pay_idem"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id, "same key, same parameters: one PaymentIntent");
    let range = TimeRange {
        from: T0,
        to: T0 + 1,
    };
    let charges: Vec<_> = psp
        .list_balance_transactions(range)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.kind == BalanceTransactionKind::Charge)
        .collect();
    assert_eq!(charges.len(), 1, "one charge for two calls");
    // Same key, other parameters: Stripe's idempotency_error.
    let other = create(4300, "pm_card_visa", "pay_idem");
    let err = psp
        .create_payment_intent(&other, &key("charge-pay_idem"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::InvalidRequest {
            status: 400,
            error_type: "idempotency_error".to_owned(),
            code: Some("idempotency_key_in_use".to_owned())
        }
    );
    // The replay is marked; a declined first answer replays as the same decline.
    let form = [
        ("amount", "4200"),
        ("currency", "eur"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
        ("metadata[tenant]", "0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f"),
        ("metadata[bastion_payment_id]", "pay_idem"),
    ];
    let (status, body, headers) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &form,
            Some("charge-pay_idem"),
        )
        .await;
    assert_eq!((status, body["id"].as_str()), (200, Some(a.id.as_str())));
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    let d1 = sb
        .psp()
        .create_payment_intent(
            &create(100, "pm_card_chargeDeclined", "pay_dd"),
            &key("k-dd"),
        )
        .await
        .unwrap_err();
    let d2 = sb
        .psp()
        .create_payment_intent(
            &create(100, "pm_card_chargeDeclined", "pay_dd"),
            &key("k-dd"),
        )
        .await
        .unwrap_err();
    assert_eq!(d1, d2);
    // The key expires after 24 hours by the sandbox clock: then it is a new request.
    sb.clock.advance(86_400);
    let c = psp
        .create_payment_intent(&req, &key("charge-pay_idem"))
        .await
        .unwrap();
    assert_ne!(c.id, a.id);
}

#[tokio::test]
async fn balance_transactions_carry_fees_and_refunds_in_range() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(&create(1234, "pm_card_visa", "pay_b1"), &key("k-b1"))
        .await
        .unwrap();
    sb.clock.advance(10);
    psp.create_refund(&refund(&pi.id, 234, "ref_b"), &key("k-b2"))
        .await
        .unwrap();
    sb.clock.advance(10);
    // More than one page (page size 100): 120 more charges of 1.00.
    for i in 0..120 {
        psp.create_payment_intent(
            &create(100, "pm_card_visa", &format!("pay_m{i}")),
            &key(&format!("k-m{i}")),
        )
        .await
        .unwrap();
    }
    let first = psp
        .list_balance_transactions(TimeRange {
            from: T0,
            to: T0 + 20,
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    // Newest first: the refund, then the charge.
    assert_eq!(first[0].kind, BalanceTransactionKind::Refund);
    assert_eq!((first[0].amount_minor, first[0].fee_minor), (-234, 0));
    assert!(first[0].source.as_deref().unwrap().starts_with("re_"));
    assert_eq!(first[1].kind, BalanceTransactionKind::Charge);
    // 2.9 % of 1234 = 35.786 → 36, plus 30.
    assert_eq!((first[1].amount_minor, first[1].fee_minor), (1234, 66));
    assert_eq!(first[1].created, T0);
    let all = psp
        .list_balance_transactions(TimeRange {
            from: T0,
            to: T0 + 21,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 122);
    assert!(
        all.iter()
            .take(120)
            .all(|t| t.amount_minor == 100 && t.fee_minor == 33)
    );
    let none = psp
        .list_balance_transactions(TimeRange {
            from: T0 + 21,
            to: T0 + 99,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn bad_key_and_unknown_parameters_are_refused() {
    let sb = start(&[]).await;
    let wrong = bastion_payments::psp::StripePsp::new(bastion_payments::psp::StripeConfig::new(
        &sb.url,
        bastion_payments::psp::ApiKey::parse("sk_test_wrong_key_000").unwrap(),
    ))
    .unwrap();
    let err = wrong.retrieve_payment_intent("pi_x").await.unwrap_err();
    assert!(matches!(err, PspError::Unexpected { .. }), "{err:?}");
    assert!(!err.to_string().contains("sk_test"));
    let (status, body, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[("amount", "700"), ("currency", "eur"), ("description", "x")],
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "parameter_unknown");
    let (status, _, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[("amount", "0"), ("currency", "eur")],
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = sb.raw(Method::GET, "/v1/nothing", &[], None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_charge_once() {
    // P4 at the PSP: a client that lost the response retries at once, several times.
    let sb = start(&[]).await;
    let psp = sb.psp();
    let req = create(5000, "pm_card_visa", "pay_conc");
    let k = key("charge-pay_conc");
    let calls = (0..8).map(|_| psp.create_payment_intent(&req, &k));
    let results = futures::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> =
        results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids.len(), 1);
    let txns = psp
        .list_balance_transactions(TimeRange {
            from: T0,
            to: T0 + 1,
        })
        .await
        .unwrap();
    assert_eq!(txns.len(), 1);
}

#[tokio::test]
async fn refund_by_charge_and_confirm_with_a_new_method() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(&create(800, "pm_card_visa", "pay_c"), &key("k-c"))
        .await
        .unwrap();
    let charge = pi.latest_charge.unwrap();
    let (status, body, _) = sb
        .raw(Method::POST, "/v1/refunds", &[("charge", &charge)], None)
        .await;
    assert_eq!(
        (status, body["amount"].as_i64()),
        (200, Some(800)),
        "{body}"
    );
    let (status, body, _) = sb
        .raw(Method::POST, "/v1/refunds", &[("charge", &charge)], None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
    // A declined intent can be confirmed again with another payment method.
    let (_, declined, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[
                ("amount", "300"),
                ("currency", "eur"),
                ("payment_method", "pm_card_chargeDeclined"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(declined["error"]["type"], "card_error");
    assert_eq!(
        declined["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
    let id = declined["error"]["payment_intent"]["id"].as_str().unwrap();
    let (status, body, _) = sb
        .raw(
            Method::POST,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[("payment_method", "pm_card_mastercard")],
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("succeeded")),
        "{body}"
    );
}
