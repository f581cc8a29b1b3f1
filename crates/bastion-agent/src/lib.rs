//! Bastion's AI side: what talks to a language model and what stands between the model and
//! the tools.
//!
//! - **Providers** ([`ModelProvider`]): one chat-completion turn in the shape of OpenAI's
//!   chat-completions API (`messages`, `tools`, `tool_calls`, `usage`).
//!   [`OpenAiCompatible`] speaks that API over HTTPS (or loopback HTTP) with reqwest;
//!   [`Scripted`] replays given turns and [`Obedient`] plays an attacker-controlled model
//!   (tests, tabletop); [`Offline`] is a deterministic local stand-in for `bastion demo`.
//! - **The agent loop** ([`Agent::chat`]): masks every text before the model sees it
//!   (bastion-guard [`Masker`](bastion_guard::Masker)), wraps every tool result in
//!   spotlighting delimiters and marks the conversation tainted, offers only the caller's
//!   tools, holds high-risk calls in a tainted context for approval, restores placeholders
//!   only for allowed kinds, neutralizes off-list URLs and blocks secret-shaped strings in
//!   the reply. Every limit is a named constant ([`Limits`]).
//! - **Geo pinning** ([`check_region`]): a tenant's data goes only to a provider of its
//!   region.
//!
//! The agent holds no rights of its own: every tool call goes to a [`ToolExecutor`] the
//! caller implements (the server: the same pipeline as REST, as the user). No HTTP server,
//! no SQL here.

mod agent;
mod error;
mod model;
mod offline;
mod openai;
mod provider;
mod region;
mod scripted;

pub use agent::{
    Agent, ChatInput, ChatOutcome, ExecError, InjectionReport, Limits, MAX_STEPS_DEFAULT,
    MAX_TOKENS_PER_TURN_DEFAULT, MAX_TOOL_CALLS_DEFAULT, MAX_TOTAL_TOKENS_DEFAULT,
    MESSAGE_BYTES_MAX, MESSAGES_MAX, REPLY_BLOCKED, STEP_LIMIT_REPLY, SUMMARY_CHARS_MAX,
    SYSTEM_PROMPT, StopReason, TOKEN_LIMIT_REPLY, TOOL_RESULT_BYTES_MAX, ToolCallRecord,
    ToolExecutor, ToolOutcome,
};
pub use error::{AgentError, ProviderError, RegionError};
pub use model::{ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, ToolDef, Usage};
pub use offline::{OFFLINE_PREFIX, Offline};
pub use openai::{
    API_KEY_LEN_MAX, ApiKey, CONNECT_TIMEOUT_SECS, OpenAiCompatible, REQUEST_TIMEOUT_SECS,
    RESPONSE_BYTES_MAX,
};
pub use provider::{BoxFuture, ModelProvider};
pub use region::{LOCAL_REGION, check_region};
pub use scripted::{Obedient, Recorder, Scripted};
