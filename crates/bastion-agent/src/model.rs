//! The chat-completion data model, in the shape of OpenAI's chat-completions API
//! (`POST /v1/chat/completions`: `messages`, `tools`, `tool_calls`, `usage`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The operator's instructions (Bastion's fixed system prompt).
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering the assistant's call with the same id.
    Tool,
}

impl Role {
    /// The wire name (`system`, `user`, `assistant`, `tool`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One tool call proposed by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; the tool message answering it repeats it.
    pub id: String,
    /// The tool's name, as offered in [`ToolDef::name`] (or not: the agent checks).
    pub name: String,
    /// The arguments as the model wrote them: a JSON object if the model behaves, anything
    /// else if not (a string that does not parse as JSON stays a JSON string).
    pub arguments: Value,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text, if any (an assistant message holding only tool calls has none).
    pub content: Option<String>,
    /// The tool calls of an assistant message (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of `role` with text `content` and nothing else.
    #[must_use]
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A user message.
    #[must_use]
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An assistant message with text only.
    #[must_use]
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message holding `calls` (and no text).
    #[must_use]
    pub fn assistant_calls(calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: None,
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// A tool message answering call `id`.
    #[must_use]
    pub fn tool(id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        }
    }

    /// The text, or `""`.
    #[must_use]
    pub fn content_str(&self) -> &str {
        self.content.as_deref().unwrap_or_default()
    }
}

/// A tool the model may call (OpenAI `tools[].function`), plus Bastion's risk flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// The tool's name (`issue_refund`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema (draft 2020-12) of the arguments object.
    pub parameters: Value,
    /// Whether the manifest marks the tool `risk = "high"`: in a tainted conversation the
    /// agent asks for approval instead of executing it. Never sent to the model.
    #[serde(default)]
    pub high_risk: bool,
}

/// One request to a provider: the whole conversation so far and the tools on offer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation, oldest first, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// The tools the model may call (may be empty).
    pub tools: Vec<ToolDef>,
    /// Most tokens the model may generate for this turn.
    pub max_tokens: u32,
}

/// Tokens a turn consumed, as the provider counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens the model generated.
    pub completion_tokens: u64,
}

impl Usage {
    /// `prompt_tokens + completion_tokens` (saturating).
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Adds `other` to `self` (saturating).
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
    }

    /// A rough count for providers that do not report one: a token per 4 bytes, rounded up.
    #[must_use]
    pub fn estimate(prompt_bytes: usize, completion_bytes: usize) -> Usage {
        let t = |b: usize| u64::try_from(b.div_ceil(4)).unwrap_or(u64::MAX);
        Usage {
            prompt_tokens: t(prompt_bytes),
            completion_tokens: t(completion_bytes),
        }
    }
}

/// The model's turn: an assistant message (text and/or tool calls) and its usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message.
    pub message: ChatMessage,
    /// Tokens consumed.
    pub usage: Usage,
}

impl ChatRequest {
    /// Total bytes of message text (for estimates).
    #[must_use]
    pub fn text_bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| {
                m.content_str().len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.to_string().len())
                        .sum::<usize>()
            })
            .sum()
    }
}
