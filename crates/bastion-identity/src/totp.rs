//! TOTP (RFC 6238) and recovery codes.

use totp_rs::{Algorithm, TOTP};

use crate::AuthError;

/// Seconds per TOTP step (RFC 6238 §4.1 `X`, the recommended 30).
pub const TOTP_STEP_SECS: i64 = 30;
/// Digits per code (RFC 4226 §5.3).
pub const TOTP_DIGITS: usize = 6;
/// Steps accepted either side of the current one (RFC 6238 §5.2 recommends at most one).
pub const TOTP_SKEW_STEPS: i64 = 1;
/// Secret length in bytes: 160 bits, the HMAC-SHA-1 output size (RFC 4226 §4 R6).
pub const TOTP_SECRET_BYTES: usize = 20;
/// Recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;

/// The TOTP value (RFC 6238 §4.2, HMAC-SHA-1) of `secret` at `unix_time` with `digits`
/// digits, zero padded.
#[must_use]
pub fn totp_code(secret: &[u8], unix_time: u64, digits: usize) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        digits,
        0,
        TOTP_STEP_SECS.unsigned_abs(),
        secret.to_vec(),
    )
    .generate(unix_time)
}

/// The RFC 6238 step number `T = floor(unix_time / 30)` for `unix_time`.
#[must_use]
pub fn totp_step(unix_time: i64) -> i64 {
    unix_time.div_euclid(TOTP_STEP_SECS)
}

/// Checks a 6-digit `code` for `secret` at `now`, accepting the current step and one either
/// side. Returns the matched step, so the caller can refuse steps already used (RFC 6238
/// §5.2: a code is accepted at most once). Every candidate is compared in constant time.
#[must_use]
pub fn verify_totp(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = totp_step(now);
    let mut matched = None;
    for step in (current - TOTP_SKEW_STEPS)..=(current + TOTP_SKEW_STEPS) {
        let Ok(t) = u64::try_from(step * TOTP_STEP_SECS) else {
            continue;
        };
        let expected = totp_code(secret, t, TOTP_DIGITS);
        if bastion_crypto::ct_eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// A fresh 20-byte TOTP secret.
///
/// # Errors
/// [`AuthError::Unavailable`] when the random generator fails.
pub fn new_totp_secret() -> Result<Vec<u8>, AuthError> {
    bastion_crypto::random_bytes(TOTP_SECRET_BYTES).map_err(|_| AuthError::Unavailable)
}

/// The secret as unpadded RFC 4648 §6 base32, as authenticator apps expect.
#[must_use]
pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The Key URI Format `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=SHA1&digits=6&period=30`
/// (Google Authenticator's key URI format). `issuer` and `account` are percent-encoded.
#[must_use]
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
        percent_encode(account),
        secret_base32(secret),
    )
}

/// Percent-encodes everything but RFC 3986 §2.3 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ten fresh recovery codes, each 10 random bytes (80 bits) as base32 in groups:
/// `XXXX-XXXX-XXXX-XXXX`.
///
/// # Errors
/// [`AuthError::Unavailable`] when the random generator fails.
pub fn new_recovery_codes() -> Result<Vec<String>, AuthError> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes = bastion_crypto::random_bytes(10).map_err(|_| AuthError::Unavailable)?;
            let b32 = data_encoding::BASE32_NOPAD.encode(&bytes);
            let groups: Vec<&str> = [0..4, 4..8, 8..12, 12..16]
                .into_iter()
                .filter_map(|r| b32.get(r))
                .collect();
            Ok(groups.join("-"))
        })
        .collect()
}

/// The stored form of a recovery code: SHA-256 of its normalized form (uppercase, no
/// separators or spaces). A plain hash suffices: each code carries 80 random bits.
#[must_use]
pub fn recovery_code_hash(code: &str) -> [u8; 32] {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    bastion_crypto::sha256(normalized.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_returns_the_matched_step_within_skew() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_109;
        let code = totp_code(secret, u64::try_from(now).unwrap(), 6);
        assert_eq!(verify_totp(secret, &code, now), Some(totp_step(now)));
        assert_eq!(verify_totp(secret, &code, now + 30), Some(totp_step(now)));
        assert_eq!(verify_totp(secret, &code, now - 30), Some(totp_step(now)));
        assert_eq!(verify_totp(secret, &code, now + 61), None);
        assert_eq!(verify_totp(secret, "12345", now), None);
        assert_eq!(verify_totp(secret, "abcdef", now), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_normalized() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes[0].len(), 19);
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
        assert_eq!(
            recovery_code_hash(&codes[0]),
            recovery_code_hash(&codes[0].to_lowercase().replace('-', ""))
        );
    }

    #[test]
    fn otpauth_uri_shape() {
        let uri = otpauth_uri("Bastion", "alice@acme", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/Bastion:alice%40acme?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Bastion&algorithm=SHA1&digits=6&period=30"
        );
    }
}
