//! Opening the database, migrations, and the transaction types every repository takes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bastion_types::{Principal, SharedClock, TenantId, UnixTime};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use crate::error::{StoreError, StoreResult};

/// How long a statement waits for another writer's lock before failing with
/// [`StoreError::Unavailable`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Store::begin`] waits for a free connection before [`StoreError::Unavailable`].
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in a file-backed pool.
pub const POOL_CONNECTIONS_MAX: u32 = 8;

/// SQLite serialises writers; taking the write lock when the transaction starts (instead of
/// at its first write) means a transaction never fails half-way with `SQLITE_BUSY_SNAPSHOT`
/// and every read-then-write in it sees the latest committed state.
const BEGIN_SQLITE: &str = "BEGIN IMMEDIATE";

/// An embedded migration: `version` ascending from 1, applied once, checksummed.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/sqlite/0001_init.sql"),
}];

/// The database handle. Cheap to clone (a connection pool and the clock).
///
/// Only this crate runs SQL. Work happens in transactions: [`Store::begin`] for one tenant's
/// rows ([`TenantTx`]) and [`Store::system`] for tenant-less tables ([`SystemTx`]).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    clock: SharedClock,
    read_only: bool,
}

/// The database behind a [`Store`]. Postgres joins as a second variant.
#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite(_) => f.debug_struct("Store").field("backend", &"sqlite").finish(),
        }
    }
}

impl Store {
    /// Opens (creating if absent) the SQLite database file at `path`: WAL journal,
    /// `synchronous=FULL`, foreign keys on, a [`BUSY_TIMEOUT`], up to
    /// [`POOL_CONNECTIONS_MAX`] connections; then applies the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or written;
    /// [`StoreError::Internal`] when an applied migration differs from the embedded one.
    pub async fn open_sqlite(path: &Path, clock: SharedClock) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Sqlite(pool),
            clock,
            read_only: false,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing SQLite database read-only (for `bastion audit verify` and other
    /// inspections). Migrations are not run; the schema must already be current.
    ///
    /// Every write through this store fails with [`StoreError::Unavailable`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file is missing, unreadable or its schema is not
    /// the current one.
    pub async fn open_sqlite_read_only(path: &Path, clock: SharedClock) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Sqlite(pool),
            clock,
            read_only: true,
        };
        let current = store.schema_version().await?;
        if current != latest_version() {
            return Err(StoreError::Unavailable {
                cause: crate::error::Cause::fixed("database schema is not current"),
            });
        }
        Ok(store)
    }

    /// A fresh in-memory database with the schema applied, for tests. One connection, so
    /// the database is one database; a task must not hold two transactions at once.
    ///
    /// # Errors
    /// [`StoreError::Internal`] if the migrations fail.
    pub async fn open_sqlite_memory(clock: SharedClock) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Sqlite(pool),
            clock,
            read_only: false,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The clock this store stamps rows with and checks expiry against.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Begins a transaction on one tenant's rows. Every repository function called with the
    /// returned [`TenantTx`] reads and writes only rows of `scope`'s tenant.
    ///
    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// transactions are serialised: keep them short, and never hold two in one task.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for the nil tenant (reserved for the system chain);
    /// [`StoreError::Unavailable`] when no connection or lock is obtained in time.
    pub async fn begin(&self, scope: TenantScope) -> StoreResult<TenantTx> {
        if scope.tenant_id.as_uuid().is_nil() {
            return Err(StoreError::Invalid {
                reason: "the nil tenant is reserved",
            });
        }
        let tx = self.begin_raw().await?;
        Ok(TenantTx {
            tenant_id: scope.tenant_id,
            tx,
            clock: self.clock.clone(),
        })
    }

    /// Begins a transaction on the tenant-less tables: tenants, throttles and the system
    /// audit chain. It cannot touch any tenant's rows.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection or lock is obtained in time.
    pub async fn system(&self) -> StoreResult<SystemTx> {
        let tx = self.begin_raw().await?;
        Ok(SystemTx {
            tx,
            clock: self.clock.clone(),
        })
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
        }
    }

    async fn begin_raw(&self) -> StoreResult<Tx> {
        match &self.backend {
            // A read-only connection cannot take the write lock; its reads need none.
            Backend::Sqlite(pool) if self.read_only => Ok(pool.begin().await?),
            Backend::Sqlite(pool) => Ok(pool.begin_with(BEGIN_SQLITE).await?),
        }
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        let mut tx = self.begin_raw_read().await?;
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(v.unwrap_or(0))
    }

    async fn begin_raw_read(&self) -> StoreResult<Tx> {
        match &self.backend {
            Backend::Sqlite(pool) => Ok(pool.begin().await?),
        }
    }

    /// Applies the embedded migrations not yet recorded in `schema_migrations`, each in its
    /// own transaction, and refuses to run against a database whose applied migrations do not
    /// match the embedded text (SHA-256 checksum).
    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.begin_raw().await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at BIGINT NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        for m in MIGRATIONS {
            let mut tx = self.begin_raw().await?;
            let sum = checksum(m.sql);
            let applied: Option<String> =
                sqlx::query_scalar("SELECT checksum FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            match applied {
                Some(existing) if existing == sum => {}
                Some(_) => return Err(StoreError::internal("an applied migration was changed")),
                None => {
                    sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(m.version)
                    .bind(m.name)
                    .bind(&sum)
                    .bind(self.clock.now())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

fn checksum(sql: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sql.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The driver transaction inside [`TenantTx`] and [`SystemTx`].
type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Which tenant a transaction may touch. Built only from an authenticated [`Principal`] or,
/// explicitly, for the flows that run before one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
}

impl TenantScope {
    /// The scope of an authenticated request: the principal's tenant (from its token).
    #[must_use]
    pub fn of(principal: &Principal) -> Self {
        Self {
            tenant_id: principal.tenant_id,
        }
    }

    /// A scope for flows that run before a principal exists — login, MFA, token refresh —
    /// and for operator commands. The caller must have resolved `tenant_id` itself (e.g. from
    /// the tenant slug the user typed), never from another tenant's data.
    #[must_use]
    pub fn pre_auth(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    /// The tenant.
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
}

/// A transaction on one tenant's rows. Only [`Store::begin`] creates one; every repository
/// function takes `&mut TenantTx` and filters by its tenant — the tenant never comes from a
/// parameter.
///
/// Dropping it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    tenant_id: TenantId,
    tx: Tx,
    clock: SharedClock,
}

impl std::fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl TenantTx {
    /// The tenant whose rows this transaction touches.
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The current time from the store's clock, seconds since the epoch.
    #[must_use]
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Commits.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database refuses the commit; nothing was written.
    pub async fn commit(self) -> StoreResult<()> {
        Ok(self.tx.commit().await?)
    }

    /// Rolls back explicitly (dropping does the same).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the connection is gone (the work is lost either way).
    pub async fn rollback(self) -> StoreResult<()> {
        Ok(self.tx.rollback().await?)
    }

    pub(crate) fn tenant_text(&self) -> String {
        self.tenant_id.to_string()
    }

    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A transaction on tenant-less tables (tenants, throttles, the system audit chain). Only
/// [`Store::system`] creates one. Dropping it without [`SystemTx::commit`] rolls back.
pub struct SystemTx {
    tx: Tx,
    clock: SharedClock,
}

impl std::fmt::Debug for SystemTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTx").finish_non_exhaustive()
    }
}

impl SystemTx {
    /// The current time from the store's clock, seconds since the epoch.
    #[must_use]
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Commits.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database refuses the commit; nothing was written.
    pub async fn commit(self) -> StoreResult<()> {
        Ok(self.tx.commit().await?)
    }

    /// Rolls back explicitly (dropping does the same).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the connection is gone.
    pub async fn rollback(self) -> StoreResult<()> {
        Ok(self.tx.rollback().await?)
    }

    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// Parses an id stored by this crate; a bad one means a corrupt row.
pub(crate) fn parse_id<T: FromStr>(s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::internal("corrupt id in a stored row"))
}

/// Reads a column, mapping decode failures to [`StoreError::Internal`].
pub(crate) fn col<'r, T>(row: &'r sqlx::sqlite::SqliteRow, name: &'static str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(StoreError::from)
}
