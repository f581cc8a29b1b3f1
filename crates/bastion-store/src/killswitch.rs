//! The kill switch: persisted switches that stop tool calls globally, for one tool
//! everywhere, for one tenant, or for one tool of one tenant (DESIGN.md, Platform: "a kill
//! switch that disables AI tools globally, per tenant or per tool"; case A6).
//!
//! One table, `kill_switches` (migration 0004), keyed by `(scope, tenant_id, tool)` with `''`
//! standing for "not named". A switch row stays after release (`engaged = FALSE`), so the last
//! change, its author and its reason remain visible.
//!
//! Who writes which row:
//! - the [`SystemTx`] writes the rows that name no tenant ([`Scope::Global`], [`Scope::Tool`])
//!   with [`engage_system`] / [`release_system`];
//! - a [`TenantTx`] writes its own tenant's rows ([`Scope::Tenant`], [`Scope::TenantTool`])
//!   with [`engage`] / [`release`]. On PostgreSQL row-level security enforces both rules
//!   again (a tenant transaction cannot write a global row, the system transaction cannot
//!   write a tenant's row).
//!
//! The check, [`is_blocked`], is one query over the four scopes, run **inside the tenant
//! transaction of the tool call**, right before its effect. The guarantee it gives, with the
//! change functions here:
//!
//! > once an engage has committed, no tool transaction that it covers commits an effect.
//!
//! - SQLite: every transaction begins with `BEGIN IMMEDIATE`, so the engage and every tool
//!   transaction are serialised: a tool transaction either committed before the engage began,
//!   or it began after the engage committed and its check sees the switch.
//! - PostgreSQL (READ COMMITTED): [`is_blocked`] first takes the *shared* transaction-level
//!   advisory lock [`LOCK_KEY`] in its own statement, then reads the switches in a second
//!   statement (whose snapshot is therefore taken after the lock is held). Every change takes
//!   the same lock *exclusively* before it writes. So an engage waits until every tool
//!   transaction that already passed its check has committed or rolled back, and a tool
//!   transaction that checks after the engage committed sees it. Shared holders do not block
//!   each other: calls pay one lock-table entry, not a queue. The price is that an engage waits
//!   for the tool transactions in flight (each bounded by the store's timeouts).
//!
//! Every instance reads the same rows on every call: there is no cache, so a switch applies
//! across instances as soon as its transaction commits.

use bastion_types::TenantId;

use crate::error::{StoreError, StoreResult};
use crate::sql::{self, DbTx, Row, col};
use crate::{SystemTx, TenantTx};

/// Key of the PostgreSQL advisory lock between switch changes (exclusive) and tool-call checks
/// (shared). Distinct from the migration lock and the audit chain locks.
pub const LOCK_KEY: i64 = 0x6261_7374_696f_6e4b;
/// Longest reason, bytes.
pub const REASON_LEN_MAX: usize = 500;
/// Longest tool name, bytes (manifest tool names are shorter).
pub const TOOL_LEN_MAX: usize = 64;
/// Longest `changed_by`, bytes.
pub const CHANGED_BY_LEN_MAX: usize = 128;
/// Most switches [`list`] and [`list_for_tenant`] return.
pub const LIST_MAX: u32 = 1000;

/// What a switch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every tool of every tenant.
    Global,
    /// One tool in every tenant.
    Tool,
    /// Every tool of one tenant.
    Tenant,
    /// One tool of one tenant.
    TenantTool,
}

impl Scope {
    /// `global`, `tool`, `tenant` or `tenant_tool`, as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Tool => "tool",
            Self::Tenant => "tenant",
            Self::TenantTool => "tenant_tool",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "global" => Ok(Self::Global),
            "tool" => Ok(Self::Tool),
            "tenant" => Ok(Self::Tenant),
            "tenant_tool" => Ok(Self::TenantTool),
            _ => Err(StoreError::internal("corrupt kill switch scope")),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillSwitch {
    /// What it covers.
    pub scope: Scope,
    /// The tenant, for [`Scope::Tenant`] and [`Scope::TenantTool`].
    pub tenant_id: Option<TenantId>,
    /// The tool, for [`Scope::Tool`] and [`Scope::TenantTool`].
    pub tool: Option<String>,
    /// Whether calls are refused now.
    pub engaged: bool,
    /// Why it was last changed (operator text, at most [`REASON_LEN_MAX`] bytes).
    pub reason: String,
    /// Who last changed it (`operator`, `user:<uuid>`).
    pub changed_by: String,
    /// When, Unix seconds.
    pub changed_at: i64,
}

/// Why a call is refused: the engaged switch that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The covering switch's scope (the broadest one when several are engaged).
    pub scope: Scope,
    /// Its reason.
    pub reason: String,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Whether the switch was engaged before this change.
    pub was_engaged: bool,
}

fn check_text(tool: Option<&str>, reason: &str, changed_by: &str) -> StoreResult<()> {
    if let Some(t) = tool {
        let ok = !t.is_empty()
            && t.len() <= TOOL_LEN_MAX
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(StoreError::Invalid {
                reason: "tool name must be 1..=64 bytes of a-z, 0-9, _ and -",
            });
        }
    }
    if reason.trim().is_empty() || reason.len() > REASON_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "kill switch reason must be 1..=500 bytes",
        });
    }
    if reason.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            reason: "kill switch reason must not contain control characters",
        });
    }
    if changed_by.is_empty() || changed_by.len() > CHANGED_BY_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "changed_by must be 1..=128 bytes",
        });
    }
    Ok(())
}

/// Engages the switch of the transaction's tenant: every tool when `tool` is `None`
/// ([`Scope::Tenant`]), else that tool ([`Scope::TenantTool`]). Idempotent; the reason,
/// author and time are overwritten.
///
/// # Errors
/// [`StoreError::Invalid`] for a malformed tool name, an empty, over-long or control-character
/// reason, or a bad `changed_by`; [`StoreError::Unavailable`] from the database.
pub async fn engage(
    tx: &mut TenantTx,
    tool: Option<&str>,
    reason: &str,
    changed_by: &str,
) -> StoreResult<Change> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    set(tx.conn(), &tenant, tool, true, reason, changed_by, now).await
}

/// Releases the switch of the transaction's tenant (see [`engage`]). Releasing a switch that
/// was never engaged stores a released row, so the release and its reason are on record.
///
/// # Errors
/// As [`engage`].
pub async fn release(
    tx: &mut TenantTx,
    tool: Option<&str>,
    reason: &str,
    changed_by: &str,
) -> StoreResult<Change> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    set(tx.conn(), &tenant, tool, false, reason, changed_by, now).await
}

/// Engages a switch that names no tenant: every tool of every tenant when `tool` is `None`
/// ([`Scope::Global`]), else that tool in every tenant ([`Scope::Tool`]).
///
/// # Errors
/// As [`engage`].
pub async fn engage_system(
    tx: &mut SystemTx,
    tool: Option<&str>,
    reason: &str,
    changed_by: &str,
) -> StoreResult<Change> {
    let now = tx.now();
    set(tx.conn(), "", tool, true, reason, changed_by, now).await
}

/// Releases a switch that names no tenant (see [`engage_system`]).
///
/// # Errors
/// As [`engage`].
pub async fn release_system(
    tx: &mut SystemTx,
    tool: Option<&str>,
    reason: &str,
    changed_by: &str,
) -> StoreResult<Change> {
    let now = tx.now();
    set(tx.conn(), "", tool, false, reason, changed_by, now).await
}

async fn set(
    conn: &mut DbTx,
    tenant: &str,
    tool: Option<&str>,
    engaged: bool,
    reason: &str,
    changed_by: &str,
    now: i64,
) -> StoreResult<Change> {
    check_text(tool, reason, changed_by)?;
    let scope = match (tenant.is_empty(), tool.is_some()) {
        (true, false) => Scope::Global,
        (true, true) => Scope::Tool,
        (false, false) => Scope::Tenant,
        (false, true) => Scope::TenantTool,
    };
    if conn.is_postgres() {
        // Waits for every tool transaction that passed its check (they hold the lock shared).
        sql::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(conn)
            .await?;
    }
    let tool = tool.unwrap_or("");
    let before: Option<bool> = sql::query(
        "SELECT engaged FROM kill_switches WHERE scope = $1 AND tenant_id = $2 AND tool = $3",
    )
    .bind(scope.as_str())
    .bind(tenant)
    .bind(tool)
    .scalar_optional(conn)
    .await?;
    sql::query(
        "INSERT INTO kill_switches (scope, tenant_id, tool, engaged, reason, changed_by, changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (scope, tenant_id, tool) DO UPDATE SET
            engaged = excluded.engaged, reason = excluded.reason,
            changed_by = excluded.changed_by, changed_at = excluded.changed_at",
    )
    .bind(scope.as_str())
    .bind(tenant)
    .bind(tool)
    .bind(engaged)
    .bind(reason)
    .bind(changed_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(Change {
        was_engaged: before.unwrap_or(false),
    })
}

/// The one query behind [`is_blocked`] and [`is_blocked_system`]: the broadest engaged switch
/// covering `($1 = tenant, $2 = tool)`.
const BLOCKED_SQL: &str = "SELECT scope, reason FROM kill_switches
     WHERE engaged AND (
           (scope = 'global')
        OR (scope = 'tool' AND tenant_id = '' AND tool = $2)
        OR (scope = 'tenant' AND tenant_id = $1 AND tool = '')
        OR (scope = 'tenant_tool' AND tenant_id = $1 AND tool = $2))
     ORDER BY CASE scope WHEN 'global' THEN 0 WHEN 'tool' THEN 1 WHEN 'tenant' THEN 2 ELSE 3 END
     LIMIT 1";

/// Whether a call of `tool` in the transaction's tenant is refused, and by which switch (the
/// broadest engaged one). Call it inside the tool call's own transaction, as the last step
/// before the effect; on PostgreSQL it first takes [`LOCK_KEY`] shared (module docs: the
/// guarantee), so the transaction must not have taken any lock a switch change could wait on
/// in the other order — the tool pipeline calls it before any write.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database: the caller must refuse the call (fail
/// closed), never treat an error as "not blocked".
pub async fn is_blocked(tx: &mut TenantTx, tool: &str) -> StoreResult<Option<Block>> {
    let tenant = tx.tenant_text();
    let conn = tx.conn();
    if conn.is_postgres() {
        sql::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(LOCK_KEY)
            .execute(conn)
            .await?;
    }
    blocked(conn, &tenant, tool).await
}

/// [`is_blocked`] for a tenant named by the caller, in the system transaction (for operators
/// and dashboards; it takes no lock and so gives no guarantee about calls in flight).
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn is_blocked_system(
    tx: &mut SystemTx,
    tenant: TenantId,
    tool: &str,
) -> StoreResult<Option<Block>> {
    blocked(tx.conn(), &tenant.to_string(), tool).await
}

async fn blocked(conn: &mut DbTx, tenant: &str, tool: &str) -> StoreResult<Option<Block>> {
    let row = sql::query(BLOCKED_SQL)
        .bind(tenant)
        .bind(tool)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(Block {
            scope: Scope::parse(&col::<String>(&r, "scope")?)?,
            reason: col(&r, "reason")?,
        })
    })
    .transpose()
}

const LIST_COLUMNS: &str =
    "SELECT scope, tenant_id, tool, engaged, reason, changed_by, changed_at FROM kill_switches";

/// Every switch, engaged or released, ordered by scope, tenant and tool; at most
/// [`LIST_MAX`].
///
/// # Errors
/// [`StoreError::Unavailable`] from the database; [`StoreError::Internal`] for a corrupt row.
pub async fn list(tx: &mut SystemTx) -> StoreResult<Vec<KillSwitch>> {
    let rows = sql::query(format!(
        "{LIST_COLUMNS} ORDER BY scope, tenant_id, tool LIMIT $1"
    ))
    .bind(i64::from(LIST_MAX))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(from_row).collect()
}

/// The switches that can affect the transaction's tenant: the global and tool-wide ones and
/// the tenant's own, engaged or released; at most [`LIST_MAX`].
///
/// # Errors
/// As [`list`].
pub async fn list_for_tenant(tx: &mut TenantTx) -> StoreResult<Vec<KillSwitch>> {
    let tenant = tx.tenant_text();
    let rows = sql::query(format!(
        "{LIST_COLUMNS} WHERE tenant_id = '' OR tenant_id = $1
         ORDER BY scope, tenant_id, tool LIMIT $2"
    ))
    .bind(tenant)
    .bind(i64::from(LIST_MAX))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(r: &Row) -> StoreResult<KillSwitch> {
    let tenant: String = col(r, "tenant_id")?;
    let tool: String = col(r, "tool")?;
    Ok(KillSwitch {
        scope: Scope::parse(&col::<String>(r, "scope")?)?,
        tenant_id: if tenant.is_empty() {
            None
        } else {
            Some(crate::db::parse_id(&tenant)?)
        },
        tool: (!tool.is_empty()).then_some(tool),
        engaged: col(r, "engaged")?,
        reason: col(r, "reason")?,
        changed_by: col(r, "changed_by")?,
        changed_at: col(r, "changed_at")?,
    })
}
