//! The tabletop's attacker model: an OpenAI-compatible chat-completions endpoint on loopback
//! that obeys every `call TOOL with {json}` instruction it reads (the agent crate's
//! [`Obedient`] rules) — in the user's prompt, in tool results, inside spotlighting markers —
//! and records every request body it receives, byte for byte. The self-started instance is
//! pointed at it, so the scenarios can show both what a compromised model attempted and
//! exactly what left Bastion for the model.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use bastion_agent::Obedient;
use serde_json::{Value, json};

/// Requests kept (the tabletop sends far fewer).
const RECORDED_MAX: usize = 10_000;
/// Tool calls emitted per turn.
const CALLS_PER_TURN_MAX: usize = 4;

/// What the model received, shared with the scenarios.
#[derive(Clone, Debug, Default)]
pub struct Recorded(Arc<Mutex<Vec<String>>>);

impl Recorded {
    /// Every request body received so far, as text.
    #[must_use]
    pub fn bodies(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How many requests were received.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// Starts the model on 127.0.0.1 (a free port); returns its base URL (`http://…/v1`).
///
/// # Errors
/// When it cannot listen.
pub async fn start() -> anyhow::Result<(String, Recorded)> {
    let recorded = Recorded::default();
    let router = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(recorded.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the tabletop model")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "tabletop model stopped");
        }
    });
    Ok((format!("http://{addr}/v1"), recorded))
}

async fn completions(State(rec): State<Recorded>, body: Bytes) -> axum::Json<Value> {
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Ok(mut v) = rec.0.lock()
        && v.len() < RECORDED_MAX
    {
        v.push(text.clone());
    }
    let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    axum::Json(turn(&request))
}

/// One obedient turn over an OpenAI chat-completions request.
fn turn(request: &Value) -> Value {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut done: Vec<(String, Value)> = messages
        .iter()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| {
            let f = c.get("function")?;
            let name = f.get("name")?.as_str()?.to_owned();
            let args = f
                .get("arguments")
                .and_then(Value::as_str)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or(Value::Null);
            Some((name, args))
        })
        .collect();
    let mut calls = Vec::new();
    for m in messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) != Some("assistant"))
    {
        let content = m.get("content").and_then(Value::as_str).unwrap_or_default();
        for (name, args) in Obedient::instructions(content) {
            if calls.len() >= CALLS_PER_TURN_MAX
                || done.iter().any(|(n, a)| *n == name && *a == args)
            {
                continue;
            }
            done.push((name.clone(), args.clone()));
            calls.push(json!({
                "id": format!("call_{}", done.len()),
                "type": "function",
                "function": {"name": name, "arguments": args.to_string()},
            }));
        }
    }
    let prompt_tokens = request.to_string().len() / 4;
    let (message, finish) = if calls.is_empty() {
        (json!({"role": "assistant", "content": "done"}), "stop")
    } else {
        (
            json!({"role": "assistant", "content": null, "tool_calls": calls}),
            "tool_calls",
        )
    };
    json!({
        "id": "chatcmpl-tabletop",
        "object": "chat.completion",
        "model": request.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 16, "total_tokens": prompt_tokens + 16},
    })
}
