//! Test databases, for this workspace's tests only.
//!
//! [`PgTestDb::create`] makes a fresh schema on the PostgreSQL server named by
//! `BASTION_TEST_PG` (`HOST:PORT/DATABASE`, default `127.0.0.1:5432/test`), migrates it as the
//! superuser `postgres` (the owner), and creates its own application role `<schema>_app`: a
//! login role that is not a superuser, has no `BYPASSRLS` and owns nothing — so every test
//! on it runs under row-level security. Schemas older than an hour are dropped on the way.
//!
//! [`backend_from_env`] reads `BASTION_TEST_DATABASE` (`sqlite`, the default, or `postgres`)
//! so the same test suites run on both backends (`scripts/test` runs them twice).

use std::sync::Arc;

use bastion_types::SharedClock;
use sqlx::postgres::PgPoolOptions;

use crate::error::StoreResult;
use crate::sql::{self, DbTx};
use crate::{BackendKind, Store};

/// Prefix of the per-schema application role the tests connect as: `<schema>_app`. One role
/// per schema, so what one test grants (an unprotected table, on purpose) never shows up in
/// another test's isolation self-check.
pub const TEST_APP_ROLE_SUFFIX: &str = "_app";
/// The owner (migrator) role of test schemas.
pub const TEST_OWNER_ROLE: &str = "postgres";
/// Prefix of every test schema.
pub const SCHEMA_PREFIX: &str = "bastion_t_";
/// Test schemas older than this are dropped by later test runs, seconds.
pub const STALE_SECS: i64 = 3600;
/// Stale schemas dropped per schema created.
const DROP_PER_CREATE: usize = 4;

/// Which backend this test run uses: `BASTION_TEST_DATABASE=postgres` or SQLite.
#[must_use]
pub fn backend_from_env() -> BackendKind {
    match std::env::var("BASTION_TEST_DATABASE").as_deref() {
        Ok("postgres" | "pg") => BackendKind::Postgres,
        _ => BackendKind::Sqlite,
    }
}

/// `HOST:PORT/DATABASE` of the test server.
#[must_use]
pub fn pg_server() -> String {
    std::env::var("BASTION_TEST_PG").unwrap_or_else(|_| "127.0.0.1:5432/test".to_owned())
}

/// A fresh schema on the test server, migrated, with the application role granted.
#[derive(Debug, Clone)]
pub struct PgTestDb {
    /// The schema's name.
    pub schema: String,
    /// URL of the owner role, `search_path` set to the schema.
    pub owner_url: String,
    /// URL of the application role, `search_path` set to the schema.
    pub app_url: String,
    /// The application role (login, not superuser, no `BYPASSRLS`, owns nothing).
    pub app_role: String,
}

fn url(role: &str, schema: &str) -> String {
    format!(
        "postgres://{role}@{}?options=-c%20search_path%3D{schema}",
        pg_server()
    )
}

impl PgTestDb {
    /// Creates and migrates a fresh schema.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached — tests fail, they do
    /// not skip.
    pub async fn create(clock: &SharedClock) -> StoreResult<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let base = format!("postgres://{TEST_OWNER_ROLE}@{}", pg_server());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(crate::ACQUIRE_TIMEOUT)
            .connect(&base)
            .await?;
        let mut tx = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
        sql::query("SELECT pg_advisory_xact_lock(hashtextextended('bastion.testing', 0))")
            .execute(&mut tx)
            .await?;
        let epoch: i64 = sql::query("SELECT extract(epoch FROM now())::bigint")
            .scalar(&mut tx)
            .await?;
        let schema = format!("{SCHEMA_PREFIX}{epoch}_{}", &suffix[..12]);
        let stale =
            sql::query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bastion\\_t\\_%'")
                .fetch_all(&mut tx)
                .await?;
        let mut to_drop = Vec::new();
        for row in &stale {
            let name: String = sql::col(row, "nspname")?;
            let born = name
                .strip_prefix(SCHEMA_PREFIX)
                .and_then(|r| r.split('_').next())
                .and_then(|t| t.parse::<i64>().ok());
            if born.is_some_and(|b| b < epoch - STALE_SECS) && is_plain(&name) {
                to_drop.push(name);
            }
        }
        let app_role = format!("{schema}{TEST_APP_ROLE_SUFFIX}");
        sql::raw(
            &mut tx,
            format!(
                "CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
                 CREATE SCHEMA {schema};"
            ),
        )
        .await?;
        tx.commit().await?;
        // A few stale schemas per new one, each in its own transaction (dropping many in one
        // runs out of lock slots); another test dropping the same one first is fine.
        for name in to_drop.iter().take(DROP_PER_CREATE) {
            let mut tx = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
            if sql::raw(
                &mut tx,
                format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE; DROP ROLE IF EXISTS {name}{TEST_APP_ROLE_SUFFIX};"
                ),
            )
            .await
            .is_ok()
            {
                let _ = tx.commit().await;
            }
        }
        pool.close().await;
        let db = Self {
            owner_url: url(TEST_OWNER_ROLE, &schema),
            app_url: url(&app_role, &schema),
            app_role,
            schema,
        };
        Store::migrate_postgres(&db.owner_url, &db.app_role, clock).await?;
        Ok(db)
    }

    /// Opens the schema as the application role (the isolation self-check runs).
    ///
    /// # Errors
    /// As [`Store::open_postgres`].
    pub async fn open(&self, clock: SharedClock) -> StoreResult<Store> {
        Store::open_postgres(&self.app_url, clock).await
    }
}

fn is_plain(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A store on the backend [`backend_from_env`] names: a fresh SQLite file in `dir`, or a
/// fresh PostgreSQL schema opened as the application role.
///
/// # Errors
/// As [`Store::open_sqlite`] and [`PgTestDb::create`].
pub async fn open_test_store(
    dir: &std::path::Path,
    clock: SharedClock,
) -> StoreResult<(Store, Option<PgTestDb>)> {
    match backend_from_env() {
        BackendKind::Sqlite => Ok((
            Store::open_sqlite(&dir.join("bastion.db"), clock).await?,
            None,
        )),
        BackendKind::Postgres => {
            let db = PgTestDb::create(&clock).await?;
            let store = db.open(Arc::clone(&clock)).await?;
            Ok((store, Some(db)))
        }
    }
}
