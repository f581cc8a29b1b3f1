//! `StripePsp` against the real `localstripe` 1.15.10 (PyPI, GPL-3.0), run as a separate
//! process by `scripts/peers/run-localstripe.py` (127.0.0.1 only, fresh in-memory state per
//! process) from the venv `scripts/peers/localstripe.sh` installs. A missing venv fails the
//! test; it never skips.
//!
//! Covered: a `pm_card_visa` payment succeeds (localstripe's `latest_charge` is an object;
//! the adapter takes its id), a decline is typed (localstripe answers 402
//! `invalid_request_error`), 3DS card 4000002760003184 answers `requires_action` with
//! `next_action.type = use_stripe_sdk` (handed back unchanged) and succeeds only after
//! `_authenticate`, a refund, balance transactions listed without server-side `created`
//! filters (localstripe answers 400 to them). Also recorded: localstripe ignores
//! `Idempotency-Key` (two creates → two PaymentIntents), so Bastion's own idempotency layer
//! is what prevents a double charge there.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bastion_payments::psp::{
    ApiKey, BalanceTransactionKind, CreatePaymentIntent, CreateRefund, IdempotencyKey,
    PaymentIntentStatus, PaymentMethodToken, Psp, PspError, StripeConfig, StripePsp, TimeRange,
};
use bastion_types::{Clock as _, Currency, Money, SystemClock, TenantId};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::repo_root;

const KEY: &str = "sk_test_localstripe_interop";
const TENANT: &str = "5d1c8a56-9c55-4c1e-8f5b-2f8f3f0d6a11";

fn venv_python() -> PathBuf {
    let python = repo_root().join(".peers/localstripe-venv/bin/python");
    assert!(
        python.is_file(),
        "localstripe peer venv is missing at {}: run scripts/install-peers from the repository root",
        python.display()
    );
    python
}

/// Starts localstripe on a free loopback port; returns the child (killed on drop) and the
/// base URL once it prints its `listening` line.
async fn start_localstripe() -> (Child, String) {
    // No shared state between processes: the launcher turns off localstripe's dump to its
    // fixed /tmp/localstripe.pickle (TMPDIR would not help: the path is hard-coded).
    let mut child = Command::new(venv_python())
        .arg(repo_root().join("scripts/peers/run-localstripe.py"))
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start localstripe: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("localstripe did not start within 30 s"))
        .unwrap()
        .unwrap_or_else(|| panic!("localstripe exited before listening"));
    let addr = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected localstripe output: {line}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (child, format!("http://{addr}"))
}

/// A raw call to localstripe, for what Bastion's adapter deliberately does not do
/// (creating a payment method from a card number; completing 3DS as the browser would).
async fn raw_post(base: &str, path: &str, form: &[(&str, &str)]) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn raw_get(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn card_payment_method(base: &str, number: &str) -> String {
    let pm = raw_post(
        base,
        "/v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ],
    )
    .await;
    pm["id"].as_str().unwrap().to_owned()
}

fn create(amount: i64, token: &str, payment_id: &str) -> CreatePaymentIntent {
    CreatePaymentIntent {
        amount: Money {
            minor: amount,
            currency: Currency::parse("EUR").unwrap(),
        },
        payment_method: PaymentMethodToken::parse(token).unwrap(),
        tenant: TenantId::parse(TENANT).unwrap(),
        payment_id: payment_id.to_owned(),
        customer: None,
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

#[tokio::test]
async fn stripe_adapter_against_localstripe() {
    let (_child, base) = start_localstripe().await;
    let mut config = StripeConfig::new(&base, ApiKey::parse(KEY).unwrap());
    config.server_filters_created = false;
    let psp = StripePsp::new(config).unwrap();
    let started = SystemClock.now();

    // pm_card_visa, confirm=true → succeeded; metadata reached the peer.
    let pi = psp
        .create_payment_intent(&create(1234, "pm_card_visa", "pay_ls_1"), &key("ls-1"))
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    assert_eq!((pi.amount_minor, pi.currency.as_str()), (1234, "EUR"));
    let charge = pi.latest_charge.clone().unwrap();
    assert!(charge.starts_with("ch_"), "{charge}");
    let raw = raw_get(&base, &format!("/v1/payment_intents/{}", pi.id)).await;
    assert_eq!(raw["metadata"]["tenant"], TENANT);
    assert_eq!(raw["metadata"]["bastion_payment_id"], "pay_ls_1");
    assert_eq!(
        psp.retrieve_payment_intent(&pi.id).await.unwrap().status,
        PaymentIntentStatus::Succeeded
    );

    // A decline on charging (localstripe: 402 invalid_request_error) is a typed decline.
    let declining = card_payment_method(&base, "4000000000000341").await;
    let err = psp
        .create_payment_intent(&create(500, &declining, "pay_ls_d"), &key("ls-d"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::Declined {
            code: "card_declined".to_owned()
        }
    );

    // 3DS card: requires_action, next_action handed back unchanged, no charge yet.
    let three_ds = card_payment_method(&base, "4000002760003184").await;
    let pending = psp
        .create_payment_intent(&create(2500, &three_ds, "pay_ls_3ds"), &key("ls-3ds"))
        .await
        .unwrap();
    assert_eq!(pending.status, PaymentIntentStatus::RequiresAction);
    let raw = raw_get(&base, &format!("/v1/payment_intents/{}", pending.id)).await;
    assert_eq!(pending.next_action.as_ref(), Some(&raw["next_action"]));
    assert_eq!(
        pending.next_action.as_ref().unwrap()["type"],
        "use_stripe_sdk"
    );
    assert!(pending.latest_charge.is_none());
    // The customer completes 3DS (as Stripe.js would): only then is it paid.
    let secret = pending.client_secret.clone().unwrap();
    raw_post(
        &base,
        &format!("/v1/payment_intents/{}/_authenticate", pending.id),
        &[("client_secret", secret.expose()), ("success", "true")],
    )
    .await;
    let done = psp.retrieve_payment_intent(&pending.id).await.unwrap();
    assert_eq!(done.status, PaymentIntentStatus::Succeeded);

    // Refund part of the visa payment.
    let refund = psp
        .create_refund(
            &CreateRefund {
                payment_intent: pi.id.clone(),
                amount_minor: 300,
                tenant: TenantId::parse(TENANT).unwrap(),
                refund_id: "ref_ls_1".to_owned(),
            },
            &key("ls-r1"),
        )
        .await
        .unwrap();
    assert_eq!(
        (refund.amount_minor, refund.status.as_str()),
        (300, "succeeded")
    );
    assert_eq!(refund.charge.as_deref(), Some(charge.as_str()));

    // Balance transactions: two charges (visa, 3DS) and the refund, fee 0 on localstripe.
    let range = TimeRange {
        from: started - 60,
        to: SystemClock.now() + 60,
    };
    let txns = psp.list_balance_transactions(range).await.unwrap();
    let mut seen: Vec<(BalanceTransactionKind, i64, i64)> = txns
        .iter()
        .map(|t| (t.kind.clone(), t.amount_minor, t.fee_minor))
        .collect();
    seen.sort_by_key(|(_, amount, _)| *amount);
    assert_eq!(
        seen,
        [
            (BalanceTransactionKind::Refund, -300, 0),
            (BalanceTransactionKind::Charge, 1234, 0),
            (BalanceTransactionKind::Charge, 2500, 0),
        ]
    );
    assert!(
        txns.iter()
            .any(|t| t.source.as_deref() == Some(charge.as_str()))
    );
    assert!(txns.iter().all(|t| t.currency.as_str() == "EUR"));
    // A range before any activity is empty.
    let before = TimeRange {
        from: started - 7200,
        to: started - 3600,
    };
    assert!(
        psp.list_balance_transactions(before)
            .await
            .unwrap()
            .is_empty()
    );

    // The peer's known gap (PEERS.md): the same Idempotency-Key creates a second intent.
    let again = psp
        .create_payment_intent(&create(1234, "pm_card_visa", "pay_ls_1"), &key("ls-1"))
        .await
        .unwrap();
    assert_ne!(
        again.id, pi.id,
        "localstripe does not honour Idempotency-Key"
    );
}
