//! Password hashing with argon2id (RFC 9106), off the async runtime and bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::{AuthError, PasswordParams};

/// Shortest accepted new password, in characters (NIST SP 800-63B §3.1.1.2 asks for at least
/// 8; Bastion asks for 12).
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest accepted password, in bytes: bounds the work an attacker can ask for.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Longest stored hash accepted for verification, in bytes.
const HASH_BYTES_MAX: usize = 512;

/// Checks a new password against the length policy.
///
/// # Errors
/// [`AuthError::BadRequest`] when it is shorter than 12 characters or longer than 1024 bytes.
pub fn check_password_policy(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(AuthError::BadRequest(
            "password must be at least 12 characters".to_owned(),
        ));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::BadRequest(
            "password must be at most 1024 bytes".to_owned(),
        ));
    }
    Ok(())
}

/// argon2id hashing and verification as PHC strings, run on `spawn_blocking` behind a
/// semaphore so at most `max_concurrent` hashes (each `m_cost_kib` of memory) run at once.
///
/// Holds a dummy hash with the same parameters: verifying against it when a user does not
/// exist costs the same time as a real verification (I12).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: PasswordParams,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
    verifications: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// A hasher with `params` and at most `max_concurrent` (at least 1) hashes at once.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the parameters are invalid or hashing the dummy fails.
    pub async fn new(params: PasswordParams, max_concurrent: usize) -> Result<Self, AuthError> {
        let mut hasher = Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy_hash: Arc::from(""),
            verifications: Arc::new(AtomicU64::new(0)),
        };
        let dummy_password =
            bastion_crypto::random_token(24).map_err(|_| AuthError::Unavailable)?;
        hasher.dummy_hash = Arc::from(hasher.hash_unchecked(dummy_password).await?);
        Ok(hasher)
    }

    /// Hashes a new password after checking the length policy; returns a PHC string
    /// (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a 16-byte random salt.
    ///
    /// # Errors
    /// [`AuthError::BadRequest`] for a password outside the policy, [`AuthError::Unavailable`]
    /// when hashing fails.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        check_password_policy(password)?;
        self.hash_unchecked(password.to_owned()).await
    }

    async fn hash_unchecked(&self, password: String) -> Result<String, AuthError> {
        let argon = argon2_for(self.params)?;
        let salt_bytes = bastion_crypto::random_bytes(16).map_err(|_| AuthError::Unavailable)?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| AuthError::Unavailable)?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unavailable)?;
        // The permit moves into the blocking task: a cancelled caller cannot free it while
        // the hash is still running, so the bound holds.
        tokio::task::spawn_blocking(move || {
            let _held = permit;
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|_| AuthError::Unavailable)
        })
        .await
        .map_err(|_| AuthError::Unavailable)?
    }

    /// Verifies `password` against `phc`, or against the dummy hash when `phc` is `None`
    /// (unknown user), so both paths cost one argon2 computation. Returns `false` for the
    /// dummy, a mismatch, a malformed hash, or a password over 1024 bytes.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the blocking pool or semaphore is gone.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, AuthError> {
        let is_real = phc.is_some();
        let stored = match phc {
            Some(h) if h.len() <= HASH_BYTES_MAX => h.to_owned(),
            _ => self.dummy_hash.to_string(),
        };
        // An over-long password is refused, but only after the same work as any other.
        let too_long = password.len() > PASSWORD_BYTES_MAX;
        let candidate = if too_long {
            String::new()
        } else {
            password.to_owned()
        };
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unavailable)?;
        let matched = tokio::task::spawn_blocking(move || {
            let _held = permit;
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .map_err(|_| AuthError::Unavailable)?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(matched && is_real && !too_long)
    }

    /// How many argon2 verifications ran (real and dummy alike), for tests and metrics.
    #[must_use]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The parameters new hashes use.
    #[must_use]
    pub fn params(&self) -> PasswordParams {
        self.params
    }
}

fn argon2_for(p: PasswordParams) -> Result<Argon2<'static>, AuthError> {
    let params =
        Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None).map_err(|_| AuthError::Unavailable)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHasher::new(PasswordParams::TEST_ONLY, 2)
            .await
            .unwrap();
        let phc = h.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(h.verify("correct horse battery", Some(&phc)).await.unwrap());
        assert!(!h.verify("correct horse batterz", Some(&phc)).await.unwrap());
        assert!(!h.verify("anything", None).await.unwrap());
        assert!(!h.verify("x", Some("not a phc string")).await.unwrap());
        assert!(h.hash("short").await.is_err());
        assert!(h.hash(&"a".repeat(1025)).await.is_err());
    }

    #[tokio::test]
    async fn owasp_params_are_used_in_production() {
        assert_eq!(
            PasswordParams::default(),
            PasswordParams {
                m_cost_kib: 19_456,
                t_cost: 2,
                p_cost: 1
            }
        );
    }
}
