//! Velocity counters for payments: how many attempts, and how much money, one subject (a
//! card fingerprint, a customer) made in a sliding window — in the tenant's rows.
//!
//! Why not [`crate::throttle`]: throttles count hits, not amounts; their windows are fixed
//! (a burst across a window boundary gets twice the limit); and they are a system table,
//! so keys such as `velocity:<tenant>:card:<fingerprint>` would sit outside row-level
//! security. Here every attempt is a row (`tenant_id, subject, amount, currency, at`) and
//! [`record`] sums the window in the same statement sequence that inserts it.
//!
//! Use: in the transaction that claims the payment's idempotency key, before calling the
//! PSP, [`record`] the attempt for each subject (`card:<fingerprint>`,
//! `customer:<user id>`) and refuse when a total is over the limit (keep the row — refused
//! attempts count, which is what stops card testing — or roll back, as policy says).
//! On PostgreSQL [`record`] takes a transaction-scoped advisory lock on (tenant, subject),
//! so two concurrent attempts cannot both see the total without the other; SQLite
//! serialises transactions.

use bastion_types::{Currency, Money, UnixTime};

use crate::TenantTx;
use crate::error::{StoreError, StoreResult};
use crate::sql;

/// Longest subject, in bytes (visible ASCII), e.g. `card:<psp fingerprint>`.
pub const SUBJECT_LEN_MAX: usize = 300;
/// Longest window, in seconds (31 days).
pub const WINDOW_SECS_MAX: i64 = 31 * 24 * 3600;
/// Largest amount of one attempt, in minor units (as `payments::AMOUNT_MINOR_MAX`).
pub const AMOUNT_MINOR_MAX: i64 = crate::payments::AMOUNT_MINOR_MAX;
/// Most rows one [`purge_before`] call deletes.
pub const PURGE_BATCH_MAX: u32 = 10_000;

/// A subject's attempts within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTotals {
    /// Attempts in the window, any currency.
    pub count: i64,
    /// Sum of the attempts' amounts in the asked currency, minor units.
    pub sum_minor: i64,
}

fn check(subject: &str, window_secs: i64) -> StoreResult<()> {
    let ok = !subject.is_empty()
        && subject.len() <= SUBJECT_LEN_MAX
        && subject.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(StoreError::Invalid {
            reason: "velocity subject must be 1..=300 visible ascii characters",
        });
    }
    if !(1..=WINDOW_SECS_MAX).contains(&window_secs) {
        return Err(StoreError::Invalid {
            reason: "velocity window must be 1..=2678400 seconds",
        });
    }
    Ok(())
}

/// Records one attempt of `amount` by `subject` now, and returns the subject's totals over
/// the last `window_secs` seconds, this attempt included.
///
/// # Errors
/// [`StoreError::Invalid`] for a subject that is empty, longer than [`SUBJECT_LEN_MAX`] or
/// not visible ASCII, a window outside `1..=`[`WINDOW_SECS_MAX`], or an amount outside
/// `0..=`[`AMOUNT_MINOR_MAX`].
pub async fn record(
    tx: &mut TenantTx,
    subject: &str,
    amount: Money,
    window_secs: i64,
) -> StoreResult<WindowTotals> {
    check(subject, window_secs)?;
    if !(0..=AMOUNT_MINOR_MAX).contains(&amount.minor) {
        return Err(StoreError::Invalid {
            reason: "velocity amount must be 0..=10^12 minor units",
        });
    }
    let tenant = tx.tenant_text();
    if tx.conn().is_postgres() {
        sql::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("bastion.velocity:{tenant}:{subject}"))
            .execute(tx.conn())
            .await?;
    }
    let now = tx.now();
    sql::query(
        "INSERT INTO velocity_events (tenant_id, subject, id, amount_minor, currency, at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&tenant)
    .bind(subject)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(amount.minor)
    .bind(amount.currency.as_str())
    .bind(now)
    .execute(tx.conn())
    .await?;
    sum(tx, subject, amount.currency, now - window_secs).await
}

/// The subject's totals over the last `window_secs` seconds, recording nothing.
///
/// # Errors
/// As [`record`].
pub async fn totals(
    tx: &mut TenantTx,
    subject: &str,
    currency: Currency,
    window_secs: i64,
) -> StoreResult<WindowTotals> {
    check(subject, window_secs)?;
    let since = tx.now() - window_secs;
    sum(tx, subject, currency, since).await
}

async fn sum(
    tx: &mut TenantTx,
    subject: &str,
    currency: Currency,
    since: UnixTime,
) -> StoreResult<WindowTotals> {
    let tenant = tx.tenant_text();
    let row = sql::query(
        "SELECT COUNT(*) AS n,
                CAST(COALESCE(SUM(CASE WHEN currency = $3 THEN amount_minor ELSE 0 END), 0)
                     AS BIGINT) AS total
         FROM velocity_events WHERE tenant_id = $1 AND subject = $2 AND at > $4",
    )
    .bind(tenant)
    .bind(subject)
    .bind(currency.as_str())
    .bind(since)
    .fetch_one(tx.conn())
    .await?;
    Ok(WindowTotals {
        count: sql::col(&row, "n")?,
        sum_minor: sql::col(&row, "total")?,
    })
}

/// Deletes up to `limit` of this tenant's attempts recorded before `cutoff` (keep at least
/// the longest window in use) and returns how many.
///
/// # Errors
/// [`StoreError::Invalid`] for a `limit` outside `1..=`[`PURGE_BATCH_MAX`].
pub async fn purge_before(tx: &mut TenantTx, cutoff: UnixTime, limit: u32) -> StoreResult<u64> {
    if limit == 0 || limit > PURGE_BATCH_MAX {
        return Err(StoreError::Invalid {
            reason: "purge batch must be 1..=10000",
        });
    }
    let tenant = tx.tenant_text();
    let done = sql::query(
        "DELETE FROM velocity_events WHERE tenant_id = $1 AND id IN (
             SELECT id FROM velocity_events WHERE tenant_id = $1 AND at < $2 LIMIT $3)",
    )
    .bind(tenant)
    .bind(cutoff)
    .bind(i64::from(limit))
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}
