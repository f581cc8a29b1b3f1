//! The crate's one error type. Messages are lowercase, generic and carry no secrets.

/// Why an identity operation was refused. The HTTP layer maps each variant to one RFC 9457
/// problem type; messages never echo passwords, codes, tokens or whether a username exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown tenant or user, wrong password, disabled user or throttled account: one
    /// answer for all, so the response does not reveal which (401).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The password step passed but the second factor is still owed (401/403).
    #[error("multi-factor authentication required")]
    MfaRequired,
    /// An access, refresh, MFA or enrollment token is malformed, forged, revoked or unknown
    /// (401).
    #[error("invalid token")]
    InvalidToken,
    /// Too many attempts from this client address; retry after the window (429).
    #[error("too many attempts")]
    Throttled {
        /// Seconds until the current throttling window ends.
        retry_after_secs: u64,
    },
    /// A TOTP or recovery code was wrong, reused or outside the accepted steps (401).
    #[error("invalid code")]
    InvalidCode,
    /// A token or challenge was valid once but is past its expiry (401).
    #[error("expired")]
    Expired,
    /// The store or key provider failed; fail closed (503).
    #[error("service unavailable")]
    Unavailable,
    /// The request itself is malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An operator command named a tenant or user that does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// An operator command would create something that already exists (409).
    #[error("conflict: {0}")]
    Conflict(String),
}
