//! Bastion's identity: who is calling, proven with a password **and** a second factor.
//!
//! - Passwords: argon2id PHC strings (RFC 9106, OWASP parameters), hashed off the runtime
//!   behind a semaphore; unknown users are verified against a dummy hash (I12).
//! - MFA is mandatory: TOTP (RFC 6238, SHA-1, 6 digits, 30 s, ±1 step, each step usable once)
//!   or single-use recovery codes. No access token exists before the second factor (I10).
//!   TOTP secrets are stored sealed (AES-256-GCM, per-tenant key from
//!   [`IdentityConfig::field_key`], bound to tenant, user and field); a secret that does not
//!   decrypt is no usable factor (refused, with an alert).
//! - Access tokens: RFC 9068 JWTs signed EdDSA/Ed25519 (RFC 8037), verified with a pinned
//!   algorithm, `typ`, exact in-memory `kid`, typed claims and the [`bastion_types::Clock`],
//!   then checked against the store so logout and disable take effect at once.
//! - Refresh tokens: opaque, stored hashed, rotated on every use with reuse detection that
//!   revokes the family (RFC 9700 §4.14.2), inside an absolute family lifetime.
//!   Logout finds the family read-only, so logging out twice raises no reuse alarm.
//! - Throttling per account and per client address, one generic error for every failure.

mod admin;
mod config;
mod error;
mod jwt;
mod password;
mod service;
mod totp;

pub use admin::{NewAccount, ProvisionedTotp, USERS_LIST_MAX, UserSummary};
pub use bastion_store::tenants::Tenant;
pub use config::{IdentityConfig, PasswordParams, ThrottleConfig};
pub use error::AuthError;
pub use jwt::{
    ACCESS_TOKEN_ALG, ACCESS_TOKEN_BYTES_MAX, ACCESS_TOKEN_TYP, AccessClaims, sign_access_token,
    verify_access_token_claims,
};
pub use password::{PASSWORD_BYTES_MAX, PASSWORD_CHARS_MIN, PasswordHasher, check_password_policy};
pub use service::{
    IdentityService, LoginOutcome, MFA_METHODS, TokenPair, TotpConfirmation, TotpEnrollment,
};
pub use totp::{
    RECOVERY_CODES, TOTP_DIGITS, TOTP_SECRET_BYTES, TOTP_SKEW_STEPS, TOTP_STEP_SECS,
    new_recovery_codes, new_totp_secret, otpauth_uri, recovery_code_hash, secret_base32, totp_code,
    totp_step, verify_totp,
};
