//! Ed25519 signing keys, their files, and the in-memory key ring.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::Value;

use crate::{CryptoError, b64url_encode, jwk_thumbprint_sha256, okp_ed25519_jwk};

/// Name of the file in the key directory that names the active signing key's `kid`.
const ACTIVE_FILE: &str = "active-kid";
/// Key files are `signing-<kid>.pk8`.
const KEY_PREFIX: &str = "signing-";
/// Key file extension (PKCS#8 DER).
const KEY_SUFFIX: &str = ".pk8";
/// Most key files a directory may hold; every limit is explicit.
const KEYS_MAX: usize = 32;
/// Largest key file read, in bytes (an Ed25519 PKCS#8 v2 document is 83–85 bytes).
const KEY_FILE_BYTES_MAX: u64 = 1024;

/// An Ed25519 private key (RFC 8032) with its RFC 7638 `kid`.
///
/// The private key stays inside this crate: it signs through [`SigningKey::sign`] or the
/// [`EncodingKey`] from [`SigningKey::encoding_key`], and `Debug` prints only the `kid`.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the system CSPRNG, serialized as PKCS#8 v2 (RFC 5958).
    ///
    /// # Errors
    /// [`CryptoError::Key`] when aws-lc-rs cannot generate or serialize a key.
    pub fn generate() -> Result<Self, CryptoError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| CryptoError::Key("generation failed"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Parses a PKCS#8 (v1 or v2) Ed25519 private key; a v2 public key must match.
    ///
    /// # Errors
    /// [`CryptoError::Key`] when the document is not a valid Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| CryptoError::Key("not an ed25519 pkcs#8 key"))?;
        // Store v2 so the public key travels with the private one.
        let pkcs8 = pair
            .to_pkcs8()
            .map_err(|_| CryptoError::Key("serialization failed"))?
            .as_ref()
            .to_vec();
        let kid = jwk_thumbprint_sha256(&okp_ed25519_jwk(pair.public_key().as_ref(), ""))?;
        let encoding = EncodingKey::from_ed_der(&pkcs8);
        Ok(Self {
            kid,
            pkcs8,
            pair,
            encoding,
        })
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public JWK (base64url, 43 chars).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte Ed25519 public key (RFC 8032 §5.1.5).
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `msg` with Ed25519 (RFC 8032 §5.1.6); 64 bytes.
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }

    /// The `jsonwebtoken` key for `EdDSA` JWS signing (RFC 8037 §3.1).
    #[must_use]
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public half, for verification and the JWKS.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::new(self.kid.clone(), self.public_key().to_vec())
    }

    /// Writes the key as `dir/signing-<kid>.pk8` (PKCS#8 v2 DER, mode 0600), creating `dir`
    /// with mode 0700 if needed. The file is written under a temporary name and renamed, so
    /// a crash never leaves a half-written key.
    ///
    /// # Errors
    /// [`CryptoError::Io`] on any file system failure.
    pub fn write_to_dir(&self, dir: &Path) -> Result<PathBuf, CryptoError> {
        ensure_dir(dir)?;
        let path = dir.join(format!("{KEY_PREFIX}{}{KEY_SUFFIX}", self.kid));
        write_private_file(dir, &path, &self.pkcs8)?;
        Ok(path)
    }
}

/// An Ed25519 public key with its `kid`, for signature verification and the JWKS.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    public: Vec<u8>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    fn new(kid: String, public: Vec<u8>) -> Self {
        let decoding = DecodingKey::from_ed_der(&public);
        Self {
            kid,
            public,
            decoding,
        }
    }

    /// The key id (RFC 7638 thumbprint).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The `jsonwebtoken` key for `EdDSA` verification (RFC 8037 §3.1).
    #[must_use]
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Verifies an Ed25519 signature (RFC 8032 §5.1.7).
    #[must_use]
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(msg, signature)
            .is_ok()
    }

    /// The public JWK (RFC 8037 §2, RFC 7517 §4): `kty`, `crv`, `x`, `kid`, `alg`, `use`.
    #[must_use]
    pub fn jwk(&self) -> Value {
        okp_ed25519_jwk(&self.public, &self.kid)
    }

    /// The SubjectPublicKeyInfo DER (RFC 8410 §4) of the key.
    #[must_use]
    pub fn spki_der(&self) -> Vec<u8> {
        // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING { 0x00 key } }
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&self.public);
        der
    }

    /// The key as a PEM `PUBLIC KEY` block (RFC 7468 §13).
    #[must_use]
    pub fn spki_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }
}

/// The keys a service signs and verifies with: one active signing key and the public keys
/// of previous ones (kept so tokens they signed verify until they expire).
///
/// Lookup by `kid` is an exact match in memory only: a `kid` from a token never reaches a
/// file path or a query.
#[derive(Debug)]
pub struct KeyRing {
    active: SigningKey,
    verifying: BTreeMap<String, VerifyingKey>,
}

impl KeyRing {
    /// A ring with `active` as the signing key and `previous` as verify-only keys.
    #[must_use]
    pub fn new(active: SigningKey, previous: Vec<VerifyingKey>) -> Self {
        let mut verifying: BTreeMap<String, VerifyingKey> =
            previous.into_iter().map(|k| (k.kid.clone(), k)).collect();
        verifying.insert(active.kid.clone(), active.verifying_key());
        Self { active, verifying }
    }

    /// A ring with one freshly generated key that lives only in memory (tests, tools).
    ///
    /// # Errors
    /// [`CryptoError::Key`] when generation fails.
    pub fn ephemeral() -> Result<Self, CryptoError> {
        Ok(Self::new(SigningKey::generate()?, Vec::new()))
    }

    /// Loads every `signing-<kid>.pk8` in `dir`. The active key is the one named in
    /// `dir/active-kid`, or the only key when there is just one.
    ///
    /// Every file is checked: mode must not allow group or other access, and the file name's
    /// `kid` must equal the thumbprint of the key inside.
    ///
    /// # Errors
    /// [`CryptoError::NoKey`] when `dir` has no key; [`CryptoError::KidMismatch`],
    /// [`CryptoError::Key`] or [`CryptoError::Io`] for a bad directory.
    pub fn load(dir: &Path) -> Result<Self, CryptoError> {
        let mut keys: BTreeMap<String, SigningKey> = BTreeMap::new();
        if !dir.exists() {
            return Err(CryptoError::NoKey);
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(kid) = name
                .strip_prefix(KEY_PREFIX)
                .and_then(|s| s.strip_suffix(KEY_SUFFIX))
            else {
                continue;
            };
            if keys.len() >= KEYS_MAX {
                return Err(CryptoError::Key("too many key files"));
            }
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(CryptoError::Key("key file readable by group or others"));
            }
            if meta.len() > KEY_FILE_BYTES_MAX {
                return Err(CryptoError::Key("key file too large"));
            }
            let key = SigningKey::from_pkcs8(&fs::read(entry.path())?)?;
            if key.kid != kid {
                return Err(CryptoError::KidMismatch(name.to_owned()));
            }
            keys.insert(key.kid.clone(), key);
        }
        let active_path = dir.join(ACTIVE_FILE);
        let active_kid = if active_path.exists() {
            fs::read_to_string(&active_path)?.trim().to_owned()
        } else if keys.len() == 1 {
            keys.keys().next().cloned().unwrap_or_default()
        } else if keys.is_empty() {
            return Err(CryptoError::NoKey);
        } else {
            return Err(CryptoError::Key("several keys and no active-kid file"));
        };
        let active = keys.remove(&active_kid).ok_or(CryptoError::NoKey)?;
        let previous = keys.into_values().map(|k| k.verifying_key()).collect();
        Ok(Self::new(active, previous))
    }

    /// [`KeyRing::load`], or when `dir` holds no key yet, generates one, writes it (mode
    /// 0600) and marks it active.
    ///
    /// # Errors
    /// As [`KeyRing::load`] and [`SigningKey::write_to_dir`].
    pub fn load_or_generate(dir: &Path) -> Result<Self, CryptoError> {
        match Self::load(dir) {
            Err(CryptoError::NoKey) => {
                let key = SigningKey::generate()?;
                key.write_to_dir(dir)?;
                write_private_file(dir, &dir.join(ACTIVE_FILE), key.kid.as_bytes())?;
                Ok(Self::new(key, Vec::new()))
            }
            other => other,
        }
    }

    /// Generates a new signing key in `dir`, makes it active there and returns the new ring:
    /// the old active key and all previous keys stay as verify-only keys.
    ///
    /// # Errors
    /// As [`KeyRing::load`] and [`SigningKey::write_to_dir`].
    pub fn rotate_in_dir(dir: &Path) -> Result<Self, CryptoError> {
        let key = SigningKey::generate()?;
        key.write_to_dir(dir)?;
        write_private_file(dir, &dir.join(ACTIVE_FILE), key.kid.as_bytes())?;
        Self::load(dir)
    }

    /// The active signing key.
    #[must_use]
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The verification key whose `kid` equals `kid` exactly, if any.
    #[must_use]
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// All verification keys, active first.
    #[must_use]
    pub fn verifying_keys(&self) -> Vec<&VerifyingKey> {
        let mut out: Vec<&VerifyingKey> = Vec::with_capacity(self.verifying.len());
        out.extend(self.verifying.get(&self.active.kid));
        out.extend(self.verifying.values().filter(|k| k.kid != self.active.kid));
        out
    }

    /// The public JWK Set (RFC 7517 §5) of every verification key, active first.
    #[must_use]
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .verifying_keys()
            .into_iter()
            .map(VerifyingKey::jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The active key's public key, base64url (for diagnostics).
    #[must_use]
    pub fn active_x(&self) -> String {
        b64url_encode(self.active.public_key())
    }
}

fn ensure_dir(dir: &Path) -> Result<(), CryptoError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600 via a temporary file and a rename.
fn write_private_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CryptoError> {
    ensure_dir(dir)?;
    let tmp = path.with_extension(format!("tmp-{}", crate::random_token(8)?));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    fs::rename(&tmp, path)?;
    Ok(())
}
