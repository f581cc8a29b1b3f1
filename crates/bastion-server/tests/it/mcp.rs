//! `/mcp`: MCP over Streamable HTTP, raw JSON-RPC 2.0 through the real router.

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::harness::*;

async fn rpc(app: &TestApp, token: Option<&str>, body: &Value, version: Option<&str>) -> Resp {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(v) = version {
        b = b.header("mcp-protocol-version", v);
    }
    app.send(b.body(Body::from(body.to_string())).unwrap())
        .await
}

fn req(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[tokio::test]
async fn initialize_list_and_call_as_the_principal() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    // initialize: the client's version is echoed when supported, the newest otherwise.
    let r = rpc(
        &app,
        Some(&buyer),
        &req(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}}),
        ),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["serverInfo"]["name"], "bastion");
    assert!(v["result"]["capabilities"]["tools"].is_object());
    let r = rpc(
        &app,
        Some(&buyer),
        &req(2, "initialize", json!({"protocolVersion": "1999-01-01"})),
        None,
    )
    .await;
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    // The initialized notification: 202, no body.
    let r = rpc(
        &app,
        Some(&buyer),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some("2025-06-18"),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_empty());
    // ping
    let r = rpc(
        &app,
        Some(&buyer),
        &req(3, "ping", json!({})),
        Some("2025-06-18"),
    )
    .await;
    assert_eq!(r.json(), json!({"jsonrpc": "2.0", "id": 3, "result": {}}));
    // tools/list: the buyer's tools only, with input schemas.
    let r = rpc(
        &app,
        Some(&buyer),
        &req(4, "tools/list", json!({})),
        Some("2025-06-18"),
    )
    .await;
    let tools = r.json()["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "accept_proposal",
            "create_quote",
            "get_quote",
            "list_quotes"
        ]
    );
    assert!(tools.iter().all(|t| t["inputSchema"]["type"] == "object"));
    assert!(tools.iter().all(|t| t["outputSchema"].is_object()));
    // tools/call create_quote through the pipeline, then list_quotes with pii withheld.
    let seller = app.user("acme", "seller").id.to_string();
    let r = rpc(
        &app,
        Some(&buyer),
        &req(
            5,
            "tools/call",
            json!({"name": "create_quote", "arguments": {
                "title": "Lamps", "seller": seller,
                "line_items": [{"description": "lamp", "quantity": 3, "unit_price_minor": 100}],
                "amount_minor": 300, "currency": "EUR", "contact_email": "lamps@acme.example"}}),
        ),
        Some("2025-06-18"),
    )
    .await;
    let v = r.json();
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(v["result"]["structuredContent"]["title"], "Lamps");
    assert_eq!(
        v["result"]["structuredContent"]["contact_email"],
        "[withheld]"
    );
    let r = rpc(
        &app,
        Some(&buyer),
        &req(
            6,
            "tools/call",
            json!({"name": "list_quotes", "arguments": {}}),
        ),
        Some("2025-06-18"),
    )
    .await;
    let v = r.json();
    assert_eq!(v["result"]["structuredContent"]["total"], 1);
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("Lamps") && !text.contains("lamps@acme.example"));
    // The pipeline audited the calls with channel mcp.
    let chain = app.audit_chain("acme").await;
    let mcp_calls = chain
        .records
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|v| v["detail"]["channel"] == "mcp")
        .count();
    assert_eq!(mcp_calls, 2);
}

#[tokio::test]
async fn refusals_are_tool_errors_or_json_rpc_errors() {
    let app = spawn_app().await;
    let buyer = app.login("acme", "buyer").await;
    let v2 = Some("2025-06-18");
    // A tool the buyer may not call: an isError result, audited as a deny.
    let r = rpc(
        &app,
        Some(&buyer),
        &req(
            1,
            "tools/call",
            json!({"name": "submit_proposal", "arguments": {}}),
        ),
        v2,
    )
    .await;
    let v = r.json();
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not allowed")
    );
    // Another tenant's record: not found, as over REST.
    let b_buyer = app.login("globex", "buyer").await;
    let seller_b = app.user("globex", "seller").id.to_string();
    let (_, b) = app
        .call(
            &b_buyer,
            "create_quote",
            &json!({"title": "B", "seller": seller_b,
                    "line_items": [{"description": "x", "quantity": 1, "unit_price_minor": 1}],
                    "amount_minor": 1, "currency": "EUR"}),
        )
        .await;
    let r = rpc(
        &app,
        Some(&buyer),
        &req(
            2,
            "tools/call",
            json!({"name": "get_quote", "arguments": {"id": b["result"]["id"]}}),
        ),
        v2,
    )
    .await;
    let v = r.json();
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        "failed: record not found"
    );
    // Unknown tool and unknown method: JSON-RPC errors.
    let r = rpc(
        &app,
        Some(&buyer),
        &req(3, "tools/call", json!({"name": "drop_tables"})),
        v2,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32_602);
    let r = rpc(&app, Some(&buyer), &req(4, "resources/list", json!({})), v2).await;
    assert_eq!(r.json()["error"]["code"], -32_601);
    // Batches, non-2.0 messages, bad JSON: 400 with a JSON-RPC error.
    let batch = json!([req(5, "ping", json!({})), req(6, "ping", json!({}))]);
    let r = rpc(&app, Some(&buyer), &batch, v2).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32_600);
    let r = rpc(
        &app,
        Some(&buyer),
        &json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
        v2,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An unsupported protocol version header: 400.
    rpc(
        &app,
        Some(&buyer),
        &req(7, "ping", json!({})),
        Some("2024-01-01"),
    )
    .await
    .assert_problem(400);
    // GET (no SSE stream offered): 405.
    let r = app.get("/mcp", Some(&buyer)).await;
    r.assert_problem(405);
}

#[tokio::test]
async fn mcp_needs_a_bearer_token_and_an_allowed_origin() {
    let app = spawn_app().await;
    let r = rpc(&app, None, &req(1, "tools/list", json!({})), None).await;
    r.assert_problem(401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = rpc(
        &app,
        Some("not-a-token"),
        &req(1, "tools/list", json!({})),
        None,
    )
    .await;
    r.assert_problem(401);
    // A browser page of another origin (DNS rebinding): refused.
    let buyer = app.login("acme", "buyer").await;
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/mcp")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ORIGIN, "https://evil.example")
                .header(header::AUTHORIZATION, format!("Bearer {buyer}"))
                .body(Body::from(req(1, "ping", json!({})).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
