//! Random tokens, hashes, HMAC and constant-time comparison.

use aws_lc_rs::{digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::CryptoError;

/// Upper bound for [`random_token`] and [`random_bytes`], in bytes: every limit is explicit.
const RANDOM_BYTES_MAX: usize = 1024;

/// `n` bytes from the operating system CSPRNG (aws-lc-rs `SystemRandom`).
///
/// # Errors
/// [`CryptoError::Random`] when the generator fails or `n` exceeds 1024.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    if n > RANDOM_BYTES_MAX {
        return Err(CryptoError::Random);
    }
    let mut buf = vec![0_u8; n];
    rand::fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(buf)
}

/// A random token of `n_bytes` CSPRNG bytes, as unpadded base64url (RFC 4648 §5).
///
/// 32 bytes (256 bits) is the usual choice for bearer secrets such as refresh tokens.
///
/// # Errors
/// [`CryptoError::Random`] when the generator fails or `n_bytes` exceeds 1024.
pub fn random_token(n_bytes: usize) -> Result<String, CryptoError> {
    Ok(b64url_encode(&random_bytes(n_bytes)?))
}

/// Unpadded base64url (RFC 4648 §5), as used throughout JOSE (RFC 7515 §2).
#[must_use]
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url (RFC 4648 §5); padding and the standard alphabet are refused.
#[must_use]
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// SHA-256 (FIPS 180-4) of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0_u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `data` as 64 lowercase hex characters.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// HMAC-SHA-256 (RFC 2104) of `data` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, data);
    let mut out = [0_u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 Appendix B.1: "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_are_random_and_urlsafe() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(random_token(RANDOM_BYTES_MAX + 1).is_err());
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
