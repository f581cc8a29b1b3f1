//! Kill switches (case A6 storage): the four scopes, release, listing, limits; the cost of
//! the per-call check; on PostgreSQL the row-level security of `kill_switches`, a change
//! waiting for a tool transaction that passed its check, and a second instance seeing a
//! change at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_store::killswitch::{self as ks, Block, Scope};
use bastion_store::{StoreError, TenantScope};
use bastion_types::SharedClock;
use sqlx::{Connection, PgConnection};

use crate::Env;

async fn blocked_a(env: &Env, tool: &str) -> Option<Block> {
    let mut tx = env.tx_a().await;
    let b = ks::is_blocked(&mut tx, tool).await.unwrap();
    tx.rollback().await.unwrap();
    b
}

async fn blocked_b(env: &Env, tool: &str) -> Option<Block> {
    let mut tx = env.tx_b().await;
    let b = ks::is_blocked(&mut tx, tool).await.unwrap();
    tx.rollback().await.unwrap();
    b
}

fn scope(b: Option<Block>) -> Option<Scope> {
    b.map(|b| b.scope)
}

#[tokio::test]
async fn each_scope_blocks_exactly_what_it_names_and_release_restores() {
    let env = Env::new().await;
    assert_eq!(blocked_a(&env, "create_quote").await, None);

    // Tenant + tool.
    let mut tx = env.tx_a().await;
    let c = ks::engage(&mut tx, Some("create_quote"), "incident 7", "operator")
        .await
        .unwrap();
    assert!(!c.was_engaged);
    tx.commit().await.unwrap();
    let b = blocked_a(&env, "create_quote").await.unwrap();
    assert_eq!(
        (b.scope, b.reason.as_str()),
        (Scope::TenantTool, "incident 7")
    );
    assert_eq!(blocked_a(&env, "list_quotes").await, None);
    assert_eq!(blocked_b(&env, "create_quote").await, None);

    // Whole tenant.
    let mut tx = env.tx_b().await;
    ks::engage(&mut tx, None, "tenant b paused", "user:x")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        scope(blocked_b(&env, "list_quotes").await),
        Some(Scope::Tenant)
    );
    assert_eq!(blocked_a(&env, "list_quotes").await, None);

    // One tool everywhere, then everything: the broadest engaged switch is reported.
    let mut sys = env.store.system().await.unwrap();
    ks::engage_system(&mut sys, Some("list_quotes"), "bad tool", "operator")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    assert_eq!(
        scope(blocked_a(&env, "list_quotes").await),
        Some(Scope::Tool)
    );
    let mut sys = env.store.system().await.unwrap();
    ks::engage_system(&mut sys, None, "stop everything", "operator")
        .await
        .unwrap();
    let again = ks::engage_system(&mut sys, None, "stop everything", "operator")
        .await
        .unwrap();
    assert!(again.was_engaged, "engaging twice is idempotent");
    assert_eq!(
        scope(
            ks::is_blocked_system(&mut sys, env.a.id, "get_quote")
                .await
                .unwrap()
        ),
        Some(Scope::Global)
    );
    sys.commit().await.unwrap();
    for tool in ["get_quote", "create_quote", "list_quotes"] {
        assert_eq!(scope(blocked_a(&env, tool).await), Some(Scope::Global));
        assert_eq!(scope(blocked_b(&env, tool).await), Some(Scope::Global));
    }

    // Listing: four rows for the operator; a tenant sees the shared ones and its own.
    let mut sys = env.store.system().await.unwrap();
    let all = ks::list(&mut sys).await.unwrap();
    sys.rollback().await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|k| k.engaged));
    let mut tx = env.tx_a().await;
    let mine = ks::list_for_tenant(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let scopes: Vec<Scope> = mine.iter().map(|k| k.scope).collect();
    assert_eq!(scopes.len(), 3, "{mine:?}");
    assert!(
        mine.iter()
            .all(|k| k.tenant_id.is_none() || k.tenant_id == Some(env.a.id))
    );

    // Release everything; rows stay, released, with the releaser and reason.
    let mut sys = env.store.system().await.unwrap();
    let c = ks::release_system(&mut sys, None, "all clear", "operator")
        .await
        .unwrap();
    assert!(c.was_engaged);
    ks::release_system(&mut sys, Some("list_quotes"), "fixed", "operator")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    ks::release(&mut tx, Some("create_quote"), "resolved", "user:y")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    ks::release(&mut tx, None, "resumed", "operator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for tool in ["get_quote", "create_quote", "list_quotes"] {
        assert_eq!(blocked_a(&env, tool).await, None);
        assert_eq!(blocked_b(&env, tool).await, None);
    }
    let mut sys = env.store.system().await.unwrap();
    let all = ks::list(&mut sys).await.unwrap();
    sys.rollback().await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|k| !k.engaged));
    let a_row = all.iter().find(|k| k.scope == Scope::TenantTool).unwrap();
    assert_eq!(
        (
            a_row.tenant_id,
            a_row.tool.as_deref(),
            a_row.reason.as_str(),
            a_row.changed_by.as_str()
        ),
        (Some(env.a.id), Some("create_quote"), "resolved", "user:y")
    );
}

#[tokio::test]
async fn bad_names_and_reasons_are_refused() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    for (tool, reason) in [
        (Some("Create Quote"), "r"),
        (Some(""), "r"),
        (Some("x".repeat(65).as_str()), "r"),
        (Some("create_quote"), ""),
        (Some("create_quote"), "   "),
        (Some("create_quote"), "line\nbreak"),
        (None, "r".repeat(501).as_str()),
    ] {
        assert!(
            matches!(
                ks::engage(&mut tx, tool, reason, "operator").await,
                Err(StoreError::Invalid { .. })
            ),
            "{tool:?} {reason:?}"
        );
    }
    assert!(matches!(
        ks::engage(&mut tx, None, "ok", "").await,
        Err(StoreError::Invalid { .. })
    ));
    tx.rollback().await.unwrap();
}

/// The check's cost: one query (plus the shared advisory lock on PostgreSQL) inside a
/// transaction that is open anyway. Printed for docs/ARCHITECTURE.md; the assertion only
/// catches a pathological regression.
#[tokio::test]
#[expect(
    clippy::disallowed_methods,
    reason = "measures the wall time of the check, like a benchmark"
)]
async fn the_per_call_check_costs_one_short_query() {
    const ROUNDS: u32 = 300;
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    ks::engage_system(&mut sys, Some("other_tool"), "noise", "operator")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        assert_eq!(ks::is_blocked(&mut tx, "create_quote").await.unwrap(), None);
    }
    let per_call = start.elapsed() / ROUNDS;
    tx.rollback().await.unwrap();
    eprintln!(
        "kill switch check ({:?}): {per_call:?} per call over {ROUNDS} calls",
        env.store.kind()
    );
    assert!(per_call < Duration::from_millis(20), "{per_call:?}");
}

async fn set_tenant(conn: &mut PgConnection, tenant: String) {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *conn)
        .await
        .unwrap();
}

fn pg_url(env: &Env) -> String {
    env.pg.as_ref().unwrap().app_url.clone()
}

#[tokio::test]
async fn postgres_row_level_security_keeps_tenants_to_their_own_switches() {
    let env = Env::postgres().await;
    let mut sys = env.store.system().await.unwrap();
    ks::engage_system(&mut sys, None, "global", "operator")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    ks::engage(&mut tx, None, "b only", "operator")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut conn = PgConnection::connect(&pg_url(&env)).await.unwrap();
    let insert = "INSERT INTO kill_switches (scope, tenant_id, tool, engaged, reason, changed_by, changed_at)
                  VALUES ($1, $2, $3, TRUE, 'r', 'x', 0)";

    // Tenant A sees the global row, not B's; cannot write a global row or one of B's.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id.to_string()).await;
    let seen: Vec<String> = sqlx::query_scalar("SELECT scope FROM kill_switches ORDER BY scope")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec!["global".to_owned()]);
    let updated = sqlx::query("UPDATE kill_switches SET engaged = FALSE")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        updated.rows_affected(),
        0,
        "the global row is read-only here"
    );
    let err = sqlx::query(insert)
        .bind("tool")
        .bind("")
        .bind("create_quote")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.a.id.to_string()).await;
    let err = sqlx::query(insert)
        .bind("tenant")
        .bind(env.b.id.to_string())
        .bind("")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The system transaction reads every row but writes only rows naming no tenant.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, uuid::Uuid::nil().to_string()).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM kill_switches")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let updated = sqlx::query("UPDATE kill_switches SET engaged = FALSE WHERE tenant_id <> ''")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let err = sqlx::query(insert)
        .bind("tenant_tool")
        .bind(env.a.id.to_string())
        .bind("create_quote")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    // And the application role cannot delete a switch at all.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, env.b.id.to_string()).await;
    let err = sqlx::query("DELETE FROM kill_switches")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

/// A6 on PostgreSQL: an engage waits for a tool transaction that already passed its check,
/// and a check after the engage committed sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_engage_waits_for_calls_that_passed_the_check() {
    let env = Env::postgres().await;
    let mut call = env.tx_a().await;
    assert_eq!(
        ks::is_blocked(&mut call, "create_quote").await.unwrap(),
        None
    );

    let store = env.store.clone();
    let engage = tokio::spawn(async move {
        let mut sys = store.system().await.unwrap();
        ks::engage_system(&mut sys, None, "stop", "operator")
            .await
            .unwrap();
        sys.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !engage.is_finished(),
        "the engage must wait for the call in flight"
    );
    // The call's effect commits before the engage is acknowledged.
    call.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), engage)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        scope(blocked_a(&env, "create_quote").await),
        Some(Scope::Global)
    );
}

/// Two instances on one database: a change through one is seen by the next check through
/// the other (no cache anywhere).
#[tokio::test]
async fn postgres_a_second_instance_sees_a_change_at_once() {
    let env = Env::postgres().await;
    let shared: SharedClock = Arc::new(env.clock.clone());
    let other = env.pg.as_ref().unwrap().open(shared).await.unwrap();
    let mut tx = env.tx_a().await;
    ks::engage(&mut tx, Some("create_quote"), "stop", "operator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = other.begin(TenantScope::pre_auth(env.a.id)).await.unwrap();
    assert_eq!(
        scope(ks::is_blocked(&mut tx, "create_quote").await.unwrap()),
        Some(Scope::TenantTool)
    );
    tx.rollback().await.unwrap();
    other.close().await;
}
