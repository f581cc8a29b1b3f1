//! A deterministic local stand-in for a language model, for `bastion demo` when no model is
//! configured. It understands one thing — "list …" — and says so.

use serde_json::{Map, Value};

use crate::error::ProviderError;
use crate::model::{ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, Usage};
use crate::provider::{BoxFuture, ModelProvider};
use crate::region::LOCAL_REGION;

/// The prefix of every reply of the [`Offline`] model.
pub const OFFLINE_PREFIX: &str = "[offline model]";

/// A deterministic local provider, labelled in every reply with [`OFFLINE_PREFIX`]:
///
/// - asked to list something ("list quotes", "show my customers") while a `list_*` tool is
///   offered, it calls the `list_*` tool whose name shares the most words with the request
///   (ties: the first offered), with arguments `{}`;
/// - given a tool result, it reports how many items it holds;
/// - otherwise it says what it can do.
///
/// Region [`LOCAL_REGION`]; usage is estimated (a token per 4 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Offline;

impl Offline {
    fn turn(request: &ChatRequest) -> ChatMessage {
        let Some(last) = request.messages.last() else {
            return ChatMessage::assistant(format!("{OFFLINE_PREFIX} Nothing to answer."));
        };
        match last.role {
            Role::Tool => {
                let n = count_items(last.content_str());
                let tool = last
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| {
                        request
                            .messages
                            .iter()
                            .flat_map(|m| m.tool_calls.iter())
                            .find(|c| &c.id == id)
                    })
                    .map_or("the tool", |c| c.name.as_str());
                let text = match n {
                    Some(n) => format!("{OFFLINE_PREFIX} `{tool}` returned {n} item(s)."),
                    None => format!("{OFFLINE_PREFIX} `{tool}` answered; see the result above."),
                };
                ChatMessage::assistant(text)
            }
            _ => {
                let asked = last.content_str().to_ascii_lowercase();
                let words: Vec<&str> = asked
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                let wants_list = words
                    .iter()
                    .any(|w| matches!(*w, "list" | "show" | "all" | "my"));
                let best = request
                    .tools
                    .iter()
                    .filter(|t| t.name.starts_with("list_"))
                    .map(|t| {
                        let score = t
                            .name
                            .split('_')
                            .filter(|part| {
                                words.iter().any(|w| {
                                    *w == *part
                                        || w.trim_end_matches('s') == part.trim_end_matches('s')
                                })
                            })
                            .count();
                        (score, t)
                    })
                    .fold(None, |best: Option<(usize, _)>, (s, t)| match best {
                        Some((bs, _)) if bs >= s => best,
                        _ => Some((s, t)),
                    });
                match best {
                    Some((_, tool)) if wants_list => ChatMessage::assistant_calls(vec![ToolCall {
                        id: "offline_1".to_owned(),
                        name: tool.name.clone(),
                        arguments: Value::Object(Map::new()),
                    }]),
                    _ => {
                        let names: Vec<&str> = request
                            .tools
                            .iter()
                            .filter(|t| t.name.starts_with("list_"))
                            .map(|t| t.name.as_str())
                            .collect();
                        let hint = if names.is_empty() {
                            "no list tool is available to you".to_owned()
                        } else {
                            format!("list tools available to you: {}", names.join(", "))
                        };
                        ChatMessage::assistant(format!(
                            "{OFFLINE_PREFIX} No language model is configured; I can only list \
                             records (try \"list quotes\"). {hint}."
                        ))
                    }
                }
            }
        }
    }
}

impl ModelProvider for Offline {
    fn name(&self) -> String {
        "offline".to_owned()
    }

    fn region(&self) -> &str {
        LOCAL_REGION
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let message = Self::turn(request);
        let out = message.content_str().len() + message.tool_calls.len() * 16;
        let usage = Usage::estimate(request.text_bytes(), out);
        Box::pin(async move { Ok(ChatResponse { message, usage }) })
    }
}

/// The number of items in a (spotlighted) tool result: the length of a top-level array, or
/// of an `items` array of a top-level object.
fn count_items(content: &str) -> Option<usize> {
    // Drop the first and last line (the spotlighting markers) if present.
    let body = content
        .split_once('\n')
        .and_then(|(_, rest)| rest.rsplit_once('\n'))
        .map_or(content, |(b, _)| b);
    let v: Value = serde_json::from_str(body)
        .or_else(|_| serde_json::from_str(content))
        .ok()?;
    match &v {
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => o.get("items").and_then(Value::as_array).map(Vec::len),
        _ => None,
    }
}
