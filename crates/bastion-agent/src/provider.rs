//! The provider trait.

use std::future::Future;
use std::pin::Pin;

use crate::error::ProviderError;
use crate::model::{ChatRequest, ChatResponse};

/// A boxed `Send` future, so that trait objects (`Arc<dyn ModelProvider>`,
/// `&dyn ToolExecutor`) can be awaited from any tokio task.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A language model that completes one chat turn (OpenAI chat-completions semantics).
pub trait ModelProvider: Send + Sync {
    /// A short label for logs and audit (`openai-compatible:gpt-4o-mini`, `offline`).
    fn name(&self) -> String;

    /// The region where the provider processes data (`eu`, `us`, or
    /// [`LOCAL_REGION`](crate::LOCAL_REGION) for in-process providers); see
    /// [`check_region`](crate::check_region).
    fn region(&self) -> &str;

    /// Completes one turn of `request`.
    ///
    /// # Errors
    /// [`ProviderError`]; its message never holds an API key or the provider's own text.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
}
