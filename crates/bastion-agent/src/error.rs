//! The crate's errors. Messages are lowercase phrases that never hold an API key, a prompt,
//! a tool result or the provider's own error text.

/// Why a provider produced no turn.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider's configuration is unusable (`reason` is a fixed phrase).
    #[error("invalid model provider configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: &'static str,
    },
    /// The request could not be sent or the answer not received (`kind`: `timeout`,
    /// `connect`, `request`, `body`).
    #[error("model provider unreachable ({kind})")]
    Transport {
        /// A fixed phrase naming the failure.
        kind: &'static str,
    },
    /// The provider answered with a non-2xx HTTP status (its body is not kept).
    #[error("model provider answered http status {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The answer exceeded [`RESPONSE_BYTES_MAX`](crate::RESPONSE_BYTES_MAX).
    #[error("model provider answer larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer is not a chat completion (`reason` is a fixed phrase).
    #[error("model provider answer malformed: {reason}")]
    Malformed {
        /// What is missing or wrong.
        reason: &'static str,
    },
    /// A [`Scripted`](crate::Scripted) provider has no turn left.
    #[error("scripted model has no turn left")]
    ScriptExhausted,
}

/// A tenant's region does not accept a provider's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// The provider processes data in another region than the tenant is pinned to.
    #[error("model provider region `{provider}` does not match the tenant's region `{tenant}`")]
    Mismatch {
        /// The tenant's region (normalized).
        tenant: String,
        /// The provider's region (normalized).
        provider: String,
    },
    /// A region label that is empty, longer than 64 bytes, or not `[A-Za-z0-9_-]`.
    #[error("invalid region label")]
    Invalid,
}

/// Why [`Agent::chat`](crate::Agent::chat) produced no outcome at all. Limits reached
/// during the loop are not errors: they end the loop with a [`StopReason`](crate::StopReason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Geo pinning refused the provider.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The guard failed (masking limits, a pattern bug).
    #[error(transparent)]
    Guard(#[from] bastion_guard::GuardError),
    /// The caller's input breaks a limit or a rule (`reason` is a fixed phrase).
    #[error("invalid chat input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: &'static str,
    },
}
