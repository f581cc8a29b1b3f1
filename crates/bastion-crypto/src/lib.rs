//! Bastion's cryptographic primitives, all over aws-lc-rs (the one crypto provider).
//!
//! - Ed25519 signing keys ([`SigningKey`]) kept as PKCS#8 v2 files (`signing-<kid>.pk8`,
//!   mode 0600) in a key directory, identified by their RFC 7638 JWK thumbprint, and held
//!   in memory in a [`KeyRing`]: one active signing key plus the public keys of previous
//!   ones, published as an RFC 8037 JWKS.
//! - [`random_token`] (CSPRNG, base64url), [`sha256`], [`sha256_hex`], [`hmac_sha256`]
//!   and [`ct_eq`] (constant time).
//!
//! - Field-level encryption at rest ([`FieldMasterKey`], [`TenantFieldKey`]): AES-256-GCM
//!   with a random 96-bit nonce per value, per-tenant keys derived with HKDF-SHA256
//!   ([`hkdf_sha256`], RFC 5869) from a server master secret, and additional authenticated
//!   data binding each value to its tenant, row and field (see the `field` module docs).
//!
//! Private key bytes never leave this crate: callers sign JWTs through the
//! [`jsonwebtoken::EncodingKey`] the ring hands out, and verify through the
//! [`jsonwebtoken::DecodingKey`] it looks up by exact `kid`, in memory only.

mod error;
mod field;
mod jwk;
mod keys;
mod primitives;

pub use error::CryptoError;
pub use field::{
    FIELD_CONTEXT_BYTES_MAX, FIELD_FORMAT_V1, FIELD_INFO_PREFIX, FIELD_MASTER_SECRET_BYTES_MAX,
    FIELD_MASTER_SECRET_BYTES_MIN, FIELD_NONCE_BYTES, FIELD_OVERHEAD_BYTES,
    FIELD_PLAINTEXT_BYTES_MAX, FIELD_TAG_BYTES, FieldMasterKey, TenantFieldKey, hkdf_sha256,
};
pub use jwk::{jwk_thumbprint_sha256, okp_ed25519_jwk};
pub use keys::{KeyRing, SigningKey, VerifyingKey};
pub use primitives::{
    b64url_decode, b64url_encode, ct_eq, hmac_sha256, random_bytes, random_token, sha256,
    sha256_hex,
};
