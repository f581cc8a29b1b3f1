//! Configuration: every lifetime, window and limit is explicit here.

use bastion_crypto::{CryptoError, FieldMasterKey};

/// argon2id cost parameters (RFC 9106 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory cost in KiB (`m`).
    pub m_cost_kib: u32,
    /// Iterations (`t`).
    pub t_cost: u32,
    /// Parallelism (`p`).
    pub p_cost: u32,
}

impl PasswordParams {
    /// OWASP Password Storage Cheat Sheet's argon2id minimum: m = 19456 KiB, t = 2, p = 1.
    pub const OWASP: Self = Self {
        m_cost_kib: 19_456,
        t_cost: 2,
        p_cost: 1,
    };

    /// Cheap parameters for tests only: m = 256 KiB, t = 1, p = 1.
    pub const TEST_ONLY: Self = Self {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Fixed-window login throttling (I12), counted in the store so it holds across instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Window length in seconds.
    pub window_secs: i64,
    /// Failed password attempts per account (tenant + username) per window before the
    /// account refuses further password attempts until the window ends.
    pub account_failures_max: i64,
    /// Failed password attempts per client address per window.
    pub address_failures_max: i64,
    /// Wrong second-factor codes per user per window (over every challenge). Beyond it the
    /// user cannot start a login until the window ends, so knowing the password does not
    /// buy unlimited TOTP guesses (5 per challenge × unlimited challenges).
    pub second_factor_failures_max: i64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            window_secs: 15 * 60,
            account_failures_max: 5,
            address_failures_max: 50,
            second_factor_failures_max: 10,
        }
    }
}

/// Configuration of an [`crate::IdentityService`].
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The `iss` of access tokens (RFC 7519 §4.1.1), e.g. `https://bastion.example`.
    pub issuer: String,
    /// The `aud` of access tokens (RFC 7519 §4.1.3); only tokens for this audience verify.
    pub audience: String,
    /// Access token lifetime in seconds (`exp - iat`).
    pub access_ttl_secs: i64,
    /// Idle lifetime of one refresh token in seconds.
    pub refresh_idle_ttl_secs: i64,
    /// Absolute lifetime of a refresh family in seconds from login; rotation never extends it.
    pub refresh_absolute_ttl_secs: i64,
    /// Lifetime of MFA and enrollment challenges in seconds.
    pub challenge_ttl_secs: i64,
    /// Wrong codes a challenge absorbs before it is burnt.
    pub challenge_attempts_max: i64,
    /// argon2id parameters for new hashes.
    pub password: PasswordParams,
    /// Most argon2 computations running at once (each uses `m_cost_kib` of memory).
    pub hash_concurrency_max: usize,
    /// Login throttling.
    pub throttle: ThrottleConfig,
    /// The issuer shown in authenticator apps (`otpauth://` URI `issuer`).
    pub totp_issuer: String,
    /// The master key of field-level encryption at rest: TOTP secrets are stored sealed with
    /// AES-256-GCM under a per-tenant key derived from it (HKDF-SHA256), bound to their row.
    ///
    /// [`IdentityConfig::new`] puts a **random, ephemeral** key here: secrets written under it
    /// cannot be read after a restart (fine for tests and for operator tools that never read
    /// a secret). A server sets the deployment's secret with
    /// [`IdentityConfig::with_field_secret`]. `Debug` never prints it.
    pub field_key: FieldMasterKey,
}

impl IdentityConfig {
    /// Production defaults for the given issuer and audience: access 300 s, refresh idle 1 h,
    /// family 12 h, challenges 5 min with 5 attempts, OWASP argon2id, 4 concurrent hashes —
    /// and an ephemeral field-encryption key (see [`IdentityConfig::field_key`]).
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl_secs: 300,
            refresh_idle_ttl_secs: 3_600,
            refresh_absolute_ttl_secs: 12 * 3_600,
            challenge_ttl_secs: 300,
            challenge_attempts_max: 5,
            password: PasswordParams::OWASP,
            hash_concurrency_max: 4,
            throttle: ThrottleConfig::default(),
            totp_issuer: "Bastion".to_owned(),
            field_key: FieldMasterKey::ephemeral(),
        }
    }

    /// Sets the field-encryption master secret (e.g. the bytes of `identity.secret_key_file`,
    /// surrounding whitespace trimmed by the caller). The same secret must be given on every
    /// start, or stored TOTP secrets no longer decrypt and their users must use a recovery
    /// code or have their MFA reset.
    ///
    /// # Errors
    /// [`CryptoError::Key`] for a secret shorter than 32 bytes (or longer than 1024).
    pub fn with_field_secret(mut self, secret: &[u8]) -> Result<Self, CryptoError> {
        self.field_key = FieldMasterKey::from_secret(secret)?;
        Ok(self)
    }
}
