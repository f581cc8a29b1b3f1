//! Integration tests of bastion-ledger on a real database: SQLite by default, PostgreSQL (as
//! the non-owner NOBYPASSRLS application role) with `BASTION_TEST_DATABASE=postgres`; the
//! PostgreSQL-only tests (raw SQL as the application role, P5 on PostgreSQL) always run.
#![expect(missing_docs, reason = "test helpers")]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod database;
mod events;
mod p5;
mod p9;
mod props;
mod reconcile;

use std::path::PathBuf;
use std::sync::Arc;

use bastion_ledger::{Currency, Money, Reference};
use bastion_store::testing::PgTestDb;
use bastion_store::{BackendKind, Store, TenantScope, TenantTx, tenants};
use bastion_types::{FixedClock, SharedClock, Slug, TenantId};

pub const T0: i64 = 1_700_000_000;

/// A store with two tenants, `acme` and `globex`.
pub struct Env {
    pub _dir: tempfile::TempDir,
    /// The SQLite file (unused on PostgreSQL).
    pub path: PathBuf,
    /// The PostgreSQL schema, on PostgreSQL.
    pub pg: Option<PgTestDb>,
    pub store: Store,
    /// The clock of the store (shared with a sandbox when a test starts one).
    pub clock: FixedClock,
    pub a: TenantId,
    pub b: TenantId,
}

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

pub fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

pub fn eur_minor(minor: i64) -> Money {
    Money {
        minor,
        currency: eur(),
    }
}

pub fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

impl Env {
    /// On the backend `BASTION_TEST_DATABASE` names (SQLite by default).
    pub async fn new() -> Self {
        Self::on(bastion_store::testing::backend_from_env()).await
    }

    /// Always on SQLite.
    pub async fn sqlite() -> Self {
        Self::on(BackendKind::Sqlite).await
    }

    /// Always on PostgreSQL, as the application role.
    pub async fn postgres() -> Self {
        Self::on(BackendKind::Postgres).await
    }

    pub async fn on(kind: BackendKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bastion.db");
        let clock = FixedClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        let (store, pg) = match kind {
            BackendKind::Sqlite => (Store::open_sqlite(&path, shared).await.unwrap(), None),
            BackendKind::Postgres => {
                let db = PgTestDb::create(&shared).await.unwrap_or_else(|e| {
                    unreachable!("PostgreSQL on 127.0.0.1:5432 is required by these tests: {e}")
                });
                (db.open(shared).await.unwrap(), Some(db))
            }
        };
        let a = tenant(&store, "acme").await;
        let b = tenant(&store, "globex").await;
        Self {
            _dir: dir,
            path,
            pg,
            store,
            clock,
            a,
            b,
        }
    }

    pub async fn tx(&self, t: TenantId) -> TenantTx {
        self.store.begin(TenantScope::pre_auth(t)).await.unwrap()
    }

    pub async fn tx_a(&self) -> TenantTx {
        self.tx(self.a).await
    }

    pub async fn tx_b(&self) -> TenantTx {
        self.tx(self.b).await
    }

    /// A raw connection to the SQLite file, bypassing the store.
    pub async fn raw_sqlite(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .foreign_keys(true);
        sqlx::SqliteConnection::connect_with(&opts).await.unwrap()
    }

    /// A raw connection to PostgreSQL as the application role.
    pub async fn raw_pg(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.pg.as_ref().unwrap().app_url)
            .await
            .unwrap()
    }
}

pub async fn tenant(store: &Store, slug: &str) -> TenantId {
    let mut sys = store.system().await.unwrap();
    let id = tenants::create_tenant(&mut sys, &Slug::parse(slug).unwrap(), "eu")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    id
}
