//! Money tools over REST against the real psp-sandbox over HTTP: `charge_deposit` and
//! `issue_refund` with idempotency keys (draft-ietf-httpapi-idempotency-key-header),
//! velocity limits, refunds never above captures (P5), 3DS handed back, declines.

use std::sync::Arc;

use bastion_payments::psp::{
    ApiKey, BalanceTransactionKind, Psp, StripeConfig, StripePsp, TimeRange,
};
use bastion_psp_sandbox::{Sandbox, SandboxConfig};
use bastion_store::TenantScope;
use bastion_types::SharedClock;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{T0, TestApp, app_dir, copy_dir, options, spawn_app_full};
use crate::records::create_quote;

const KEY: &str = "sk_test_bastion_server_it_0123";

struct Env {
    app: TestApp,
    _dir: tempfile::TempDir,
    psp: Arc<StripePsp>,
    finance: String,
    quote: String,
}

/// vendor-quote, with or without its four-eyes rule on `issue_refund` (the refund mechanics
/// are tested without it; `refund_waits_for_a_second_finance_user` with it).
fn app_variant(with_approval: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    copy_dir(&app_dir(), &root);
    if !with_approval {
        let manifest = std::fs::read_to_string(root.join("app.toml")).unwrap();
        let stripped: String = manifest
            .lines()
            .filter(|l| !l.starts_with("approval = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(
            stripped.len(),
            manifest.len(),
            "the approval rule was not found"
        );
        std::fs::write(root.join("app.toml"), stripped).unwrap();
    }
    (dir, root)
}

async fn env() -> Env {
    env_with(false).await
}

async fn env_with(with_approval: bool) -> Env {
    let (dir, root) = app_variant(with_approval);
    let clock: SharedClock = Arc::new(bastion_types::FixedClock::new(T0));
    let sandbox = Sandbox::new(SandboxConfig::new(KEY, clock).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sandbox.serve(listener));
    let psp =
        Arc::new(StripePsp::new(StripeConfig::new(&url, ApiKey::parse(KEY).unwrap())).unwrap());
    let dynpsp: Arc<dyn Psp> = psp.clone();
    let app = spawn_app_full(
        bastion_store::testing::backend_from_env(),
        options(false, &[]),
        Some(dynpsp),
        None,
        &root,
    )
    .await;
    let buyer = app.login("acme", "buyer").await;
    let quote = create_quote(&app, &buyer, "acme", "seller").await;
    let finance = app.login("acme", "finance").await;
    Env {
        app,
        _dir: dir,
        psp,
        finance,
        quote,
    }
}

fn charge(quote: &str, amount: i64, pm: &str) -> Value {
    json!({"quote_id": quote, "amount_minor": amount, "currency": "EUR", "payment_method": pm})
}

fn refund(quote: &str, amount: i64) -> Value {
    json!({"quote_id": quote, "amount_minor": amount, "reason": "requested_by_customer"})
}

fn problem_type(r: &crate::harness::Resp) -> String {
    r.json()["type"].as_str().unwrap_or_default().to_owned()
}

/// PaymentIntents charged at the sandbox (one `charge` balance transaction each).
async fn psp_charges(psp: &StripePsp) -> usize {
    psp.list_balance_transactions(TimeRange {
        from: 0,
        to: T0 + 1_000_000,
    })
    .await
    .unwrap()
    .iter()
    .filter(|t| t.kind == BalanceTransactionKind::Charge)
    .count()
}

async fn journal(app: &TestApp, reference: &str) -> Vec<bastion_store::ledger::Entry> {
    let mut tx = app
        .store
        .begin(TenantScope::pre_auth(app.tenant_id("acme")))
        .await
        .unwrap();
    let e = bastion_store::ledger::entries_for_reference(&mut tx, reference)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    e
}

async fn quote_status(app: &TestApp, token: &str, quote: &str) -> String {
    let (s, b) = app.call(token, "get_quote", &json!({"id": quote})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["result"]["status"].as_str().unwrap().to_owned()
}

async fn audit_bodies(app: &TestApp) -> Vec<Value> {
    app.audit_chain("acme")
        .await
        .records
        .into_iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn charge_happy_path_posts_one_entry_and_replays_with_the_header() {
    let e = env().await;
    let args = charge(&e.quote, 2500, "pm_card_visa");
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("\"dep-1\""))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("idempotent-replayed"), None);
    let res = r.json()["result"].clone();
    assert_eq!(res["status"], "succeeded");
    assert_eq!(res["amount_minor"], 2500);
    assert_eq!(res["captured_minor"], 2500);
    assert_eq!(res["quote_status"], "deposit_paid");
    let pi = res["psp_payment_id"].as_str().unwrap().to_owned();
    assert!(pi.starts_with("pi_"));

    // One capture entry and the PSP's fee on it, the payment row, the quote's status.
    let entries = journal(&e.app, &pi).await;
    let mut kinds: Vec<&str> = entries.iter().map(|x| x.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["capture", "fee"]);
    assert_eq!(
        quote_status(&e.app, &e.finance, &e.quote).await,
        "deposit_paid"
    );
    let mut tx = e
        .app
        .store
        .begin(TenantScope::pre_auth(e.app.tenant_id("acme")))
        .await
        .unwrap();
    let p = bastion_store::payments::by_psp_id(&mut tx, "stripe", &pi)
        .await
        .unwrap()
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(p.captured_minor, 2500);
    assert_eq!(p.status, "succeeded");

    // The same key, bare (lenient form), replays: same body, header, no second charge.
    let again = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("dep-1"))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["result"], res);
    assert_eq!(psp_charges(&e.psp).await, 1);
    assert_eq!(journal(&e.app, &pi).await.len(), 2, "capture and fee, once");

    // Same key, other payload: 422, nothing charged.
    let other = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 2600, "pm_card_visa"),
            Some("dep-1"),
        )
        .await;
    other.assert_problem(422);
    assert_eq!(
        problem_type(&other),
        "urn:bastion:problem:idempotency-key-mismatch"
    );
    assert_eq!(psp_charges(&e.psp).await, 1);
}

#[tokio::test]
async fn missing_or_malformed_key_is_400_and_audited() {
    let e = env().await;
    let args = charge(&e.quote, 100, "pm_card_visa");
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, None)
        .await;
    r.assert_problem(400);
    assert_eq!(
        problem_type(&r),
        "urn:bastion:problem:idempotency-key-missing"
    );
    let bad = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("\"unterminated"))
        .await;
    bad.assert_problem(400);
    assert_eq!(psp_charges(&e.psp).await, 0);
    let audit = audit_bodies(&e.app).await;
    assert!(audit.iter().any(|b| b["action"] == "tool.charge_deposit"
        && b["outcome"] == "deny"
        && b["detail"]["reason"] == "idempotency key missing"));
}

#[tokio::test]
async fn in_flight_key_is_409() {
    let e = env().await;
    let args = charge(&e.quote, 100, "pm_card_visa");
    // Claim the key as the first request would, then retry while it "runs".
    let fp = bastion_tools::payments::fingerprint("charge_deposit", &args);
    let finance_id = e.app.user("acme", "finance").id;
    let mut tx = e
        .app
        .store
        .begin(TenantScope::pre_auth(e.app.tenant_id("acme")))
        .await
        .unwrap();
    let c = bastion_store::idempotency::claim(&mut tx, finance_id, "busy", &fp, 60)
        .await
        .unwrap();
    assert_eq!(c, bastion_store::idempotency::Claim::New);
    tx.commit().await.unwrap();
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("busy"))
        .await;
    r.assert_problem(409);
    assert_eq!(
        problem_type(&r),
        "urn:bastion:problem:idempotency-key-in-flight"
    );
    assert_eq!(psp_charges(&e.psp).await, 0);
}

#[tokio::test]
async fn three_ds_hands_back_next_action_and_posts_nothing() {
    let e = env().await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 700, "pm_card_threeDSecure2Required"),
            Some("3ds-1"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let res = &r.json()["result"];
    assert_eq!(res["status"], "requires_action");
    assert!(res["next_action"]["type"].is_string(), "{res}");
    assert_eq!(res["captured_minor"], 0);
    assert_eq!(res["quote_status"], "deposit_pending");
    let pi = res["psp_payment_id"].as_str().unwrap();
    assert!(journal(&e.app, pi).await.is_empty());
    // Nothing captured: a refund is refused.
    let rf = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 100),
            Some("r-3ds"),
        )
        .await;
    rf.assert_problem(422);
    assert_eq!(
        problem_type(&rf),
        "urn:bastion:problem:refund-exceeds-capture"
    );
}

#[tokio::test]
async fn decline_is_402_stored_and_replayed() {
    let e = env().await;
    let args = charge(&e.quote, 900, "pm_card_chargeDeclined");
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("dec-1"))
        .await;
    r.assert_problem(402);
    assert_eq!(problem_type(&r), "urn:bastion:problem:payment-declined");
    let again = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("dec-1"))
        .await;
    again.assert_problem(402);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let audit = audit_bodies(&e.app).await;
    assert!(audit.iter().any(|b| b["action"] == "tool.charge_deposit"
        && b["outcome"] == "fail"
        && b["detail"]["reason"] == "payment declined"));
    assert_ne!(
        quote_status(&e.app, &e.finance, &e.quote).await,
        "deposit_paid"
    );
}

#[tokio::test]
async fn velocity_limit_refuses_and_audits_and_releases_the_key() {
    let e = env().await;
    // vendor-quote: at most 5 charges per card in 10 minutes.
    for i in 0..5 {
        let r = e
            .app
            .call_with_key(
                &e.finance,
                "charge_deposit",
                &charge(&e.quote, 100, "pm_card_mastercard"),
                Some(&format!("v-{i}")),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let args = charge(&e.quote, 100, "pm_card_mastercard");
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("v-5"))
        .await;
    r.assert_problem(429);
    assert_eq!(problem_type(&r), "urn:bastion:problem:payment-velocity");
    assert_eq!(psp_charges(&e.psp).await, 5);
    let audit = audit_bodies(&e.app).await;
    assert!(audit.iter().any(|b| b["action"] == "tool.charge_deposit"
        && b["outcome"] == "deny"
        && b["detail"]["reason"] == "velocity limit"));
    // The key was released (the refused attempt left no claim): once the window has
    // passed the same key charges.
    e.app.clock.advance(601);
    let finance = e.app.login("acme", "finance").await;
    let ok = e
        .app
        .call_with_key(&finance, "charge_deposit", &args, Some("v-5"))
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(ok.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn refunds_within_capture_and_over_capture_refused() {
    let e = env().await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 10_000, "pm_card_visa"),
            Some("c-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let pi = r.json()["result"]["psp_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 4_000),
            Some("r-1"),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    let res = &ok.json()["result"];
    assert_eq!(res["refunded_minor"], 4_000);
    assert_eq!(res["quote_status"], "partially_refunded");
    assert_eq!(res["refund"]["amount_minor"], 4_000);
    let over = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 6_001),
            Some("r-2"),
        )
        .await;
    over.assert_problem(422);
    assert_eq!(
        problem_type(&over),
        "urn:bastion:problem:refund-exceeds-capture"
    );
    let rest = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 6_000),
            Some("r-3"),
        )
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    assert_eq!(rest.json()["result"]["quote_status"], "refunded");
    let mut kinds: Vec<String> = journal(&e.app, &pi)
        .await
        .into_iter()
        .map(|x| x.kind)
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["capture", "fee", "refund", "refund"]);
}

#[tokio::test]
async fn p5_two_concurrent_refunds_of_60_on_100_one_succeeds() {
    let e = env().await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 10_000, "pm_card_visa"),
            Some("c-p5"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let pi = r.json()["result"]["psp_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let finance2 = e.app.login("acme", "finance2").await;
    let a1 = refund(&e.quote, 6_000);
    let a2 = refund(&e.quote, 6_000);
    let (x, y) = tokio::join!(
        e.app
            .call_with_key(&e.finance, "issue_refund", &a1, Some("p5-a")),
        e.app
            .call_with_key(&finance2, "issue_refund", &a2, Some("p5-b")),
    );
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 422]);
    let refunds = journal(&e.app, &pi)
        .await
        .into_iter()
        .filter(|x| x.kind == "refund")
        .count();
    assert_eq!(refunds, 1);
}

#[tokio::test]
async fn buyer_is_forbidden_and_audited_and_other_tenants_quote_is_404() {
    let e = env().await;
    let buyer = e.app.login("acme", "buyer").await;
    let r = e
        .app
        .call_with_key(
            &buyer,
            "charge_deposit",
            &charge(&e.quote, 100, "pm_card_visa"),
            Some("b-1"),
        )
        .await;
    r.assert_problem(403);
    let audit = audit_bodies(&e.app).await;
    assert!(audit.iter().any(|b| b["action"] == "tool.charge_deposit"
        && b["outcome"] == "deny"
        && b["actor"] == json!(e.app.user("acme", "buyer").id.to_string())));
    let g_buyer = e.app.login("globex", "buyer").await;
    let foreign = create_quote(&e.app, &g_buyer, "globex", "seller").await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&foreign, 100, "pm_card_visa"),
            Some("x-1"),
        )
        .await;
    r.assert_problem(404);
    assert_eq!(psp_charges(&e.psp).await, 0);
}

#[tokio::test]
async fn refund_waits_for_a_second_finance_user_then_runs_once() {
    let e = env_with(true).await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 10_000, "pm_card_visa"),
            Some("c-appr"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let held = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 2_500),
            Some("r-appr"),
        )
        .await;
    assert_eq!(
        held.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&held.body)
    );
    let id = held.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(held.json()["status"], "pending");
    // The approver sees what is to be approved: the money tool's fixed arguments are shown.
    let shown = &held.json()["arguments"];
    assert_eq!(shown["quote_id"], e.quote.as_str(), "{shown}");
    assert_eq!(shown["amount_minor"], 2_500, "{shown}");
    assert_eq!(shown["reason"], "requested_by_customer", "{shown}");
    // The requester cannot approve it; a second Finance user can, once.
    let own = e
        .app
        .post_json(
            &format!("/v1/approvals/{id}/approve"),
            Some(&e.finance),
            &json!({}),
        )
        .await;
    own.assert_problem(403);
    let other = e.app.login("acme", "finance2").await;
    let ok = e
        .app
        .post_json(
            &format!("/v1/approvals/{id}/approve"),
            Some(&other),
            &json!({}),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    let res = &ok.json()["result"];
    assert_eq!(res["refunded_minor"], 2_500);
    assert_eq!(res["refund"]["amount_minor"], 2_500);
    assert_eq!(ok.json()["approval"]["status"], "executed");
    let again = e
        .app
        .post_json(
            &format!("/v1/approvals/{id}/approve"),
            Some(&other),
            &json!({}),
        )
        .await;
    again.assert_problem(409);
}

#[tokio::test]
async fn a_day_of_tool_charges_and_refunds_reconciles_against_the_psp() {
    use bastion_ledger::reconcile::{self, Day, Reconciliation};
    let e = env().await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 12_345, "pm_card_visa"),
            Some("rc-1"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let ok = e
        .app
        .call_with_key(
            &e.finance,
            "issue_refund",
            &refund(&e.quote, 2_345),
            Some("rr-1"),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    let day = Day::of(T0);
    let side = reconcile::fetch_psp_side(e.psp.as_ref(), Some(e.psp.as_ref()), day)
        .await
        .unwrap();
    let report = reconcile::reconcile(&e.app.store, &side, Reconciliation { day, tenant: None })
        .await
        .unwrap();
    assert!(
        report.is_clean(),
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(
        report.matched >= 2,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
}

/// A 3DS payment is captured by the webhook worker when `payment_intent.succeeded` arrives,
/// once: a redelivered or second `succeeded` event posts nothing more.
#[tokio::test]
async fn three_ds_success_webhook_posts_the_capture_once() {
    use bastion_store::{jobs, webhook};
    use bastion_tools::worker::{Worker, WorkerConfig};
    let e = env().await;
    let r = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 700, "pm_card_threeDSecure2Required"),
            Some("3ds-w"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let pi = r.json()["result"]["psp_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two verified events as the receiver stores them (inbox + job each).
    for (i, created) in [(1, T0 + 5), (2, T0 + 6)] {
        let body = json!({"id": format!("evt_{i}"), "type": "payment_intent.succeeded",
            "data": {"object": {"id": pi, "object": "payment_intent", "status": "succeeded"}}})
        .to_string();
        let mut sys = e.app.store.system().await.unwrap();
        let id = format!("evt_{i}");
        webhook::record_event(
            &mut sys,
            &webhook::NewEvent {
                provider: "stripe",
                event_id: &id,
                event_type: "payment_intent.succeeded",
                object_id: Some(&pi),
                ordering_key: created,
                body: &body,
            },
        )
        .await
        .unwrap();
        jobs::enqueue(
            &mut sys,
            &jobs::NewJob {
                kind: "webhook.stripe",
                payload: &json!({"provider": "stripe", "event_id": id}).to_string(),
                max_attempts: 3,
                delay_secs: 0,
            },
        )
        .await
        .unwrap();
        sys.commit().await.unwrap();
    }
    let worker = Worker::new(e.app.store.clone(), WorkerConfig::named("it"))
        .with_app_handlers(Arc::clone(&e.app.spec));
    let report = worker.run_once().await.unwrap();
    assert_eq!(report.done, 2, "{report:?}");
    let entries = journal(&e.app, &pi).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, "capture");
    let mut tx = e
        .app
        .store
        .begin(TenantScope::pre_auth(e.app.tenant_id("acme")))
        .await
        .unwrap();
    let p = bastion_store::payments::by_psp_id(&mut tx, "stripe", &pi)
        .await
        .unwrap()
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!((p.status.as_str(), p.captured_minor), ("succeeded", 700));
    // The quote follows the payment: deposit_pending at the 3DS step, deposit_paid now.
    assert_eq!(
        quote_status(&e.app, &e.finance, &e.quote).await,
        "deposit_paid"
    );
    // Bastion's refundable amount follows the capture (the sandbox itself still holds the
    // intent in requires_action: the customer's 3DS step is simulated by the events only).
    let mut tx = e
        .app
        .store
        .begin(TenantScope::pre_auth(e.app.tenant_id("acme")))
        .await
        .unwrap();
    let pos = bastion_ledger::position(
        &mut tx,
        &bastion_ledger::Reference::parse(&pi).unwrap(),
        bastion_types::Currency::parse("EUR").unwrap(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!((pos.captured_minor, pos.refundable_minor), (700, 700));
}

#[tokio::test]
async fn a_deposit_in_another_currency_than_the_quote_is_refused_before_anything() {
    let e = env().await;
    let mut args = charge(&e.quote, 1_000, "pm_card_visa");
    args["currency"] = json!("JPY");
    let r = e
        .app
        .call_with_key(&e.finance, "charge_deposit", &args, Some("cur-1"))
        .await;
    r.assert_problem(422);
    assert_eq!(psp_charges(&e.psp).await, 0);
    // The key was not claimed: the corrected request goes through with it.
    let ok = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 1_000, "pm_card_visa"),
            Some("cur-1"),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
}

#[tokio::test]
async fn a_later_deposit_waiting_for_3ds_does_not_make_a_paid_quote_pending() {
    let e = env().await;
    let paid = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 1_000, "pm_card_visa"),
            Some("st-1"),
        )
        .await;
    assert_eq!(paid.json()["result"]["quote_status"], "deposit_paid");
    let pending = e
        .app
        .call_with_key(
            &e.finance,
            "charge_deposit",
            &charge(&e.quote, 500, "pm_card_threeDSecure2Required"),
            Some("st-2"),
        )
        .await;
    assert_eq!(pending.status, StatusCode::OK);
    assert_eq!(pending.json()["result"]["status"], "requires_action");
    assert_eq!(pending.json()["result"]["quote_status"], "deposit_paid");
    assert_eq!(
        quote_status(&e.app, &e.finance, &e.quote).await,
        "deposit_paid"
    );
}
