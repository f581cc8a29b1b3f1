//! A6 kill switch through the whole stack: engaged while calls run concurrently, no call
//! executes after the engage commits; other tenants unaffected; global stops everything;
//! release restores; a second instance on the same PostgreSQL database is refused at once;
//! the admin route's authorization.

use std::sync::Arc;

use bastion_identity::{IdentityService, NewAccount};
use bastion_server::{AppState, router};
use bastion_store::TenantScope;
use bastion_tools::Pipeline;
use bastion_tools::killswitch::{self as ks, Actor, SwitchChange};
use bastion_types::{SharedClock, TenantId};
use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    PASSWORD, Resp, SeededUser, TestApp, identity_config, options, send_to, slug, spawn_app,
    spawn_app_on,
};
use crate::records::{create_quote, quote_args};

async fn operator(app: &TestApp, engage: bool, tenant: Option<TenantId>, tool: Option<&str>) {
    ks::change(
        &app.store,
        Actor::Operator,
        &SwitchChange {
            engage,
            tenant,
            tool,
            reason: "incident 42",
        },
    )
    .await
    .unwrap();
}

fn assert_disabled(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "urn:bastion:problem:tool-disabled", "{body}");
    assert!(
        !body.to_string().contains("incident 42"),
        "the operator's reason is not shown: {body}"
    );
}

async fn quote_count(app: &TestApp, tenant: &str) -> usize {
    app.snapshot(tenant)
        .await
        .keys()
        .filter(|(e, _)| e == "quote")
        .count()
}

/// Audit records of `tenant`'s chain whose body contains every needle.
async fn audited(app: &TestApp, tenant: &str, needles: &[&str]) -> usize {
    app.audit_chain(tenant)
        .await
        .records
        .iter()
        .filter(|r| needles.iter().all(|n| r.body.contains(n)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a6_engage_while_calls_run_then_none_executes_other_tenant_runs_global_stops_all() {
    const WORKERS: usize = 4;
    const CALLS_PER_WORKER: usize = 12;
    let app = Arc::new(spawn_app().await);
    let buyer = app.login("acme", "buyer").await;
    let g_buyer = app.login("globex", "buyer").await;
    let seller = app.user("acme", "seller").id.to_string();

    // Calls run concurrently while the operator engages `create_quote` for acme.
    let started = Arc::new(tokio::sync::Barrier::new(WORKERS + 1));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (app, buyer, seller, started) = (
            Arc::clone(&app),
            buyer.clone(),
            seller.clone(),
            Arc::clone(&started),
        );
        workers.push(tokio::spawn(async move {
            started.wait().await;
            let mut out = Vec::new();
            for _ in 0..CALLS_PER_WORKER {
                let (status, body) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
                out.push((status, body));
            }
            out
        }));
    }
    started.wait().await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    operator(
        &app,
        true,
        Some(app.tenant_id("acme")),
        Some("create_quote"),
    )
    .await;
    // The engage has committed (it returned): from here on no call may execute.
    let at_engage = quote_count(&app, "acme").await;
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    let after = quote_count(&app, "acme").await;
    assert_eq!(
        after, at_engage,
        "no create_quote executed after the engage committed"
    );
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, at_engage, "every 200 is a stored quote and vice versa");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_disabled(*status, body);
    }
    let refused = results.len() - ok;
    eprintln!("a6: {ok} calls executed before the engage, {refused} refused after it");
    assert!(refused > 0, "some calls ran after the engage");
    // Each refusal is audited as a deny with the reason `kill switch`.
    assert_eq!(
        audited(
            &app,
            "acme",
            &["\"tool.create_quote\"", "\"deny\"", "\"kill switch\""]
        )
        .await,
        refused
    );
    // The operator's engage is on acme's chain, with the reason.
    assert_eq!(
        audited(
            &app,
            "acme",
            &["admin.killswitch.engage", "incident 42", "\"operator\""]
        )
        .await,
        1
    );

    // Other tools of acme and the same tool in globex are unaffected.
    let (status, _) = app.call(&buyer, "list_quotes", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    create_quote(&app, &g_buyer, "globex", "seller").await;
    let (status, body) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
    assert_disabled(status, &body);

    // Global: every tool of every tenant stops, reads included.
    operator(&app, true, None, None).await;
    let (status, body) = app.call(&g_buyer, "list_quotes", &json!({})).await;
    assert_disabled(status, &body);
    let g_seller = app.user("globex", "seller").id.to_string();
    let (status, body) = app
        .call(&g_buyer, "create_quote", &quote_args(&g_seller))
        .await;
    assert_disabled(status, &body);
    let (status, body) = app.call(&buyer, "list_quotes", &json!({})).await;
    assert_disabled(status, &body);
    let mut sys = app.store.system().await.unwrap();
    let system = bastion_store::audit::system_read_chain(&mut sys)
        .await
        .unwrap();
    sys.rollback().await.unwrap();
    assert!(
        system
            .records
            .iter()
            .any(|r| r.body.contains("admin.killswitch.engage") && r.body.contains("global"))
    );

    // Release the global switch: globex works again, acme's create_quote is still off.
    operator(&app, false, None, None).await;
    create_quote(&app, &g_buyer, "globex", "seller").await;
    let (status, body) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
    assert_disabled(status, &body);
    operator(
        &app,
        false,
        Some(app.tenant_id("acme")),
        Some("create_quote"),
    )
    .await;
    create_quote(&app, &buyer, "acme", "seller").await;
    assert_eq!(quote_count(&app, "acme").await, at_engage + 1);
}

/// Adds `username` holding `roles` to `tenant`, with TOTP, and registers it in the harness.
async fn add_user(app: &mut TestApp, tenant: &str, username: &str, roles: &[&str]) {
    let id = app
        .identity
        .add_user(
            &slug(tenant),
            NewAccount {
                username: slug(username),
                password: PASSWORD.to_owned(),
                roles: roles.iter().map(|r| slug(r)).collect(),
                is_demo: false,
            },
        )
        .await
        .unwrap();
    let p = app
        .identity
        .provision_totp(&slug(tenant), &slug(username))
        .await
        .unwrap();
    let secret = data_encoding::BASE32_NOPAD
        .decode(p.secret_base32.as_bytes())
        .unwrap();
    app.users.insert(
        (tenant.to_owned(), username.to_owned()),
        SeededUser { id, secret },
    );
}

async fn switch(app: &TestApp, token: &str, body: &Value) -> Resp {
    app.post_json("/v1/admin/killswitch", Some(token), body)
        .await
}

#[tokio::test]
async fn admin_route_lets_a_tenant_admin_switch_only_its_own_tenant() {
    let mut app = spawn_app().await;
    add_user(&mut app, "acme", "admin", &["admin"]).await;
    let admin = app.login("acme", "admin").await;
    let buyer = app.login("acme", "buyer").await;
    let finance = app.login("acme", "finance").await;
    let g_buyer = app.login("globex", "buyer").await;
    let seller = app.user("acme", "seller").id.to_string();
    let engage = json!({"action": "engage", "tool": "create_quote", "reason": "abuse seen"});

    // No admin role: refused, audited, nothing engaged.
    for token in [&buyer, &finance] {
        switch(&app, token, &engage).await.assert_problem(403);
        app.get("/v1/admin/killswitch", Some(token))
            .await
            .assert_problem(403);
    }
    assert_eq!(
        audited(&app, "acme", &["admin.killswitch.engage", "\"deny\""]).await,
        2
    );
    let (status, _) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
    assert_eq!(status, StatusCode::OK);
    // No token at all.
    app.post_json("/v1/admin/killswitch", None, &engage)
        .await
        .assert_problem(401);

    // A tenant admin cannot name another tenant (the body has no tenant member) nor go global.
    let mut other = engage.clone();
    other["tenant"] = json!("globex");
    switch(&app, &admin, &other).await.assert_problem(400);
    let mut global = engage.clone();
    global["scope"] = json!("global");
    switch(&app, &admin, &global).await.assert_problem(403);
    global.as_object_mut().unwrap().remove("tool");
    switch(&app, &admin, &global).await.assert_problem(403);
    create_quote(&app, &g_buyer, "globex", "seller").await;
    create_quote(&app, &buyer, "acme", "seller").await;
    // Bad inputs.
    switch(
        &app,
        &admin,
        &json!({"action": "engage", "tool": "no_such_tool", "reason": "x"}),
    )
    .await
    .assert_problem(404);
    switch(
        &app,
        &admin,
        &json!({"action": "engage", "tool": "create_quote", "reason": ""}),
    )
    .await
    .assert_problem(422);
    // The reason goes into the append-only audit log: no personal data in it.
    switch(
        &app,
        &admin,
        &json!({"action": "engage", "tool": "create_quote", "reason": "card 4111 1111 1111 1111 of jane.doe@example.com"}),
    )
    .await
    .assert_problem(422);
    switch(
        &app,
        &admin,
        &json!({"action": "toggle", "tool": "create_quote", "reason": "x"}),
    )
    .await
    .assert_problem(400);

    // The admin's own tenant: engaged for acme only.
    let r = switch(&app, &admin, &engage).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(
        r.json(),
        json!({"scope": "tenant_tool", "tool": "create_quote", "engaged": true, "was_engaged": false})
    );
    let (status, body) = app.call(&buyer, "create_quote", &quote_args(&seller)).await;
    assert_disabled(status, &body);
    create_quote(&app, &g_buyer, "globex", "seller").await;
    let admin_id = app.user("acme", "admin").id.to_string();
    assert_eq!(
        audited(
            &app,
            "acme",
            &["admin.killswitch.engage", "\"ok\"", "abuse seen", &admin_id]
        )
        .await,
        1
    );

    // The admin sees its tenant's switch, and a global one without its operator note.
    operator(&app, true, None, Some("list_quotes")).await;
    let r = app.get("/v1/admin/killswitch", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{items:?}");
    let own = items.iter().find(|i| i["scope"] == "tenant_tool").unwrap();
    assert_eq!(own["reason"], "abuse seen");
    let shared = items.iter().find(|i| i["scope"] == "tool").unwrap();
    assert_eq!(shared["reason"], Value::Null);
    // A globex admin sees only the shared switch.
    add_user(&mut app, "globex", "admin", &["admin"]).await;
    let g_admin = app.login("globex", "admin").await;
    let r = app.get("/v1/admin/killswitch", Some(&g_admin)).await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);

    // Release restores.
    let r = switch(
        &app,
        &admin,
        &json!({"action": "release", "tool": "create_quote", "reason": "fixed"}),
    )
    .await;
    assert_eq!(r.json()["was_engaged"], true);
    create_quote(&app, &buyer, "acme", "seller").await;
    // Whole tenant.
    let r = switch(
        &app,
        &admin,
        &json!({"action": "engage", "reason": "pause"}),
    )
    .await;
    assert_eq!(r.json()["scope"], "tenant");
    let (status, body) = app.call(&finance, "list_quotes", &json!({})).await;
    assert_disabled(status, &body);
}

/// Two instances (two stores, two routers) on one PostgreSQL database: a switch engaged
/// through one refuses the very next call through the other.
#[tokio::test]
async fn a6_postgres_second_instance_refuses_the_next_call() {
    let app = spawn_app_on(bastion_store::BackendKind::Postgres, options(false, &[])).await;
    let shared: SharedClock = Arc::new(app.clock.clone());
    let store2 = app
        .pg
        .as_ref()
        .unwrap()
        .open(Arc::clone(&shared))
        .await
        .unwrap();
    let identity2 = Arc::new(
        IdentityService::new(
            store2.clone(),
            Arc::clone(&app.keys),
            Arc::clone(&shared),
            identity_config(),
        )
        .await
        .unwrap(),
    );
    let pipeline2 = Pipeline::new(
        Arc::clone(&app.spec),
        Arc::clone(&app.authz),
        store2.clone(),
        Arc::clone(&shared),
    )
    .unwrap();
    let router2 = router(AppState {
        identity: identity2,
        pipeline: pipeline2,
        store: store2.clone(),
        options: Arc::new(options(false, &[])),
        agent: None,
    });
    let buyer = app.login("acme", "buyer").await;
    let seller = app.user("acme", "seller").id.to_string();
    let call2 = || {
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri("/v1/tools/create_quote")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {buyer}"))
            .body(axum::body::Body::from(quote_args(&seller).to_string()))
            .unwrap();
        send_to(&router2, req)
    };
    assert_eq!(call2().await.status, StatusCode::OK);
    // Engaged through instance 1 ...
    operator(
        &app,
        true,
        Some(app.tenant_id("acme")),
        Some("create_quote"),
    )
    .await;
    // ... refused by instance 2 on the next call.
    let r = call2().await;
    assert_disabled(r.status, &r.json());
    // Released through instance 2's store, instance 2 serves again.
    ks::change(
        &store2,
        Actor::Operator,
        &SwitchChange {
            engage: false,
            tenant: Some(app.tenant_id("acme")),
            tool: Some("create_quote"),
            reason: "over",
        },
    )
    .await
    .unwrap();
    assert_eq!(call2().await.status, StatusCode::OK);
    let mut tx = store2
        .begin(TenantScope::pre_auth(app.tenant_id("acme")))
        .await
        .unwrap();
    let chain = bastion_store::audit::read_chain(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(bastion_audit::verify(&chain.records, chain.head).is_ok());
    store2.close().await;
}
