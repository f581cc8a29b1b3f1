//! Integration tests of bastion-store against real SQLite files in a temp dir.
#![expect(missing_docs, reason = "test helpers")]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod approvals;
mod audit;
mod idempotency;
mod isolation;
mod jobs;
mod killswitch;
mod mfa;
mod payments;
mod postgres;
mod records;
mod refresh;
mod throttle;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use bastion_store::tenants::{self, Tenant};
use bastion_store::users::{self, NewUser, User};
use bastion_store::{BackendKind, Store, TenantScope, TenantTx};
use bastion_types::{FixedClock, SharedClock, Slug};

pub const T0: i64 = 1_700_000_000;

/// A store on a fresh file with two tenants (`acme`, `globex`) and one user in each.
pub struct Env {
    pub _dir: tempfile::TempDir,
    /// The SQLite file (unused on PostgreSQL).
    pub path: PathBuf,
    /// The PostgreSQL schema, when the run is on PostgreSQL.
    pub pg: Option<bastion_store::testing::PgTestDb>,
    pub store: Store,
    pub clock: FixedClock,
    pub a: Tenant,
    pub b: Tenant,
    pub alice: User,
    pub bob: User,
}

pub fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

pub fn new_user(name: &str, roles: &[&str]) -> NewUser {
    NewUser {
        username: slug(name),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".to_owned(),
        roles: roles.iter().map(|r| slug(r)).collect(),
        is_demo: false,
    }
}

impl Env {
    /// On the backend `BASTION_TEST_DATABASE` names (SQLite by default).
    pub async fn new() -> Self {
        Self::on(bastion_store::testing::backend_from_env()).await
    }

    /// Always on SQLite (tests that open the file directly).
    pub async fn sqlite() -> Self {
        Self::on(BackendKind::Sqlite).await
    }

    /// Always on PostgreSQL, as the non-owner NOBYPASSRLS application role.
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
                let db = bastion_store::testing::PgTestDb::create(&shared)
                    .await
                    .unwrap_or_else(|e| {
                        unreachable!("PostgreSQL on 127.0.0.1:5432 is required by these tests: {e}")
                    });
                (db.open(shared).await.unwrap(), Some(db))
            }
        };
        let mut sys = store.system().await.unwrap();
        let a_id = tenants::create_tenant(&mut sys, &slug("acme"), "eu")
            .await
            .unwrap();
        let b_id = tenants::create_tenant(&mut sys, &slug("globex"), "eu")
            .await
            .unwrap();
        let a = tenants::tenant_by_id(&mut sys, a_id)
            .await
            .unwrap()
            .unwrap();
        let b = tenants::tenant_by_id(&mut sys, b_id)
            .await
            .unwrap()
            .unwrap();
        sys.commit().await.unwrap();
        let mut tx = store.begin(TenantScope::pre_auth(a.id)).await.unwrap();
        let alice = users::create_user(&mut tx, new_user("alice", &["buyer"]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin(TenantScope::pre_auth(b.id)).await.unwrap();
        let bob = users::create_user(&mut tx, new_user("bob", &["buyer"]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        Self {
            _dir: dir,
            path,
            pg,
            store,
            clock,
            a,
            b,
            alice,
            bob,
        }
    }

    pub async fn tx_a(&self) -> TenantTx {
        self.store
            .begin(TenantScope::pre_auth(self.a.id))
            .await
            .unwrap()
    }

    pub async fn tx_b(&self) -> TenantTx {
        self.store
            .begin(TenantScope::pre_auth(self.b.id))
            .await
            .unwrap()
    }

    /// A raw connection to the same file, bypassing the store (to play the attacker).
    pub async fn raw(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .foreign_keys(true);
        sqlx::SqliteConnection::connect_with(&opts).await.unwrap()
    }
}

#[tokio::test]
async fn open_is_idempotent_and_memory_store_works() {
    let env = Env::sqlite().await;
    env.store.close().await;
    // Re-opening runs no migration twice and keeps the data.
    let shared: SharedClock = Arc::new(env.clock.clone());
    let again = Store::open_sqlite(&env.path, shared.clone()).await.unwrap();
    let mut sys = again.system().await.unwrap();
    assert_eq!(tenants::list_tenants(&mut sys).await.unwrap().len(), 2);
    assert!(matches!(
        tenants::create_tenant(&mut sys, &slug("acme"), "eu").await,
        Err(bastion_store::StoreError::Duplicate)
    ));
    drop(sys);

    let mem = Store::open_sqlite_memory(shared).await.unwrap();
    let mut sys = mem.system().await.unwrap();
    let t = tenants::create_tenant(&mut sys, &slug("solo"), "eu")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    let mut tx = mem.begin(TenantScope::pre_auth(t)).await.unwrap();
    users::create_user(&mut tx, new_user("u", &[]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = mem.begin(TenantScope::pre_auth(t)).await.unwrap();
    assert!(
        users::user_by_username(&mut tx, &slug("u"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn nil_tenant_scope_is_refused() {
    let env = Env::new().await;
    let nil = bastion_types::TenantId::from_uuid(uuid::Uuid::nil());
    assert!(matches!(
        env.store.begin(TenantScope::pre_auth(nil)).await,
        Err(bastion_store::StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    let env = Env::new().await;
    env.store.close().await;
    let err = env
        .store
        .begin(TenantScope::pre_auth(env.a.id))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.to_string(), "storage unavailable");
}

impl Env {
    pub fn clock_now(&self) -> i64 {
        use bastion_types::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_changed_migration_is_refused_and_demo_users_are_counted() {
    let env = Env::sqlite().await;
    assert_eq!(users::demo_user_count(&env.store).await.unwrap(), 0);
    let mut tx = env.tx_a().await;
    let mut demo = new_user("demo", &["buyer"]);
    demo.is_demo = true;
    users::create_user(&mut tx, demo).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(users::demo_user_count(&env.store).await.unwrap(), 1);
    env.store.close().await;

    let mut raw = env.raw().await;
    sqlx::raw_sql("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&mut raw)
        .await
        .unwrap();
    let shared: SharedClock = Arc::new(env.clock.clone());
    let err = Store::open_sqlite(&env.path, shared).await.unwrap_err();
    assert!(
        matches!(err, bastion_store::StoreError::Internal { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "internal storage error");
}
