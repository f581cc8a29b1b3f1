//! Payments: one row per PSP payment object (e.g. a Stripe PaymentIntent), attached to a
//! record (the quote it pays) and the user who is the customer, in the tenant's rows.
//!
//! - Card data never comes here: only the PSP's ids, an optional card *fingerprint* (the
//!   PSP's, for velocity limits) and the PSP's `next_action` (3DS/SCA) as JSON.
//! - [`apply_status`] only moves forward by the PSP object's own ordering
//!   (`status_version`): an older event never overwrites a newer state (case P6).
//! - [`add_refund`] is one conditional `UPDATE`, so two concurrent refunds can never exceed
//!   the captured amount (case P5); the table's `CHECK (refunded_minor <= captured_minor)`
//!   is the backstop.
//! - [`insert`] also writes the route `(psp, psp_payment_id) → tenant` in the same
//!   transaction, which [`route_tenant`] reads from a [`SystemTx`] when a verified webhook
//!   names only the PSP's id. On PostgreSQL the route table has row-level security: a tenant
//!   transaction writes and sees only its own routes; the system transaction may only read.

use bastion_types::{Currency, Money, RecordId, TenantId, UnixTime, UserId};
use serde_json::Value;

use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};
use crate::{SystemTx, TenantTx};

/// Longest PSP name, in bytes (`[a-z0-9_-]`, e.g. `stripe`).
pub const PSP_LEN_MAX: usize = 32;
/// Longest PSP object id or card fingerprint, in bytes.
pub const PSP_ID_LEN_MAX: usize = 255;
/// Longest status, in bytes (`[a-z0-9_]`, e.g. `requires_action`).
pub const STATUS_LEN_MAX: usize = 32;
/// Longest serialized `next_action`, in bytes (16 KiB).
pub const NEXT_ACTION_LEN_MAX: usize = 16 * 1024;
/// Largest amount, in minor units (10¹²: far above any PSP's per-payment limit, and millions
/// of them still sum inside an `i64`).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;
/// Most payments [`list_for_record`] returns.
pub const LIST_MAX: usize = 100;

/// A payment id (a random UUID, as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(uuid::Uuid);

impl PaymentId {
    fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::str::FromStr for PaymentId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// A payment to record, after the PSP created its object.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment<'a> {
    /// The record it pays (e.g. the quote), in this tenant.
    pub record_id: RecordId,
    /// The PSP, e.g. `stripe`.
    pub psp: &'a str,
    /// The PSP's object id, e.g. `pi_…`.
    pub psp_payment_id: &'a str,
    /// The amount, `1..=`[`AMOUNT_MINOR_MAX`] minor units.
    pub amount: Money,
    /// The PSP's status, e.g. `requires_action`.
    pub status: &'a str,
    /// The PSP object's ordering for `status` (see [`apply_status`]).
    pub status_version: i64,
    /// The user who pays, in this tenant.
    pub customer_id: UserId,
    /// The PSP's card fingerprint, if a card is attached.
    pub card_fingerprint: Option<&'a str>,
    /// The PSP's `next_action` (e.g. a 3DS redirect), if any.
    pub next_action: Option<&'a Value>,
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// Its id.
    pub id: PaymentId,
    /// The record it pays.
    pub record_id: RecordId,
    /// The PSP.
    pub psp: String,
    /// The PSP's object id.
    pub psp_payment_id: String,
    /// The amount.
    pub amount: Money,
    /// The PSP's latest status applied.
    pub status: String,
    /// The ordering of that status.
    pub status_version: i64,
    /// Captured so far, minor units of `amount.currency`, `0..=amount.minor`.
    pub captured_minor: i64,
    /// Refunded (or reserved for a refund in flight) so far, `0..=captured_minor`.
    pub refunded_minor: i64,
    /// The paying user.
    pub customer_id: UserId,
    /// The PSP's card fingerprint, if any.
    pub card_fingerprint: Option<String>,
    /// The PSP's `next_action` (3DS), if any.
    pub next_action: Option<Value>,
    /// When it was recorded, seconds since the epoch.
    pub created_at: UnixTime,
    /// When it last changed.
    pub updated_at: UnixTime,
}

/// What [`apply_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusUpdate {
    /// The status was newer than the stored one and is now stored.
    Applied,
    /// The stored status is as new or newer (`status_version` ≥ the given one): nothing
    /// changed. An out-of-order or repeated event; acknowledge it and move on.
    Stale,
}

/// What [`add_refund`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Reserved: the payment's refunded total is now `refunded_minor`.
    Applied {
        /// Refunded total after this refund, minor units.
        refunded_minor: i64,
    },
    /// Refused: it would take the refunded total above the captured amount. Nothing changed.
    Exceeds {
        /// What can still be refunded, minor units.
        refundable_minor: i64,
    },
}

fn check_psp(psp: &str) -> StoreResult<()> {
    let ok = !psp.is_empty()
        && psp.len() <= PSP_LEN_MAX
        && psp
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "psp must be 1..=32 of [a-z0-9_-]",
        })
    }
}

fn check_psp_id(id: &str, reason: &'static str) -> StoreResult<()> {
    let ok =
        !id.is_empty() && id.len() <= PSP_ID_LEN_MAX && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid { reason })
    }
}

fn check_status(status: &str) -> StoreResult<()> {
    let ok = !status.is_empty()
        && status.len() <= STATUS_LEN_MAX
        && status
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "payment status must be 1..=32 of [a-z0-9_]",
        })
    }
}

fn check_amount(minor: i64) -> StoreResult<()> {
    if (1..=AMOUNT_MINOR_MAX).contains(&minor) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "amount must be 1..=10^12 minor units",
        })
    }
}

const PAYMENT_COLUMNS: &str = "id, record_id, psp, psp_payment_id, amount_minor, currency, \
     status, status_version, captured_minor, refunded_minor, customer_id, card_fingerprint, \
     next_action, created_at, updated_at";

fn payment_from_row(row: &sql::Row) -> StoreResult<Payment> {
    let currency: String = col(row, "currency")?;
    let next_action: Option<String> = col(row, "next_action")?;
    Ok(Payment {
        id: parse_id(&col::<String>(row, "id")?)?,
        record_id: parse_id(&col::<String>(row, "record_id")?)?,
        psp: col(row, "psp")?,
        psp_payment_id: col(row, "psp_payment_id")?,
        amount: Money {
            minor: col(row, "amount_minor")?,
            currency: Currency::parse(&currency)
                .map_err(|_| StoreError::internal("corrupt payment currency"))?,
        },
        status: col(row, "status")?,
        status_version: col(row, "status_version")?,
        captured_minor: col(row, "captured_minor")?,
        refunded_minor: col(row, "refunded_minor")?,
        customer_id: parse_id(&col::<String>(row, "customer_id")?)?,
        card_fingerprint: col(row, "card_fingerprint")?,
        next_action: next_action
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|_| StoreError::internal("corrupt payment next action"))?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

/// Records a payment with nothing captured or refunded, and its route for webhooks.
///
/// # Errors
/// [`StoreError::Duplicate`] when this PSP object is already recorded (in this tenant or,
/// through its route, in another); [`StoreError::Invalid`] for a bad PSP name, id, status,
/// card fingerprint, an amount outside `1..=`[`AMOUNT_MINOR_MAX`], a `next_action` over
/// [`NEXT_ACTION_LEN_MAX`], or a record or customer that does not exist in this tenant
/// (composite foreign keys). On PostgreSQL a duplicate fails the transaction: look the
/// object up with [`by_psp_id`] first when it may exist.
pub async fn insert(tx: &mut TenantTx, new: &NewPayment<'_>) -> StoreResult<Payment> {
    check_psp(new.psp)?;
    check_psp_id(new.psp_payment_id, "bad psp payment id")?;
    check_amount(new.amount.minor)?;
    check_status(new.status)?;
    if let Some(fp) = new.card_fingerprint {
        check_psp_id(fp, "bad card fingerprint")?;
    }
    let next_action = new.next_action.map(Value::to_string);
    if next_action
        .as_ref()
        .is_some_and(|t| t.len() > NEXT_ACTION_LEN_MAX)
    {
        return Err(StoreError::Invalid {
            reason: "payment next action exceeds 16 KiB",
        });
    }
    let id = PaymentId::new_random();
    let now = tx.now();
    let tenant = tx.tenant_text();
    sql::query(
        "INSERT INTO payments (tenant_id, id, record_id, psp, psp_payment_id, amount_minor,
             currency, status, status_version, captured_minor, refunded_minor, customer_id,
             card_fingerprint, next_action, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $11, $12, $13, $13)",
    )
    .bind(&tenant)
    .bind(id.to_string())
    .bind(new.record_id.to_string())
    .bind(new.psp)
    .bind(new.psp_payment_id)
    .bind(new.amount.minor)
    .bind(new.amount.currency.as_str())
    .bind(new.status)
    .bind(new.status_version)
    .bind(new.customer_id.to_string())
    .bind(new.card_fingerprint.map(str::to_owned))
    .bind(next_action)
    .bind(now)
    .execute(tx.conn())
    .await?;
    sql::query(
        "INSERT INTO payment_routes (psp, psp_payment_id, tenant_id, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(new.psp)
    .bind(new.psp_payment_id)
    .bind(&tenant)
    .bind(now)
    .execute(tx.conn())
    .await?;
    get(tx, id).await?.ok_or(StoreError::NotFound)
}

/// The payment with this id in this tenant.
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot serve.
pub async fn get(tx: &mut TenantTx, id: PaymentId) -> StoreResult<Option<Payment>> {
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id.to_string())
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(payment_from_row).transpose()
}

/// The payment of PSP object `psp_payment_id` in this tenant.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad PSP name or id.
pub async fn by_psp_id(
    tx: &mut TenantTx,
    psp: &str,
    psp_payment_id: &str,
) -> StoreResult<Option<Payment>> {
    check_psp(psp)?;
    check_psp_id(psp_payment_id, "bad psp payment id")?;
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE tenant_id = $1 AND psp = $2 AND psp_payment_id = $3"
    ))
    .bind(tenant)
    .bind(psp)
    .bind(psp_payment_id)
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(payment_from_row).transpose()
}

/// The payments of record `record_id` in this tenant, oldest first, at most [`LIST_MAX`].
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot serve.
pub async fn list_for_record(tx: &mut TenantTx, record_id: RecordId) -> StoreResult<Vec<Payment>> {
    let tenant = tx.tenant_text();
    let rows = sql::query(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1 AND record_id = $2
         ORDER BY created_at, id LIMIT $3"
    ))
    .bind(tenant)
    .bind(record_id.to_string())
    .bind(i64::try_from(LIST_MAX).unwrap_or(i64::MAX))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(payment_from_row).collect()
}

/// The tenant that recorded PSP object `psp_payment_id`, for a verified webhook that names
/// only the PSP's id. `None` when no tenant did (answer the webhook, do nothing).
///
/// # Errors
/// [`StoreError::Invalid`] for a bad PSP name or id.
pub async fn route_tenant(
    tx: &mut SystemTx,
    psp: &str,
    psp_payment_id: &str,
) -> StoreResult<Option<TenantId>> {
    check_psp(psp)?;
    check_psp_id(psp_payment_id, "bad psp payment id")?;
    let tenant: Option<String> =
        sql::query("SELECT tenant_id FROM payment_routes WHERE psp = $1 AND psp_payment_id = $2")
            .bind(psp)
            .bind(psp_payment_id)
            .scalar_optional(tx.conn())
            .await?;
    tenant.as_deref().map(parse_id).transpose()
}

/// Sets the payment's status to `status` if `status_version` is **newer** than the stored
/// one (`UPDATE … WHERE status_version < new`), so an older event arriving late never
/// overwrites a newer state (case P6, cashier-stripe#1201). The stored `next_action`
/// belonged to the older status and is cleared; use [`apply_status_with_action`] when the
/// new status comes with one (e.g. `requires_action` and its 3DS redirect).
///
/// Equal versions are [`StatusUpdate::Stale`]: a PSP whose event times have one-second
/// resolution can emit two statuses in the same second, so callers build `status_version`
/// strictly increasing along the object's life, e.g. `created · 16 + rank(status)` where
/// `rank` follows the PSP's lifecycle (processing < succeeded), or use the object's own
/// version counter where the PSP has one.
///
/// # Errors
/// [`StoreError::NotFound`] when no such payment is in this tenant; [`StoreError::Invalid`]
/// for a bad status.
pub async fn apply_status(
    tx: &mut TenantTx,
    id: PaymentId,
    status: &str,
    status_version: i64,
) -> StoreResult<StatusUpdate> {
    apply_status_with_action(tx, id, status, status_version, None).await
}

/// [`apply_status`], storing `next_action` (the PSP's 3DS/SCA instructions) with the new
/// status.
///
/// # Errors
/// As [`apply_status`]; [`StoreError::Invalid`] for a `next_action` over
/// [`NEXT_ACTION_LEN_MAX`].
pub async fn apply_status_with_action(
    tx: &mut TenantTx,
    id: PaymentId,
    status: &str,
    status_version: i64,
    next_action: Option<&Value>,
) -> StoreResult<StatusUpdate> {
    check_status(status)?;
    let next_action = next_action.map(Value::to_string);
    if next_action
        .as_ref()
        .is_some_and(|t| t.len() > NEXT_ACTION_LEN_MAX)
    {
        return Err(StoreError::Invalid {
            reason: "payment next action exceeds 16 KiB",
        });
    }
    let now = tx.now();
    let tenant = tx.tenant_text();
    let done = sql::query(
        "UPDATE payments SET status = $3, status_version = $4, next_action = $5, updated_at = $6
         WHERE tenant_id = $1 AND id = $2 AND status_version < $4",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(status)
    .bind(status_version)
    .bind(next_action)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(StatusUpdate::Applied);
    }
    match get(tx, id).await? {
        Some(_) => Ok(StatusUpdate::Stale),
        None => Err(StoreError::NotFound),
    }
}

/// Raises the captured amount to `captured_minor` (never lowers it: a late event reporting
/// less is ignored) and returns the captured amount now stored.
///
/// # Errors
/// [`StoreError::NotFound`] when no such payment is in this tenant; [`StoreError::Invalid`]
/// when `captured_minor` is negative or above the payment's amount.
pub async fn record_capture(
    tx: &mut TenantTx,
    id: PaymentId,
    captured_minor: i64,
) -> StoreResult<i64> {
    if !(0..=AMOUNT_MINOR_MAX).contains(&captured_minor) {
        return Err(StoreError::Invalid {
            reason: "captured amount must be 0..=10^12 minor units",
        });
    }
    let now = tx.now();
    let tenant = tx.tenant_text();
    let stored: Option<i64> = sql::query(
        "UPDATE payments SET
             captured_minor = CASE WHEN captured_minor < $3 THEN $3 ELSE captured_minor END,
             updated_at = $4
         WHERE tenant_id = $1 AND id = $2 AND $3 <= amount_minor
         RETURNING captured_minor",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(captured_minor)
    .bind(now)
    .scalar_optional(tx.conn())
    .await?;
    match stored {
        Some(c) => Ok(c),
        None => match get(tx, id).await? {
            Some(_) => Err(StoreError::Invalid {
                reason: "captured amount exceeds the payment amount",
            }),
            None => Err(StoreError::NotFound),
        },
    }
}

/// Reserves a refund of `amount_minor` against the captured amount, atomically: one
/// conditional `UPDATE … SET refunded_minor = refunded_minor + amount WHERE refunded_minor +
/// amount <= captured_minor`. Of two concurrent refunds that together exceed the capture,
/// exactly one is applied (case P5, hyperswitch#13182): on PostgreSQL the second waits for
/// the first's row lock and re-checks the condition on the committed row; SQLite serialises
/// the transactions. Reserve **before** asking the PSP, and [`release_refund`] if it refuses.
///
/// # Errors
/// [`StoreError::NotFound`] when no such payment is in this tenant; [`StoreError::Invalid`]
/// for an amount outside `1..=`[`AMOUNT_MINOR_MAX`].
pub async fn add_refund(
    tx: &mut TenantTx,
    id: PaymentId,
    amount_minor: i64,
) -> StoreResult<RefundOutcome> {
    check_amount(amount_minor)?;
    let now = tx.now();
    let tenant = tx.tenant_text();
    let refunded: Option<i64> = sql::query(
        "UPDATE payments SET refunded_minor = refunded_minor + $3, updated_at = $4
         WHERE tenant_id = $1 AND id = $2 AND refunded_minor + $3 <= captured_minor
         RETURNING refunded_minor",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(amount_minor)
    .bind(now)
    .scalar_optional(tx.conn())
    .await?;
    if let Some(refunded_minor) = refunded {
        return Ok(RefundOutcome::Applied { refunded_minor });
    }
    match get(tx, id).await? {
        Some(p) => Ok(RefundOutcome::Exceeds {
            refundable_minor: p.captured_minor - p.refunded_minor,
        }),
        None => Err(StoreError::NotFound),
    }
}

/// Gives back a refund reservation made by [`add_refund`] that the PSP refused. Returns the
/// refunded total after the release.
///
/// # Errors
/// [`StoreError::NotFound`] when no such payment is in this tenant; [`StoreError::Invalid`]
/// for an amount outside `1..=`[`AMOUNT_MINOR_MAX`] or above the refunded total.
pub async fn release_refund(
    tx: &mut TenantTx,
    id: PaymentId,
    amount_minor: i64,
) -> StoreResult<i64> {
    check_amount(amount_minor)?;
    let now = tx.now();
    let tenant = tx.tenant_text();
    let refunded: Option<i64> = sql::query(
        "UPDATE payments SET refunded_minor = refunded_minor - $3, updated_at = $4
         WHERE tenant_id = $1 AND id = $2 AND refunded_minor >= $3
         RETURNING refunded_minor",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(amount_minor)
    .bind(now)
    .scalar_optional(tx.conn())
    .await?;
    match refunded {
        Some(r) => Ok(r),
        None => match get(tx, id).await? {
            Some(_) => Err(StoreError::Invalid {
                reason: "release exceeds the refunded amount",
            }),
            None => Err(StoreError::NotFound),
        },
    }
}
