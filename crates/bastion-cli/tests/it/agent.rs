//! `/v1/agent/chat` through the real `bastion demo`: the offline provider by default
//! (labelled), and `--model-url` pointing at a local OpenAI-compatible server that records
//! what it receives (the API key comes from `--model-key-file` only).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

use crate::{start_demo, start_demo_with, sub_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_agent_is_offline_and_labelled_without_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_running, demo) = start_demo(&data, &tmp.path().join("demo.log")).await;
    let printed = std::fs::read_to_string(tmp.path().join("demo.out")).unwrap();
    assert!(printed.contains("agent model: offline"), "{printed}");
    let buyer = demo.login("acme", "buyer").await;
    let seller = sub_of(&demo.login("acme", "seller").await);
    let (status, _) = demo
        .post(
            "/v1/tools/create_quote",
            Some(&buyer),
            &json!({"title": "Chairs", "seller": seller,
                    "line_items": [{"description": "chair", "quantity": 2, "unit_price_minor": 10}],
                    "amount_minor": 20, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = demo
        .post(
            "/v1/agent/chat",
            Some(&buyer),
            &json!({"messages": [{"role": "user", "content": "list my quotes"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["provider"], json!({"name": "offline", "offline": true}));
    assert_eq!(
        v["reply"],
        "[offline model] `list_quotes` returned 1 item(s)."
    );
    assert_eq!(v["tool_calls"][0]["name"], "list_quotes");
    assert_eq!(v["tool_calls"][0]["outcome"], "executed");
}

type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn completions(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = String::from_utf8_lossy(&body).into_owned();
    let email = text
        .find("<EMAIL_")
        .map(|i| text[i..i + text[i..].find('>').unwrap() + 1].to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push((auth, text));
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "local",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("I will write to {email}.")}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_talks_to_a_model_url_with_the_key_from_its_file_and_placeholders_only() {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let model_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("model.key");
    std::fs::write(&key_file, "sk-local-test-key-42\n").unwrap();
    let data = tmp.path().join("data");
    let (_running, demo) = start_demo_with(
        &data,
        &tmp.path().join("demo.log"),
        &[
            "--model-url",
            &model_url,
            "--model",
            "local",
            "--model-key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    let buyer = demo.login("acme", "buyer").await;
    let (status, v) = demo
        .post(
            "/v1/agent/chat",
            Some(&buyer),
            &json!({"messages": [{"role": "user",
                     "content": "Please mail jane.doe@example.com about card 4111 1111 1111 1111"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["provider"]["offline"], false);
    assert_eq!(v["provider"]["name"], "openai-compatible:local");
    assert_eq!(v["reply"], "I will write to jane.doe@example.com.");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "Bearer sk-local-test-key-42");
    assert!(!seen[0].1.contains("jane.doe@example.com"));
    assert!(!seen[0].1.contains("4111"));
    assert!(seen[0].1.contains("<EMAIL_") && seen[0].1.contains("<CARD_"));
    assert!(!seen[0].1.contains("sk-local-test-key-42"));
}
