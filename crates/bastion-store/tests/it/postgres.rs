//! PostgreSQL only: isolation enforced by the database itself (row-level security), the
//! boot-time self-check (Z1, Z4, role attributes), missing tenant setting (Z8), composite
//! keys (Z5), and two stores (two instances) on one database.
//!
//! Raw connections play the attacker or the forgetful developer: the application role
//! running SQL that has no tenant filter at all.

use std::sync::Arc;

use bastion_audit::{AuditEvent, Outcome, verify};
use bastion_store::records::{self, FieldRef, RefTarget};
use bastion_store::refresh::{self, RotateOutcome};
use bastion_store::testing::{PgTestDb, pg_server};
use bastion_store::{Store, StoreError, TenantScope, audit, throttle};
use bastion_types::{AuthMethod, SharedClock, TenantId};
use serde_json::json;
use sqlx::{Connection, PgConnection, Row};

use crate::{Env, T0};

fn db(env: &Env) -> &PgTestDb {
    env.pg.as_ref().unwrap()
}

async fn app_conn(env: &Env) -> PgConnection {
    PgConnection::connect(&db(env).app_url).await.unwrap()
}

async fn owner_conn(env: &Env) -> PgConnection {
    PgConnection::connect(&db(env).owner_url).await.unwrap()
}

fn shared(env: &Env) -> SharedClock {
    Arc::new(env.clock.clone())
}

/// A quote in each tenant, made through the store.
async fn quote_each(env: &Env) -> (String, String) {
    let mut tx = env.tx_a().await;
    let a = records::insert_record(&mut tx, "quote", env.alice.id, json!({"t": "a"}), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    let b = records::insert_record(&mut tx, "quote", env.bob.id, json!({"t": "b"}), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (a.id.to_string(), b.id.to_string())
}

async fn set_tenant(conn: &mut PgConnection, tenant: TenantId) {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn tenants_seen(conn: &mut PgConnection, sql: &'static str) -> Vec<String> {
    sqlx::query(sql)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_query_without_any_tenant_filter_returns_only_the_tenant_of_the_transaction() {
    let env = Env::postgres().await;
    quote_each(&env).await;
    let mut conn = app_conn(&env).await;
    for (tenant, want) in [(env.a.id, 2), (env.b.id, 2)] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, tenant).await;
        // Records and users of the two tenants exist; no WHERE clause anywhere.
        let seen = tenants_seen(&mut tx, "SELECT tenant_id FROM records").await;
        assert_eq!(seen, vec![tenant.to_string()]);
        let seen = tenants_seen(&mut tx, "SELECT tenant_id FROM users").await;
        assert_eq!(seen, vec![tenant.to_string()]);
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM records) + (SELECT COUNT(*) FROM users)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(n, want, "counts and aggregates are filtered too");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn z8_a_missing_or_empty_tenant_setting_errors_loudly() {
    let env = Env::postgres().await;
    quote_each(&env).await;
    let mut conn = app_conn(&env).await;
    // Outside any tenant transaction.
    let err = sqlx::query("SELECT * FROM records")
        .fetch_all(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "BA001", "{err}");
    assert!(
        err.to_string().contains("app.tenant_id is not set"),
        "{err}"
    );
    // An empty table must not hide the error either: audit_heads of no one.
    let err = sqlx::query("SELECT * FROM mfa_challenges")
        .fetch_all(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "BA001", "{err}");
    // Set to empty, and set in a transaction that then ended (set_config(…, true) is
    // transaction-local, so the next transaction on this pooled connection has none).
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', '', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("SELECT * FROM users")
        .fetch_all(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "BA001", "{err}");
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    tx.commit().await.unwrap();
    let err = sqlx::query("SELECT * FROM users")
        .fetch_all(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "BA001", "{err}");
    // Writes too.
    let err = sqlx::query("DELETE FROM refresh_tokens")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "BA001", "{err}");
}

#[tokio::test]
async fn a_prepared_statement_reused_on_one_pooled_connection_follows_the_new_tenant() {
    let env = Env::postgres().await;
    quote_each(&env).await;
    // One connection, as a transaction-mode pooler would hand it from tenant to tenant; the
    // statement is prepared once and cached (sqlx's per-connection statement cache).
    let mut conn = app_conn(&env).await;
    for tenant in [env.a.id, env.b.id, env.a.id] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, tenant).await;
        let seen: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM records ORDER BY id")
            .persistent(true)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, vec![tenant.to_string()]);
        tx.commit().await.unwrap();
    }
    assert!(conn.cached_statements_size() >= 1);
}

#[tokio::test]
async fn writes_into_another_tenant_are_refused_and_unfiltered_updates_touch_only_ours() {
    let env = Env::postgres().await;
    let (a_quote, b_quote) = quote_each(&env).await;
    let mut conn = app_conn(&env).await;
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    let err = sqlx::query(
        "INSERT INTO records (tenant_id, id, entity, owner_id, data, version, created_at, updated_at)
         VALUES ($1, 'x', 'quote', $2, '{}', 1, 0, 0)",
    )
    .bind(env.b.id.to_string())
    .bind(env.bob.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "row-level security WITH CHECK: {err}"
    );
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    let done = sqlx::query("UPDATE records SET data = '{\"t\":\"hijacked\"}'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    // Moving our row into the other tenant is refused as well.
    let err = sqlx::query("UPDATE records SET tenant_id = $1")
        .bind(env.b.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(
        ["42501", "23503"].contains(&sqlstate(&err).as_str()),
        "{err}"
    );
    tx.rollback().await.unwrap();

    let mut tx = env.tx_b().await;
    let b = records::get_record(&mut tx, "quote", b_quote.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.data, json!({"t": "b"}));
    assert!(
        records::get_record(&mut tx, "quote", a_quote.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn z5_the_database_refuses_a_parent_of_another_tenant() {
    let env = Env::postgres().await;
    let (a_quote, b_quote) = quote_each(&env).await;
    // Through the store.
    let mut tx = env.tx_a().await;
    let data = json!({"quote_id": b_quote});
    let refs = [FieldRef {
        field: "quote_id".into(),
        target: RefTarget::Record {
            entity: "quote".into(),
            id: b_quote.parse().unwrap(),
        },
    }];
    assert!(matches!(
        records::insert_record(&mut tx, "proposal", env.alice.id, data, &refs).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);
    // As the owner, past row-level security: the composite foreign key still refuses.
    let mut owner = owner_conn(&env).await;
    let err = sqlx::query(
        "INSERT INTO record_parents (tenant_id, record_id, field, parent_entity, parent_id)
         VALUES ($1, $2, 'quote_id', 'quote', $3)",
    )
    .bind(env.a.id.to_string())
    .bind(&a_quote)
    .bind(&b_quote)
    .execute(&mut owner)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err}");
}

fn problems(err: &StoreError) -> Vec<String> {
    match err {
        StoreError::Unsafe { findings } => findings.iter().map(ToString::to_string).collect(),
        other => unreachable!("expected Unsafe, got {other:?}"),
    }
}

#[tokio::test]
async fn z1_boot_refuses_a_tenant_table_without_forced_rls_and_a_policy_naming_it() {
    let env = Env::postgres().await;
    let mut owner = owner_conn(&env).await;
    let grant = format!(
        "GRANT SELECT, INSERT ON invoices, notes TO {}",
        db(&env).app_role
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE invoices (tenant_id TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
         CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);
         {grant};"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let err = db(&env).open(shared(&env)).await.unwrap_err();
    let found = problems(&err);
    for want in [
        "table invoices: row level security is not enabled",
        "table invoices: row level security is not forced",
        "table invoices: has no row level security policy",
        "table notes: has no tenant_id column and is not a known system table",
    ] {
        assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
    }
    assert!(err.to_string().contains("invoices"), "{err}");

    sqlx::raw_sql(
        "ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
         DROP TABLE notes;",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    assert_eq!(
        found,
        vec![
            "table invoices: row level security is not forced",
            "table invoices: has no row level security policy"
        ]
    );
    sqlx::raw_sql(
        "ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON invoices
             USING (tenant_id = (SELECT app_tenant_id()))
             WITH CHECK (tenant_id = (SELECT app_tenant_id()));",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let store = db(&env).open(shared(&env)).await.unwrap();
    assert!(store.isolation_findings().await.unwrap().is_empty());
}

#[tokio::test]
async fn z4_a_view_must_be_security_invoker_and_then_filters_by_tenant() {
    let env = Env::postgres().await;
    quote_each(&env).await;
    let mut owner = owner_conn(&env).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE VIEW quote_ids AS SELECT tenant_id, id FROM records WHERE entity = 'quote';
         GRANT SELECT ON quote_ids TO {};",
        db(&env).app_role
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    // The leak the self-check exists for: a view runs as its owner, past RLS.
    let mut conn = app_conn(&env).await;
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    let seen = tenants_seen(&mut tx, "SELECT tenant_id FROM quote_ids").await;
    assert_eq!(seen.len(), 2, "an owner's view sees both tenants");
    tx.rollback().await.unwrap();
    let found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    assert_eq!(
        found,
        vec![
            "view quote_ids: is not security_invoker (it would read as its owner, past row level security)"
        ]
    );

    sqlx::raw_sql("ALTER VIEW quote_ids SET (security_invoker = true)")
        .execute(&mut owner)
        .await
        .unwrap();
    db(&env).open(shared(&env)).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    let seen = tenants_seen(&mut tx, "SELECT tenant_id FROM quote_ids").await;
    assert_eq!(seen, vec![env.a.id.to_string()]);
}

/// Creates a login role with `attrs` (idempotent), granted what the app role has.
async fn extra_role(env: &Env, name: &str, attrs: &str) -> String {
    let mut owner = owner_conn(env).await;
    let schema = &db(env).schema;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_lock(hashtextextended('bastion.testing', 0));
         DO $r$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
             CREATE ROLE {name} LOGIN {attrs};
           END IF;
         END $r$;
         GRANT USAGE ON SCHEMA {schema} TO {name};
         GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {name};
         SELECT pg_advisory_unlock(hashtextextended('bastion.testing', 0));"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    format!(
        "postgres://{name}@{}?options=-c%20search_path%3D{schema}",
        pg_server()
    )
}

#[tokio::test]
async fn boot_refuses_a_superuser_a_bypassrls_role_and_a_role_with_create() {
    let env = Env::postgres().await;
    let clock = shared(&env);

    let err = Store::open_postgres(&db(&env).owner_url, Arc::clone(&clock))
        .await
        .unwrap_err();
    let found = problems(&err);
    assert!(
        found.contains(
            &"role postgres: is a superuser (superusers bypass row level security)".to_owned()
        ),
        "{found:?}"
    );

    let url = extra_role(&env, "bastion_test_bypass", "NOSUPERUSER BYPASSRLS").await;
    let found = problems(
        &Store::open_postgres(&url, Arc::clone(&clock))
            .await
            .unwrap_err(),
    );
    assert_eq!(found, vec!["role bastion_test_bypass: has BYPASSRLS"]);

    let url = extra_role(&env, "bastion_test_creator", "NOSUPERUSER NOBYPASSRLS").await;
    let mut owner = owner_conn(&env).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "GRANT CREATE ON SCHEMA {} TO bastion_test_creator; GRANT TRUNCATE ON records TO bastion_test_creator",
        db(&env).schema
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let found = problems(
        &Store::open_postgres(&url, Arc::clone(&clock))
            .await
            .unwrap_err(),
    );
    assert!(
        found.contains(&format!(
            "schema {}: the application role has CREATE on it",
            db(&env).schema
        )),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"table records: the application role may TRUNCATE it (TRUNCATE ignores row level security)"
                .to_owned()
        ),
        "{found:?}"
    );
}

#[tokio::test]
async fn the_app_role_cannot_truncate_alter_create_or_rewrite_the_audit_log() {
    let env = Env::postgres().await;
    let mut tx = env.tx_a().await;
    audit::append_audit(&mut tx, &event(env.a.id, 1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = app_conn(&env).await;
    for sql in [
        "TRUNCATE records",
        "TRUNCATE audit_log",
        "ALTER TABLE records DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE records NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON records",
        "CREATE TABLE mine (x int)",
        "CREATE VIEW mine AS SELECT 1",
        "CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS text LANGUAGE sql AS $$ SELECT '' $$",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        assert!(
            ["42501", "42P07"].contains(&sqlstate(&err).as_str()),
            "{sql}: {err}"
        );
    }
    for sql in [
        "UPDATE audit_log SET body = 'x'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_heads",
    ] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, env.a.id).await;
        let err = sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        tx.rollback().await.unwrap();
    }
    // Even the owner cannot rewrite history: the triggers refuse.
    let mut owner = owner_conn(&env).await;
    for sql in [
        "UPDATE audit_log SET body = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut owner).await.unwrap_err();
        assert_eq!(sqlstate(&err), "BA002", "{sql}: {err}");
    }
}

fn event(tenant: TenantId, i: i64) -> AuditEvent {
    AuditEvent {
        at: T0 + i,
        tenant_id: tenant,
        actor: None,
        action: format!("tool.call_{i}"),
        target: None,
        outcome: Outcome::Allow,
        policy_ids: vec![],
        detail: json!({"i": i}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_audit_chain_refresh_family_throttle_and_versions() {
    let env = Env::postgres().await;
    let one = env.store.clone();
    let two = db(&env).open(shared(&env)).await.unwrap();
    let stores = [one, two];
    let tenant = env.a.id;

    // The audit chain: 60 concurrent appends through both stay one sequence.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            audit::append_audit(&mut tx, &event(tenant, i64::try_from(i).unwrap()))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut tx = stores[1]
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    let chain = audit::read_chain(&mut tx).await.unwrap();
    drop(tx);
    assert_eq!(chain.records.len(), 60);
    assert_eq!(verify(&chain.records, chain.head).unwrap().count, 60);

    // A refresh token presented 50 times at once, split across both: one winner.
    let mut tx = stores[0]
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    let fam = refresh::create_family(&mut tx, env.alice.id, T0, &[AuthMethod::Pwd], T0 + 86_400)
        .await
        .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-0", T0 + 3600)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let new = format!("rt-1-{i}");
            let out = refresh::rotate_refresh_token(&mut tx, b"rt-0", new.as_bytes(), T0 + 3600)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            out
        }));
    }
    let mut rotated = 0;
    let mut reused = 0;
    for t in tasks {
        match t.await.unwrap() {
            RotateOutcome::Rotated { .. } => rotated += 1,
            RotateOutcome::Reused { .. } => reused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((rotated, reused), (1, 49));
    let mut tx = stores[1]
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    assert!(!refresh::family_active(&mut tx, fam).await.unwrap());
    drop(tx);

    // Throttle counters are shared.
    for i in 0..10 {
        let mut sys = stores[i % 2].system().await.unwrap();
        throttle::throttle_hit(&mut sys, "login:x", 900)
            .await
            .unwrap();
        sys.commit().await.unwrap();
    }
    let mut sys = stores[0].system().await.unwrap();
    assert_eq!(
        throttle::throttle_count(&mut sys, "login:x", 900)
            .await
            .unwrap(),
        10
    );
    drop(sys);

    // Optimistic concurrency: the same version updated through both, one wins.
    let mut tx = stores[0]
        .begin(TenantScope::pre_auth(tenant))
        .await
        .unwrap();
    let rec = records::insert_record(&mut tx, "quote", env.alice.id, json!({"v": 0}), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let res =
                records::update_record(&mut tx, "quote", rec.id, 1, json!({"v": i}), &[]).await;
            if res.is_ok() {
                tx.commit().await.unwrap();
            }
            res.map(|r| r.version)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| matches!(o, Ok(2))).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Err(StoreError::Conflict { current_version: 2 })))
            .count(),
        1,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn boot_refuses_a_widening_policy_objects_elsewhere_a_definer_function_and_a_preset_tenant() {
    let env = Env::postgres().await;
    let role = db(&env).app_role.clone();
    let schema = db(&env).schema.clone();
    let mut owner = owner_conn(&env).await;
    // A permissive `USING (true)` next to the real policy (CVE-2025-48757's class).
    sqlx::raw_sql("CREATE POLICY oops ON users USING (true)")
        .execute(&mut owner)
        .await
        .unwrap();
    let found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    assert_eq!(
        found,
        vec![
            "table users: policy oops is not one Bastion's migrations wrote (it may widen what a tenant sees)"
        ]
    );
    sqlx::raw_sql("DROP POLICY oops ON users; DROP POLICY tenant_isolation ON users; CREATE POLICY tenant_isolation ON users USING (tenant_id IS NOT NULL)")
        .execute(&mut owner)
        .await
        .unwrap();
    let found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("table users: policy tenant_isolation"),
        "{found:?}"
    );
    sqlx::raw_sql(
        "DROP POLICY tenant_isolation ON users;
         CREATE POLICY tenant_isolation ON users
             USING (tenant_id = (SELECT app_tenant_id()))
             WITH CHECK (tenant_id = (SELECT app_tenant_id()));",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    db(&env).open(shared(&env)).await.unwrap();

    // Another schema: an owner's view over tenant rows and a table without RLS; and a
    // SECURITY DEFINER function anyone may execute.
    let other = format!("{schema}_rep");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {other}; GRANT USAGE ON SCHEMA {other} TO {role};
         CREATE VIEW {other}.users_v AS SELECT tenant_id, username FROM {schema}.users;
         CREATE TABLE {other}.invoices (tenant_id TEXT, id TEXT);
         GRANT SELECT ON {other}.users_v, {other}.invoices TO {role};
         CREATE FUNCTION {other}.all_users() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
             AS $$ SELECT username FROM {schema}.users $$;"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let mut found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    found.sort();
    assert_eq!(
        found,
        vec![
            format!(
                "function {other}.all_users(): is SECURITY DEFINER and executable by the application role (it runs past row level security)"
            ),
            format!(
                "relation {other}.invoices: is reachable by the application role outside Bastion's schema and not protected by row level security"
            ),
            format!(
                "relation {other}.users_v: is reachable by the application role outside Bastion's schema and not protected by row level security"
            ),
        ]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {other} CASCADE")))
        .execute(&mut owner)
        .await
        .unwrap();
    db(&env).open(shared(&env)).await.unwrap();

    // A default tenant for the role would turn a forgotten tenant into that tenant's rows.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} SET app.tenant_id = '{}'",
        env.a.id
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let found = problems(&db(&env).open(shared(&env)).await.unwrap_err());
    assert_eq!(
        found,
        vec![
            "setting app.tenant_id: has a default for this role, database or connection (it must only be set per transaction)"
        ]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} RESET app.tenant_id"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    db(&env).open(shared(&env)).await.unwrap();
}

#[tokio::test]
async fn trigger_functions_ignore_a_temp_table_that_shadows_the_audit_log() {
    let env = Env::postgres().await;
    let mut tx = env.tx_a().await;
    audit::append_audit(&mut tx, &event(env.a.id, 1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = app_conn(&env).await;
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE audit_log (tenant_id text, seq bigint, hash bytea);
         INSERT INTO pg_temp.audit_log VALUES ('{}', 2, '\\xdeadbeef');",
        env.a.id
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let err =
        sqlx::query("UPDATE audit_heads SET seq = 2, hash = '\\xdeadbeef' WHERE tenant_id = $1")
            .bind(env.a.id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap_err();
    assert_eq!(sqlstate(&err), "BA002", "{err}");
}
