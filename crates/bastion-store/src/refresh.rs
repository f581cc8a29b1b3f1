//! Refresh-token families with rotation and reuse detection (OAuth 2.0 Security BCP,
//! RFC 9700 §4.14.2).
//!
//! A login starts a family; each refresh rotates the presented token into a new one of the
//! same family. Presenting a token that was already rotated means it was copied: the whole
//! family is revoked. A family's absolute expiry is fixed at creation and never extended.
//! Tokens are stored only as hashes the caller computed.

use bastion_types::{AuthMethod, UnixTime, UserId};
use uuid::Uuid;

use crate::TenantTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Longest accepted token hash, in bytes.
pub const TOKEN_HASH_LEN_MAX: usize = 64;
/// Longest accepted revocation reason, in bytes.
pub const REASON_LEN_MAX: usize = 64;

/// A refresh-token family: one login session (the `sid` claim of its access tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId(Uuid);

impl FamilyId {
    /// A fresh random id.
    #[must_use]
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the canonical hyphenated form (e.g. a `sid` claim).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when `s` is not a UUID.
    pub fn parse(s: &str) -> StoreResult<Self> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| StoreError::Invalid {
                reason: "bad family id",
            })
    }

    /// The underlying UUID.
    #[must_use]
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for FamilyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::str::FromStr for FamilyId {
    type Err = StoreError;
    fn from_str(s: &str) -> StoreResult<Self> {
        Self::parse(s)
    }
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Reused outcome revoked the family: commit the transaction"]
pub enum RotateOutcome {
    /// The old token is spent and the new one is live.
    Rotated {
        /// The family (session).
        family: FamilyId,
        /// Whose session.
        user: UserId,
        /// When the user last proved a second factor (carried into new access tokens).
        auth_time: UnixTime,
        /// How the user authenticated at login.
        amr: Vec<AuthMethod>,
        /// When the new token expires (never after `absolute_expires_at`).
        expires_at: UnixTime,
        /// When the family ends, whatever rotations happen.
        absolute_expires_at: UnixTime,
    },
    /// The token had already been rotated: it was stolen or replayed. The family is now
    /// (or already was) revoked — commit the transaction so the revocation sticks — and the caller alerts.
    Reused {
        /// The revoked family.
        family: FamilyId,
        /// Whose session.
        user: UserId,
    },
    /// No such token in this tenant.
    Unknown,
    /// The token or its family has expired.
    Expired,
    /// The family was revoked (logout, reuse, disable).
    Revoked,
}

fn check_hash(hash: &[u8]) -> StoreResult<()> {
    if hash.is_empty() || hash.len() > TOKEN_HASH_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "token hash must be 1..=64 bytes",
        });
    }
    Ok(())
}

fn check_reason(reason: &str) -> StoreResult<()> {
    if reason.is_empty() || reason.len() > REASON_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "revocation reason must be 1..=64 bytes",
        });
    }
    Ok(())
}

fn encode_amr(amr: &[AuthMethod]) -> StoreResult<String> {
    serde_json::to_string(amr).map_err(|_| StoreError::internal("amr encoding"))
}

fn decode_amr(text: &str) -> StoreResult<Vec<AuthMethod>> {
    serde_json::from_str(text).map_err(|_| StoreError::internal("corrupt amr"))
}

/// Starts a family for `user` that ends at `absolute_expires_at` no matter how often it is
/// rotated.
///
/// # Errors
/// [`StoreError::Invalid`] when `absolute_expires_at` is not in the future or the user is not
/// in this tenant.
pub async fn create_family(
    tx: &mut TenantTx,
    user: UserId,
    auth_time: UnixTime,
    amr: &[AuthMethod],
    absolute_expires_at: UnixTime,
) -> StoreResult<FamilyId> {
    let now = tx.now();
    if absolute_expires_at <= now {
        return Err(StoreError::Invalid {
            reason: "family already expired",
        });
    }
    let id = FamilyId::new_random();
    let tenant = tx.tenant_text();
    sql::query(
        "INSERT INTO refresh_families
            (tenant_id, id, user_id, auth_time, amr, created_at, absolute_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(auth_time)
    .bind(encode_amr(amr)?)
    .bind(now)
    .bind(absolute_expires_at)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// Adds a live token to an active family. Its expiry is capped at the family's absolute
/// expiry.
///
/// # Errors
/// [`StoreError::NotFound`] when the family is not in this tenant; [`StoreError::Invalid`]
/// when it is revoked or expired, or for a bad hash; [`StoreError::Duplicate`] for a hash
/// already stored.
pub async fn insert_refresh_token(
    tx: &mut TenantTx,
    family: FamilyId,
    token_hash: &[u8],
    expires_at: UnixTime,
) -> StoreResult<()> {
    check_hash(token_hash)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let row = sql::query(
        "SELECT absolute_expires_at, revoked_at FROM refresh_families
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(&tenant)
    .bind(family.to_string())
    .fetch_optional(tx.conn())
    .await?
    .ok_or(StoreError::NotFound)?;
    let absolute: i64 = col(&row, "absolute_expires_at")?;
    let revoked: Option<i64> = col(&row, "revoked_at")?;
    if revoked.is_some() || absolute <= now {
        return Err(StoreError::Invalid {
            reason: "family is revoked or expired",
        });
    }
    insert_token(
        tx,
        &tenant,
        family,
        token_hash,
        expires_at.min(absolute),
        now,
    )
    .await
}

async fn insert_token(
    tx: &mut TenantTx,
    tenant: &str,
    family: FamilyId,
    token_hash: &[u8],
    expires_at: UnixTime,
    now: UnixTime,
) -> StoreResult<()> {
    sql::query(
        "INSERT INTO refresh_tokens (tenant_id, token_hash, family_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(token_hash)
    .bind(family.to_string())
    .bind(now)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Rotates the token with hash `old_hash` into a new token `new_hash` expiring at
/// `new_expires_at` (capped at the family's absolute expiry).
///
/// Atomic: the old token is spent by one conditional `UPDATE … WHERE used_at IS NULL`, so of
/// any number of concurrent rotations of one token exactly one returns
/// [`RotateOutcome::Rotated`]; the others see [`RotateOutcome::Reused`] and revoke the
/// family. **Commit the transaction after `Reused`** (the revocation is part of it).
///
/// Order of checks: unknown → already used (reuse, reported even when the family is already
/// revoked) → revoked family → expired.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad hash; [`StoreError::Duplicate`] when `new_hash` exists.
pub async fn rotate_refresh_token(
    tx: &mut TenantTx,
    old_hash: &[u8],
    new_hash: &[u8],
    new_expires_at: UnixTime,
) -> StoreResult<RotateOutcome> {
    check_hash(old_hash)?;
    check_hash(new_hash)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let Some(row) = sql::query(
        "SELECT t.family_id, t.expires_at, t.used_at, f.user_id, f.auth_time, f.amr,
                f.absolute_expires_at, f.revoked_at
         FROM refresh_tokens t
         JOIN refresh_families f ON f.tenant_id = t.tenant_id AND f.id = t.family_id
         WHERE t.tenant_id = $1 AND t.token_hash = $2",
    )
    .bind(&tenant)
    .bind(old_hash)
    .fetch_optional(tx.conn())
    .await?
    else {
        return Ok(RotateOutcome::Unknown);
    };
    let family: FamilyId = parse_id(&col::<String>(&row, "family_id")?)?;
    let user: UserId = parse_id(&col::<String>(&row, "user_id")?)?;
    let expires_at: i64 = col(&row, "expires_at")?;
    let used_at: Option<i64> = col(&row, "used_at")?;
    let absolute: i64 = col(&row, "absolute_expires_at")?;
    let revoked_at: Option<i64> = col(&row, "revoked_at")?;
    if used_at.is_some() {
        // Revoking an already revoked family changes nothing; the reuse is still reported
        // so the caller can alert on every replay.
        revoke_family(tx, family, "refresh token reuse").await?;
        return Ok(RotateOutcome::Reused { family, user });
    }
    if revoked_at.is_some() {
        return Ok(RotateOutcome::Revoked);
    }
    if expires_at <= now || absolute <= now {
        return Ok(RotateOutcome::Expired);
    }
    let spent = sql::query(
        "UPDATE refresh_tokens SET used_at = $3
         WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL",
    )
    .bind(&tenant)
    .bind(old_hash)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if spent.rows_affected() != 1 {
        // Another rotation spent it between our read and our write: that is reuse too.
        revoke_family(tx, family, "refresh token reuse").await?;
        return Ok(RotateOutcome::Reused { family, user });
    }
    let new_expires_at = new_expires_at.min(absolute);
    insert_token(tx, &tenant, family, new_hash, new_expires_at, now).await?;
    Ok(RotateOutcome::Rotated {
        family,
        user,
        auth_time: col(&row, "auth_time")?,
        amr: decode_amr(&col::<String>(&row, "amr")?)?,
        expires_at: new_expires_at,
        absolute_expires_at: absolute,
    })
}

/// What a refresh token names, read without changing anything (see [`family_of_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFamily {
    /// The family (session) the token belongs to.
    pub family: FamilyId,
    /// Whose session.
    pub user: UserId,
    /// The token was already rotated (spent).
    pub used: bool,
    /// The family is revoked (logout, reuse, disable).
    pub family_revoked: bool,
}

/// Looks up the family of the token with hash `token_hash`, read-only: nothing is spent,
/// rotated or revoked, whatever the token's state. `None` when no such token exists in this
/// tenant. For logout (RFC 7009 §2.2), which must not trip reuse detection.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad hash.
pub async fn family_of_token(
    tx: &mut TenantTx,
    token_hash: &[u8],
) -> StoreResult<Option<TokenFamily>> {
    check_hash(token_hash)?;
    let tenant = tx.tenant_text();
    let Some(row) = sql::query(
        "SELECT t.family_id, t.used_at, f.user_id, f.revoked_at
         FROM refresh_tokens t
         JOIN refresh_families f ON f.tenant_id = t.tenant_id AND f.id = t.family_id
         WHERE t.tenant_id = $1 AND t.token_hash = $2",
    )
    .bind(&tenant)
    .bind(token_hash)
    .fetch_optional(tx.conn())
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(TokenFamily {
        family: parse_id(&col::<String>(&row, "family_id")?)?,
        user: parse_id(&col::<String>(&row, "user_id")?)?,
        used: col::<Option<i64>>(&row, "used_at")?.is_some(),
        family_revoked: col::<Option<i64>>(&row, "revoked_at")?.is_some(),
    }))
}

/// Revokes a family (logout, reuse). Returns `false` when it was already revoked or is not in
/// this tenant.
///
/// # Errors
/// [`StoreError::Invalid`] for an empty or over-long reason.
pub async fn revoke_family(tx: &mut TenantTx, family: FamilyId, reason: &str) -> StoreResult<bool> {
    check_reason(reason)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done = sql::query(
        "UPDATE refresh_families SET revoked_at = $3, revoked_reason = $4
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(family.to_string())
    .bind(now)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every live family of `user` (disable, password change, "log out everywhere") and
/// returns how many were revoked.
///
/// # Errors
/// [`StoreError::Invalid`] for an empty or over-long reason.
pub async fn revoke_user_families(
    tx: &mut TenantTx,
    user: UserId,
    reason: &str,
) -> StoreResult<u64> {
    check_reason(reason)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done = sql::query(
        "UPDATE refresh_families SET revoked_at = $3, revoked_reason = $4
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user.to_string())
    .bind(now)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Whether the family exists in this tenant, is not revoked, and has not reached its
/// absolute expiry by the store's clock.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn family_active(tx: &mut TenantTx, family: FamilyId) -> StoreResult<bool> {
    family_active_for(tx, family, None).await
}

/// Whether `family` is live (not revoked, before its absolute expiry) **and**, when `user` is
/// given, belongs to that user — so an access token's session id cannot be paired with
/// another user's id.
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot be read.
pub async fn family_active_for(
    tx: &mut TenantTx,
    family: FamilyId,
    user: Option<UserId>,
) -> StoreResult<bool> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let n: i64 = sql::query(
        "SELECT COUNT(*) FROM refresh_families
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND absolute_expires_at > $3
           AND ($4 IS NULL OR user_id = $4)",
    )
    .bind(tenant)
    .bind(family.to_string())
    .bind(now)
    .bind(user.map(|u| u.to_string()))
    .scalar(tx.conn())
    .await?;
    Ok(n == 1)
}
