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
