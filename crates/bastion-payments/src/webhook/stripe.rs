//! Stripe webhook signatures (Stripe docs, "Verify webhook signatures manually").
//!
//! ```text
//! Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=<hex>]
//! v1 = lowercase hex( HMAC-SHA256( key = the whole "whsec_…" string as bytes,
//!                                  msg = t + "." + raw body bytes ) )
//! ```
//!
//! Several `v1` elements appear while an endpoint's secret is being rolled; `v0` (and any
//! other scheme) is ignored, as Stripe says, to prevent downgrade attacks. Unlike
//! stripe-node's verifier, which accepts any timestamp in the future, Bastion refuses a
//! timestamp more than the tolerance away in **either** direction (case P2).

use bastion_crypto::{ct_eq, hmac_sha256};
use bastion_types::UnixTime;

use super::window::{check_window, parse_timestamp};
use super::{StripeSecret, WebhookError};

/// The header carrying the signature (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Longest accepted `Stripe-Signature` value, bytes. A header with `t`, three `v1` and a
/// `v0` is about 290 bytes.
pub const HEADER_BYTES_MAX: usize = 1024;
/// Most comma-separated elements accepted in one `Stripe-Signature` value.
pub const HEADER_ELEMENTS_MAX: usize = 8;
/// Length of one `v1` signature: 32 bytes as lowercase hex.
pub const V1_HEX_LEN: usize = 64;

/// A parsed `Stripe-Signature` header: the signed timestamp (kept as the exact string that
/// was signed, which [`parse_header`] guarantees is canonical) and every `v1` signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The signed timestamp, Unix seconds.
    pub timestamp: UnixTime,
    /// Every `v1` signature, 32 bytes each, in header order (1 to 7 of them).
    pub v1: Vec<[u8; 32]>,
}

/// Parses a `Stripe-Signature` value strictly.
///
/// Accepted: at most [`HEADER_BYTES_MAX`] bytes and [`HEADER_ELEMENTS_MAX`] elements,
/// separated by `,` without spaces; each element `key=value` with a non-empty key of
/// lowercase ASCII letters and digits and a non-empty value; exactly one `t`, a canonical
/// decimal (no sign, no leading zero); one or more `v1`, each exactly 64 lowercase hex
/// characters; other keys (`v0`, future schemes) are ignored.
///
/// # Errors
/// [`WebhookError::Malformed`] when any rule above is broken; [`WebhookError::NoMatchingSignature`]
/// when the header is well formed but carries no `v1` signature at all.
pub fn parse_header(value: &str) -> Result<SignatureHeader, WebhookError> {
    if value.len() > HEADER_BYTES_MAX {
        return Err(WebhookError::Malformed(
            "stripe-signature header is too long",
        ));
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for (n, element) in value.split(',').enumerate() {
        if n >= HEADER_ELEMENTS_MAX {
            return Err(WebhookError::Malformed(
                "stripe-signature header has too many elements",
            ));
        }
        let (key, val) = element.split_once('=').ok_or(WebhookError::Malformed(
            "stripe-signature element is not `key=value`",
        ))?;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(WebhookError::Malformed(
                "stripe-signature element has a bad key",
            ));
        }
        if val.is_empty() {
            return Err(WebhookError::Malformed(
                "stripe-signature element has an empty value",
            ));
        }
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(WebhookError::Malformed(
                        "stripe-signature has two timestamps",
                    ));
                }
                timestamp = Some(parse_timestamp(val)?);
            }
            "v1" => v1.push(decode_v1(val)?),
            // v0 and unknown schemes: ignored (downgrade protection), but still counted and
            // syntax-checked above.
            _ => {}
        }
    }
    let timestamp =
        timestamp.ok_or(WebhookError::Malformed("stripe-signature has no timestamp"))?;
    if v1.is_empty() {
        return Err(WebhookError::NoMatchingSignature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Decodes one `v1` value: exactly 64 lowercase hex characters.
fn decode_v1(val: &str) -> Result<[u8; 32], WebhookError> {
    if val.len() != V1_HEX_LEN
        || !val
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(WebhookError::Malformed(
            "stripe-signature v1 must be 64 lowercase hex characters",
        ));
    }
    let mut out = [0_u8; 32];
    hex::decode_to_slice(val, &mut out).map_err(|_| {
        WebhookError::Malformed("stripe-signature v1 must be 64 lowercase hex characters")
    })?;
    Ok(out)
}

/// The `v1` HMAC-SHA256 of `timestamp + "." + body` under `secret`, as 32 bytes.
fn v1_bytes(secret: &StripeSecret, timestamp: UnixTime, body: &[u8]) -> [u8; 32] {
    let t = timestamp.to_string();
    let mut msg = Vec::with_capacity(t.len() + 1 + body.len());
    msg.extend_from_slice(t.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac_sha256(secret.key(), &msg)
}

/// The `v1` signature of `body` signed at `timestamp` (Unix seconds), as 64 lowercase hex
/// characters. For building headers with several `v1` elements (rotation tests).
#[must_use]
pub fn v1_signature(secret: &StripeSecret, timestamp: UnixTime, body: &[u8]) -> String {
    hex::encode(v1_bytes(secret, timestamp, body))
}

/// A complete `Stripe-Signature` value, `t=<timestamp>,v1=<hex>`, as Stripe (and
/// stripe-node's `webhooks.generateTestHeaderString`) would send it. Used by Bastion's test
/// PSP and the tests. `timestamp` is Unix seconds; a negative one yields a header that
/// [`verify`] refuses.
#[must_use]
pub fn sign(secret: &StripeSecret, timestamp: UnixTime, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", v1_signature(secret, timestamp, body))
}

/// Verifies a `Stripe-Signature` value against the raw `body` bytes.
///
/// Order: strict parse; then every `v1` is compared in constant time
/// ([`bastion_crypto::ct_eq`]) with the expected signature under every secret in `secrets`
/// (rotation: any one match is enough); then the timestamp must be within `tolerance_secs`
/// of `now` in both directions (Stripe's default is 300 s). Returns the signed timestamp.
///
/// # Errors
/// [`WebhookError::Malformed`] (see [`parse_header`]), [`WebhookError::NoMatchingSignature`]
/// (also when `secrets` is empty), [`WebhookError::TimestampOutsideTolerance`] for an
/// authentic but stale or future-dated delivery.
pub fn verify(
    header_value: &str,
    body: &[u8],
    secrets: &[StripeSecret],
    tolerance_secs: u64,
    now: UnixTime,
) -> Result<UnixTime, WebhookError> {
    let header = parse_header(header_value)?;
    let matched = secrets.iter().any(|secret| {
        let expected = v1_bytes(secret, header.timestamp, body);
        // Compare against every presented signature; no early exit inside one comparison.
        header
            .v1
            .iter()
            .fold(false, |found, sig| found | ct_eq(sig, &expected))
    });
    if !matched {
        return Err(WebhookError::NoMatchingSignature);
    }
    check_window(header.timestamp, now, tolerance_secs)?;
    Ok(header.timestamp)
}
