//! User accounts of a tenant.

use bastion_types::{Slug, UnixTime, UserId};

use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};
use crate::{Page, TenantTx};

/// Longest accepted password hash (a PHC string such as Argon2id's), in bytes.
pub const PASSWORD_HASH_LEN_MAX: usize = 512;
/// Most roles a user may hold.
pub const ROLES_MAX: usize = 32;

/// A user to create. The password arrives already hashed (PHC string); the store never sees
/// a password.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Unique within the tenant.
    pub username: Slug,
    /// PHC string, e.g. `$argon2id$v=19$...`.
    pub password_hash: String,
    /// Manifest roles, at most [`ROLES_MAX`].
    pub roles: Vec<Slug>,
    /// A seeded demo account: production profiles refuse to start while one exists.
    pub is_demo: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("is_demo", &self.is_demo)
            .finish()
    }
}

/// A stored user. `Debug` redacts the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id (unique across tenants).
    pub id: UserId,
    /// Unique within the tenant.
    pub username: Slug,
    /// PHC string.
    pub password_hash: String,
    /// Manifest roles.
    pub roles: Vec<Slug>,
    /// Seeded demo account.
    pub is_demo: bool,
    /// Disabled users cannot log in, and their live sessions stop working.
    pub disabled: bool,
    /// Grows by one on [`bump_session_epoch`]; tokens carrying an older epoch are dead.
    pub session_epoch: i64,
    /// Creation time, seconds since the epoch.
    pub created_at: UnixTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("is_demo", &self.is_demo)
            .field("disabled", &self.disabled)
            .field("session_epoch", &self.session_epoch)
            .field("created_at", &self.created_at)
            .finish()
    }
}

const USER_COLUMNS: &str =
    "id, username, password_hash, roles, is_demo, disabled, session_epoch, created_at";

fn user_from_row(row: &crate::sql::Row) -> StoreResult<User> {
    let username: String = col(row, "username")?;
    let roles: String = col(row, "roles")?;
    Ok(User {
        id: parse_id(&col::<String>(row, "id")?)?,
        username: Slug::parse(&username).map_err(|_| StoreError::internal("corrupt username"))?,
        password_hash: col(row, "password_hash")?,
        roles: decode_roles(&roles)?,
        is_demo: col(row, "is_demo")?,
        disabled: col(row, "disabled")?,
        session_epoch: col(row, "session_epoch")?,
        created_at: col(row, "created_at")?,
    })
}

fn encode_roles(roles: &[Slug]) -> StoreResult<String> {
    if roles.len() > ROLES_MAX {
        return Err(StoreError::Invalid {
            reason: "too many roles",
        });
    }
    let names: Vec<&str> = roles.iter().map(Slug::as_str).collect();
    serde_json::to_string(&names).map_err(|_| StoreError::internal("roles encoding"))
}

fn decode_roles(text: &str) -> StoreResult<Vec<Slug>> {
    let names: Vec<String> =
        serde_json::from_str(text).map_err(|_| StoreError::internal("corrupt roles"))?;
    names
        .iter()
        .map(|n| Slug::parse(n).map_err(|_| StoreError::internal("corrupt role")))
        .collect()
}

fn check_hash(hash: &str) -> StoreResult<()> {
    if hash.is_empty() || hash.len() > PASSWORD_HASH_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "password hash must be 1..=512 bytes",
        });
    }
    Ok(())
}

/// Creates a user in the transaction's tenant.
///
/// # Errors
/// [`StoreError::Duplicate`] when the username is taken in this tenant;
/// [`StoreError::Invalid`] for an empty or over-long hash or too many roles.
pub async fn create_user(tx: &mut TenantTx, new: NewUser) -> StoreResult<User> {
    check_hash(&new.password_hash)?;
    let roles = encode_roles(&new.roles)?;
    let id = UserId::new_random();
    let now = tx.now();
    let tenant = tx.tenant_text();
    sql::query(
        "INSERT INTO users (tenant_id, id, username, password_hash, roles, is_demo, disabled,
                            session_epoch, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, FALSE, 0, $7, $7)",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(new.username.as_str())
    .bind(&new.password_hash)
    .bind(roles)
    .bind(new.is_demo)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(User {
        id,
        username: new.username,
        password_hash: new.password_hash,
        roles: new.roles,
        is_demo: new.is_demo,
        disabled: false,
        session_epoch: 0,
        created_at: now,
    })
}

/// The user with this username in the transaction's tenant.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn user_by_username(tx: &mut TenantTx, username: &Slug) -> StoreResult<Option<User>> {
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND username = $2"
    ))
    .bind(tenant)
    .bind(username.as_str())
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// The user with this id in the transaction's tenant (`None` for another tenant's user).
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn user_by_id(tx: &mut TenantTx, id: UserId) -> StoreResult<Option<User>> {
    let tenant = tx.tenant_text();
    let row = sql::query(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id.to_string())
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// One page of the tenant's users, ordered by username.
///
/// # Errors
/// [`StoreError::Invalid`] for a page size outside `1..=`[`crate::PAGE_SIZE_MAX`].
pub async fn list_users(tx: &mut TenantTx, page: Page) -> StoreResult<Vec<User>> {
    page.check()?;
    let tenant = tx.tenant_text();
    let rows = sql::query(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY username LIMIT $2 OFFSET $3"
    ))
    .bind(tenant)
    .bind(i64::from(page.limit))
    .bind(i64::from(page.offset))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(user_from_row).collect()
}

fn one_row(done: &sql::Done) -> StoreResult<()> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Replaces the user's roles.
///
/// # Errors
/// [`StoreError::NotFound`] when the user is not in this tenant; [`StoreError::Invalid`] for
/// too many roles.
pub async fn set_roles(tx: &mut TenantTx, id: UserId, roles: &[Slug]) -> StoreResult<()> {
    let roles = encode_roles(roles)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done =
        sql::query("UPDATE users SET roles = $4, updated_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id.to_string())
            .bind(now)
            .bind(roles)
            .execute(tx.conn())
            .await?;
    one_row(&done)
}

/// Disables or re-enables the user.
///
/// # Errors
/// [`StoreError::NotFound`] when the user is not in this tenant.
pub async fn set_disabled(tx: &mut TenantTx, id: UserId, disabled: bool) -> StoreResult<()> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done = sql::query(
        "UPDATE users SET disabled = $4, updated_at = $3 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(now)
    .bind(disabled)
    .execute(tx.conn())
    .await?;
    one_row(&done)
}

/// Replaces the user's password hash (PHC string).
///
/// # Errors
/// [`StoreError::NotFound`] when the user is not in this tenant; [`StoreError::Invalid`] for
/// an empty or over-long hash.
pub async fn set_password_hash(tx: &mut TenantTx, id: UserId, hash: &str) -> StoreResult<()> {
    check_hash(hash)?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    let done = sql::query(
        "UPDATE users SET password_hash = $4, updated_at = $3 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(now)
    .bind(hash)
    .execute(tx.conn())
    .await?;
    one_row(&done)
}

/// Adds one to the user's session epoch (ending every session issued before) and returns
/// the new epoch.
///
/// # Errors
/// [`StoreError::NotFound`] when the user is not in this tenant.
pub async fn bump_session_epoch(tx: &mut TenantTx, id: UserId) -> StoreResult<i64> {
    let tenant = tx.tenant_text();
    let now = tx.now();
    let epoch: Option<i64> = sql::query(
        "UPDATE users SET session_epoch = session_epoch + 1, updated_at = $3
         WHERE tenant_id = $1 AND id = $2 RETURNING session_epoch",
    )
    .bind(tenant)
    .bind(id.to_string())
    .bind(now)
    .scalar_optional(tx.conn())
    .await?;
    epoch.ok_or(StoreError::NotFound)
}

/// How many demo users exist across all tenants (a count only, no rows). Production
/// profiles refuse to start when it is not zero. Counted tenant by tenant, each in its own
/// [`TenantTx`], so the count holds under row-level security (on PostgreSQL a system
/// transaction sees no tenant's users). Covers the first
/// [`crate::tenants::TENANTS_LIST_MAX`] tenants by slug.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the database.
pub async fn demo_user_count(store: &crate::Store) -> StoreResult<i64> {
    let mut sys = store.system().await?;
    let tenants = crate::tenants::list_tenants(&mut sys).await?;
    sys.rollback().await?;
    let mut total = 0;
    for t in tenants {
        let mut tx = store.begin(crate::TenantScope::pre_auth(t.id)).await?;
        let tenant = tx.tenant_text();
        let n: i64 =
            sql::query("SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND is_demo = TRUE")
                .bind(tenant)
                .scalar(tx.conn())
                .await?;
        tx.rollback().await?;
        total += n;
    }
    Ok(total)
}
