//! The webhook module's one error type.

use bastion_types::UnixTime;

/// Why a webhook was refused, or why a verifier could not be built.
///
/// Every variant is safe to log: messages are fixed lowercase phrases, and no variant carries
/// a secret, an expected signature or any part of the request body. The signature a sender
/// presented is not echoed either. An HTTP layer answers 401 for every verification variant
/// (and 413 for [`WebhookError::BodyTooLarge`]) without telling the sender which one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header the scheme requires is absent. Carries the header's name in lower case
    /// (`stripe-signature`, `webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's exact syntax (too long, too many
    /// elements, a duplicate, a non-canonical timestamp, an empty or truncated signature —
    /// svix#1190 — and so on). Carries a fixed phrase naming the rule that failed.
    #[error("malformed webhook: {0}")]
    Malformed(&'static str),
    /// The signature matched, but the signed timestamp is further than the tolerance from
    /// the verifier's clock, in either direction: a replay, or a sender clock far ahead.
    /// Times are Unix seconds; `tolerance_secs` is the configured window half-width.
    #[error("webhook timestamp outside the tolerance window")]
    TimestampOutsideTolerance {
        /// The timestamp the sender signed, Unix seconds.
        timestamp: UnixTime,
        /// The verifier's clock when it checked, Unix seconds.
        now: UnixTime,
        /// The largest accepted `|now - timestamp|`, seconds.
        tolerance_secs: u64,
    },
    /// No presented `v1` signature equals the one expected under any configured secret.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
    /// The body is longer than the verifier's limit; nothing was hashed.
    #[error("webhook body too large: {len} bytes, limit {max} bytes")]
    BodyTooLarge {
        /// The body's length, bytes.
        len: usize,
        /// The verifier's limit, bytes.
        max: usize,
    },
    /// The signature was valid but the body is not an event of the provider's shape (not
    /// JSON, or a required field is missing or of the wrong type). Carries a fixed phrase.
    #[error("invalid webhook event: {0}")]
    InvalidEvent(&'static str),
    /// A configured secret is unusable (wrong prefix, bad base64, wrong length, too many).
    /// Carries a fixed phrase, never the secret.
    #[error("invalid webhook secret: {0}")]
    InvalidSecret(&'static str),
    /// A verifier setting is out of range (tolerance or body limit). Carries a fixed phrase.
    #[error("invalid webhook verifier configuration: {0}")]
    InvalidConfig(&'static str),
}
