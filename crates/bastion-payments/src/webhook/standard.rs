//! Standard Webhooks signatures (Standard Webhooks specification v1, "Signature scheme").
//!
//! ```text
//! webhook-id:        msg_2Lx…            (unique per message, the same on every retry)
//! webhook-timestamp: 1649367553          (Unix seconds)
//! webhook-signature: v1,<base64> [v1,<base64> …]   (space-separated; other versions ignored)
//! v1 = base64( HMAC-SHA256( key = base64-decoded part of "whsec_<base64>",
//!                           msg = id + "." + timestamp + "." + raw body bytes ) )
//! ```
//!
//! Each `v1` value must be the full 44-character padded base64 of 32 bytes: an empty
//! (`v1,`) or truncated (`v1,t`) value refuses the whole header, so no prefix of a
//! signature is ever compared (svix#1190, case P1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bastion_crypto::{ct_eq, hmac_sha256};
use bastion_types::UnixTime;

use super::window::{check_window, parse_timestamp};
use super::{StandardSecret, WebhookError};

/// The message id header.
pub const ID_HEADER: &str = "webhook-id";
/// The timestamp header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Longest accepted `webhook-id`, bytes.
pub const ID_BYTES_MAX: usize = 256;
/// Longest accepted `webhook-signature` value, bytes (16 `v1` entries are 767 bytes).
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 2048;
/// Most space-separated entries accepted in one `webhook-signature` value.
pub const SIGNATURE_ENTRIES_MAX: usize = 16;
/// Length of one `v1` value: 32 bytes as padded standard base64.
pub const V1_B64_LEN: usize = 44;

/// Checks a `webhook-id`: 1 to [`ID_BYTES_MAX`] visible ASCII characters (0x21–0x7E).
///
/// # Errors
/// [`WebhookError::Malformed`] otherwise.
pub fn check_id(id: &str) -> Result<(), WebhookError> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(WebhookError::Malformed(
            "webhook-id must have 1 to 256 characters",
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WebhookError::Malformed("webhook-id must be visible ascii"));
    }
    Ok(())
}

/// Parses a `webhook-signature` value strictly into its `v1` signatures (32 bytes each).
///
/// Accepted: at most [`SIGNATURE_HEADER_BYTES_MAX`] bytes and [`SIGNATURE_ENTRIES_MAX`]
/// entries separated by single spaces; each entry `version,value` with a non-empty version
/// and value; every `v1` value exactly [`V1_B64_LEN`] characters of canonical padded
/// standard base64 (RFC 4648 §4) decoding to 32 bytes. Other versions (`v1a` asymmetric
/// signatures, future ones) are ignored.
///
/// # Errors
/// [`WebhookError::Malformed`] when any rule is broken — including `v1,` (empty) and `v1,t`
/// (truncated); [`WebhookError::NoMatchingSignature`] when no entry is `v1`.
pub fn parse_signature_header(value: &str) -> Result<Vec<[u8; 32]>, WebhookError> {
    if value.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(WebhookError::Malformed(
            "webhook-signature header is too long",
        ));
    }
    let mut v1 = Vec::new();
    for (n, entry) in value.split(' ').enumerate() {
        if n >= SIGNATURE_ENTRIES_MAX {
            return Err(WebhookError::Malformed(
                "webhook-signature header has too many entries",
            ));
        }
        let (version, sig) = entry.split_once(',').ok_or(WebhookError::Malformed(
            "webhook-signature entry is not `version,value`",
        ))?;
        if version.is_empty() {
            return Err(WebhookError::Malformed(
                "webhook-signature entry has no version",
            ));
        }
        if sig.is_empty() {
            return Err(WebhookError::Malformed(
                "webhook-signature entry has an empty value",
            ));
        }
        if version == "v1" {
            v1.push(decode_v1(sig)?);
        }
    }
    if v1.is_empty() {
        return Err(WebhookError::NoMatchingSignature);
    }
    Ok(v1)
}

/// Decodes one `v1` value: 44 characters of canonical padded base64 giving 32 bytes.
fn decode_v1(sig: &str) -> Result<[u8; 32], WebhookError> {
    const BAD: WebhookError =
        WebhookError::Malformed("webhook-signature v1 must be 44 base64 characters (32 bytes)");
    if sig.len() != V1_B64_LEN {
        return Err(BAD);
    }
    let bytes = B64.decode(sig).map_err(|_| BAD)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| BAD)
}

/// The signed content `id.timestamp.body`, HMAC-SHA256 under `secret`.
fn v1_bytes(secret: &StandardSecret, id: &str, timestamp: UnixTime, body: &[u8]) -> [u8; 32] {
    let t = timestamp.to_string();
    let mut msg = Vec::with_capacity(id.len() + t.len() + 2 + body.len());
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(t.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac_sha256(secret.key(), &msg)
}

/// One `webhook-signature` entry, `v1,<base64>`, for message `id` sent at `timestamp` (Unix
/// seconds) with `body`, as the reference libraries' `sign` produce it. Used by Bastion's
/// test PSP and the tests; join several entries with a space for rotation.
#[must_use]
pub fn sign(secret: &StandardSecret, id: &str, timestamp: UnixTime, body: &[u8]) -> String {
    format!("v1,{}", B64.encode(v1_bytes(secret, id, timestamp, body)))
}

/// Verifies one Standard Webhooks delivery from its three header values and the raw body.
///
/// Order: `id` checked ([`check_id`]), timestamp parsed (canonical decimal), signature
/// header parsed strictly ([`parse_signature_header`]); then every `v1` is compared in
/// constant time with the expected signature under every secret (rotation); then the
/// timestamp must be within `tolerance_secs` of `now` in both directions (the spec's
/// reference libraries use 300 s). Returns the signed timestamp.
///
/// # Errors
/// [`WebhookError::Malformed`], [`WebhookError::NoMatchingSignature`] (also when `secrets`
/// is empty), [`WebhookError::TimestampOutsideTolerance`].
pub fn verify(
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    secrets: &[StandardSecret],
    tolerance_secs: u64,
    now: UnixTime,
) -> Result<UnixTime, WebhookError> {
    check_id(id)?;
    let timestamp = parse_timestamp(timestamp)?;
    let presented = parse_signature_header(signature)?;
    let matched = secrets.iter().any(|secret| {
        let expected = v1_bytes(secret, id, timestamp, body);
        presented
            .iter()
            .fold(false, |found, sig| found | ct_eq(sig, &expected))
    });
    if !matched {
        return Err(WebhookError::NoMatchingSignature);
    }
    check_window(timestamp, now, tolerance_secs)?;
    Ok(timestamp)
}
