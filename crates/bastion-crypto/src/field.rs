//! Field-level encryption at rest: AES-256-GCM under per-tenant keys derived with HKDF.
//!
//! # Construction
//!
//! - **Master secret → per-tenant key.** The server master secret (at least
//!   [`FIELD_MASTER_SECRET_BYTES_MIN`] bytes, e.g. the `identity.secret_key_file`) is the input
//!   keying material of HKDF-SHA256 (RFC 5869) with no salt (§2.2: `HashLen` zero bytes).
//!   A tenant's 256-bit key is `HKDF-Expand(PRK, info, 32)` with
//!   `info = "bastion field v1" ‖ tenant id (16 bytes)`. Only the PRK is kept in memory.
//! - **Encryption.** AES-256-GCM (NIST SP 800-38D) with a fresh 96-bit nonce from the system
//!   CSPRNG for every encryption — never a counter or a static IV (case U5). With random
//!   nonces one key must not seal more than 2³² values (SP 800-38D §8.3); a field written
//!   once per enrollment is far below that.
//! - **Binding to the row.** The additional authenticated data is
//!   `"bastion field v1" ‖ version ‖ tenant id (16) ‖ len(row) (u32 BE) ‖ row ‖ len(field)
//!   (u32 BE) ‖ field`: a ciphertext copied to another row, another field or another tenant,
//!   or decrypted under another tenant's key, fails authentication.
//! - **Format.** `version (1 byte, 0x01) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`:
//!   [`FIELD_OVERHEAD_BYTES`] bytes more than the plaintext.
//!
//! Failure to open is one opaque [`CryptoError::Decrypt`]: no oracle says whether the key,
//! the context or the bytes were wrong. `Debug` of key types never prints key material.

use std::sync::Arc;

use aws_lc_rs::{aead, hkdf, rand};

use crate::CryptoError;

/// The format version byte that leads every sealed value.
pub const FIELD_FORMAT_V1: u8 = 0x01;
/// The HKDF `info` prefix and the AAD prefix: the domain of this construction.
pub const FIELD_INFO_PREFIX: &[u8] = b"bastion field v1";
/// AES-GCM nonce length: 96 bits (SP 800-38D §8.2.2, random construction).
pub const FIELD_NONCE_BYTES: usize = 12;
/// AES-GCM tag length: 128 bits.
pub const FIELD_TAG_BYTES: usize = 16;
/// Bytes a sealed value adds to its plaintext: version, nonce and tag.
pub const FIELD_OVERHEAD_BYTES: usize = 1 + FIELD_NONCE_BYTES + FIELD_TAG_BYTES;
/// Shortest master secret accepted, in bytes (256 bits).
pub const FIELD_MASTER_SECRET_BYTES_MIN: usize = 32;
/// Longest master secret accepted, in bytes; every limit is explicit.
pub const FIELD_MASTER_SECRET_BYTES_MAX: usize = 1024;
/// Largest plaintext sealed, in bytes.
pub const FIELD_PLAINTEXT_BYTES_MAX: usize = 64 * 1024;
/// Longest row identifier or field name bound into the AAD, in bytes.
pub const FIELD_CONTEXT_BYTES_MAX: usize = 256;
/// Tenant key length: AES-256.
const TENANT_KEY_BYTES: usize = 32;

/// An HKDF output length, as aws-lc-rs wants it.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` (empty means `HashLen` zero bytes, §2.2),
/// then expand with `info` into `out` (at most 255 × 32 bytes).
///
/// # Errors
/// [`CryptoError::Key`] when `out` is empty or longer than 8160 bytes.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    expand(&prk, &[info], out)
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
    if out.is_empty() {
        return Err(CryptoError::Key("empty hkdf output"));
    }
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Key("hkdf output too long"))
}

/// The server master secret for field encryption, held as its HKDF PRK.
///
/// Cheap to clone (shared). `Debug` prints only whether it is ephemeral.
#[derive(Clone)]
pub struct FieldMasterKey {
    prk: Option<Arc<hkdf::Prk>>,
    ephemeral: bool,
}

impl std::fmt::Debug for FieldMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldMasterKey")
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

impl FieldMasterKey {
    /// The master key from a secret of
    /// [`FIELD_MASTER_SECRET_BYTES_MIN`]..=[`FIELD_MASTER_SECRET_BYTES_MAX`] bytes. The
    /// bytes are used as given (a file's text, base64 included, is fine: only its entropy
    /// matters to HKDF).
    ///
    /// # Errors
    /// [`CryptoError::Key`] for a secret that is too short or too long.
    pub fn from_secret(secret: &[u8]) -> Result<Self, CryptoError> {
        if secret.len() < FIELD_MASTER_SECRET_BYTES_MIN {
            return Err(CryptoError::Key(
                "field master secret shorter than 32 bytes",
            ));
        }
        if secret.len() > FIELD_MASTER_SECRET_BYTES_MAX {
            return Err(CryptoError::Key(
                "field master secret longer than 1024 bytes",
            ));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret);
        Ok(Self {
            prk: Some(Arc::new(prk)),
            ephemeral: false,
        })
    }

    /// A random master key that lives only in this process: values sealed under it cannot
    /// be opened after a restart. Meant for tests and for tools that never read or write an
    /// encrypted field. If the random generator fails, the key fails closed: every
    /// [`FieldMasterKey::tenant_key`] returns [`CryptoError::Random`].
    #[must_use]
    pub fn ephemeral() -> Self {
        let mut secret = [0_u8; FIELD_MASTER_SECRET_BYTES_MIN];
        let prk = rand::fill(&mut secret)
            .ok()
            .map(|()| Arc::new(hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&secret)));
        secret.fill(0);
        Self {
            prk,
            ephemeral: true,
        }
    }

    /// Whether this key was made by [`FieldMasterKey::ephemeral`].
    #[must_use]
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The AES-256-GCM key of `tenant` (its 16 UUID bytes):
    /// `HKDF-Expand(PRK, "bastion field v1" ‖ tenant, 32)`.
    ///
    /// # Errors
    /// [`CryptoError::Random`] for an ephemeral key whose generation failed;
    /// [`CryptoError::Key`] when aws-lc-rs refuses the key.
    pub fn tenant_key(&self, tenant: &[u8; 16]) -> Result<TenantFieldKey, CryptoError> {
        let prk = self.prk.as_ref().ok_or(CryptoError::Random)?;
        let mut bytes = [0_u8; TENANT_KEY_BYTES];
        expand(prk, &[FIELD_INFO_PREFIX, tenant], &mut bytes)?;
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &bytes);
        bytes.fill(0);
        let key = unbound.map_err(|_| CryptoError::Key("aes-256-gcm key refused"))?;
        Ok(TenantFieldKey {
            tenant: *tenant,
            key: aead::LessSafeKey::new(key),
        })
    }
}

/// One tenant's field key. Seals and opens values bound to a row and a field name.
/// `Debug` prints nothing of the key.
pub struct TenantFieldKey {
    tenant: [u8; 16],
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for TenantFieldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantFieldKey").finish_non_exhaustive()
    }
}

impl TenantFieldKey {
    /// Encrypts `plaintext` for the field `field` of the row `row` (e.g. a user id):
    /// `0x01 ‖ random nonce ‖ ciphertext ‖ tag`. Two calls never share a nonce (with
    /// overwhelming probability), so the same value sealed twice gives different bytes.
    ///
    /// # Errors
    /// [`CryptoError::Encrypt`] for an over-long plaintext or context;
    /// [`CryptoError::Random`] when the nonce cannot be drawn.
    pub fn seal(&self, row: &[u8], field: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if plaintext.len() > FIELD_PLAINTEXT_BYTES_MAX {
            return Err(CryptoError::Encrypt);
        }
        let aad = self.aad(row, field).ok_or(CryptoError::Encrypt)?;
        let mut nonce = [0_u8; FIELD_NONCE_BYTES];
        rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let sealed = seal_raw(&self.key, nonce, &aad, plaintext)?;
        let mut out = Vec::with_capacity(1 + FIELD_NONCE_BYTES + sealed.len());
        out.push(FIELD_FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a value sealed by [`TenantFieldKey::seal`] for the same tenant, row and
    /// field.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] — whatever the cause: unknown version, truncated bytes,
    /// another tenant's key, another row or field, or tampering.
    pub fn open(&self, row: &[u8], field: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let aad = self.aad(row, field).ok_or(CryptoError::Decrypt)?;
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Decrypt)?;
        if version != FIELD_FORMAT_V1
            || rest.len() < FIELD_NONCE_BYTES + FIELD_TAG_BYTES
            || rest.len() > FIELD_NONCE_BYTES + FIELD_PLAINTEXT_BYTES_MAX + FIELD_TAG_BYTES
        {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = rest.split_at(FIELD_NONCE_BYTES);
        let nonce: [u8; FIELD_NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        open_raw(&self.key, nonce, &aad, ct)
    }

    /// The AAD: domain, version, tenant, then length-prefixed row and field (unambiguous).
    fn aad(&self, row: &[u8], field: &str) -> Option<Vec<u8>> {
        if row.len() > FIELD_CONTEXT_BYTES_MAX || field.len() > FIELD_CONTEXT_BYTES_MAX {
            return None;
        }
        let row_len = u32::try_from(row.len()).ok()?;
        let field_len = u32::try_from(field.len()).ok()?;
        let mut aad = Vec::with_capacity(FIELD_INFO_PREFIX.len() + 25 + row.len() + field.len());
        aad.extend_from_slice(FIELD_INFO_PREFIX);
        aad.push(FIELD_FORMAT_V1);
        aad.extend_from_slice(&self.tenant);
        aad.extend_from_slice(&row_len.to_be_bytes());
        aad.extend_from_slice(row);
        aad.extend_from_slice(&field_len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
        Some(aad)
    }
}

/// AES-GCM seal with an explicit nonce: `ciphertext ‖ tag`. Private: callers get random
/// nonces only.
fn seal_raw(
    key: &aead::LessSafeKey,
    nonce: [u8; FIELD_NONCE_BYTES],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut in_out,
    )
    .map_err(|_| CryptoError::Encrypt)?;
    Ok(in_out)
}

fn open_raw(
    key: &aead::LessSafeKey,
    nonce: [u8; FIELD_NONCE_BYTES],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut in_out = ciphertext_and_tag.to_vec();
    let n = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    in_out.truncate(n);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: &[u8]) -> aead::LessSafeKey {
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, bytes).unwrap())
    }

    /// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13 and 14
    /// (AES-256, zero key, zero IV).
    #[test]
    fn aes_256_gcm_known_answers() {
        let k = key(&[0_u8; 32]);
        let tag = seal_raw(&k, [0; 12], &[], &[]).unwrap();
        assert_eq!(hex::encode(&tag), "530f8afbc74536b9a963b4f1c4cb738b");
        let ct = seal_raw(&k, [0; 12], &[], &[0_u8; 16]).unwrap();
        assert_eq!(
            hex::encode(&ct),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
        assert_eq!(open_raw(&k, [0; 12], &[], &ct).unwrap(), [0_u8; 16]);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open_raw(&k, [0; 12], &[], &bad).is_err());
        assert!(open_raw(&k, [0; 12], b"x", &ct).is_err());
    }
}
