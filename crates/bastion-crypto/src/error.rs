//! The crate's one error type.

/// A cryptographic operation failed. Messages are lowercase and carry no key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A key could not be generated, parsed or serialized.
    #[error("invalid key: {0}")]
    Key(&'static str),
    /// A JWK lacked a required member or had an unsupported `kty` (RFC 7638 §3.2).
    #[error("invalid jwk: {0}")]
    Jwk(&'static str),
    /// Reading or writing the key directory failed.
    #[error("key directory i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// A key file's name does not match the thumbprint of the key inside it.
    #[error("key file `{0}` does not match its key")]
    KidMismatch(String),
    /// The key directory holds no usable signing key and creating one was not asked for.
    #[error("no signing key in the key directory")]
    NoKey,
    /// A field could not be encrypted (over-long value or context, or a cipher failure).
    #[error("field encryption failed")]
    Encrypt,
    /// A sealed field did not open: wrong key, wrong row or field, unknown format, or
    /// tampered bytes. Deliberately one answer for all.
    #[error("field decryption failed")]
    Decrypt,
}
