//! Records of manifest entities, with their user-typed and ref-typed fields indexed so list
//! scopes filter in SQL and parents are checked by the database.

use bastion_types::{Record, RecordId, UserId};
use serde_json::Value;

use crate::TenantTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Largest page any list returns.
pub const PAGE_SIZE_MAX: u32 = 100;
/// Largest accepted offset (deep offset pagination is a denial-of-service vector).
pub const PAGE_OFFSET_MAX: u32 = 100_000;
/// Longest accepted serialized record data, in bytes (64 KiB).
pub const DATA_LEN_MAX: usize = 64 * 1024;
/// Longest entity or field name, in bytes.
pub const NAME_LEN_MAX: usize = 63;
/// Most indexed references one record may carry.
pub const REFS_MAX: usize = 32;
/// Most nodes in one [`ListFilter`] tree.
pub const FILTER_NODES_MAX: usize = 32;
/// Deepest nesting of [`ListFilter::AnyOf`].
pub const FILTER_DEPTH_MAX: usize = 4;

/// One page of a list: skip `offset` rows, return at most `limit` (`1..=`[`PAGE_SIZE_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip, at most [`PAGE_OFFSET_MAX`].
    pub offset: u32,
    /// Rows to return, `1..=`[`PAGE_SIZE_MAX`].
    pub limit: u32,
}

impl Page {
    /// The first `limit` rows.
    #[must_use]
    pub fn first(limit: u32) -> Self {
        Self { offset: 0, limit }
    }

    pub(crate) fn check(self) -> StoreResult<()> {
        if self.limit == 0 || self.limit > PAGE_SIZE_MAX {
            return Err(StoreError::Invalid {
                reason: "page size must be 1..=100",
            });
        }
        if self.offset > PAGE_OFFSET_MAX {
            return Err(StoreError::Invalid {
                reason: "page offset must be at most 100000",
            });
        }
        Ok(())
    }
}

/// Which records of an entity a list may return, evaluated in SQL for rows and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    /// Every record of the entity in the tenant.
    All,
    /// Records owned (created) by this user.
    Owner(UserId),
    /// Records whose user-typed field `.0` is this user (indexed in `record_refs`).
    Field(String, UserId),
    /// Records matching any of these; an empty list matches nothing.
    AnyOf(Vec<ListFilter>),
    /// No records (a role the list scope does not name).
    Nothing,
}

/// What an indexed field of a record points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefTarget {
    /// A user-typed field: a user of the same tenant.
    User(UserId),
    /// A ref-typed field (a parent): a record of `entity` in the same tenant. The database
    /// refuses a record of another tenant or another entity (composite foreign key).
    Record {
        /// The parent's entity, e.g. `quote`.
        entity: String,
        /// The parent's id.
        id: RecordId,
    },
}

/// An indexed field of a record: `data[field]` must be the target's id as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// The field name in the record's data.
    pub field: String,
    /// What it points to.
    pub target: RefTarget,
}

fn check_name(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "bad entity or field name",
        })
    }
}

fn encode_data(data: &Value) -> StoreResult<String> {
    if !data.is_object() {
        return Err(StoreError::Invalid {
            reason: "record data must be a json object",
        });
    }
    let text = data.to_string();
    if text.len() > DATA_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "record data exceeds 64 KiB",
        });
    }
    Ok(text)
}

fn check_refs(data: &Value, refs: &[FieldRef]) -> StoreResult<()> {
    if refs.len() > REFS_MAX {
        return Err(StoreError::Invalid {
            reason: "too many references",
        });
    }
    for (i, r) in refs.iter().enumerate() {
        check_name(&r.field)?;
        if refs.iter().take(i).any(|o| o.field == r.field) {
            return Err(StoreError::Invalid {
                reason: "a field is referenced twice",
            });
        }
        let id = match &r.target {
            RefTarget::User(u) => u.to_string(),
            RefTarget::Record { entity, id } => {
                check_name(entity)?;
                id.to_string()
            }
        };
        // The index must agree with the data it indexes.
        if data.get(&r.field).and_then(Value::as_str) != Some(id.as_str()) {
            return Err(StoreError::Invalid {
                reason: "a reference does not match the data",
            });
        }
    }
    Ok(())
}

const RECORD_COLUMNS: &str =
    "r.id, r.entity, r.owner_id, r.data, r.version, r.created_at, r.updated_at";

fn record_from_row(row: &crate::sql::Row) -> StoreResult<Record> {
    let data: String = col(row, "data")?;
    Ok(Record {
        id: parse_id(&col::<String>(row, "id")?)?,
        entity: col(row, "entity")?,
        owner_id: parse_id(&col::<String>(row, "owner_id")?)?,
        data: serde_json::from_str(&data)
            .map_err(|_| StoreError::internal("corrupt record data"))?,
        version: col(row, "version")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

async fn write_refs(tx: &mut TenantTx, record: RecordId, refs: &[FieldRef]) -> StoreResult<()> {
    let tenant = tx.tenant_text();
    for r in refs {
        match &r.target {
            RefTarget::User(user) => {
                sql::query(
                    "INSERT INTO record_refs (tenant_id, record_id, field, user_id)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&tenant)
                .bind(record.to_string())
                .bind(&r.field)
                .bind(user.to_string())
                .execute(tx.conn())
                .await?;
            }
            RefTarget::Record { entity, id } => {
                sql::query(
                    "INSERT INTO record_parents (tenant_id, record_id, field, parent_entity, parent_id)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&tenant)
                .bind(record.to_string())
                .bind(&r.field)
                .bind(entity)
                .bind(id.to_string())
                .execute(tx.conn())
                .await?;
            }
        }
    }
    Ok(())
}

/// Inserts a record of `entity` owned by `owner` at version 1, indexing `refs`.
///
/// # Errors
/// [`StoreError::Invalid`] when `data` is not an object or too large, a name is bad, a ref
/// disagrees with `data`, or the owner, a referenced user or a parent record does not exist
/// in this tenant (the last two enforced by the database's composite foreign keys).
pub async fn insert_record(
    tx: &mut TenantTx,
    entity: &str,
    owner: UserId,
    data: Value,
    refs: &[FieldRef],
) -> StoreResult<Record> {
    check_name(entity)?;
    let text = encode_data(&data)?;
    check_refs(&data, refs)?;
    let id = RecordId::new_random();
    let now = tx.now();
    let tenant = tx.tenant_text();
    sql::query(
        "INSERT INTO records (tenant_id, id, entity, owner_id, data, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(entity)
    .bind(owner.to_string())
    .bind(text)
    .bind(now)
    .execute(tx.conn())
    .await?;
    write_refs(tx, id, refs).await?;
    Ok(Record {
        id,
        entity: entity.to_owned(),
        owner_id: owner,
        data,
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

/// The record of `entity` with this id in this tenant (`None` for another tenant's or
/// another entity's record).
///
/// # Errors
/// [`StoreError::Invalid`] for a bad entity name.
pub async fn get_record(
    tx: &mut TenantTx,
    entity: &str,
    id: RecordId,
) -> StoreResult<Option<Record>> {
    check_name(entity)?;
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {RECORD_COLUMNS} FROM records r WHERE r.tenant_id = $1 AND r.entity = $2 AND r.id = $3"
    ))
    .bind(tenant)
    .bind(entity)
    .bind(id.to_string())
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(record_from_row).transpose()
}

fn check_filter(filter: &ListFilter, depth: usize, nodes: &mut usize) -> StoreResult<()> {
    *nodes += 1;
    if *nodes > FILTER_NODES_MAX || depth > FILTER_DEPTH_MAX {
        return Err(StoreError::Invalid {
            reason: "list filter too large",
        });
    }
    match filter {
        ListFilter::Field(field, _) => check_name(field),
        ListFilter::AnyOf(items) => items
            .iter()
            .try_for_each(|f| check_filter(f, depth + 1, nodes)),
        ListFilter::All | ListFilter::Owner(_) | ListFilter::Nothing => Ok(()),
    }
}

/// Appends `filter` as a boolean SQL expression over the row alias `r`, values bound.
fn push_filter(qb: &mut sql::Builder, filter: &ListFilter) {
    match filter {
        ListFilter::All => {
            qb.push("1 = 1");
        }
        ListFilter::Nothing => {
            qb.push("1 = 0");
        }
        ListFilter::Owner(user) => {
            qb.push("r.owner_id = ").push_bind(user.to_string());
        }
        ListFilter::Field(field, user) => {
            qb.push(
                "EXISTS (SELECT 1 FROM record_refs rr \
                 WHERE rr.tenant_id = r.tenant_id AND rr.record_id = r.id AND rr.field = ",
            )
            .push_bind(field.clone())
            .push(" AND rr.user_id = ")
            .push_bind(user.to_string())
            .push(")");
        }
        ListFilter::AnyOf(items) if items.is_empty() => {
            qb.push("1 = 0");
        }
        ListFilter::AnyOf(items) => {
            qb.push("(");
            for (i, f) in items.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(");
                push_filter(qb, f);
                qb.push(")");
            }
            qb.push(")");
        }
    }
}

fn scoped_query(head: &str, tenant: String, entity: &str, filter: &ListFilter) -> sql::Builder {
    let mut qb = sql::Builder::new(head);
    qb.push(" FROM records r WHERE r.tenant_id = ")
        .push_bind(tenant)
        .push(" AND r.entity = ")
        .push_bind(entity.to_owned())
        .push(" AND (");
    push_filter(&mut qb, filter);
    qb.push(")");
    qb
}

/// One page of the records of `entity` matching `filter`, oldest first, and the total number
/// of matching records. The same filter is applied in SQL to both, so counts never reveal
/// rows the caller may not see.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad page, entity or field name, or a filter over
/// [`FILTER_NODES_MAX`] nodes or [`FILTER_DEPTH_MAX`] deep.
pub async fn list_records(
    tx: &mut TenantTx,
    entity: &str,
    filter: &ListFilter,
    page: Page,
) -> StoreResult<(Vec<Record>, u64)> {
    check_name(entity)?;
    page.check()?;
    check_filter(filter, 0, &mut 0)?;
    let tenant = tx.tenant_text();

    let mut rows_q = scoped_query(
        &format!("SELECT {RECORD_COLUMNS}"),
        tenant.clone(),
        entity,
        filter,
    );
    rows_q
        .push(" ORDER BY r.created_at, r.id LIMIT ")
        .push_bind(i64::from(page.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(page.offset));
    let rows = rows_q.build().fetch_all(tx.conn()).await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<StoreResult<Vec<_>>>()?;

    let count_q = scoped_query("SELECT COUNT(*)", tenant, entity, filter);
    let total: i64 = count_q.build().scalar(tx.conn()).await?;
    let total = u64::try_from(total).map_err(|_| StoreError::internal("negative count"))?;
    Ok((records, total))
}

/// Replaces the data of the record (and its indexed `refs`) if it is still at
/// `expected_version`; the version grows by one.
///
/// # Errors
/// [`StoreError::NotFound`] when no such record is in this tenant;
/// [`StoreError::Conflict`] with the current version when it moved on; [`StoreError::Invalid`]
/// as for [`insert_record`].
pub async fn update_record(
    tx: &mut TenantTx,
    entity: &str,
    id: RecordId,
    expected_version: i64,
    data: Value,
    refs: &[FieldRef],
) -> StoreResult<Record> {
    check_name(entity)?;
    let text = encode_data(&data)?;
    check_refs(&data, refs)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let row = sql::query(
        "UPDATE records SET data = $5, version = version + 1, updated_at = $6
         WHERE tenant_id = $1 AND entity = $2 AND id = $3 AND version = $4
         RETURNING owner_id, version, created_at",
    )
    .bind(&tenant)
    .bind(entity)
    .bind(id.to_string())
    .bind(expected_version)
    .bind(text)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        let current: Option<i64> = sql::query(
            "SELECT version FROM records WHERE tenant_id = $1 AND entity = $2 AND id = $3",
        )
        .bind(&tenant)
        .bind(entity)
        .bind(id.to_string())
        .scalar_optional(tx.conn())
        .await?;
        return Err(match current {
            Some(current_version) => StoreError::Conflict { current_version },
            None => StoreError::NotFound,
        });
    };
    for stmt in [
        "DELETE FROM record_refs WHERE tenant_id = $1 AND record_id = $2",
        "DELETE FROM record_parents WHERE tenant_id = $1 AND record_id = $2",
    ] {
        sql::query(stmt)
            .bind(&tenant)
            .bind(id.to_string())
            .execute(tx.conn())
            .await?;
    }
    write_refs(tx, id, refs).await?;
    Ok(Record {
        id,
        entity: entity.to_owned(),
        owner_id: parse_id(&col::<String>(&row, "owner_id")?)?,
        data,
        version: col(&row, "version")?,
        created_at: col(&row, "created_at")?,
        updated_at: now,
    })
}
