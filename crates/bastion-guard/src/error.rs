//! The crate's one error type.

/// What can go wrong in the guard. Messages are lowercase phrases that never contain the
/// scanned text or a detected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// A built-in pattern failed to compile (a bug in this crate).
    #[error("a built-in detection pattern does not compile: {0}")]
    Pattern(String),
    /// A hash key shorter than [`crate::HASH_KEY_LEN_MIN`] bytes.
    #[error("the masking hash key must be at least {min} bytes")]
    HashKeyTooShort {
        /// The minimum length in bytes.
        min: usize,
    },
    /// A conversation already holds [`crate::MASKED_VALUES_MAX`] distinct values.
    #[error("too many distinct masked values in one conversation (limit {limit})")]
    TooManyValues {
        /// The limit that was reached.
        limit: usize,
    },
    /// A JSON document nested deeper than [`crate::JSON_DEPTH_MAX`].
    #[error("json nested deeper than {limit} levels")]
    JsonTooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// An allowlisted host that does not parse as a host name.
    #[error("`{0}` is not a valid host name")]
    InvalidHost(String),
}
