//! The webhook inbox: every verified webhook event, stored once (case P7: redeliveries are
//! duplicates). System table — webhooks arrive before any tenant is known; the tenant of a
//! payment event is found afterwards through [`crate::payments::route_tenant`].
//!
//! The intended flow: verify the signature on the raw body, then in one [`SystemTx`]
//! [`record_event`] and, only when it says [`Recorded::Inserted`], enqueue the job that
//! processes it ([`crate::jobs::enqueue`]); commit; answer 200 either way. The job marks the
//! event [`mark_processed`] when done. Deduplication is by the provider's event id (the
//! primary key), so concurrent deliveries of one event insert it once on both backends.

use bastion_types::UnixTime;

use crate::SystemTx;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Longest provider name, in bytes (`[a-z0-9_-]`, e.g. `stripe`).
pub const PROVIDER_LEN_MAX: usize = 32;
/// Longest event id, event type or object id, in bytes (as bastion-payments'
/// `EVENT_FIELD_BYTES_MAX`).
pub const FIELD_LEN_MAX: usize = 255;
/// Largest stored body, in bytes: bastion-payments' largest accepted webhook body (4 MiB),
/// so a verified event is never refused here.
pub const BODY_LEN_MAX: usize = 4 * 1024 * 1024;
/// Most rows one [`purge_processed_before`] call deletes.
pub const PURGE_BATCH_MAX: u32 = 10_000;

/// A verified event to record. Text fields are as the provider sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// The provider, e.g. `stripe`.
    pub provider: &'a str,
    /// The provider's event id, e.g. `evt_…` (the deduplication key).
    pub event_id: &'a str,
    /// The event type, e.g. `payment_intent.succeeded`.
    pub event_type: &'a str,
    /// The id of the object the event is about, e.g. `pi_…`, if it names one.
    pub object_id: Option<&'a str>,
    /// The PSP object's own order for this event (e.g. Stripe's event `created`, seconds):
    /// the payment's `status_version` when the event is applied.
    pub ordering_key: i64,
    /// The raw body, as verified.
    pub body: &'a str,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The provider.
    pub provider: String,
    /// The provider's event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The object the event is about, if any.
    pub object_id: Option<String>,
    /// The PSP object's ordering key (see [`NewEvent::ordering_key`]).
    pub ordering_key: i64,
    /// The raw body.
    pub body: String,
    /// When the first delivery arrived, seconds since the epoch.
    pub received_at: UnixTime,
    /// When processing finished, if it has.
    pub processed_at: Option<UnixTime>,
}

/// What [`record_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first delivery of this event: stored; process it.
    Inserted,
    /// A redelivery of an event already stored: nothing changed; answer 200 and do nothing.
    Duplicate,
}

fn check_field(v: &str, max: usize, reason: &'static str) -> StoreResult<()> {
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(StoreError::Invalid { reason });
    }
    Ok(())
}

fn check_provider(provider: &str) -> StoreResult<()> {
    let ok = !provider.is_empty()
        && provider.len() <= PROVIDER_LEN_MAX
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "provider must be 1..=32 of [a-z0-9_-]",
        })
    }
}

/// Stores `event` unless an event with its provider and id is stored already.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad provider, an empty or over-long id, type or object id
/// (over [`FIELD_LEN_MAX`], or with control characters), or a body over [`BODY_LEN_MAX`].
pub async fn record_event(tx: &mut SystemTx, event: &NewEvent<'_>) -> StoreResult<Recorded> {
    check_provider(event.provider)?;
    check_field(event.event_id, FIELD_LEN_MAX, "bad webhook event id")?;
    check_field(event.event_type, FIELD_LEN_MAX, "bad webhook event type")?;
    if let Some(o) = event.object_id {
        check_field(o, FIELD_LEN_MAX, "bad webhook object id")?;
    }
    if event.body.len() > BODY_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "webhook body exceeds 4 MiB",
        });
    }
    let now = tx.now();
    let done = sql::query(
        "INSERT INTO webhook_inbox (provider, event_id, event_type, object_id, ordering_key,
             body, received_at, processed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(event.provider)
    .bind(event.event_id)
    .bind(event.event_type)
    .bind(event.object_id.map(str::to_owned))
    .bind(event.ordering_key)
    .bind(event.body)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(if done.rows_affected() == 1 {
        Recorded::Inserted
    } else {
        Recorded::Duplicate
    })
}

fn event_from_row(row: &sql::Row) -> StoreResult<InboxEvent> {
    Ok(InboxEvent {
        provider: col(row, "provider")?,
        event_id: col(row, "event_id")?,
        event_type: col(row, "event_type")?,
        object_id: col(row, "object_id")?,
        ordering_key: col(row, "ordering_key")?,
        body: col(row, "body")?,
        received_at: col(row, "received_at")?,
        processed_at: col(row, "processed_at")?,
    })
}

/// The stored event `event_id` of `provider`, if any.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad provider or id.
pub async fn get_event(
    tx: &mut SystemTx,
    provider: &str,
    event_id: &str,
) -> StoreResult<Option<InboxEvent>> {
    check_provider(provider)?;
    check_field(event_id, FIELD_LEN_MAX, "bad webhook event id")?;
    let row = sql::query(
        "SELECT provider, event_id, event_type, object_id, ordering_key, body, received_at,
                processed_at
         FROM webhook_inbox WHERE provider = $1 AND event_id = $2",
    )
    .bind(provider)
    .bind(event_id)
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(event_from_row).transpose()
}

/// Marks the event processed (now). Returns `false` when it already was, so a job that runs
/// twice can tell.
///
/// # Errors
/// [`StoreError::NotFound`] when no such event is stored; [`StoreError::Invalid`] for a bad
/// provider or id.
pub async fn mark_processed(
    tx: &mut SystemTx,
    provider: &str,
    event_id: &str,
) -> StoreResult<bool> {
    check_provider(provider)?;
    check_field(event_id, FIELD_LEN_MAX, "bad webhook event id")?;
    let now = tx.now();
    let done = sql::query(
        "UPDATE webhook_inbox SET processed_at = $3
         WHERE provider = $1 AND event_id = $2 AND processed_at IS NULL",
    )
    .bind(provider)
    .bind(event_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    match get_event(tx, provider, event_id).await? {
        Some(_) => Ok(false),
        None => Err(StoreError::NotFound),
    }
}

/// Deletes up to `limit` processed events received before `cutoff` (seconds since the
/// epoch) and returns how many. Keep events at least as long as the provider redelivers
/// (Stripe: 3 days), or a late redelivery is processed again.
///
/// # Errors
/// [`StoreError::Invalid`] for a `limit` outside `1..=`[`PURGE_BATCH_MAX`].
pub async fn purge_processed_before(
    tx: &mut SystemTx,
    cutoff: UnixTime,
    limit: u32,
) -> StoreResult<u64> {
    if limit == 0 || limit > PURGE_BATCH_MAX {
        return Err(StoreError::Invalid {
            reason: "purge batch must be 1..=10000",
        });
    }
    let done = sql::query(
        "DELETE FROM webhook_inbox WHERE (provider, event_id) IN (
             SELECT provider, event_id FROM webhook_inbox
             WHERE processed_at IS NOT NULL AND received_at < $1
             LIMIT $2)",
    )
    .bind(cutoff)
    .bind(i64::from(limit))
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}
