//! Fixed-window hit counters for rate limits and login throttling. System table, shared by
//! every instance using the same database.
//!
//! A window opens at the first hit and lasts `window_secs`; the first hit after it closes
//! opens a new window with a count of one. Time comes from the store's clock.

use crate::SystemTx;
use crate::error::{StoreError, StoreResult};
use crate::sql;

/// Longest accepted key, in bytes. Keys are namespaced by the caller, e.g.
/// `login:<tenant-id>:<username>`; hash them if they would carry personal data.
pub const KEY_LEN_MAX: usize = 256;
/// Longest accepted window, in seconds (one week).
pub const WINDOW_SECS_MAX: i64 = 7 * 24 * 3600;

fn check(key: &str, window_secs: i64) -> StoreResult<()> {
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "throttle key must be 1..=256 bytes",
        });
    }
    if !(1..=WINDOW_SECS_MAX).contains(&window_secs) {
        return Err(StoreError::Invalid {
            reason: "throttle window must be 1..=604800 seconds",
        });
    }
    Ok(())
}

/// Counts one hit on `key` and returns the hits in the current window, this one included.
/// One upsert statement, so concurrent hits are all counted.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad key or window.
pub async fn throttle_hit(tx: &mut SystemTx, key: &str, window_secs: i64) -> StoreResult<i64> {
    check(key, window_secs)?;
    let now = tx.now();
    sql::query(
        "INSERT INTO throttles (throttle_key, window_start, hits) VALUES ($1, $2, 1)
         ON CONFLICT (throttle_key) DO UPDATE SET
            hits = CASE WHEN throttles.window_start + $3 <= $2 THEN 1 ELSE throttles.hits + 1 END,
            window_start = CASE WHEN throttles.window_start + $3 <= $2
                                THEN $2 ELSE throttles.window_start END
         RETURNING hits",
    )
    .bind(key)
    .bind(now)
    .bind(window_secs)
    .scalar(tx.conn())
    .await
}

/// The hits on `key` in its current window (0 when none or the window has closed).
///
/// # Errors
/// [`StoreError::Invalid`] for a bad key or window.
pub async fn throttle_count(tx: &mut SystemTx, key: &str, window_secs: i64) -> StoreResult<i64> {
    check(key, window_secs)?;
    let now = tx.now();
    let hits: Option<i64> =
        sql::query("SELECT hits FROM throttles WHERE throttle_key = $1 AND window_start + $2 > $3")
            .bind(key)
            .bind(window_secs)
            .bind(now)
            .scalar_optional(tx.conn())
            .await?;
    Ok(hits.unwrap_or(0))
}

/// Forgets `key` (e.g. after a successful login).
///
/// # Errors
/// [`StoreError::Invalid`] for a bad key.
pub async fn throttle_clear(tx: &mut SystemTx, key: &str) -> StoreResult<()> {
    check(key, 1)?;
    sql::query("DELETE FROM throttles WHERE throttle_key = $1")
        .bind(key)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Largest amount one [`throttle_add`] may count at once.
pub const ADD_AMOUNT_MAX: i64 = 1 << 40;

/// Counts `amount` hits on `key` at once (e.g. the model tokens a chat used) and returns the
/// total in the current window, this amount included. Same windows as [`throttle_hit`];
/// one upsert statement, so concurrent additions are all counted.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad key or window, or an amount outside
/// `0..=`[`ADD_AMOUNT_MAX`].
pub async fn throttle_add(
    tx: &mut SystemTx,
    key: &str,
    window_secs: i64,
    amount: i64,
) -> StoreResult<i64> {
    check(key, window_secs)?;
    if !(0..=ADD_AMOUNT_MAX).contains(&amount) {
        return Err(StoreError::Invalid {
            reason: "throttle amount out of range",
        });
    }
    let now = tx.now();
    sql::query(
        "INSERT INTO throttles (throttle_key, window_start, hits) VALUES ($1, $2, $4)
         ON CONFLICT (throttle_key) DO UPDATE SET
            hits = CASE WHEN throttles.window_start + $3 <= $2 THEN $4 ELSE throttles.hits + $4 END,
            window_start = CASE WHEN throttles.window_start + $3 <= $2
                                THEN $2 ELSE throttles.window_start END
         RETURNING hits",
    )
    .bind(key)
    .bind(now)
    .bind(window_secs)
    .bind(amount)
    .scalar(tx.conn())
    .await
}
