//! Z6 list scopes with totals and paging, Z7 smuggled tenant/owner ids, Z3-like IDOR,
//! optimistic concurrency on `accept_proposal`.

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app};

pub fn quote_args(seller: &str) -> Value {
    json!({
        "title": "Office chairs",
        "seller": seller,
        "line_items": [{"description": "chair", "quantity": 2, "unit_price_minor": 1500}],
        "amount_minor": 3000,
        "currency": "EUR",
    })
}

/// Creates a quote as `buyer` of `tenant` assigned to `seller`; returns its id.
pub async fn create_quote(app: &TestApp, token: &str, tenant: &str, seller: &str) -> String {
    let seller_id = app.user(tenant, seller).id.to_string();
    let (status, body) = app
        .call(token, "create_quote", &quote_args(&seller_id))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["result"]["id"].as_str().unwrap().to_owned()
}

async fn list_all(app: &TestApp, token: &str) -> (BTreeSet<String>, u64) {
    let (status, body) = app.call(token, "list_quotes", &json!({"limit": 100})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids = body["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body["result"]["total"].as_u64().unwrap())
}

#[tokio::test]
async fn z6_lists_follow_role_scopes_for_rows_totals_and_pages() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let buyer2 = app.login("acme", "buyer2").await;
    let seller = app.login("acme", "seller").await;
    let seller2 = app.login("acme", "seller2").await;
    let finance = app.login("acme", "finance").await;
    let g_buyer = app.login("globex", "buyer").await;
    let g_finance = app.login("globex", "finance").await;

    let mut own = BTreeSet::new();
    let mut to_seller = BTreeSet::new();
    let mut to_seller2 = BTreeSet::new();
    for i in 0..5 {
        let s = if i < 3 { "seller" } else { "seller2" };
        let id = create_quote(&app, &buyer, "acme", s).await;
        own.insert(id.clone());
        if i < 3 {
            to_seller.insert(id)
        } else {
            to_seller2.insert(id)
        };
    }
    let mut others = BTreeSet::new();
    for _ in 0..2 {
        let id = create_quote(&app, &buyer2, "acme", "seller").await;
        to_seller.insert(id.clone());
        others.insert(id);
    }
    let mut foreign = BTreeSet::new();
    for _ in 0..2 {
        foreign.insert(create_quote(&app, &g_buyer, "globex", "seller").await);
    }

    let (ids, total) = list_all(&app, &buyer).await;
    assert_eq!(
        (ids.clone(), total),
        (own.clone(), 5),
        "buyer sees own quotes only"
    );
    let (ids, total) = list_all(&app, &buyer2).await;
    assert_eq!((ids, total), (others.clone(), 2));
    let (ids, total) = list_all(&app, &seller).await;
    assert_eq!(
        (ids, total),
        (to_seller.clone(), 5),
        "seller sees assigned quotes only"
    );
    let (ids, total) = list_all(&app, &seller2).await;
    assert_eq!((ids, total), (to_seller2, 2));
    let all: BTreeSet<String> = own.union(&others).cloned().collect();
    let (ids, total) = list_all(&app, &finance).await;
    assert_eq!((ids, total), (all, 7), "finance sees its whole tenant");
    let (ids, total) = list_all(&app, &g_finance).await;
    assert_eq!((ids, total), (foreign, 2));

    // Pages: totals never change with paging and pages partition the buyer's rows.
    let mut paged = BTreeSet::new();
    for (offset, want) in [(0, 2), (2, 2), (4, 1), (6, 0)] {
        let (status, body) = app
            .call(
                &buyer,
                "list_quotes",
                &json!({"limit": 2, "offset": offset}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let items = body["result"]["items"].as_array().unwrap();
        assert_eq!(items.len(), want, "offset {offset}");
        assert_eq!(body["result"]["total"], 5);
        for i in items {
            assert_eq!(i["owner_id"], app.user("acme", "buyer").id.to_string());
            assert!(
                paged.insert(i["id"].as_str().unwrap().to_owned()),
                "page overlap"
            );
        }
    }
    assert_eq!(paged, own);
    // Out-of-range paging is refused by the schema.
    let (status, _) = app
        .call(&buyer, "list_quotes", &json!({"limit": 101}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.call(&buyer, "list_quotes", &json!({"limit": 0})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn z7_smuggled_tenant_or_owner_is_refused_and_never_moves_the_tenant() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let globex_tid = app.tenant_id("globex").to_string();
    let g_buyer_id = app.user("globex", "buyer").id.to_string();
    let seller = app.user("acme", "seller").id.to_string();
    let before_g = app.snapshot("globex").await;
    let before_a = app.snapshot("acme").await;
    for (k, v) in [
        ("tenant_id", globex_tid.clone()),
        ("tenant", "globex".to_owned()),
        ("owner_id", g_buyer_id.clone()),
        ("buyer", g_buyer_id.clone()),
        ("status", "accepted".to_owned()),
    ] {
        let mut args = crate::records::quote_args(&seller);
        args[k] = json!(v);
        let (status, body) = app.call(&buyer, "create_quote", &args).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{k}: {body}");
        assert_eq!(body["type"], "urn:bastion:problem:validation-failed");
    }
    let (status, _) = app
        .call(&buyer, "list_quotes", &json!({"tenant_id": globex_tid}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.snapshot("globex").await, before_g);
    assert_eq!(app.snapshot("acme").await, before_a);

    // A user-typed field naming a user of another tenant is refused too.
    let (status, body) = app
        .call(&buyer, "create_quote", &quote_args(&g_buyer_id))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app.snapshot("globex").await, before_g);
    assert_eq!(app.snapshot("acme").await, before_a);

    // A valid create lands in the token's tenant, owned by the caller.
    let id = create_quote(&app, &buyer, "acme", "seller").await;
    let after = app.snapshot("acme").await;
    assert_eq!(after.len(), before_a.len() + 1);
    assert!(after.keys().any(|(_, rid)| rid.to_string() == id));
    assert_eq!(app.snapshot("globex").await, before_g);
}

#[tokio::test]
async fn z3_finance_cannot_read_another_tenants_quote_by_id() {
    let app = spawn_app().await;
    let g_buyer = app.login("globex", "buyer").await;
    let g_id = create_quote(&app, &g_buyer, "globex", "seller").await;
    let finance = app.login("acme", "finance").await;
    let (status, body) = app.call(&finance, "get_quote", &json!({"id": g_id})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["type"], "urn:bastion:problem:not-found");
    assert!(!body.to_string().contains("Office chairs"));
    // The same answer as for an id that exists nowhere.
    let (status2, body2) = app
        .call(
            &finance,
            "get_quote",
            &json!({"id": bastion_types::RecordId::new_random().to_string()}),
        )
        .await;
    assert_eq!(status2, status);
    assert_eq!(body2["type"], body["type"]);
    // Globex finance reads it fine.
    let g_fin = app.login("globex", "finance").await;
    let (status, body) = app.call(&g_fin, "get_quote", &json!({"id": g_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn accept_proposal_is_optimistic_one_of_two_concurrent_accepts_wins() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let seller = app.login("acme", "seller").await;
    let quote = create_quote(&app, &buyer, "acme", "seller").await;
    let (status, body) = app
        .call(
            &seller,
            "submit_proposal",
            &json!({"quote_id": quote, "body": "We can do it", "price_minor": 2900, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let proposal = body["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["result"]["status"], "submitted");
    assert_eq!(body["result"]["version"], 1);

    // The schema has no `version`: a stale version cannot even be sent.
    let (status, _) = app
        .call(
            &buyer,
            "accept_proposal",
            &json!({"id": proposal, "version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let args = json!({"id": proposal});
    let (a, b) = tokio::join!(
        app.call(&buyer, "accept_proposal", &args),
        app.call(&buyer, "accept_proposal", &args)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses[0], StatusCode::OK, "{a:?} {b:?}");
    assert!(
        statuses[1] == StatusCode::NOT_FOUND || statuses[1] == StatusCode::CONFLICT,
        "{a:?} {b:?}"
    );
    let winner = if a.0 == StatusCode::OK { a.1 } else { b.1 };
    assert_eq!(winner["result"]["status"], "accepted");
    assert_eq!(winner["result"]["version"], 2);
    let snap = app.snapshot("acme").await;
    let (version, data) = snap
        .iter()
        .find(|((_, id), _)| id.to_string() == proposal)
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(version, 2, "exactly one update applied");
    assert_eq!(data["status"], "accepted");
}

/// JSON Schema's `integer` accepts `1.0`; a float must never reach the store or Cedar, where
/// it would make the record unreadable for everyone (a poisoned row breaking every list).
#[tokio::test]
async fn integral_floats_are_stored_as_integers_and_fractions_refused() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let finance = app.login("acme", "finance").await;
    let seller_id = app.user("acme", "seller").id.to_string();
    for (sent, stored) in [(json!(1.0), 1), (json!(1e2), 100), (json!(-0.0), 0)] {
        let mut args = quote_args(&seller_id);
        args["amount_minor"] = sent.clone();
        let (status, body) = app.call(&buyer, "create_quote", &args).await;
        assert_eq!(status, StatusCode::OK, "{sent}: {body}");
        let id = body["result"]["id"].as_str().unwrap().to_owned();
        let (status, got) = app.call(&finance, "get_quote", &json!({"id": id})).await;
        assert_eq!(status, StatusCode::OK, "{sent}: {got}");
        assert_eq!(got["result"]["amount_minor"], json!(stored));
        assert!(got["result"]["amount_minor"].is_i64());
    }
    let mut args = quote_args(&seller_id);
    args["amount_minor"] = json!(1.5);
    let (status, body) = app.call(&buyer, "create_quote", &args).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .call(&finance, "list_quotes", &json!({"limit": 100}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["total"], json!(3));
}

/// Large arguments never make the audit append fail (which answered 503 and left no record):
/// the schema refuses them with 422 and the refusal is recorded with a summary instead.
#[tokio::test]
async fn large_arguments_are_audited_as_a_summary() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let seller_id = app.user("acme", "seller").id.to_string();
    let before = app.audit_chain("acme").await.records.len();
    let mut args = quote_args(&seller_id);
    args["note"] = json!("x".repeat(40 * 1024));
    let (status, body) = app.call(&buyer, "create_quote", &args).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let chain = app.audit_chain("acme").await;
    assert_eq!(chain.records.len(), before + 1);
    let last = &chain.records.last().unwrap().body;
    assert!(last.contains("arguments too large to record"), "{last}");
    assert!(last.len() < 16 * 1024);
}

/// `seller` is declared `role = "seller"`: a buyer cannot assign a quote to a finance user,
/// to another buyer or to themself.
#[tokio::test]
async fn a_quote_can_only_be_assigned_to_a_seller() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    for who in ["finance", "buyer2", "buyer"] {
        let id = app.user("acme", who).id.to_string();
        let (status, body) = app.call(&buyer, "create_quote", &quote_args(&id)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{who}: {body}");
        assert_eq!(body["errors"][0]["pointer"], json!("/seller"), "{body}");
    }
    let seller = app.user("acme", "seller").id.to_string();
    let (status, body) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The quote follows its proposals: `proposed` when one is submitted, `accepted` when one is
/// accepted — in the same transaction — after which no proposal is submitted or accepted.
#[tokio::test]
async fn the_quote_follows_its_proposals_and_accepts_only_one() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let seller = app.login("acme", "seller").await;
    let quote = create_quote(&app, &buyer, "acme", "seller").await;
    let proposal = |body: &str| json!({"quote_id": quote, "body": body, "price_minor": 2500, "currency": "EUR"});
    let (status, p1) = app
        .call(&seller, "submit_proposal", &proposal("first"))
        .await;
    assert_eq!(status, StatusCode::OK, "{p1}");
    let (status, p2) = app
        .call(&seller, "submit_proposal", &proposal("second"))
        .await;
    assert_eq!(status, StatusCode::OK, "{p2}");
    let (_, q) = app.call(&buyer, "get_quote", &json!({"id": quote})).await;
    assert_eq!(q["result"]["status"], json!("proposed"), "{q}");

    let (status, body) = app
        .call(
            &buyer,
            "accept_proposal",
            &json!({"id": p1["result"]["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, q) = app.call(&buyer, "get_quote", &json!({"id": quote})).await;
    assert_eq!(q["result"]["status"], json!("accepted"), "{q}");

    let (status, body) = app
        .call(
            &buyer,
            "accept_proposal",
            &json!({"id": p2["result"]["id"]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a second proposal was accepted: {body}"
    );
    let (status, body) = app
        .call(&seller, "submit_proposal", &proposal("third"))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a proposal on an accepted quote: {body}"
    );
}

/// Strings are stored as shown: NUL and other controls, and bidirectional overrides
/// ("Trojan Source"), are refused; tabs and newlines are fine.
#[tokio::test]
async fn control_and_bidi_override_characters_are_refused_in_strings() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let seller_id = app.user("acme", "seller").id.to_string();
    for bad in ["a\u{0}b", "pay \u{202E}0001$", "x\u{2066}y", "bell\u{7}"] {
        let mut args = quote_args(&seller_id);
        args["title"] = json!(bad);
        let (status, body) = app.call(&buyer, "create_quote", &args).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
        assert_eq!(body["errors"][0]["pointer"], json!("/title"));
    }
    let mut args = quote_args(&seller_id);
    args["note"] = json!("line one\nline two\tand a tab, ünïcödé ✓");
    let (status, body) = app.call(&buyer, "create_quote", &args).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
