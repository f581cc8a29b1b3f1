//! Bastion's guard: what stands between user data, untrusted content and a model. Pure: no
//! I/O, no clock, no global mutable state.
//!
//! - **Detectors** ([`Detector`], [`Finding`], [`EntityKind`]): payment cards (Luhn,
//!   ISO/IEC 7812 issuer ranges), IBANs (ISO 13616, via `iban_validate`), US SSNs, e-mail
//!   addresses (RFC 5322 subset), phone numbers (E.164 / national, validated against
//!   libphonenumber's metadata from the `phonenumber` crate), IPv4/IPv6 (`std::net`
//!   parsers), PEM private keys (RFC 7468), JWTs (RFC 7519), vendor API keys
//!   ([`API_KEY_RULES`]) and high-entropy tokens. Spans are byte offsets; overlaps are
//!   resolved by [`resolve_overlaps`].
//! - **Masking** ([`Masker`]): stable per-conversation placeholders (`<CARD_1>`) or keyed
//!   hashes (`<EMAIL_h:…>`, HMAC-SHA256), structured-field masking of JSON, and
//!   [`Masker::restore`] that gives back only the kinds a principal may see.
//! - **DLP** ([`dlp_check`], [`DlpVerdict`]): secret-shaped strings in outputs.
//! - **Output neutralization** ([`neutralize`], [`UrlAllowlist`]): markdown/HTML images and
//!   links to hosts off an allowlist are removed (EchoLeak-style exfiltration).
//! - **Injection signals** ([`injection_signal`]) and **spotlighting** ([`spotlight`]).
//!
//! Throughput is measured against presidio-analyzer in `bench/pii` (`docs/BENCHMARKS.md`).

mod detect;
mod dlp;
mod error;
mod finding;
mod injection;
mod mask;
mod neutralize;
mod phone;
mod secrets;
mod spotlight;

pub use detect::{
    Detector, ENTROPY_BITS_MIN_BASE64, ENTROPY_BITS_MIN_HEX, ENTROPY_RUN_LEN_MIN, PEM_LEN_MAX,
    PHONE_REGIONS_TRUNK_ZERO, card_brand_ok, email_valid, luhn_valid, shannon_entropy_bits,
    ssn_valid,
};
pub use dlp::{DlpVerdict, dlp_check, dlp_verdict, redact};
pub use error::GuardError;
pub use finding::{EntityKind, Finding, resolve_overlaps};
pub use injection::{
    INJECTION_RULES, INJECTION_SCORE_SUSPICIOUS, InjectionRule, InjectionSignal, injection_signal,
};
pub use mask::{
    HASH_HEX_LEN, HASH_KEY_LEN_MIN, HashKey, JSON_DEPTH_MAX, MASKED_VALUES_MAX, MaskMode, Masker,
};
pub use neutralize::{IMAGE_REMOVED, LINK_REMOVED, Neutralized, UrlAllowlist, neutralize};
pub use secrets::{API_KEY_RULES, ApiKeyRule};
pub use spotlight::{CLOSE_PREFIX, OPEN_PREFIX, SPOTLIGHT_INSTRUCTION, escape, spotlight};

/// Detects every kind in `text` with the shared [`Detector`].
///
/// # Errors
/// [`GuardError::Pattern`] if the built-in patterns do not compile (a bug).
pub fn detect(text: &str) -> Result<Vec<Finding>, GuardError> {
    Ok(Detector::shared()?.detect(text))
}
