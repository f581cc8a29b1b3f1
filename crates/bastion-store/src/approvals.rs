//! Human approvals (issue 4 item 4): a held tool call waiting for a second person.
//!
//! One table, `approvals` (migration 0005), one row per request, in the tenant's rows. A row
//! keeps the **exact** arguments of the held call as canonical JSON ([`canonical_json`]) and
//! their SHA-256 ([`args_hash`]), so what is executed is byte for byte what was approved.
//!
//! Status moves only forward ([`Status`]):
//!
//! ```text
//! pending ─decide→ approved ─finish→ executed | failed
//! pending ─decide→ rejected        pending ─expire→ expired
//! ```
//!
//! [`decide`] is one conditional `UPDATE … WHERE status = 'pending' AND expires_at > now`:
//! whatever the number of concurrent approvers, at most one transition succeeds (SQLite
//! serialises writers; on PostgreSQL the second `UPDATE` waits for the first's row lock, then
//! re-checks the condition and changes nothing). The database also refuses a row whose
//! decider is its requester (`CHECK (decided_by <> requested_by)`).

use bastion_types::{UnixTime, UserId};
use serde_json::Value;

use crate::TenantTx;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, Row, col};

/// Longest tool name, bytes.
pub const TOOL_LEN_MAX: usize = 64;
/// Longest reason, bytes.
pub const REASON_LEN_MAX: usize = 500;
/// Largest canonical arguments, bytes.
pub const ARGS_BYTES_MAX: usize = 64 * 1024;
/// Largest stored result, bytes (a larger result is replaced by a summary).
pub const RESULT_BYTES_MAX: usize = 64 * 1024;
/// Longest idempotency key, bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// Longest time an approval may stay open, seconds (7 days).
pub const TTL_SECS_MAX: i64 = 7 * 24 * 3600;
/// Most approvals [`list`] returns.
pub const LIST_MAX: u32 = 100;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for a decision.
    Pending,
    /// Approved; the call is being executed.
    Approved,
    /// Rejected by an approver; never executed.
    Rejected,
    /// Approved and executed; `result` holds the tool's output.
    Executed,
    /// Not decided before `expires_at`; never executed.
    Expired,
    /// Approved, but the execution was refused or failed (e.g. policy changed meanwhile).
    Failed,
}

impl Status {
    /// The stored spelling: `pending`, `approved`, `rejected`, `executed`, `expired`, `failed`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Executed => "executed",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "executed" => Self::Executed,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            _ => return Err(StoreError::internal("corrupt approval status")),
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored approval.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Its id (UUID v4).
    pub id: uuid::Uuid,
    /// The held tool.
    pub tool: String,
    /// The exact arguments (as stored: canonical JSON, parsed).
    pub args: Value,
    /// SHA-256 of [`canonical_json`] of `args`, lowercase hex.
    pub args_hash: String,
    /// Who asked for the call (it runs as this user when approved).
    pub requested_by: UserId,
    /// Why approval is needed (fixed text from the pipeline or the agent).
    pub reason: String,
    /// Where it stands.
    pub status: Status,
    /// When filed, Unix seconds.
    pub created_at: UnixTime,
    /// Not decidable from this time on, Unix seconds.
    pub expires_at: UnixTime,
    /// Who approved or rejected it.
    pub decided_by: Option<UserId>,
    /// When, Unix seconds.
    pub decided_at: Option<UnixTime>,
    /// The idempotency key of the original request, passed to the execution.
    pub idempotency_key: Option<String>,
    /// The tool's output once executed, or `{"error": …}` once failed.
    pub result: Option<Value>,
}

/// A request to file.
#[derive(Debug, Clone, Copy)]
pub struct NewApproval<'a> {
    /// The tool (1..=[`TOOL_LEN_MAX`] bytes).
    pub tool: &'a str,
    /// The exact arguments (a JSON object, at most [`ARGS_BYTES_MAX`] bytes canonical).
    pub args: &'a Value,
    /// The requester (a user of the transaction's tenant).
    pub requested_by: UserId,
    /// Why (1..=[`REASON_LEN_MAX`] bytes, no control characters).
    pub reason: &'a str,
    /// Lifetime, seconds (1..=[`TTL_SECS_MAX`]).
    pub ttl_secs: i64,
    /// The original request's idempotency key, if any.
    pub idempotency_key: Option<&'a str>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// The transition happened; the approval as it now stands.
    Done(Box<Approval>),
    /// No approval with that id in this tenant.
    Missing,
    /// It had expired (it is now stored as [`Status::Expired`] if it was still pending).
    Expired,
    /// Someone decided it already; its current status.
    NotPending(Status),
}

/// Canonical JSON of `v`: object members sorted by key (UTF-8 byte order), no insignificant
/// whitespace, numbers and strings as `serde_json` writes them. Equal values give equal text,
/// whatever the order or spacing the client sent (the idea of RFC 8785, for the values a
/// tool schema admits: integers, strings, booleans, nested objects and arrays).
#[must_use]
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    if let Some(x) = m.get(k) {
                        out.insert(k.clone(), sorted(x));
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// SHA-256 (FIPS 180-4) of [`canonical_json`] of `v`, lowercase hex.
#[must_use]
pub fn args_hash(v: &Value) -> String {
    hex_sha256(canonical_json(v).as_bytes())
}

fn hex_sha256(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_new(n: &NewApproval<'_>) -> StoreResult<String> {
    let tool_ok = !n.tool.is_empty()
        && n.tool.len() <= TOOL_LEN_MAX
        && n.tool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !tool_ok {
        return Err(StoreError::Invalid {
            reason: "tool name must be 1..=64 bytes of a-z, 0-9, _ and -",
        });
    }
    if n.reason.trim().is_empty()
        || n.reason.len() > REASON_LEN_MAX
        || n.reason.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid {
            reason: "approval reason must be 1..=500 bytes without control characters",
        });
    }
    if !(1..=TTL_SECS_MAX).contains(&n.ttl_secs) {
        return Err(StoreError::Invalid {
            reason: "approval ttl must be 1..=604800 seconds",
        });
    }
    if let Some(k) = n.idempotency_key
        && (k.is_empty()
            || k.len() > IDEMPOTENCY_KEY_LEN_MAX
            || !k.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
    {
        return Err(StoreError::Invalid {
            reason: "idempotency key must be 1..=255 visible ascii characters or spaces",
        });
    }
    if !n.args.is_object() {
        return Err(StoreError::Invalid {
            reason: "approval arguments must be a json object",
        });
    }
    let text = canonical_json(n.args);
    if text.len() > ARGS_BYTES_MAX {
        return Err(StoreError::Invalid {
            reason: "approval arguments must be at most 65536 bytes",
        });
    }
    Ok(text)
}

/// Files a pending approval, now, in the transaction's tenant.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad tool name, reason, ttl, key or arguments (see
/// [`NewApproval`]), or a requester who is not a user of this tenant;
/// [`StoreError::Unavailable`] from the database.
pub async fn create(tx: &mut TenantTx, n: &NewApproval<'_>) -> StoreResult<Approval> {
    let text = check_new(n)?;
    let hash = hex_sha256(text.as_bytes());
    let id = uuid::Uuid::new_v4();
    let now = tx.now();
    let tenant = tx.tenant_text();
    let expires_at = now.saturating_add(n.ttl_secs);
    sql::query(
        "INSERT INTO approvals (tenant_id, id, tool, args, args_hash, requested_by, reason,
                                status, created_at, expires_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10)",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(n.tool)
    .bind(text)
    .bind(hash.clone())
    .bind(n.requested_by.to_string())
    .bind(n.reason)
    .bind(now)
    .bind(expires_at)
    .bind(n.idempotency_key.map(str::to_owned))
    .execute(tx.conn())
    .await
    .map_err(|e| match e {
        StoreError::Invalid { .. } => StoreError::Invalid {
            reason: "the requester is not a user of this tenant",
        },
        other => other,
    })?;
    Ok(Approval {
        id,
        tool: n.tool.to_owned(),
        args: serde_json::from_str(&canonical_json(n.args))
            .map_err(|_| StoreError::internal("canonical json does not parse"))?,
        args_hash: hash,
        requested_by: n.requested_by,
        reason: n.reason.to_owned(),
        status: Status::Pending,
        created_at: now,
        expires_at,
        decided_by: None,
        decided_at: None,
        idempotency_key: n.idempotency_key.map(str::to_owned),
        result: None,
    })
}

const COLUMNS: &str = "id, tool, args, args_hash, requested_by, reason, status, created_at,
                       expires_at, decided_by, decided_at, idempotency_key, result";

fn from_row(r: &Row) -> StoreResult<Approval> {
    let args: String = col(r, "args")?;
    let result: Option<String> = col(r, "result")?;
    let decided_by: Option<String> = col(r, "decided_by")?;
    Ok(Approval {
        id: crate::db::parse_id(&col::<String>(r, "id")?)?,
        tool: col(r, "tool")?,
        args: serde_json::from_str(&args)
            .map_err(|_| StoreError::internal("corrupt approval arguments"))?,
        args_hash: col(r, "args_hash")?,
        requested_by: crate::db::parse_id(&col::<String>(r, "requested_by")?)?,
        reason: col(r, "reason")?,
        status: Status::parse(&col::<String>(r, "status")?)?,
        created_at: col(r, "created_at")?,
        expires_at: col(r, "expires_at")?,
        decided_by: decided_by.map(|s| crate::db::parse_id(&s)).transpose()?,
        decided_at: col(r, "decided_at")?,
        idempotency_key: col(r, "idempotency_key")?,
        result: result
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|_| StoreError::internal("corrupt approval result"))?,
    })
}

/// The approval `id` of the transaction's tenant (`None` for another tenant's id too).
///
/// # Errors
/// [`StoreError::Unavailable`] from the database; [`StoreError::Internal`] for a corrupt row.
pub async fn get(tx: &mut TenantTx, id: uuid::Uuid) -> StoreResult<Option<Approval>> {
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id.to_string())
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Approvals of the transaction's tenant that `viewer` requested, or that are pending and
/// are for one of `decidable_tools` and not requested by `viewer` — pending first, then
/// newest first; at most `limit` (1..=[`LIST_MAX`]) from `offset`.
///
/// # Errors
/// [`StoreError::Invalid`] for a `limit` outside `1..=`[`LIST_MAX`] or more than 1000
/// tools; [`StoreError::Unavailable`] from the database.
pub async fn list(
    tx: &mut TenantTx,
    viewer: UserId,
    decidable_tools: &[&str],
    limit: u32,
    offset: u32,
) -> StoreResult<Vec<Approval>> {
    if limit == 0 || limit > LIST_MAX {
        return Err(StoreError::Invalid {
            reason: "page size must be 1..=100",
        });
    }
    if decidable_tools.len() > 1000 {
        return Err(StoreError::Invalid {
            reason: "at most 1000 tools",
        });
    }
    let tenant = tx.tenant_text();
    let mut b = sql::Builder::new(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE tenant_id = "
    ));
    b.push_bind(tenant);
    b.push(" AND (requested_by = ");
    b.push_bind(viewer.to_string());
    if !decidable_tools.is_empty() {
        b.push(" OR (status = 'pending' AND requested_by <> ");
        b.push_bind(viewer.to_string());
        b.push(" AND tool IN (");
        for (i, t) in decidable_tools.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.push_bind(*t);
        }
        b.push("))");
    }
    b.push(") ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, created_at DESC, id LIMIT ");
    b.push_bind(i64::from(limit));
    b.push(" OFFSET ");
    b.push_bind(i64::from(offset));
    let rows = b.build().fetch_all(tx.conn()).await?;
    rows.iter().map(from_row).collect()
}

/// Moves a pending, unexpired approval to `approved` (`approve = true`) or `rejected`, by
/// `by`, now — one conditional `UPDATE`, so it succeeds at most once per approval. An
/// approval found pending but expired is marked [`Status::Expired`] (commit the transaction
/// to keep that).
///
/// The caller checks who may decide; the database refuses `by` = the requester.
///
/// # Errors
/// [`StoreError::Invalid`] when `by` is the requester or not a user of this tenant;
/// [`StoreError::Unavailable`] from the database.
pub async fn decide(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    approve: bool,
    by: UserId,
) -> StoreResult<Decided> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let status = if approve {
        Status::Approved
    } else {
        Status::Rejected
    };
    let done = sql::query(
        "UPDATE approvals SET status = $3, decided_by = $4, decided_at = $5
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND expires_at > $5",
    )
    .bind(tenant.clone())
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(by.to_string())
    .bind(now)
    .execute(tx.conn())
    .await
    .map_err(|e| match e {
        StoreError::Invalid { .. } => StoreError::Invalid {
            reason: "an approval cannot be decided by its requester or an unknown user",
        },
        other => other,
    })?;
    if done.rows_affected() == 1 {
        return match get(tx, id).await? {
            Some(a) => Ok(Decided::Done(Box::new(a))),
            None => Err(StoreError::internal("decided approval vanished")),
        };
    }
    let Some(current) = get(tx, id).await? else {
        return Ok(Decided::Missing);
    };
    match current.status {
        Status::Pending if current.expires_at <= now => {
            sql::query(
                "UPDATE approvals SET status = 'expired'
                 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
            )
            .bind(tenant)
            .bind(id.to_string())
            .execute(tx.conn())
            .await?;
            Ok(Decided::Expired)
        }
        Status::Expired => Ok(Decided::Expired),
        other => Ok(Decided::NotPending(other)),
    }
}

/// Records the outcome of an approved approval's execution: [`Status::Executed`] with the
/// tool's output, or [`Status::Failed`] with `{"error": …}` (`executed = false`). Only an
/// `approved` approval moves; returns whether it did.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn finish(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    executed: bool,
    result: &Value,
) -> StoreResult<bool> {
    let tenant = tx.tenant_text();
    let status = if executed {
        Status::Executed
    } else {
        Status::Failed
    };
    let mut text = result.to_string();
    if text.len() > RESULT_BYTES_MAX {
        text = serde_json::json!({"omitted": "result too large to keep", "bytes": text.len()})
            .to_string();
    }
    let done = sql::query(
        "UPDATE approvals SET status = $3, result = $4
         WHERE tenant_id = $1 AND id = $2 AND status = 'approved'",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(text)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}
