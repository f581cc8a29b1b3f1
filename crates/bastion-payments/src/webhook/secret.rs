//! Webhook signing secrets. Their `Debug` output is redacted; they have no `Display`.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::WebhookError;

/// The prefix of every webhook secret in both schemes.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest accepted Stripe secret string, bytes (Stripe's are `whsec_` + 32 characters).
pub const STRIPE_SECRET_BYTES_MAX: usize = 256;
/// Shortest Standard Webhooks key after base64 decoding, bytes (spec: 24 bytes, 192 bits).
pub const STANDARD_KEY_BYTES_MIN: usize = 24;
/// Longest Standard Webhooks key after base64 decoding, bytes (spec: 64 bytes, 512 bits).
pub const STANDARD_KEY_BYTES_MAX: usize = 64;

/// A Stripe endpoint signing secret, `whsec_…`.
///
/// Stripe keys the HMAC with the **whole** secret string as bytes, prefix included (Stripe
/// docs, "Verify webhook signatures manually"; checked against stripe-node 23.1.0).
#[derive(Clone, PartialEq, Eq)]
pub struct StripeSecret(Vec<u8>);

impl StripeSecret {
    /// Parses a Stripe secret: `whsec_` followed by at least one visible ASCII character
    /// (0x21–0x7E), at most [`STRIPE_SECRET_BYTES_MAX`] bytes in all.
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] on a missing prefix, an empty remainder, whitespace
    /// or other invisible characters (often a pasted newline), or an over-long secret.
    pub fn parse(secret: &str) -> Result<Self, WebhookError> {
        let rest = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::InvalidSecret(
                "stripe secret must start with `whsec_`",
            ))?;
        if rest.is_empty() {
            return Err(WebhookError::InvalidSecret("stripe secret is empty"));
        }
        if secret.len() > STRIPE_SECRET_BYTES_MAX {
            return Err(WebhookError::InvalidSecret("stripe secret is too long"));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebhookError::InvalidSecret(
                "stripe secret contains whitespace or non-ascii characters",
            ));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The HMAC key: the secret string's bytes.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for StripeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeSecret(<redacted>)")
    }
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of the key bytes.
///
/// The HMAC key is the base64-decoded part after the prefix (Standard Webhooks spec,
/// "Signature scheme"), 24 to 64 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct StandardSecret(Vec<u8>);

/// Standard base64 (RFC 4648 §4) that accepts the key with or without `=` padding, as the
/// reference libraries do; non-canonical trailing bits are still refused.
const SECRET_B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl StandardSecret {
    /// Parses `whsec_<base64>` into key bytes. The prefix is required; the base64 uses the
    /// standard alphabet (RFC 4648 §4), padding optional.
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] on a missing prefix, invalid base64, or a key shorter
    /// than [`STANDARD_KEY_BYTES_MIN`] or longer than [`STANDARD_KEY_BYTES_MAX`] bytes.
    pub fn parse(secret: &str) -> Result<Self, WebhookError> {
        let b64 = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::InvalidSecret(
                "standard webhooks secret must start with `whsec_`",
            ))?;
        // Bound the work before decoding: 64 bytes of key are at most 88 base64 characters.
        if b64.len() > STANDARD_KEY_BYTES_MAX.div_ceil(3) * 4 {
            return Err(WebhookError::InvalidSecret(
                "standard webhooks key is too long",
            ));
        }
        let key = SECRET_B64
            .decode(b64)
            .map_err(|_| WebhookError::InvalidSecret("standard webhooks key is not base64"))?;
        Self::from_key_bytes(key)
    }

    /// Wraps raw key bytes (24 to 64 bytes), e.g. fresh random bytes for a new endpoint.
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] when the length is outside 24..=64 bytes.
    pub fn from_key_bytes(key: Vec<u8>) -> Result<Self, WebhookError> {
        if key.len() < STANDARD_KEY_BYTES_MIN {
            return Err(WebhookError::InvalidSecret(
                "standard webhooks key is shorter than 24 bytes",
            ));
        }
        if key.len() > STANDARD_KEY_BYTES_MAX {
            return Err(WebhookError::InvalidSecret(
                "standard webhooks key is longer than 64 bytes",
            ));
        }
        Ok(Self(key))
    }

    /// The HMAC key bytes.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandardSecret(<redacted>)")
    }
}
