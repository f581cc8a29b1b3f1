//! Stand-in models for tests and the tabletop: [`Scripted`] replays given turns,
//! [`Obedient`] plays an attacker-controlled model. Both record every request they receive
//! ([`Recorder`]), which is exactly what a real provider would have seen.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use regex::Regex;
use serde_json::Value;

use crate::error::ProviderError;
use crate::model::{ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, Usage};
use crate::provider::{BoxFuture, ModelProvider};
use crate::region::LOCAL_REGION;

/// Most requests a [`Recorder`] keeps (older ones are dropped first).
const RECORDED_MAX: usize = 1024;

/// The requests a stand-in model received, in order. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Recorder(Arc<Mutex<VecDeque<ChatRequest>>>);

impl Recorder {
    /// Every request received so far (at most the last 1024).
    #[must_use]
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, request: &ChatRequest) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= RECORDED_MAX {
            q.pop_front();
        }
        q.push_back(request.clone());
    }
}

/// Replays a fixed sequence of model turns, one per request, whatever the request says;
/// [`ProviderError::ScriptExhausted`] once they are used up.
#[derive(Debug)]
pub struct Scripted {
    turns: Mutex<VecDeque<ChatResponse>>,
    recorder: Recorder,
    region: String,
}

impl Scripted {
    /// A model that answers with `turns` in order, in region [`LOCAL_REGION`].
    #[must_use]
    pub fn new(turns: Vec<ChatResponse>) -> Self {
        Scripted {
            turns: Mutex::new(turns.into()),
            recorder: Recorder::default(),
            region: LOCAL_REGION.to_owned(),
        }
    }

    /// The same model declaring `region` (to exercise geo pinning).
    #[must_use]
    pub fn in_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// A turn with text only and the given usage.
    #[must_use]
    pub fn say(text: impl Into<String>, usage: Usage) -> ChatResponse {
        ChatResponse {
            message: ChatMessage::assistant(text),
            usage,
        }
    }

    /// A turn calling `name` with `arguments` (call id `id`) and the given usage.
    #[must_use]
    pub fn call(id: &str, name: &str, arguments: Value, usage: Usage) -> ChatResponse {
        ChatResponse {
            message: ChatMessage::assistant_calls(vec![ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            }]),
            usage,
        }
    }

    /// What the model received.
    #[must_use]
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }
}

impl ModelProvider for Scripted {
    fn name(&self) -> String {
        "scripted".to_owned()
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.recorder.push(request);
        let next = self
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        Box::pin(async move { next.ok_or(ProviderError::ScriptExhausted) })
    }
}

/// The `call TOOL with {json}` instruction an [`Obedient`] model follows (case-insensitive;
/// the JSON object starts right after `with`).
static INSTRUCTION_RE: LazyLock<Result<Regex, regex::Error>> =
    LazyLock::new(|| Regex::new(r"(?i)\bcall\s+([A-Za-z_][A-Za-z0-9_]{0,63})\s+with\s*"));

/// Most tool calls an [`Obedient`] model emits in one turn.
const OBEDIENT_CALLS_PER_TURN_MAX: usize = 16;

/// An attacker-controlled model: it obeys every instruction of the form
/// `call TOOL with {json}` found anywhere in its input — user messages, tool results, even
/// inside spotlighting markers — and emits one tool call for each one it has not emitted yet
/// in this conversation (same name and arguments). When nothing is left it answers
/// `"done"`. Deterministic; usage is estimated (a token per 4 bytes).
#[derive(Debug)]
pub struct Obedient {
    recorder: Recorder,
    region: String,
}

impl Default for Obedient {
    fn default() -> Self {
        Self::new()
    }
}

impl Obedient {
    /// An obedient model in region [`LOCAL_REGION`].
    #[must_use]
    pub fn new() -> Self {
        Obedient {
            recorder: Recorder::default(),
            region: LOCAL_REGION.to_owned(),
        }
    }

    /// What the model received.
    #[must_use]
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// The `(tool, arguments)` instructions in `text`, each once: those found as written,
    /// in order, then those found only after undoing JSON escapes. Instructions
    /// written inside a JSON string (quotes escaped as `\"`, line breaks as `\n`) are
    /// understood too, as a model would.
    #[must_use]
    pub fn instructions(text: &str) -> Vec<(String, Value)> {
        let Ok(re) = INSTRUCTION_RE.as_ref() else {
            return Vec::new();
        };
        let mut out: Vec<(String, Value)> = Vec::new();
        for candidate in [text.to_owned(), unescape(text)] {
            for c in re.captures_iter(&candidate) {
                let (Some(name), Some(all)) = (c.get(1), c.get(0)) else {
                    continue;
                };
                let found = candidate
                    .get(all.end()..)
                    .and_then(first_json_object)
                    .map(|v| (name.as_str().to_owned(), v));
                if let Some(found) = found.filter(|f| !out.contains(f)) {
                    out.push(found);
                }
            }
        }
        out
    }

    fn turn(request: &ChatRequest) -> ChatResponse {
        let mut done: Vec<(String, Value)> = request
            .messages
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        let mut calls = Vec::new();
        for m in request
            .messages
            .iter()
            .filter(|m| m.role != Role::Assistant)
        {
            for (name, args) in Self::instructions(m.content_str()) {
                if calls.len() >= OBEDIENT_CALLS_PER_TURN_MAX {
                    break;
                }
                if done.iter().any(|(n, a)| *n == name && *a == args) {
                    continue;
                }
                done.push((name.clone(), args.clone()));
                calls.push(ToolCall {
                    id: format!("call_{}", done.len()),
                    name,
                    arguments: args,
                });
            }
        }
        let message = if calls.is_empty() {
            ChatMessage::assistant("done")
        } else {
            ChatMessage::assistant_calls(calls)
        };
        let out_bytes = message.content_str().len()
            + message
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().len())
                .sum::<usize>();
        ChatResponse {
            message,
            usage: Usage::estimate(request.text_bytes(), out_bytes),
        }
    }
}

impl ModelProvider for Obedient {
    fn name(&self) -> String {
        "obedient".to_owned()
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.recorder.push(request);
        let response = Self::turn(request);
        Box::pin(async move { Ok(response) })
    }
}

/// The JSON object at the start of `s`, if one parses there.
fn first_json_object(s: &str) -> Option<Value> {
    if !s.starts_with('{') {
        return None;
    }
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    match it.next() {
        Some(Ok(v @ Value::Object(_))) => Some(v),
        _ => None,
    }
}

/// `s` with the JSON string escapes `\"`, `\n`, `\r`, `\t` and `\\` undone (one level).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}
