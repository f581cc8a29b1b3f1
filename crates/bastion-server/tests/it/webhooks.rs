//! `POST /v1/webhooks/{provider}`: verified over the raw bytes (P3), both timestamp
//! directions (P2), truncated signatures (P1), deduplicated redeliveries (P7), rotation,
//! and a durable inbox + job per new event, all audited on the system chain.

use std::sync::Arc;

use axum::body::Body;
use bastion_payments::webhook::stripe::sign;
use bastion_payments::webhook::{ProviderKind, StripeSecret, WebhookVerifier};
use bastion_server::webhooks::WebhookEndpoint;
use bastion_store::{audit, jobs, webhook};
use bastion_types::SharedClock;
use http::Request;

use crate::harness::{T0, TestApp, options, spawn_app_with};

const OLD: &str = "whsec_old_secret_for_rotation_tests";
const NEW: &str = "whsec_new_secret_for_rotation_tests";

async fn app() -> TestApp {
    let clock: SharedClock = Arc::new(bastion_types::FixedClock::new(T0));
    let verifier = WebhookVerifier::new(ProviderKind::Stripe, &[NEW, OLD], 300, clock).unwrap();
    let mut opts = options(false, &[]);
    opts.webhooks = vec![WebhookEndpoint {
        provider: "stripe".to_owned(),
        verifier,
    }];
    spawn_app_with(opts).await
}

fn event(id: &str, kind: &str, object_created: i64) -> String {
    // Pretty-printed on purpose (P3): verification must not re-serialize.
    format!(
        "{{\n  \"id\": \"{id}\",\n  \"object\": \"event\",\n  \"type\": \"{kind}\",\n  \"created\": {T0},\n  \"data\": {{\n    \"object\": {{ \"id\": \"pi_123\", \"object\": \"payment_intent\", \"status\": \"succeeded\", \"created\": {object_created} }}\n  }}\n}}"
    )
}

async fn deliver(
    app: &TestApp,
    provider: &str,
    sig: Option<&str>,
    body: &str,
) -> crate::harness::Resp {
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("/v1/webhooks/{provider}"))
        .header("content-type", "application/json");
    if let Some(s) = sig {
        req = req.header("stripe-signature", s);
    }
    app.send(req.body(Body::from(body.to_owned())).unwrap())
        .await
}

fn text(r: &crate::harness::Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn secret(s: &str) -> StripeSecret {
    StripeSecret::parse(s).unwrap()
}

async fn inbox_and_jobs(app: &TestApp) -> (usize, i64) {
    let mut sys = app.store.system().await.unwrap();
    let ev = webhook::get_event(&mut sys, "stripe", "evt_1")
        .await
        .unwrap();
    let queued = jobs::claim_due(&mut sys, "probe", 1, 100).await.unwrap();
    drop(sys);
    (
        usize::from(ev.is_some()),
        i64::try_from(queued.len()).unwrap(),
    )
}

#[tokio::test]
async fn p3_p7_a_pretty_printed_event_is_accepted_once_and_redeliveries_are_duplicates() {
    let app = app().await;
    let body = event("evt_1", "payment_intent.succeeded", T0 - 10);
    let sig = sign(&secret(NEW), T0, body.as_bytes());
    let r = deliver(&app, "stripe", Some(&sig), &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", text(&r));
    assert_eq!(r.json()["duplicate"], false);
    for _ in 0..4 {
        let r = deliver(&app, "stripe", Some(&sig), &body).await;
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(r.json()["duplicate"], true);
    }
    let (inbox, queued) = inbox_and_jobs(&app).await;
    assert_eq!(
        (inbox, queued),
        (1, 1),
        "one inbox row and one job for five deliveries"
    );
    let mut sys = app.store.system().await.unwrap();
    let chain = audit::system_read_chain(&mut sys).await.unwrap();
    let actions: Vec<String> = chain
        .records
        .iter()
        .filter_map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).ok()?["action"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|a| a.starts_with("webhook."))
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "webhook.received").count(),
        1
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "webhook.duplicate").count(),
        4
    );
}

#[tokio::test]
async fn p1_p2_forged_truncated_stale_and_future_signatures_are_401_and_change_nothing() {
    let app = app().await;
    let body = event("evt_1", "payment_intent.succeeded", T0 - 10);
    let good = sign(&secret(NEW), T0, body.as_bytes());
    let v1 = good.split("v1=").nth(1).unwrap().to_owned();
    let forged = sign(&secret("whsec_attacker_guess"), T0, body.as_bytes());
    let cases = [
        Some(forged.clone()),
        Some(format!("t={T0},v1=")),
        Some(format!("t={T0},v1={}", &v1[..32])),
        Some(format!("t={T0},v0={v1}")),
        Some(sign(&secret(NEW), T0 + 301, body.as_bytes())),
        Some(sign(&secret(NEW), T0 - 301, body.as_bytes())),
        None,
    ];
    for sig in &cases {
        let r = deliver(&app, "stripe", sig.as_deref(), &body).await;
        r.assert_problem(401);
        assert_eq!(
            r.json()["type"],
            "urn:bastion:problem:webhook-signature",
            "{sig:?}"
        );
        assert!(
            !text(&r).contains(&v1),
            "the expected signature never leaks"
        );
    }
    // The body changed by one byte after signing.
    let tampered = body.replacen("succeeded", "succeedee", 1);
    deliver(&app, "stripe", Some(&good), &tampered)
        .await
        .assert_problem(401);
    // Re-serialized JSON (not the bytes that were signed) fails too.
    let compact =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&body).unwrap()).unwrap();
    deliver(&app, "stripe", Some(&good), &compact)
        .await
        .assert_problem(401);
    assert_eq!(
        inbox_and_jobs(&app).await,
        (0, 0),
        "nothing stored, nothing queued"
    );
    let mut sys = app.store.system().await.unwrap();
    let refused = audit::system_read_chain(&mut sys)
        .await
        .unwrap()
        .records
        .iter()
        .filter(|r| r.body.contains("\"webhook.refused\""))
        .count();
    assert_eq!(refused, cases.len() + 2, "every refusal is audited");
    // An unknown provider is not an endpoint.
    deliver(&app, "paypal", Some(&good), &body)
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn both_secrets_verify_during_rotation() {
    let app = app().await;
    for (i, s) in [OLD, NEW].iter().enumerate() {
        let body = event(&format!("evt_r{i}"), "payment_intent.processing", T0 - 20);
        let sig = sign(&secret(s), T0, body.as_bytes());
        let r = deliver(&app, "stripe", Some(&sig), &body).await;
        assert_eq!(r.status.as_u16(), 200, "{s}: {}", text(&r));
    }
}

// --- the job worker: P6 and P8 -----------------------------------------------------------

fn pi_event(id: &str, kind: &str, status: &str, created: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"object\":\"event\",\"type\":\"{kind}\",\"created\":{created},\"data\":{{\"object\":{{\"id\":\"pi_p6\",\"object\":\"payment_intent\",\"status\":\"{status}\",\"created\":{}}}}}}}",
        T0 - 100
    )
}

fn worker(app: &TestApp) -> bastion_tools::worker::Worker {
    bastion_tools::worker::Worker::new(
        app.store.clone(),
        bastion_tools::worker::WorkerConfig::named("test-worker"),
    )
    .with_standard_handlers()
}

#[tokio::test]
async fn p6_a_newer_succeeded_event_is_not_overwritten_by_an_older_processing_one() {
    use bastion_store::{TenantScope, payments, records};
    let app = app().await;
    let tenant = app.tenant_id("acme");
    let buyer = app.user("acme", "buyer").id;
    let mut tx = app
        .store
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    let quote = records::insert_record(
        &mut tx,
        "quote",
        buyer,
        serde_json::json!({"title": "q"}),
        &[],
    )
    .await
    .unwrap();
    let payment = payments::insert(
        &mut tx,
        &payments::NewPayment {
            record_id: quote.id,
            psp: "stripe",
            psp_payment_id: "pi_p6",
            amount: bastion_types::Money {
                minor: 10_000,
                currency: bastion_types::Currency::parse("EUR").unwrap(),
            },
            status: "requires_confirmation",
            status_version: 0,
            customer_id: buyer,
            card_fingerprint: None,
            next_action: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The newer event arrives and is handled first; the older one after it.
    for body in [
        pi_event("evt_new", "payment_intent.succeeded", "succeeded", T0 - 10),
        pi_event(
            "evt_old",
            "payment_intent.processing",
            "processing",
            T0 - 20,
        ),
    ] {
        let sig = sign(&secret(NEW), T0, body.as_bytes());
        assert_eq!(
            deliver(&app, "stripe", Some(&sig), &body)
                .await
                .status
                .as_u16(),
            200
        );
        let report = worker(&app).run_once().await.unwrap();
        assert_eq!((report.done, report.retried, report.dead), (1, 0, 0));
    }
    let mut tx = app
        .store
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    let now = payments::get(&mut tx, payment.id).await.unwrap().unwrap();
    assert_eq!(now.status, "succeeded");
    // Both events were applied or refused on the tenant's chain, with the outcome.
    let chain = bastion_store::audit::read_chain(&mut tx).await.unwrap();
    let status_records: Vec<&str> = chain
        .records
        .iter()
        .filter(|r| r.body.contains("\"payment.status\""))
        .map(|r| r.body.as_str())
        .collect();
    assert_eq!(status_records.len(), 2);
    assert!(
        status_records
            .iter()
            .any(|b| b.contains("\"processing\"") && b.contains("\"applied\":false"))
    );
    drop(tx);
    // A second round has nothing to do; redelivery of the old event changes nothing.
    assert_eq!(worker(&app).run_once().await.unwrap().done, 0);
}

struct AlwaysFails;

impl bastion_tools::worker::JobHandler for AlwaysFails {
    fn handle<'a>(
        &'a self,
        _: &'a bastion_store::Store,
        _: &'a bastion_store::jobs::Job,
    ) -> bastion_tools::worker::HandlerFuture<'a> {
        Box::pin(async { Err(bastion_tools::worker::JobFailure("downstream refused")) })
    }
}

#[tokio::test]
async fn p8_a_failing_handler_is_retried_with_backoff_then_dead_lettered_with_an_alert_and_replayable()
 {
    let app = app().await;
    let mut sys = app.store.system().await.unwrap();
    let id = jobs::enqueue(
        &mut sys,
        &jobs::NewJob {
            kind: "test.always_fails",
            payload: "{}",
            max_attempts: 3,
            delay_secs: 0,
        },
    )
    .await
    .unwrap();
    sys.commit().await.unwrap();
    let w = bastion_tools::worker::Worker::new(
        app.store.clone(),
        bastion_tools::worker::WorkerConfig::named("test-worker"),
    )
    .with_handler("test.always_fails", Arc::new(AlwaysFails));
    let mut retried = 0;
    let mut dead = 0;
    for _ in 0..10 {
        let r = w.run_once().await.unwrap();
        retried += r.retried;
        dead += r.dead;
        // Past any backoff (cap 900 s).
        app.clock.advance(901);
    }
    assert_eq!(
        (retried, dead),
        (2, 1),
        "two retries, then the dead-letter queue"
    );
    let mut sys = app.store.system().await.unwrap();
    let dead_jobs = jobs::list_dead(&mut sys, 10).await.unwrap();
    assert_eq!(dead_jobs.len(), 1);
    assert_eq!(dead_jobs[0].id, id);
    assert_eq!(
        dead_jobs[0].last_error.as_deref(),
        Some("downstream refused")
    );
    let alerts = audit::system_read_chain(&mut sys)
        .await
        .unwrap()
        .records
        .iter()
        .filter(|r| r.body.contains("\"job.dead_lettered\""))
        .count();
    assert_eq!(alerts, 1);
    // Nothing lost: replay puts it back in the queue.
    jobs::replay_dead(&mut sys, id).await.unwrap();
    sys.commit().await.unwrap();
    let r = w.run_once().await.unwrap();
    assert_eq!(r.retried, 1, "the replayed job ran again");
}

/// Anyone can send forged webhooks, and the audit log is append-only: per provider and
/// minute only the first refusals are recorded, and the next recorded one says how many were
/// not. Every forged delivery is still refused.
#[tokio::test]
async fn a_flood_of_forged_webhooks_writes_a_bounded_number_of_audit_records() {
    let app = app().await;
    let body = event("evt_flood", "payment_intent.succeeded", T0 - 10);
    let forged = sign(&secret("whsec_attacker_guess"), T0, body.as_bytes());
    let cap = bastion_server::webhooks::REFUSALS_AUDITED_PER_MINUTE as usize;
    for _ in 0..cap + 10 {
        deliver(&app, "stripe", Some(&forged), &body)
            .await
            .assert_problem(401);
    }
    let refusals = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            let mut sys = store.system().await.unwrap();
            audit::system_read_chain(&mut sys)
                .await
                .unwrap()
                .records
                .into_iter()
                .filter(|r| r.body.contains("\"webhook.refused\""))
                .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(refusals(&app).await.len(), cap);
    app.clock.advance(60);
    deliver(&app, "stripe", Some(&forged), &body)
        .await
        .assert_problem(401);
    let all = refusals(&app).await;
    assert_eq!(all.len(), cap + 1);
    assert_eq!(all[cap]["detail"]["refusals_not_recorded_before"], 10);
}
