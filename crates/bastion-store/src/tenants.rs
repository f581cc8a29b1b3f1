//! Tenants: the unit of isolation. System table, used through [`SystemTx`].

use bastion_types::{Slug, TenantId, UnixTime};

use crate::SystemTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Longest accepted region name, in bytes.
pub const REGION_LEN_MAX: usize = 32;
/// Most tenants [`list_tenants`] returns.
pub const TENANTS_LIST_MAX: i64 = 10_000;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Its id (never nil: nil is the system chain).
    pub id: TenantId,
    /// Its unique slug, e.g. `acme`.
    pub slug: Slug,
    /// Where its data must stay, e.g. `eu` (informational for now).
    pub region: String,
    /// Creation time, seconds since the epoch.
    pub created_at: UnixTime,
}

fn tenant_from_row(row: &crate::sql::Row) -> StoreResult<Tenant> {
    let slug: String = col(row, "slug")?;
    Ok(Tenant {
        id: parse_id(&col::<String>(row, "id")?)?,
        slug: Slug::parse(&slug).map_err(|_| StoreError::internal("corrupt tenant slug"))?,
        region: col(row, "region")?,
        created_at: col(row, "created_at")?,
    })
}

/// Creates a tenant with a fresh id.
///
/// # Errors
/// [`StoreError::Duplicate`] when the slug is taken; [`StoreError::Invalid`] for an empty or
/// over-long region (more than [`REGION_LEN_MAX`] bytes).
pub async fn create_tenant(tx: &mut SystemTx, slug: &Slug, region: &str) -> StoreResult<TenantId> {
    if region.is_empty() || region.len() > REGION_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "region must be 1..=32 bytes",
        });
    }
    let id = TenantId::new_random();
    let now = tx.now();
    sql::query("INSERT INTO tenants (id, slug, region, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.to_string())
        .bind(slug.as_str())
        .bind(region)
        .bind(now)
        .execute(tx.conn())
        .await?;
    Ok(id)
}

/// The tenant with this slug, if any.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn tenant_by_slug(tx: &mut SystemTx, slug: &Slug) -> StoreResult<Option<Tenant>> {
    let row = sql::query("SELECT id, slug, region, created_at FROM tenants WHERE slug = $1")
        .bind(slug.as_str())
        .fetch_optional(tx.conn())
        .await?;
    row.as_ref().map(tenant_from_row).transpose()
}

/// The tenant with this id, if any.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn tenant_by_id(tx: &mut SystemTx, id: TenantId) -> StoreResult<Option<Tenant>> {
    let row = sql::query("SELECT id, slug, region, created_at FROM tenants WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(tx.conn())
        .await?;
    row.as_ref().map(tenant_from_row).transpose()
}

/// All tenants ordered by slug, at most [`TENANTS_LIST_MAX`].
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn list_tenants(tx: &mut SystemTx) -> StoreResult<Vec<Tenant>> {
    let rows =
        sql::query("SELECT id, slug, region, created_at FROM tenants ORDER BY slug LIMIT $1")
            .bind(TENANTS_LIST_MAX)
            .fetch_all(tx.conn())
            .await?;
    rows.iter().map(tenant_from_row).collect()
}
