//! Second factors: TOTP secrets with a replay guard, recovery codes, and single-use
//! challenges (the short-lived tokens between the password step and the MFA step).
//!
//! Codes and challenge tokens are stored only as hashes the caller computed. TOTP secrets are
//! stored as the bytes the caller gives (a BLOB); bastion-identity gives them sealed.

use bastion_types::{UnixTime, UserId};

use crate::TenantTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Longest accepted stored TOTP secret, in bytes. The store keeps whatever bytes the caller
/// gives: bastion-identity stores the secret sealed (AES-256-GCM, 29 bytes of framing), so
/// this fits a 64-byte (SHA-512) secret plus its framing.
pub const TOTP_SECRET_LEN_MAX: usize = 128;
/// Most recovery codes a user holds at once.
pub const RECOVERY_CODES_MAX: usize = 32;
/// Longest accepted hash of a code or token, in bytes.
pub const HASH_LEN_MAX: usize = 64;
/// Longest accepted challenge kind, in bytes.
pub const CHALLENGE_KIND_LEN_MAX: usize = 32;

/// A user's TOTP enrolment. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpState {
    /// The stored secret, as the caller wrote it (bastion-identity writes it sealed with its
    /// per-tenant field key, never the raw RFC 6238 secret).
    pub secret: Vec<u8>,
    /// Whether the user proved possession (enrolment finished).
    pub confirmed: bool,
    /// The last accepted time step (RFC 6238 `T`), `-1` when none yet.
    pub last_used_step: i64,
}

impl std::fmt::Debug for TotpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpState")
            .field("secret", &"<redacted>")
            .field("confirmed", &self.confirmed)
            .field("last_used_step", &self.last_used_step)
            .finish()
    }
}

fn check_hash(hash: &[u8]) -> StoreResult<()> {
    if hash.is_empty() || hash.len() > HASH_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "hash must be 1..=64 bytes",
        });
    }
    Ok(())
}

/// Sets (or replaces) the user's TOTP secret. The replay guard (`last_used_step`) is kept,
/// so re-saving a secret never re-opens steps already used.
///
/// # Errors
/// [`StoreError::Invalid`] for an empty or over-long (> 128 bytes) secret, or a user not in
/// this tenant.
pub async fn set_totp_secret(
    tx: &mut TenantTx,
    user: UserId,
    secret: &[u8],
    confirmed: bool,
) -> StoreResult<()> {
    if secret.is_empty() || secret.len() > TOTP_SECRET_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "totp secret must be 1..=128 bytes",
        });
    }
    let tenant = tx.tenant_text();
    let now = tx.now();
    sql::query(
        "INSERT INTO mfa_totp (tenant_id, user_id, secret, confirmed, last_used_step, created_at)
         VALUES ($1, $2, $3, $4, -1, $5)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET secret = $3, confirmed = $4",
    )
    .bind(tenant)
    .bind(user.to_string())
    .bind(secret)
    .bind(confirmed)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Marks the user's TOTP enrolment confirmed.
///
/// # Errors
/// [`StoreError::NotFound`] when the user has no TOTP secret in this tenant.
pub async fn confirm_totp(tx: &mut TenantTx, user: UserId) -> StoreResult<()> {
    let tenant = tx.tenant_text();
    let done =
        sql::query("UPDATE mfa_totp SET confirmed = TRUE WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user.to_string())
            .execute(tx.conn())
            .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// The user's TOTP enrolment, if any.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn totp_for(tx: &mut TenantTx, user: UserId) -> StoreResult<Option<TotpState>> {
    let tenant = tx.tenant_text();
    let row = sql::query(
        "SELECT secret, confirmed, last_used_step FROM mfa_totp
         WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user.to_string())
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(TotpState {
            secret: col(&r, "secret")?,
            confirmed: col(&r, "confirmed")?,
            last_used_step: col(&r, "last_used_step")?,
        })
    })
    .transpose()
}

/// Records that the code for time step `step` was accepted. Returns `false` — refuse the
/// login — when a step at or after `step` was already used (a replayed or older code) or
/// the user has no TOTP secret. One conditional `UPDATE`, so two concurrent uses of the same
/// code cannot both succeed.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn record_totp_step(tx: &mut TenantTx, user: UserId, step: i64) -> StoreResult<bool> {
    let tenant = tx.tenant_text();
    let done = sql::query(
        "UPDATE mfa_totp SET last_used_step = $3
         WHERE tenant_id = $1 AND user_id = $2 AND last_used_step < $3",
    )
    .bind(tenant)
    .bind(user.to_string())
    .bind(step)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces all of the user's recovery codes with these hashes (at most
/// [`RECOVERY_CODES_MAX`]).
///
/// # Errors
/// [`StoreError::Invalid`] for too many codes, a bad hash length, or a user not in this
/// tenant; [`StoreError::Duplicate`] when two hashes are equal.
pub async fn replace_recovery_codes<H: AsRef<[u8]>>(
    tx: &mut TenantTx,
    user: UserId,
    hashes: &[H],
) -> StoreResult<()> {
    if hashes.len() > RECOVERY_CODES_MAX {
        return Err(StoreError::Invalid {
            reason: "too many recovery codes",
        });
    }
    for h in hashes {
        check_hash(h.as_ref())?;
    }
    let tenant = tx.tenant_text();
    let now = tx.now();
    sql::query("DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2")
        .bind(&tenant)
        .bind(user.to_string())
        .execute(tx.conn())
        .await?;
    for h in hashes {
        sql::query(
            "INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash, created_at, used_at)
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&tenant)
        .bind(user.to_string())
        .bind(h.as_ref())
        .bind(now)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Spends the recovery code with this hash. `true` exactly once per code; `false` for an
/// unknown or already used code.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn use_recovery_code(tx: &mut TenantTx, user: UserId, hash: &[u8]) -> StoreResult<bool> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done = sql::query(
        "UPDATE mfa_recovery_codes SET used_at = $4
         WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(user.to_string())
    .bind(hash)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many unused recovery codes the user has.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn recovery_codes_left(tx: &mut TenantTx, user: UserId) -> StoreResult<i64> {
    let tenant = tx.tenant_text();
    sql::query(
        "SELECT COUNT(*) FROM mfa_recovery_codes
         WHERE tenant_id = $1 AND user_id = $2 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(user.to_string())
    .scalar(tx.conn())
    .await
}

/// Removes the user's TOTP secret, recovery codes and pending challenges (an operator
/// reset; the user enrols again at next login).
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn reset_mfa(tx: &mut TenantTx, user: UserId) -> StoreResult<()> {
    let tenant = tx.tenant_text();
    for sql in [
        "DELETE FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM mfa_challenges WHERE tenant_id = $1 AND user_id = $2",
    ] {
        sql::query(sql)
            .bind(&tenant)
            .bind(user.to_string())
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// A taken challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Whose challenge it was.
    pub user_id: UserId,
    /// What it was for, e.g. `mfa` or `enroll`.
    pub kind: String,
    /// When it was created, seconds since the epoch.
    pub created_at: UnixTime,
    /// When it expired or expires, seconds since the epoch.
    pub expires_at: UnixTime,
}

/// Stores a challenge for `user`, found later by the hash of its token.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad hash or kind, an `expires_at` not in the future, or a
/// user not in this tenant; [`StoreError::Duplicate`] for a reused token hash.
pub async fn create_challenge(
    tx: &mut TenantTx,
    user: UserId,
    kind: &str,
    token_hash: &[u8],
    expires_at: UnixTime,
) -> StoreResult<()> {
    check_hash(token_hash)?;
    if kind.is_empty() || kind.len() > CHALLENGE_KIND_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "challenge kind must be 1..=32 bytes",
        });
    }
    let now = tx.now();
    if expires_at <= now {
        return Err(StoreError::Invalid {
            reason: "challenge already expired",
        });
    }
    let tenant = tx.tenant_text();
    sql::query(
        "INSERT INTO mfa_challenges (tenant_id, token_hash, user_id, kind, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(token_hash)
    .bind(user.to_string())
    .bind(kind)
    .bind(now)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Takes the challenge with this token hash and kind: `Some` exactly once, while it has not
/// expired by the store's clock; `None` when unknown, of another kind, already taken, or
/// expired. One conditional `UPDATE`, so concurrent takes cannot both win.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn take_challenge(
    tx: &mut TenantTx,
    token_hash: &[u8],
    kind: &str,
) -> StoreResult<Option<Challenge>> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let row = sql::query(
        "UPDATE mfa_challenges SET used_at = $4
         WHERE tenant_id = $1 AND token_hash = $2 AND kind = $3
           AND used_at IS NULL AND expires_at > $4
         RETURNING user_id, kind, created_at, expires_at",
    )
    .bind(tenant)
    .bind(token_hash)
    .bind(kind)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(Challenge {
            user_id: parse_id(&col::<String>(&r, "user_id")?)?,
            kind: col(&r, "kind")?,
            created_at: col(&r, "created_at")?,
            expires_at: col(&r, "expires_at")?,
        })
    })
    .transpose()
}
