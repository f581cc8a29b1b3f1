//! Opening the database, migrations, and the transaction types every repository takes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bastion_types::{Principal, SharedClock, TenantId, UnixTime};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{StoreError, StoreResult};
use crate::rls::{self, IsolationFinding};
use crate::sql::{self, DbTx};

/// How long a statement waits for another writer's lock before failing with
/// [`StoreError::Unavailable`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Store::begin`] waits for a free connection before [`StoreError::Unavailable`].
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in a file-backed pool.
pub const POOL_CONNECTIONS_MAX: u32 = 8;
/// Connections in a PostgreSQL pool, per instance. With several instances on one database,
/// `instances × this` must stay below the server's `max_connections` (or sit behind a
/// transaction-mode pooler, which the per-transaction tenant setting makes safe).
pub const PG_POOL_CONNECTIONS_MAX: u32 = 16;
/// Oldest PostgreSQL server accepted (`server_version_num`): 15 is the first with
/// `security_invoker` views.
pub const POSTGRES_VERSION_MIN: i64 = 150_000;

/// SQLite serialises writers; taking the write lock when the transaction starts (instead of
/// at its first write) means a transaction never fails half-way with `SQLITE_BUSY_SNAPSHOT`
/// and every read-then-write in it sees the latest committed state.
const BEGIN_SQLITE: &str = "BEGIN IMMEDIATE";

/// An embedded migration: `version` ascending from 1, applied once, checksummed.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Both backends' migration lists from one list of `(version, name, file stem)`: the two
/// can never disagree on versions or order; each backend has its own SQL file per version.
macro_rules! migrations {
    ($($version:literal, $name:literal, $file:literal;)+) => {
        const MIGRATIONS_SQLITE: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/sqlite/", $file, ".sql")),
        }),+];
        pub(crate) const MIGRATIONS_POSTGRES: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/postgres/", $file, ".sql")),
        }),+];
    };
}

migrations! {
    1, "init", "0001_init";
    2, "ledger", "0002_ledger";
    3, "payments", "0003_payments";
    4, "killswitch", "0004_killswitch";
    5, "approvals", "0005_approvals";
}

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

/// The database behind a [`Store`].
#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Embedded SQLite: isolation by [`TenantTx`] and composite keys, no RLS.
    Sqlite,
    /// PostgreSQL with row-level security enforced by the database.
    Postgres,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind())
            .finish_non_exhaustive()
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
        store.migrate_sqlite().await?;
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
        store.require_current_schema().await?;
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
        store.migrate_sqlite().await?;
        Ok(store)
    }

    /// Connects to PostgreSQL at `url` (libpq-style URL: `postgres://ROLE@HOST/DB`, with
    /// `sslmode` and `options=-c search_path=SCHEMA` as needed) **as the application role**,
    /// and refuses to run unless the database enforces tenant isolation:
    /// - the server is at least [`POSTGRES_VERSION_MIN`];
    /// - the schema was migrated to this build's version (by the owner role, see
    ///   [`Store::migrate_postgres`]; the application role cannot create anything);
    /// - the isolation self-check ([`Store::isolation_findings`]) finds nothing: every tenant
    ///   table has `ENABLE` and `FORCE ROW LEVEL SECURITY` and a policy, the role is not a
    ///   superuser, cannot bypass RLS, owns no table, and has no `CREATE` on any schema.
    ///
    /// Each [`TenantTx`] then sets `app.tenant_id` with `set_config(…, true)` (transaction
    /// scope), so a pooled connection never carries one tenant's setting into another's work.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached;
    /// [`StoreError::Unsafe`] naming each table or role attribute that breaks isolation, an
    /// old server, or a schema that is not current.
    pub async fn open_postgres(url: &str, clock: SharedClock) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL_CONNECTIONS_MAX)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Postgres(pool),
            clock,
            read_only: false,
        };
        let findings = store.isolation_findings().await?;
        if !findings.is_empty() {
            store.close().await;
            return Err(StoreError::Unsafe { findings });
        }
        Ok(store)
    }

    /// Applies the embedded PostgreSQL migrations as the **owner** role at `owner_url`
    /// (never the application role), then grants `app_role` exactly the privileges it needs:
    /// `USAGE` on the schema, row privileges per table (`SELECT, INSERT` only on the audit
    /// log; never `TRUNCATE`, which RLS does not filter), and no `CREATE`. Safe to run from
    /// several instances at once: a session advisory lock serialises them, and applied
    /// migrations are checked against their SHA-256 checksums.
    ///
    /// The tables go into the owner connection's current schema (its `search_path`); the
    /// application role must connect with the same `search_path`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when `app_role` is not a plain lower-case identifier;
    /// [`StoreError::Unsafe`] for a server older than [`POSTGRES_VERSION_MIN`];
    /// [`StoreError::Internal`] when an applied migration differs from the embedded one.
    pub async fn migrate_postgres(
        owner_url: &str,
        app_role: &str,
        clock: &SharedClock,
    ) -> StoreResult<()> {
        rls::migrate(owner_url, app_role, clock.now()).await
    }

    /// Creates the login role `role` — not a superuser, no `BYPASSRLS`, `CREATEDB` or
    /// `CREATEROLE` — unless it exists, connecting as `owner_url`. For `bastion demo` and
    /// tests; in production the operator creates roles (docs/DEPLOYMENT.md). Returns whether
    /// it was created.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a role name that is not a lower-case identifier;
    /// [`StoreError::Unavailable`] or [`StoreError::Internal`] from the server.
    pub async fn create_login_role_if_missing(owner_url: &str, role: &str) -> StoreResult<bool> {
        rls::create_login_role_if_missing(owner_url, role).await
    }

    /// Which database this store runs on.
    #[must_use]
    pub fn kind(&self) -> BackendKind {
        match &self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The isolation self-check (PostgreSQL): every way the connected role could read or
    /// write another tenant's rows, each naming the table, view or role attribute. Empty
    /// means isolation holds in the database. On SQLite, which has no row-level security,
    /// the answer is always empty (isolation there rests on [`TenantTx`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn isolation_findings(&self) -> StoreResult<Vec<IsolationFinding>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pool) => rls::findings(pool).await,
        }
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
    /// transactions are serialised: keep them short, and never hold two in one task. On
    /// PostgreSQL it sets `app.tenant_id` for this transaction only, and row-level security
    /// filters every statement by it.
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
        let tx = self.begin_raw(scope.tenant_id).await?;
        Ok(TenantTx {
            tenant_id: scope.tenant_id,
            tx,
            clock: self.clock.clone(),
        })
    }

    /// Begins a transaction on the tenant-less tables: tenants, throttles and the system
    /// audit chain. It cannot touch any tenant's rows (on PostgreSQL its tenant setting is
    /// the nil tenant of the system chain).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection or lock is obtained in time.
    pub async fn system(&self) -> StoreResult<SystemTx> {
        let tx = self
            .begin_raw(TenantId::from_uuid(uuid::Uuid::nil()))
            .await?;
        Ok(SystemTx {
            tx,
            clock: self.clock.clone(),
        })
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    async fn begin_raw(&self, tenant: TenantId) -> StoreResult<DbTx> {
        match &self.backend {
            // A read-only connection cannot take the write lock; its reads need none.
            Backend::Sqlite(pool) if self.read_only => Ok(DbTx::Sqlite(pool.begin().await?)),
            Backend::Sqlite(pool) => Ok(DbTx::Sqlite(pool.begin_with(BEGIN_SQLITE).await?)),
            Backend::Postgres(pool) => {
                let mut tx = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
                sql::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    async fn require_current_schema(&self) -> StoreResult<()> {
        let mut tx = self
            .begin_raw(TenantId::from_uuid(uuid::Uuid::nil()))
            .await?;
        let v: Option<i64> = sql::query("SELECT MAX(version) FROM schema_migrations")
            .scalar(&mut tx)
            .await?;
        tx.rollback().await?;
        if v.unwrap_or(0) != latest_version(MIGRATIONS_SQLITE) {
            return Err(StoreError::Unavailable {
                cause: crate::error::Cause::fixed("database schema is not current"),
            });
        }
        Ok(())
    }

    /// Applies the embedded migrations not yet recorded in `schema_migrations`, each in its
    /// own transaction, and refuses to run against a database whose applied migrations do not
    /// match the embedded text (SHA-256 checksum).
    async fn migrate_sqlite(&self) -> StoreResult<()> {
        let nil = TenantId::from_uuid(uuid::Uuid::nil());
        let mut tx = self.begin_raw(nil).await?;
        sql::query(CREATE_SCHEMA_MIGRATIONS)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        for m in MIGRATIONS_SQLITE {
            let mut tx = self.begin_raw(nil).await?;
            apply_migration(&mut tx, m, self.clock.now()).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

pub(crate) const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Applies `m` inside `tx` unless it is recorded; refuses a recorded one whose checksum
/// differs from the embedded text.
pub(crate) async fn apply_migration(
    tx: &mut DbTx,
    m: &Migration,
    now: UnixTime,
) -> StoreResult<()> {
    let sum = checksum(m.sql);
    let applied: Option<String> =
        sql::query("SELECT checksum FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .scalar_optional(tx)
            .await?;
    match applied {
        Some(existing) if existing == sum => Ok(()),
        Some(_) => Err(StoreError::internal("an applied migration was changed")),
        None => {
            sql::raw(tx, m.sql).await?;
            sql::query(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(sum)
            .bind(now)
            .execute(tx)
            .await?;
            Ok(())
        }
    }
}

pub(crate) fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

fn checksum(sql: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sql.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

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
    tx: DbTx,
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
        self.tx.commit().await
    }

    /// Rolls back explicitly (dropping does the same).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the connection is gone (the work is lost either way).
    pub async fn rollback(self) -> StoreResult<()> {
        self.tx.rollback().await
    }

    pub(crate) fn tenant_text(&self) -> String {
        self.tenant_id.to_string()
    }

    pub(crate) fn conn(&mut self) -> &mut DbTx {
        &mut self.tx
    }
}

/// A transaction on tenant-less tables (tenants, throttles, the system audit chain). Only
/// [`Store::system`] creates one. Dropping it without [`SystemTx::commit`] rolls back.
pub struct SystemTx {
    tx: DbTx,
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
        self.tx.commit().await
    }

    /// Rolls back explicitly (dropping does the same).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the connection is gone.
    pub async fn rollback(self) -> StoreResult<()> {
        self.tx.rollback().await
    }

    pub(crate) fn conn(&mut self) -> &mut DbTx {
        &mut self.tx
    }
}

/// Parses an id stored by this crate; a bad one means a corrupt row.
pub(crate) fn parse_id<T: FromStr>(s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::internal("corrupt id in a stored row"))
}
