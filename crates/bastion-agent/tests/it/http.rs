//! Case A3 over real HTTP: a local OpenAI-compatible server (axum) records exactly the
//! request bodies and headers it receives, answers with a tool call and then a final
//! message; [`OpenAiCompatible`] drives the agent loop end to end.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use bastion_agent::{
    Agent, ApiKey, ChatInput, ChatMessage, Limits, ModelProvider, OpenAiCompatible, ProviderError,
    ToolOutcome,
};
use bastion_guard::UrlAllowlist;
use serde_json::{Value, json};

use crate::cases::placeholder;
use crate::common::*;

const KEY: &str = "sk-test-bastion-agent-0123456789";

/// One received request: its headers (name, value bytes) and its body.
type Received = (Vec<(String, Vec<u8>)>, Vec<u8>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

async fn completions(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let hs = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let n = {
        let mut s = seen.0.lock().unwrap();
        s.push((hs, body.to_vec()));
        s.len()
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let answer = if n == 1 {
        let email = placeholder(&text, "EMAIL");
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "find_customer",
                    "arguments": json!({"email": email}).to_string()
                }}]
            }}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140}
        })
    } else {
        let (card, email) = (placeholder(&text, "CARD"), placeholder(&text, "EMAIL"));
        json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant",
                "content": format!("Found customer for {email}; card on file {card}.")
            }}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 15, "total_tokens": 215}
        })
    };
    (StatusCode::OK, axum::Json(answer))
}

async fn failing() -> impl IntoResponse {
    (
        StatusCode::UNAUTHORIZED,
        format!("Incorrect API key provided: {KEY}. upstream details"),
    )
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a3_over_http_no_raw_pii_and_key_only_in_authorization() {
    let seen = Seen::default();
    let base = serve(
        Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(seen.clone()),
    )
    .await;
    let provider =
        OpenAiCompatible::new(&base, "test-model", ApiKey::new(KEY).unwrap(), "eu").unwrap();
    assert!(!format!("{provider:?}").contains(KEY));
    let exec = CountingExecutor {
        results: [(
            "find_customer",
            json!({"id": "cus_1", "card": CARD, "ssn": SSN, "iban": IBAN}),
        )]
        .into(),
        ..Default::default()
    };
    let mut m = masker();
    let out = Agent::new(Arc::new(provider), Limits::default(), UrlAllowlist::none())
        .chat(ChatInput {
            messages: vec![ChatMessage::user(a3_prompt())],
            tools: vec![tool("find_customer", false)],
            executor: &exec,
            masker: &mut m,
            restore_allowed: &email_only,
            tenant_region: "EU",
        })
        .await
        .unwrap();

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one tool-call turn, one final turn");
    for (headers, body) in &seen {
        let text = String::from_utf8(body.clone()).unwrap();
        for raw in RAW_FORMS {
            assert!(
                !text.contains(raw),
                "raw `{raw}` in a body sent to the provider"
            );
        }
        assert!(!text.contains(KEY), "the key is in a body");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["model"], "test-model");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["tools"][0]["type"], "function");
        assert!(v["tools"][0]["function"].get("high_risk").is_none());
        for (name, value) in headers {
            let has_key = value.windows(KEY.len()).any(|w| w == KEY.as_bytes());
            if name == "authorization" {
                assert_eq!(value, format!("Bearer {KEY}").as_bytes());
            } else {
                assert!(!has_key, "the key is in header {name}");
            }
        }
    }
    // The second body carries the masked, spotlighted tool result and the model's call.
    let second: Value = serde_json::from_slice(&seen[1].1).unwrap();
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(
        msgs[2]["tool_calls"][0]["function"]["name"],
        "find_customer"
    );
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], "call_1");
    assert!(
        msgs[3]["content"]
            .as_str()
            .unwrap()
            .starts_with("<<untrusted id=1>>")
    );

    // End to end: executor got the restored e-mail; reply restores e-mail only.
    assert_eq!(exec.executed.lock().unwrap()[0].1, json!({"email": EMAIL}));
    assert!(matches!(
        out.tool_calls[0].outcome,
        ToolOutcome::Executed { .. }
    ));
    assert!(out.reply.contains(EMAIL), "{}", out.reply);
    assert!(
        !out.reply.contains(CARD) && out.reply.contains("<CARD_"),
        "{}",
        out.reply
    );
    assert_eq!(out.usage.total(), 140 + 215);
    assert!(out.tainted);
}

#[tokio::test]
async fn provider_errors_hold_neither_key_nor_provider_text() {
    let base = serve(Router::new().route("/v1/chat/completions", post(failing))).await;
    let provider = OpenAiCompatible::new(&base, "m", ApiKey::new(KEY).unwrap(), "eu").unwrap();
    let req = bastion_agent::ChatRequest {
        messages: vec![ChatMessage::user("hi")],
        tools: vec![],
        max_tokens: 16,
    };
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err, ProviderError::Status { status: 401 });
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains("upstream"),
        "{shown}"
    );

    // Nothing listens on port 9 of loopback (discard): a transport error, no details.
    let provider = OpenAiCompatible::new(
        "http://127.0.0.1:9/v1",
        "m",
        ApiKey::new(KEY).unwrap(),
        "eu",
    )
    .unwrap();
    let err = provider.complete(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transport { .. }), "{err:?}");
}

#[test]
fn base_url_must_be_https_or_loopback_http() {
    let k = || ApiKey::new(KEY).unwrap();
    assert!(OpenAiCompatible::new("https://api.example.com/v1", "m", k(), "eu").is_ok());
    assert!(OpenAiCompatible::new("http://localhost:8080/v1", "m", k(), "eu").is_ok());
    assert!(OpenAiCompatible::new("http://[::1]:8080/v1", "m", k(), "eu").is_ok());
    for bad in [
        "http://api.example.com/v1",
        "http://10.0.0.1/v1",
        "https://user:pw@api.example.com/v1",
        "https://api.example.com/v1?x=1",
        "ftp://api.example.com/",
        "not a url",
    ] {
        let err = OpenAiCompatible::new(bad, "m", k(), "eu").unwrap_err();
        assert!(matches!(err, ProviderError::Config { .. }), "{bad}");
    }
    assert!(OpenAiCompatible::new("https://api.example.com/v1", "", k(), "eu").is_err());
    assert!(ApiKey::new("").is_err());
    assert!(ApiKey::new("has space").is_err());
    let p = OpenAiCompatible::new("https://api.example.com/v1", "m", k(), "eu").unwrap();
    assert_eq!(p.endpoint(), "https://api.example.com/v1/chat/completions");
}
