//! Human approval (issue 4 item 4; cases A1, A2; tabletop "a refund approved by the same
//! user who requested it → refused") through the whole stack, on a test manifest: the
//! vendor-quote app plus `close_quote`, a high-risk `record.update` with
//! `approval = { role = "finance", mfa_max_age_secs = 300, ttl_secs = 3600 }`.

use bastion_tools::{ApprovalStatus, CallContext};
use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Resp, TestApp, app_dir, copy_dir, options, spawn_app_in};
use crate::records::create_quote;

const CLOSE_QUOTE: &str = r#"
[tools.close_quote]
kind = "record.update"
entity = "quote"
risk = "high"
description = "Close a quote; held until a second finance user approves."
input_schema = "schemas/close_quote.input.json"
output_schema = "schemas/quote.output.json"
set = { status = "closed" }
approval = { role = "finance", mfa_max_age_secs = 300, ttl_secs = 3600 }
"#;

const CLOSE_QUOTE_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "close_quote input",
  "type": "object",
  "additionalProperties": false,
  "required": ["id"],
  "properties": {
    "id": { "type": "string", "format": "uuid" },
    "note": { "type": "string", "maxLength": 2000 },
    "contact_email": { "type": "string", "maxLength": 254 }
  }
}"#;

const CLOSE_QUOTE_POLICY: &str = r#"
@id("finance-close-quote")
permit (principal in Role::"finance", action == Action::"close_quote", resource is Quote);
"#;

/// The test app and the directory holding its manifest (kept alive with it).
async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    copy_dir(&app_dir(), &root);
    let mut manifest = std::fs::read_to_string(root.join("app.toml")).unwrap();
    manifest.push_str(CLOSE_QUOTE);
    std::fs::write(root.join("app.toml"), manifest).unwrap();
    std::fs::write(
        root.join("schemas/close_quote.input.json"),
        CLOSE_QUOTE_SCHEMA,
    )
    .unwrap();
    let mut policy = std::fs::read_to_string(root.join("policies/vendor-quote.cedar")).unwrap();
    policy.push_str(CLOSE_QUOTE_POLICY);
    std::fs::write(root.join("policies/vendor-quote.cedar"), policy).unwrap();
    let app = spawn_app_in(
        bastion_store::testing::backend_from_env(),
        options(false, &[]),
        &root,
    )
    .await;
    (app, dir)
}

async fn quote_status(app: &TestApp, tenant: &str, id: &str) -> (i64, Value) {
    let snap = app.snapshot(tenant).await;
    let (_, (version, data)) = snap
        .iter()
        .find(|((e, rid), _)| e == "quote" && rid.to_string() == id)
        .unwrap();
    (*version, data["status"].clone())
}

/// Audit records of `tenant` whose body contains every needle.
async fn audited(app: &TestApp, tenant: &str, needles: &[&str]) -> Vec<String> {
    app.audit_chain(tenant)
        .await
        .records
        .into_iter()
        .map(|r| r.body)
        .filter(|b| needles.iter().all(|n| b.contains(n)))
        .collect()
}

async fn quote_count(app: &TestApp) -> usize {
    app.snapshot("acme")
        .await
        .keys()
        .filter(|(e, _)| e == "quote")
        .count()
}

async fn approve(app: &TestApp, token: &str, id: &str) -> Resp {
    app.post_json(
        &format!("/v1/approvals/{id}/approve"),
        Some(token),
        &json!({}),
    )
    .await
}

/// A quote of acme (buyer → seller) and a held `close_quote` on it by `finance`: the 202.
async fn held(app: &TestApp) -> (String, Value) {
    let buyer = app.login("acme", "buyer").await;
    let quote = create_quote(app, &buyer, "acme", "seller").await;
    let finance = app.login("acme", "finance").await;
    let r = app
        .post_json(
            "/v1/tools/close_quote",
            Some(&finance),
            &json!({"id": quote, "note": "duplicate request", "contact_email": "a@b.example"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/approvals/{id}").as_str())
    );
    (quote, body)
}

#[tokio::test]
async fn a_held_call_answers_202_and_runs_once_as_the_requester_when_another_finance_user_approves()
{
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let finance_id = app.user("acme", "finance").id.to_string();

    // The approval record: exact arguments (pii redacted for display), hash, requester.
    assert_eq!(body["tool"], "close_quote");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["requester"], finance_id.as_str());
    assert_eq!(body["arguments"]["id"], quote.as_str());
    assert_eq!(body["arguments"]["note"], "duplicate request");
    assert_eq!(body["arguments"]["contact_email"], "[redacted:pii]");
    let expected_hash = bastion_store::approvals::args_hash(
        &json!({"id": quote, "note": "duplicate request", "contact_email": "a@b.example"}),
    );
    assert_eq!(body["args_hash"], expected_hash.as_str());
    assert_eq!(body["created_at"], app.now());
    assert_eq!(body["expires_at"], app.now() + 3600);
    assert!(!r#body.to_string().contains("a@b.example"));

    // Nothing executed: the quote is still open, version 1.
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    assert_eq!(
        audited(&app, "acme", &["approval.requested", &id, &expected_hash])
            .await
            .len(),
        1
    );
    assert!(
        audited(&app, "acme", &["tool.close_quote"])
            .await
            .is_empty()
    );

    // The requester cannot approve it: refused and audited; still pending.
    let finance = app.login("acme", "finance").await;
    let r = approve(&app, &finance, &id).await;
    r.assert_problem(403);
    assert_eq!(r.json()["type"], "urn:bastion:problem:self-approval");
    assert_eq!(
        audited(
            &app,
            "acme",
            &["approval.approved", "deny", "cannot decide their own"]
        )
        .await
        .len(),
        1
    );
    // Another role (seller, buyer) cannot either.
    for other in ["seller", "buyer"] {
        let t = app.login("acme", other).await;
        let r = approve(&app, &t, &id).await;
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
            "{other}: {}",
            r.status
        );
        assert_eq!(
            app.get(&format!("/v1/approvals/{id}"), Some(&t))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));

    // The second finance user sees it in the list and approves: it runs once, as finance.
    let finance2 = app.login("acme", "finance2").await;
    let list = app.get("/v1/approvals", Some(&finance2)).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    let r = approve(&app, &finance2, &id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let v = r.json();
    assert_eq!(v["approval"]["status"], "executed");
    assert_eq!(v["result"]["status"], "closed");
    assert_eq!(v["result"]["note"], "duplicate request");
    assert_eq!(
        quote_status(&app, "acme", &quote).await,
        (2, json!("closed"))
    );

    // Single use: approving again is refused, nothing runs twice.
    let r = approve(&app, &finance2, &id).await;
    r.assert_problem(409);
    assert_eq!(r.json()["type"], "urn:bastion:problem:approval-decided");
    assert_eq!(
        quote_status(&app, "acme", &quote).await,
        (2, json!("closed"))
    );

    // The trail: requested, refused self-approval, approved (by finance2), the execution as
    // the requester carrying the approval id.
    let finance2_id = app.user("acme", "finance2").id.to_string();
    let approved = audited(&app, "acme", &["approval.approved", "allow", &finance2_id]).await;
    assert_eq!(approved.len(), 1);
    let exec = audited(&app, "acme", &["tool.close_quote", &id]).await;
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert!(
        exec[0].contains(&finance_id),
        "runs as the requester: {}",
        exec[0]
    );
    assert!(exec[0].contains("\"allow\""), "{}", exec[0]);
    let stored = app
        .get(&format!("/v1/approvals/{id}"), Some(&finance))
        .await;
    assert_eq!(stored.json()["status"], "executed");
    assert_eq!(stored.json()["decided_by"], finance2_id.as_str());
}

#[tokio::test]
async fn a_stale_second_factor_is_refused_with_mfa_stale_then_a_fresh_login_approves() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    let finance2 = app.login("acme", "finance2").await;
    app.clock.advance(301);
    let r = approve(&app, &finance2, id).await;
    r.assert_problem(401);
    assert_eq!(r.json()["type"], "urn:bastion:problem:mfa-stale");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    assert_eq!(
        audited(
            &app,
            "acme",
            &["approval.approved", "deny", "second factor is too old"]
        )
        .await
        .len(),
        1
    );
    let fresh = app.login("acme", "finance2").await;
    let r = approve(&app, &fresh, id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(
        quote_status(&app, "acme", &quote).await,
        (2, json!("closed"))
    );
}

#[tokio::test]
async fn an_expired_approval_cannot_be_approved() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    app.clock.advance(3600);
    let finance2 = app.login("acme", "finance2").await;
    let r = approve(&app, &finance2, id).await;
    r.assert_problem(409);
    assert_eq!(r.json()["type"], "urn:bastion:problem:approval-expired");
    let shown = app
        .get(&format!("/v1/approvals/{id}"), Some(&finance2))
        .await;
    assert_eq!(shown.json()["status"], "expired");
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    assert_eq!(
        audited(&app, "acme", &["approval.approved", "deny", "expired"])
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_rejected_approval_never_runs() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    let finance = app.login("acme", "finance").await;
    let r = app
        .post_json(
            &format!("/v1/approvals/{id}/reject"),
            Some(&finance),
            &json!({}),
        )
        .await;
    r.assert_problem(403);
    let finance2 = app.login("acme", "finance2").await;
    let r = app
        .post_json(
            &format!("/v1/approvals/{id}/reject"),
            Some(&finance2),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["status"], "rejected");
    let r = approve(&app, &finance2, id).await;
    r.assert_problem(409);
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    assert_eq!(
        audited(&app, "acme", &["approval.rejected", "allow", id])
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_buyer_calling_an_approval_tool_is_denied_not_queued() {
    let (app, _dir) = app().await;
    let buyer = app.login("acme", "buyer").await;
    let quote = create_quote(&app, &buyer, "acme", "seller").await;
    let (status, body) = app.call(&buyer, "close_quote", &json!({"id": quote})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let finance = app.login("acme", "finance").await;
    let list = app.get("/v1/approvals", Some(&finance)).await;
    assert_eq!(list.json()["items"], json!([]));
    let list = app.get("/v1/approvals", Some(&buyer)).await;
    assert_eq!(list.json()["items"], json!([]));
    assert!(
        audited(&app, "acme", &["approval.requested"])
            .await
            .is_empty()
    );
    // Invalid arguments are refused before anything is filed too.
    let (status, _) = app
        .call(&finance, "close_quote", &json!({"id": quote, "extra": 1}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        audited(&app, "acme", &["approval.requested"])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn another_tenants_approval_id_is_not_found() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    let other = app.login("globex", "finance2").await;
    app.get(&format!("/v1/approvals/{id}"), Some(&other))
        .await
        .assert_problem(404);
    approve(&app, &other, id).await.assert_problem(404);
    app.post_json(
        &format!("/v1/approvals/{id}/reject"),
        Some(&other),
        &json!({}),
    )
    .await
    .assert_problem(404);
    assert_eq!(
        app.get("/v1/approvals", Some(&other)).await.json()["items"],
        json!([])
    );
    app.get("/v1/approvals/not-a-uuid", Some(&other))
        .await
        .assert_problem(404);
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_approvals_execute_once() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let t1 = app.login("acme", "finance2").await;
    let t2 = app.login("acme", "finance2").await;
    let (a, b) = tokio::join!(approve(&app, &t1, &id), approve(&app, &t2, &id));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} {}", a.json(), b.json());
    assert_eq!(
        quote_status(&app, "acme", &quote).await,
        (2, json!("closed"))
    );
    assert_eq!(
        audited(&app, "acme", &["tool.close_quote", &id])
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_approval_requested_for_a_tool_without_a_manifest_rule_goes_to_another_caller_of_the_tool()
 {
    let (app, _dir) = app().await;
    let buyer = app.login("acme", "buyer").await;
    let principal = app.identity.verify_access_token(&buyer).await.unwrap();
    let seller = app.user("acme", "seller").id.to_string();
    let args = crate::records::quote_args(&seller);
    let ctx = CallContext {
        request_id: "agent-1".to_owned(),
        channel: "agent",
        idempotency_key: Some("key-1".to_owned()),
    };
    let a = app
        .pipeline
        .request_approval(
            &principal,
            "create_quote",
            args.clone(),
            "high-risk tool after untrusted content",
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(a.args_hash, bastion_store::approvals::args_hash(&args));
    assert_eq!(quote_count(&app).await, 0);
    // A seller may not call create_quote, so may not approve it; another buyer may.
    let seller_t = app.login("acme", "seller").await;
    approve(&app, &seller_t, &a.id.to_string())
        .await
        .assert_problem(403);
    // The policy-denied caller is refused, not filed.
    let s_principal = app.identity.verify_access_token(&seller_t).await.unwrap();
    let denied = app
        .pipeline
        .request_approval(&s_principal, "create_quote", args.clone(), "x", &ctx)
        .await;
    assert!(
        matches!(denied, Err(bastion_tools::ToolError::Forbidden(_))),
        "{denied:?}"
    );
    let buyer2 = app.login("acme", "buyer2").await;
    let r = approve(&app, &buyer2, &a.id.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    // Created as the requester: the buyer owns the quote and is its buyer.
    let buyer_id = app.user("acme", "buyer").id.to_string();
    assert_eq!(r.json()["result"]["owner_id"], buyer_id.as_str());
    assert_eq!(r.json()["result"]["buyer"], buyer_id.as_str());
    assert_eq!(quote_count(&app).await, 1);
}

/// Rewrites the stored arguments of approval `id` behind the store's back (an attacker with
/// database access, or a bug): the hash no longer matches.
async fn tamper(app: &TestApp, id: &str, args: &Value) {
    use sqlx::Connection;
    let sql = "UPDATE approvals SET args = $1 WHERE id = $2";
    match &app.pg {
        None => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.dir.path().join("bastion.db"));
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            let n = sqlx::query(sql)
                .bind(args.to_string())
                .bind(id)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(n, 1);
        }
        Some(db) => {
            let mut c = sqlx::PgConnection::connect(&db.owner_url).await.unwrap();
            let n = sqlx::query(sql)
                .bind(args.to_string())
                .bind(id)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(n, 1);
        }
    }
}

#[tokio::test]
async fn arguments_changed_after_filing_are_never_executed() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    let buyer = app.login("acme", "buyer").await;
    let other = create_quote(&app, &buyer, "acme", "seller").await;
    tamper(&app, id, &json!({"id": other})).await;
    let finance2 = app.login("acme", "finance2").await;
    let r = approve(&app, &finance2, id).await;
    r.assert_problem(500);
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    assert_eq!(quote_status(&app, "acme", &other).await, (1, json!("open")));
    assert_eq!(
        audited(
            &app,
            "acme",
            &["approval.approved", "do not match their hash"]
        )
        .await
        .len(),
        1
    );
    assert!(
        audited(&app, "acme", &["tool.close_quote"])
            .await
            .is_empty()
    );
    // The approval was not consumed by the refused attempt, and stays unexecutable.
    let shown = app
        .get(&format!("/v1/approvals/{id}"), Some(&finance2))
        .await;
    assert_eq!(shown.json()["status"], "pending");
    approve(&app, &finance2, id).await.assert_problem(500);
}

#[tokio::test]
async fn the_call_runs_with_the_requesters_current_roles_and_fails_closed_when_they_changed() {
    let (app, _dir) = app().await;
    let (quote, body) = held(&app).await;
    let id = body["id"].as_str().unwrap();
    // The requester loses the finance role after filing.
    let mut tx = app
        .store
        .begin(bastion_store::TenantScope::pre_auth(app.tenant_id("acme")))
        .await
        .unwrap();
    bastion_store::users::set_roles(&mut tx, app.user("acme", "finance").id, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let finance2 = app.login("acme", "finance2").await;
    let r = approve(&app, &finance2, id).await;
    r.assert_problem(403);
    assert_eq!(quote_status(&app, "acme", &quote).await, (1, json!("open")));
    let shown = app
        .get(&format!("/v1/approvals/{id}"), Some(&finance2))
        .await;
    assert_eq!(shown.json()["status"], "failed");
    assert_eq!(
        audited(&app, "acme", &["approval.failed", id]).await.len(),
        1
    );
    // The refused execution is audited as the requester's denied call, with the approval id.
    let denied = audited(&app, "acme", &["tool.close_quote", id, "deny"]).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    // Used up: it cannot be approved again.
    approve(&app, &finance2, id).await.assert_problem(409);
}

#[tokio::test]
async fn the_idempotency_key_of_the_request_is_kept_with_the_approval() {
    use axum::body::Body;
    use http::{Method, Request, header};
    let (app, _dir) = app().await;
    let buyer = app.login("acme", "buyer").await;
    let quote = create_quote(&app, &buyer, "acme", "seller").await;
    let finance = app.login("acme", "finance").await;
    let req = |key: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/tools/close_quote")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {finance}"))
            .header("idempotency-key", key)
            .body(Body::from(json!({"id": quote}).to_string()))
            .unwrap()
    };
    let r = app.send(req("close-42")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = uuid::Uuid::parse_str(r.json()["id"].as_str().unwrap()).unwrap();
    let mut tx = app
        .store
        .begin(bastion_store::TenantScope::pre_auth(app.tenant_id("acme")))
        .await
        .unwrap();
    let stored = bastion_store::approvals::get(&mut tx, id)
        .await
        .unwrap()
        .unwrap();
    drop(tx);
    assert_eq!(stored.idempotency_key.as_deref(), Some("close-42"));
    assert_eq!(stored.args, json!({"id": quote}));
    // A malformed key is refused before anything is filed.
    app.send(req(&"k".repeat(256))).await.assert_problem(400);
}
