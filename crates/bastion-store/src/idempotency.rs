//! Idempotency keys for unsafe requests (charges, refunds), with the semantics of
//! draft-ietf-httpapi-idempotency-key-header (the `Idempotency-Key` HTTP header field).
//!
//! One row per (tenant, principal, key), in the tenant's rows. The caller computes a
//! *fingerprint* of the request — SHA-256 over method, route and canonical body — and:
//!
//! 1. [`claim`]s the key in a short transaction and commits, **before** any side effect:
//!    - [`Claim::New`]: this request owns the key (the first durable write wins); run it;
//!    - [`Claim::Mismatch`]: the key was used with another payload → 422 (draft §2.7);
//!    - [`Claim::InFlight`]: the first request is still running under its lease → 409;
//!    - [`Claim::Completed`]: replay the stored response (and say so, e.g.
//!      `Idempotent-Replayed: true`);
//!    - [`Claim::Resume`]: the first worker crashed (its lease expired): continue from the
//!      recorded recovery point instead of starting over (case P4: the PSP was called, the
//!      response was lost);
//! 2. records progress with [`advance`] after each step that has an external effect (e.g.
//!    `psp_called` with the PSP object id), which also renews the lease;
//! 3. stores the response with [`complete`] (in the same transaction as the effect's own
//!    rows), or gives the key up with [`release`] when nothing happened.
//!
//! Keys are kept [`IDEMPOTENCY_RETENTION_SECS`] after their first use; after that a
//! completed key may be reused ([`purge_expired`] deletes them). An in-flight key is never
//! purged nor reused: it marks work whose outcome is unknown.
//!
//! Concurrency: on PostgreSQL the claim is `INSERT … ON CONFLICT DO NOTHING` followed by
//! `SELECT … FOR UPDATE`, so of many concurrent claims exactly one is [`Claim::New`] and a
//! lease is taken over by exactly one [`Claim::Resume`]; on SQLite transactions are
//! serialised (`BEGIN IMMEDIATE`).

use bastion_types::UserId;
use serde_json::Value;

use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};
use crate::{Store, TenantScope, TenantTx};

/// How long a key is kept after its first use, in seconds (24 hours, as Stripe does; the
/// draft leaves the window to the resource and asks that it be published).
pub const IDEMPOTENCY_RETENTION_SECS: i64 = 86_400;
/// Longest accepted key, in bytes. The draft recommends a UUID; keys are visible ASCII.
pub const KEY_LEN_MAX: usize = 255;
/// Length of a request fingerprint: a SHA-256 digest.
pub const FINGERPRINT_LEN: usize = 32;
/// Longest accepted lease, in seconds.
pub const LEASE_SECS_MAX: i64 = 3600;
/// Longest recovery point name, in bytes (`[a-z0-9_]`).
pub const RECOVERY_POINT_LEN_MAX: usize = 32;
/// Longest serialized recovery data, in bytes (16 KiB).
pub const RECOVERY_DATA_LEN_MAX: usize = 16 * 1024;
/// Longest stored response body, in bytes (256 KiB).
pub const RESPONSE_BODY_LEN_MAX: usize = 256 * 1024;
/// Most rows one [`purge_expired`] call deletes.
pub const PURGE_BATCH_MAX: u32 = 10_000;
/// The recovery point of a freshly claimed key.
pub const RECOVERY_STARTED: &str = "started";
/// The recovery point [`complete`] records.
pub const RECOVERY_FINISHED: &str = "finished";

/// What a [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request now owns the key, at [`RECOVERY_STARTED`] with a lease; run it.
    New,
    /// Another request with this key and payload is running and its lease has not expired:
    /// answer 409 Conflict (draft §2.7) and let the client retry later.
    InFlight,
    /// The key's request completed: replay this response.
    Completed {
        /// HTTP status code stored by [`complete`].
        status: u16,
        /// Response body stored by [`complete`].
        body: String,
    },
    /// The key was first used with another request fingerprint: answer 422 Unprocessable
    /// Content (draft §2.7). Nothing was changed.
    Mismatch,
    /// The request that claimed the key stopped without completing and its lease expired
    /// (a crashed worker): this request now holds a fresh lease and continues from here.
    Resume {
        /// The last point recorded by [`advance`] ([`RECOVERY_STARTED`] if none).
        recovery_point: String,
        /// The data recorded with it (e.g. `{"psp_payment_id": "pi_…"}`), `{}` if none.
        recovery_data: Value,
    },
}

fn check_key(key: &str) -> StoreResult<()> {
    let ok = !key.is_empty()
        && key.len() <= KEY_LEN_MAX
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "idempotency key must be 1..=255 visible ascii characters",
        })
    }
}

fn check_fingerprint(fingerprint: &[u8]) -> StoreResult<()> {
    if fingerprint.len() == FINGERPRINT_LEN {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "request fingerprint must be a 32-byte sha-256 digest",
        })
    }
}

fn check_lease(lease_secs: i64) -> StoreResult<()> {
    if (1..=LEASE_SECS_MAX).contains(&lease_secs) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "idempotency lease must be 1..=3600 seconds",
        })
    }
}

fn check_point(point: &str) -> StoreResult<()> {
    let ok = !point.is_empty()
        && point.len() <= RECOVERY_POINT_LEN_MAX
        && point
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "recovery point must be 1..=32 of [a-z0-9_]",
        })
    }
}

fn encode_data(data: &Value) -> StoreResult<String> {
    let text = data.to_string();
    if text.len() > RECOVERY_DATA_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "recovery data exceeds 16 KiB",
        });
    }
    Ok(text)
}

/// Claims `key` for `principal`'s request with this `fingerprint`, or reports what an
/// earlier request with the key left behind (see [`Claim`]). A new or resumed claim holds a
/// lease until now + `lease_secs`. Commit the transaction before running the request, so
/// the claim is durable and visible to retries.
///
/// A completed key older than [`IDEMPOTENCY_RETENTION_SECS`] is claimed afresh.
///
/// # Errors
/// [`StoreError::Invalid`] for a key that is empty, longer than [`KEY_LEN_MAX`] or not
/// visible ASCII, a fingerprint that is not [`FINGERPRINT_LEN`] bytes, or a lease outside
/// `1..=`[`LEASE_SECS_MAX`].
pub async fn claim(
    tx: &mut TenantTx,
    principal: UserId,
    key: &str,
    fingerprint: &[u8],
    lease_secs: i64,
) -> StoreResult<Claim> {
    check_key(key)?;
    check_fingerprint(fingerprint)?;
    check_lease(lease_secs)?;
    let now = tx.now();
    let tenant = tx.tenant_text();
    let principal = principal.to_string();
    let inserted = sql::query(
        "INSERT INTO idempotency_keys (tenant_id, principal_id, idem_key, fingerprint, state,
             recovery_point, recovery_data, response_status, response_body, created_at,
             updated_at, locked_until, expires_at)
         VALUES ($1, $2, $3, $4, 'in_flight', $5, '{}', NULL, NULL, $6, $6, $7, $8)
         ON CONFLICT (tenant_id, principal_id, idem_key) DO NOTHING",
    )
    .bind(&tenant)
    .bind(&principal)
    .bind(key)
    .bind(fingerprint)
    .bind(RECOVERY_STARTED)
    .bind(now)
    .bind(now + lease_secs)
    .bind(now + IDEMPOTENCY_RETENTION_SECS)
    .execute(tx.conn())
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }

    // The key exists. On PostgreSQL lock its row, so that of concurrent retries exactly one
    // takes an expired lease over; SQLite's transaction already holds the write lock.
    let lock = if tx.conn().is_postgres() {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sql::query(format!(
        "SELECT fingerprint, state, recovery_point, recovery_data, response_status,
                response_body, locked_until, expires_at
         FROM idempotency_keys
         WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3{lock}"
    ))
    .bind(&tenant)
    .bind(&principal)
    .bind(key)
    .fetch_optional(tx.conn())
    .await?;
    // Purged between the insert and the read: report the conservative answer (retry later).
    let Some(row) = row else {
        return Ok(Claim::InFlight);
    };
    let state: String = col(&row, "state")?;
    let expires_at: i64 = col(&row, "expires_at")?;
    if state == "completed" && expires_at <= now {
        // Past retention: the key may be reused for a new request.
        sql::query(
            "UPDATE idempotency_keys SET fingerprint = $4, state = 'in_flight',
                 recovery_point = $5, recovery_data = '{}', response_status = NULL,
                 response_body = NULL, created_at = $6, updated_at = $6, locked_until = $7,
                 expires_at = $8
             WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3",
        )
        .bind(&tenant)
        .bind(&principal)
        .bind(key)
        .bind(fingerprint)
        .bind(RECOVERY_STARTED)
        .bind(now)
        .bind(now + lease_secs)
        .bind(now + IDEMPOTENCY_RETENTION_SECS)
        .execute(tx.conn())
        .await?;
        return Ok(Claim::New);
    }
    let stored: Vec<u8> = col(&row, "fingerprint")?;
    if stored != fingerprint {
        return Ok(Claim::Mismatch);
    }
    if state == "completed" {
        let status: Option<i64> = col(&row, "response_status")?;
        let body: Option<String> = col(&row, "response_body")?;
        let status = status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::internal("corrupt idempotency response status"))?;
        let body = body.ok_or_else(|| StoreError::internal("corrupt idempotency response"))?;
        return Ok(Claim::Completed { status, body });
    }
    let locked_until: i64 = col(&row, "locked_until")?;
    if locked_until > now {
        return Ok(Claim::InFlight);
    }
    sql::query(
        "UPDATE idempotency_keys SET locked_until = $4, updated_at = $5
         WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3",
    )
    .bind(&tenant)
    .bind(&principal)
    .bind(key)
    .bind(now + lease_secs)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let recovery_point: String = col(&row, "recovery_point")?;
    let data: String = col(&row, "recovery_data")?;
    let recovery_data = serde_json::from_str(&data)
        .map_err(|_| StoreError::internal("corrupt idempotency recovery data"))?;
    Ok(Claim::Resume {
        recovery_point,
        recovery_data,
    })
}

/// Records that the in-flight request of `key` reached `recovery_point` (e.g. `psp_called`)
/// with `recovery_data` (e.g. the PSP object id), and renews its lease to now +
/// `lease_secs`. Call it in the transaction that makes the step durable.
///
/// # Errors
/// [`StoreError::NotFound`] when the key has no in-flight request of this principal in this
/// tenant (never claimed, completed, or released); [`StoreError::Invalid`] for a bad key,
/// point name, lease, or data over [`RECOVERY_DATA_LEN_MAX`].
pub async fn advance(
    tx: &mut TenantTx,
    principal: UserId,
    key: &str,
    recovery_point: &str,
    recovery_data: &Value,
    lease_secs: i64,
) -> StoreResult<()> {
    check_key(key)?;
    check_point(recovery_point)?;
    check_lease(lease_secs)?;
    let data = encode_data(recovery_data)?;
    let now = tx.now();
    let tenant = tx.tenant_text();
    let done = sql::query(
        "UPDATE idempotency_keys SET recovery_point = $4, recovery_data = $5,
             locked_until = $6, updated_at = $7
         WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3 AND state = 'in_flight'",
    )
    .bind(tenant)
    .bind(principal.to_string())
    .bind(key)
    .bind(recovery_point)
    .bind(data)
    .bind(now + lease_secs)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Stores the final response of the in-flight request of `key`: later claims with the same
/// fingerprint get [`Claim::Completed`] with this `status` and `body` until the key
/// expires. Call it in the same transaction as the request's effect.
///
/// # Errors
/// [`StoreError::NotFound`] when the key has no in-flight request of this principal in this
/// tenant; [`StoreError::Invalid`] for a bad key, a status outside `100..=599`, or a body
/// over [`RESPONSE_BODY_LEN_MAX`].
pub async fn complete(
    tx: &mut TenantTx,
    principal: UserId,
    key: &str,
    status: u16,
    body: &str,
) -> StoreResult<()> {
    check_key(key)?;
    if !(100..=599).contains(&status) {
        return Err(StoreError::Invalid {
            reason: "http status must be 100..=599",
        });
    }
    if body.len() > RESPONSE_BODY_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "idempotent response body exceeds 256 KiB",
        });
    }
    let now = tx.now();
    let tenant = tx.tenant_text();
    let done = sql::query(
        "UPDATE idempotency_keys SET state = 'completed', recovery_point = $4,
             response_status = $5, response_body = $6, locked_until = $7, updated_at = $7
         WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3 AND state = 'in_flight'",
    )
    .bind(tenant)
    .bind(principal.to_string())
    .bind(key)
    .bind(RECOVERY_FINISHED)
    .bind(i64::from(status))
    .bind(body)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Gives up the in-flight claim of `key` when the request had **no** effect (it failed
/// before any external call), so a retry runs afresh. Returns whether a claim was removed.
/// Never call it after an external effect: use [`advance`] and let a retry resume.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad key.
pub async fn release(tx: &mut TenantTx, principal: UserId, key: &str) -> StoreResult<bool> {
    check_key(key)?;
    let tenant = tx.tenant_text();
    let done = sql::query(
        "DELETE FROM idempotency_keys
         WHERE tenant_id = $1 AND principal_id = $2 AND idem_key = $3 AND state = 'in_flight'",
    )
    .bind(tenant)
    .bind(principal.to_string())
    .bind(key)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes up to `limit` completed keys of this tenant whose retention has passed, and
/// returns how many. In-flight keys are kept whatever their age (their outcome is unknown).
///
/// # Errors
/// [`StoreError::Invalid`] for a `limit` outside `1..=`[`PURGE_BATCH_MAX`].
pub async fn purge_expired(tx: &mut TenantTx, limit: u32) -> StoreResult<u64> {
    if limit == 0 || limit > PURGE_BATCH_MAX {
        return Err(StoreError::Invalid {
            reason: "purge batch must be 1..=10000",
        });
    }
    let now = tx.now();
    let tenant = tx.tenant_text();
    let done = sql::query(
        "DELETE FROM idempotency_keys
         WHERE tenant_id = $1 AND (principal_id, idem_key) IN (
             SELECT principal_id, idem_key FROM idempotency_keys
             WHERE tenant_id = $1 AND state = 'completed' AND expires_at <= $2
             LIMIT $3)",
    )
    .bind(tenant)
    .bind(now)
    .bind(i64::from(limit))
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// [`purge_expired`] for every tenant, one short transaction each (a system transaction
/// cannot see tenant rows under row-level security). Returns the rows deleted in total.
///
/// # Errors
/// As [`purge_expired`]; [`StoreError::Unavailable`] when the database cannot serve.
pub async fn purge_expired_all(store: &Store, limit_per_tenant: u32) -> StoreResult<u64> {
    let mut sys = store.system().await?;
    let tenants = crate::tenants::list_tenants(&mut sys).await?;
    sys.rollback().await?;
    let mut total = 0;
    for t in tenants {
        let mut tx = store.begin(TenantScope::pre_auth(t.id)).await?;
        total += purge_expired(&mut tx, limit_per_tenant).await?;
        tx.commit().await?;
    }
    Ok(total)
}
