//! U3 (allows and denies are both audited, the chain verifies), U4 (audit sink unavailable
//! → 503 and nothing written), no raw PII in audit records.

use std::sync::Arc;

use bastion_server::{AppState, router};
use bastion_store::Store;
use bastion_tools::Pipeline;
use bastion_types::SharedClock;
use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Resp, options, send_to, spawn_app, spawn_app_on};
use crate::records::{create_quote, quote_args};

#[tokio::test]
async fn u3_every_allow_and_deny_is_a_verified_audit_record() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let seller = app.login("acme", "seller").await;
    let before = app.audit_chain("acme").await;
    let seller_id = app.user("acme", "seller").id.to_string();
    for i in 0..10 {
        if i % 2 == 0 {
            let (s, _) = app.call(&buyer, "list_quotes", &json!({})).await;
            assert_eq!(s, StatusCode::OK);
        } else {
            let (s, _) = app
                .call(&buyer, "create_quote", &quote_args(&seller_id))
                .await;
            assert_eq!(s, StatusCode::OK);
        }
    }
    for i in 0..10 {
        if i % 2 == 0 {
            // Role does not allow the action.
            let (s, _) = app
                .call(&seller, "create_quote", &quote_args(&seller_id))
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN);
        } else {
            // Invalid input.
            let (s, _) = app.call(&buyer, "create_quote", &json!({"title": 5})).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
    let after = app.audit_chain("acme").await;
    let report = bastion_audit::verify(&after.records, after.head).unwrap();
    assert_eq!(report.count as usize, after.records.len());
    let new: Vec<Value> = after.records[before.records.len()..]
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(new.len(), 20, "{new:#?}");
    let allows = new.iter().filter(|e| e["outcome"] == "allow").count();
    let denies = new.iter().filter(|e| e["outcome"] == "deny").count();
    assert_eq!((allows, denies), (10, 10));
    for e in &new {
        let action = e["action"].as_str().unwrap();
        assert!(
            action == "tool.list_quotes" || action == "tool.create_quote",
            "{e}"
        );
        assert!(e["actor"].is_string(), "{e}");
        assert_eq!(e["tenant_id"], app.tenant_id("acme").to_string());
    }
    // Nothing landed in the other tenant's chain.
    let g = app.audit_chain("globex").await;
    for r in &g.records {
        assert!(!r.body.contains("tool."), "{}", r.body);
    }
}

#[tokio::test]
async fn audit_records_hold_no_raw_pii() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let email = "jane.doe.pii@example.org";
    let phone = "+44 20 7946 0958";
    let mut args = quote_args(&app.user("acme", "seller").id.to_string());
    args["contact_email"] = json!(email);
    args["contact_phone"] = json!(phone);
    args["note"] = json!("ordinary note");
    let (s, body) = app.call(&buyer, "create_quote", &args).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    // An authorized reader still gets the value back.
    let (s, body) = app.call(&buyer, "get_quote", &json!({"id": id})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["result"]["contact_email"], email);
    // Also in a refused call (wrong role) and in an invalid one.
    let seller = app.login("acme", "seller").await;
    let (s, _) = app.call(&seller, "create_quote", &args).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut bad = args.clone();
    bad["title"] = json!("");
    let (s, _) = app.call(&buyer, "create_quote", &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let bodies = app.all_audit_bodies().await;
    assert!(
        bodies
            .iter()
            .filter(|b| b.contains("tool.create_quote"))
            .count()
            >= 3
    );
    for b in &bodies {
        assert!(
            !b.contains(email) && !b.contains("jane.doe"),
            "email in audit: {b}"
        );
        assert!(
            !b.contains(phone) && !b.contains("7946"),
            "phone in audit: {b}"
        );
    }
}

async fn tool_call(router: &axum::Router, token: &str, tool: &str, args: &Value) -> Resp {
    send_to(
        router,
        http::Request::builder()
            .method("POST")
            .uri(format!("/v1/tools/{tool}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::from(args.to_string()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn u4_read_only_audit_store_refuses_with_503_and_writes_nothing() {
    let app = spawn_app_on(bastion_store::BackendKind::Sqlite, options(false, &[])).await;
    let buyer = app.login("acme", "buyer").await;
    let seller = app.login("acme", "seller").await;
    let _ = create_quote(&app, &buyer, "acme", "seller").await;
    let shared: SharedClock = Arc::new(app.clock.clone());
    let ro = Store::open_sqlite_read_only(&app.dir.path().join("bastion.db"), Arc::clone(&shared))
        .await
        .unwrap();
    let pipeline = Pipeline::new(
        Arc::clone(&app.spec),
        Arc::clone(&app.authz),
        ro.clone(),
        shared,
    )
    .unwrap();
    let ro_router = router(AppState {
        identity: Arc::clone(&app.identity),
        pipeline,
        store: ro,
        options: Arc::new(options(false, &[])),
        agent: None,
    });
    let before_rows = app.snapshot("acme").await;
    let before_chain = app.audit_chain("acme").await;
    let seller_id = app.user("acme", "seller").id.to_string();
    for (token, tool, args) in [
        (&buyer, "create_quote", quote_args(&seller_id)),
        (&buyer, "list_quotes", json!({})),
        (&seller, "create_quote", quote_args(&seller_id)),
        (&buyer, "create_quote", json!({"bad": true})),
    ] {
        let r = tool_call(&ro_router, token, tool, &args).await;
        r.assert_problem(503);
        assert_eq!(
            r.json()["type"],
            "urn:bastion:problem:unavailable",
            "{tool}"
        );
    }
    assert_eq!(app.snapshot("acme").await, before_rows);
    assert_eq!(app.audit_chain("acme").await, before_chain);
}

#[tokio::test]
async fn u4_closed_store_answers_503_and_writes_nothing() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let before_rows = app.snapshot("acme").await;
    let before_chain = app.audit_chain("acme").await;
    app.store.close().await;
    let seller_id = app.user("acme", "seller").id.to_string();
    let r = tool_call(&app.router, &buyer, "create_quote", &quote_args(&seller_id)).await;
    r.assert_problem(503);
    let r = app.get("/readyz", None).await;
    r.assert_problem(503);
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    // Reopen the database: nothing was written.
    let shared: SharedClock = Arc::new(app.clock.clone());
    let reopened = match &app.pg {
        Some(db) => db.open(shared).await.unwrap(),
        None => Store::open_sqlite(&app.dir.path().join("bastion.db"), shared)
            .await
            .unwrap(),
    };
    let mut tx = reopened
        .begin(bastion_store::TenantScope::pre_auth(app.tenant_id("acme")))
        .await
        .unwrap();
    let chain = bastion_store::audit::read_chain(&mut tx).await.unwrap();
    let (_, total) = bastion_store::records::list_records(
        &mut tx,
        "quote",
        &bastion_store::ListFilter::All,
        bastion_store::Page {
            offset: 0,
            limit: 100,
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(chain, before_chain);
    assert_eq!(
        total as usize,
        before_rows.keys().filter(|(e, _)| e == "quote").count()
    );
}
