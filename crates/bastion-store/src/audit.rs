//! The audit chains in the database: append in the caller's transaction, read for
//! verification.
//!
//! Each tenant has one chain; the system chain uses the nil tenant id. An append reads the
//! chain head, inserts record `seq + 1` linked to the head's hash, and moves the head — all in
//! the caller's transaction, so an effect and its audit record commit or vanish together.
//! `PRIMARY KEY (tenant_id, seq)` stops two writers from forking a chain, and triggers refuse
//! `UPDATE`/`DELETE` on the log, deleting a head, or moving a head anywhere but one step
//! forward onto an existing record.

use bastion_audit::{AuditEvent, BODY_LEN_MAX, HASH_LEN, StoredAuditRecord, seal_next};
use bastion_types::TenantId;

use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};
use crate::{SystemTx, TenantTx};

/// `(seq, hash)` of the last record of a chain.
pub type ChainHead = (u64, [u8; HASH_LEN]);

/// A whole chain as stored, ready for [`bastion_audit::verify`]`(&chain.records, chain.head)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    /// The chain's tenant (nil for the system chain).
    pub tenant_id: TenantId,
    /// Records in ascending `seq`.
    pub records: Vec<StoredAuditRecord>,
    /// The stored head; `None` when nothing was ever appended.
    pub head: Option<ChainHead>,
}

/// Appends `event` to the transaction's tenant chain and returns the new `(seq, hash)`.
///
/// Fails closed: any error here must fail the caller's whole operation (roll back and
/// answer 503 for [`StoreError::Unavailable`]).
///
/// # Errors
/// [`StoreError::Invalid`] when `event.tenant_id` is not the transaction's tenant or the body
/// exceeds [`BODY_LEN_MAX`]; [`StoreError::Unavailable`] when the database cannot write
/// (read-only, full, locked).
pub async fn append_audit(tx: &mut TenantTx, event: &AuditEvent) -> StoreResult<ChainHead> {
    if event.tenant_id != tx.tenant_id() {
        return Err(StoreError::Invalid {
            reason: "audit event of another tenant",
        });
    }
    let tenant = tx.tenant_text();
    append(tx.conn(), &tenant, event).await
}

/// Appends `event` to the system chain (tenant-less events: tenant creation, operator
/// commands, failed logins for unknown tenants).
///
/// # Errors
/// As [`append_audit`]; `event.tenant_id` must be nil.
pub async fn system_append_audit(tx: &mut SystemTx, event: &AuditEvent) -> StoreResult<ChainHead> {
    if !event.tenant_id.as_uuid().is_nil() {
        return Err(StoreError::Invalid {
            reason: "system audit events carry the nil tenant",
        });
    }
    append(tx.conn(), &event.tenant_id.to_string(), event).await
}

/// Most records [`read_chain_page`] returns at once.
pub const CHAIN_PAGE_MAX: u32 = 1000;

/// The stored head of the transaction's tenant chain; `None` before the first append.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn chain_head(tx: &mut TenantTx) -> StoreResult<Option<ChainHead>> {
    let tenant = tx.tenant_text();
    head(tx.conn(), &tenant).await
}

/// Up to `limit` (`1..=`[`CHAIN_PAGE_MAX`]) records of the transaction's tenant chain with
/// `seq > after_seq`, ascending. Feed them to a [`bastion_audit::ChainVerifier`] to verify a
/// long chain in bounded memory.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad `limit`.
pub async fn read_chain_page(
    tx: &mut TenantTx,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<StoredAuditRecord>> {
    let tenant = tx.tenant_text();
    page(tx.conn(), &tenant, after_seq, limit).await
}

/// The stored head of the system chain.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn system_chain_head(tx: &mut SystemTx) -> StoreResult<Option<ChainHead>> {
    head(tx.conn(), &nil_tenant().to_string()).await
}

/// As [`read_chain_page`], for the system chain.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad `limit`.
pub async fn system_read_chain_page(
    tx: &mut SystemTx,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<StoredAuditRecord>> {
    page(tx.conn(), &nil_tenant().to_string(), after_seq, limit).await
}

fn nil_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

/// Reads the transaction's tenant chain, whole (memory grows with the chain; prefer
/// [`read_chain_page`] for long chains).
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn read_chain(tx: &mut TenantTx) -> StoreResult<AuditChain> {
    let tenant_id = tx.tenant_id();
    read(tx.conn(), tenant_id).await
}

/// Reads the system chain, whole.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn system_read_chain(tx: &mut SystemTx) -> StoreResult<AuditChain> {
    read(tx.conn(), nil_tenant()).await
}

fn to_seq(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::internal("negative audit seq"))
}

fn from_seq(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::internal("audit seq overflow"))
}

fn to_hash(v: Vec<u8>) -> StoreResult<[u8; HASH_LEN]> {
    v.try_into()
        .map_err(|_| StoreError::internal("corrupt audit hash"))
}

async fn head(conn: &mut crate::sql::DbTx, tenant: &str) -> StoreResult<Option<ChainHead>> {
    let row = sql::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok((to_seq(col(&r, "seq")?)?, to_hash(col(&r, "hash")?)?)))
        .transpose()
}

async fn append(
    conn: &mut crate::sql::DbTx,
    tenant: &str,
    event: &AuditEvent,
) -> StoreResult<ChainHead> {
    let body = event.canonical_body();
    if body.len() > BODY_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "audit record exceeds 64 KiB",
        });
    }
    if conn.is_postgres() {
        // Writers of one chain queue here until the holder commits, so each appends to the
        // head the previous one left (SQLite serialises every transaction already).
        sql::query("SELECT pg_advisory_xact_lock(hashtextextended('bastion.audit:' || $1, 0))")
            .bind(tenant)
            .execute(conn)
            .await?;
    }
    let prev = head(conn, tenant).await?;
    let record = seal_next(prev, body);
    let seq = from_seq(record.seq)?;
    sql::query(
        "INSERT INTO audit_log (tenant_id, seq, at, body, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(seq)
    .bind(event.at)
    .bind(&record.body)
    .bind(&record.prev_hash[..])
    .bind(&record.hash[..])
    .execute(&mut *conn)
    .await?;
    let moved = match prev {
        None => {
            sql::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, $2, $3)")
                .bind(tenant)
                .bind(seq)
                .bind(&record.hash[..])
                .execute(&mut *conn)
                .await?
        }
        Some((prev_seq, _)) => {
            sql::query(
                "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1 AND seq = $4",
            )
            .bind(tenant)
            .bind(seq)
            .bind(&record.hash[..])
            .bind(from_seq(prev_seq)?)
            .execute(&mut *conn)
            .await?
        }
    };
    if moved.rows_affected() != 1 {
        return Err(StoreError::internal("audit head moved concurrently"));
    }
    Ok((record.seq, record.hash))
}

fn record_from_row(r: &crate::sql::Row) -> StoreResult<StoredAuditRecord> {
    Ok(StoredAuditRecord {
        seq: to_seq(col(r, "seq")?)?,
        body: col(r, "body")?,
        prev_hash: to_hash(col(r, "prev_hash")?)?,
        hash: to_hash(col(r, "hash")?)?,
    })
}

async fn page(
    conn: &mut crate::sql::DbTx,
    tenant: &str,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<StoredAuditRecord>> {
    if limit == 0 || limit > CHAIN_PAGE_MAX {
        return Err(StoreError::Invalid {
            reason: "chain page size must be 1..=1000",
        });
    }
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let rows = sql::query(
        "SELECT seq, body, prev_hash, hash FROM audit_log
         WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(tenant)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(record_from_row).collect()
}

async fn read(conn: &mut crate::sql::DbTx, tenant_id: TenantId) -> StoreResult<AuditChain> {
    let tenant = tenant_id.to_string();
    let rows = sql::query(
        "SELECT seq, body, prev_hash, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq",
    )
    .bind(&tenant)
    .fetch_all(&mut *conn)
    .await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let head = head(conn, &tenant).await?;
    Ok(AuditChain {
        tenant_id,
        records,
        head,
    })
}
