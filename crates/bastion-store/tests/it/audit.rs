//! The audit chain in the database: verifies after appends, tampering is caught, the table
//! is append-only, and an unwritable database fails the append (fail closed).

use std::sync::Arc;

use bastion_audit::{AuditEvent, Outcome, VerifyFailure, verify};
use bastion_store::{Store, StoreError, TenantScope, audit};
use bastion_types::{SharedClock, TenantId};
use serde_json::json;

use crate::{Env, T0};

fn event(tenant: TenantId, i: i64) -> AuditEvent {
    AuditEvent {
        at: T0 + i,
        tenant_id: tenant,
        actor: None,
        action: format!("tool.call_{i}"),
        target: Some(format!("rec-{i}")),
        outcome: if i % 2 == 0 {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        policy_ids: vec!["policy0".into()],
        detail: json!({"i": i, "note": "redacted"}),
    }
}

async fn append_n(env: &Env, n: i64) {
    for i in 1..=n {
        let mut tx = env.tx_a().await;
        let (seq, hash) = audit::append_audit(&mut tx, &event(env.a.id, i))
            .await
            .unwrap();
        assert_eq!(seq, u64::try_from(i).unwrap());
        assert_ne!(hash, [0; 32]);
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn chain_verifies_after_appends_and_rolled_back_appends_leave_no_trace() {
    let env = Env::new().await;
    append_n(&env, 5).await;
    let mut tx = env.tx_a().await;
    audit::append_audit(&mut tx, &event(env.a.id, 99))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = env.tx_a().await;
    let chain = audit::read_chain(&mut tx).await.unwrap();
    let report = verify(&chain.records, chain.head).unwrap();
    assert_eq!(report.count, 5);
    assert_eq!(chain.head, Some((5, report.head_hash)));
    assert_eq!(
        AuditEvent::from_body(&chain.records[2].body),
        Some(event(env.a.id, 3))
    );

    // Paged reading with the streaming verifier gives the same answer in bounded memory.
    let mut v = bastion_audit::ChainVerifier::new();
    let mut after = 0;
    loop {
        let page = audit::read_chain_page(&mut tx, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        page.iter().try_for_each(|r| v.push(r)).unwrap();
    }
    let head = audit::chain_head(&mut tx).await.unwrap();
    assert_eq!(v.finish(head).unwrap(), report);
    assert!(
        audit::read_chain_page(&mut tx, 0, audit::CHAIN_PAGE_MAX + 1)
            .await
            .is_err()
    );
    drop(tx); // one transaction at a time: SQLite writers are serialised

    // The system chain is separate and takes only nil-tenant events.
    let mut sys = env.store.system().await.unwrap();
    let nil = TenantId::from_uuid(uuid::Uuid::nil());
    assert_eq!(
        audit::system_append_audit(&mut sys, &event(nil, 1))
            .await
            .unwrap()
            .0,
        1
    );
    assert!(matches!(
        audit::system_append_audit(&mut sys, &event(env.a.id, 1)).await,
        Err(StoreError::Invalid { .. })
    ));
    let sys_chain = audit::system_read_chain(&mut sys).await.unwrap();
    assert_eq!(verify(&sys_chain.records, sys_chain.head).unwrap().count, 1);
    assert_eq!(
        audit::system_read_chain_page(&mut sys, 0, 10)
            .await
            .unwrap(),
        sys_chain.records
    );
    assert_eq!(
        audit::system_chain_head(&mut sys).await.unwrap(),
        sys_chain.head
    );
}

#[tokio::test]
async fn the_audit_table_refuses_update_and_delete() {
    let env = Env::sqlite().await;
    append_n(&env, 2).await;
    let mut raw = env.raw().await;
    for sql in [
        "UPDATE audit_log SET body = 'x' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_heads",
        "UPDATE audit_heads SET seq = 1",
    ] {
        assert!(
            sqlx::raw_sql(sql).execute(&mut raw).await.is_err(),
            "{sql} was allowed"
        );
    }
}

async fn tampered_chain(env: &Env) -> bastion_store::audit::AuditChain {
    let mut tx = env.tx_a().await;
    let chain = audit::read_chain(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    chain
}

#[tokio::test]
async fn a_byte_flipped_with_raw_sql_is_found_at_its_position() {
    let env = Env::sqlite().await;
    append_n(&env, 5).await;
    let mut raw = env.raw().await;
    sqlx::raw_sql("DROP TRIGGER audit_log_no_update")
        .execute(&mut raw)
        .await
        .unwrap();
    let body: String =
        sqlx::query_scalar("SELECT body FROM audit_log WHERE tenant_id = $1 AND seq = 3")
            .bind(env.a.id.to_string())
            .fetch_one(&mut raw)
            .await
            .unwrap();
    // Turn the denied call into an allowed one, one byte at a time: `"i":3` → `"i":2`.
    let forged = body.replacen("\"i\":3", "\"i\":2", 1);
    assert_ne!(forged, body);
    sqlx::query("UPDATE audit_log SET body = $1 WHERE tenant_id = $2 AND seq = 3")
        .bind(&forged)
        .bind(env.a.id.to_string())
        .execute(&mut raw)
        .await
        .unwrap();

    let chain = tampered_chain(&env).await;
    let err = verify(&chain.records, chain.head).unwrap_err();
    assert_eq!((err.position, err.reason), (3, VerifyFailure::Hash));

    // A flipped hash byte is caught too.
    sqlx::query("UPDATE audit_log SET body = $1 WHERE tenant_id = $2 AND seq = 3")
        .bind(&body)
        .bind(env.a.id.to_string())
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(verify(&tampered_chain(&env).await.records, None).is_ok());
    sqlx::raw_sql("UPDATE audit_log SET hash = zeroblob(32) WHERE seq = 4")
        .execute(&mut raw)
        .await
        .unwrap();
    let chain = tampered_chain(&env).await;
    assert_eq!(verify(&chain.records, chain.head).unwrap_err().position, 4);
}

#[tokio::test]
async fn deleting_a_record_or_the_tail_is_found() {
    let env = Env::sqlite().await;
    append_n(&env, 5).await;
    let mut raw = env.raw().await;
    sqlx::raw_sql("DROP TRIGGER audit_log_no_delete")
        .execute(&mut raw)
        .await
        .unwrap();
    sqlx::raw_sql("DELETE FROM audit_log WHERE seq = 5")
        .execute(&mut raw)
        .await
        .unwrap();
    let chain = tampered_chain(&env).await;
    let err = verify(&chain.records, chain.head).unwrap_err();
    assert_eq!((err.position, err.reason), (5, VerifyFailure::Head));

    sqlx::raw_sql("DELETE FROM audit_log WHERE seq = 2")
        .execute(&mut raw)
        .await
        .unwrap();
    let chain = tampered_chain(&env).await;
    let err = verify(&chain.records, chain.head).unwrap_err();
    assert_eq!(err.position, 2);
}

#[tokio::test]
async fn an_append_on_a_read_only_database_fails() {
    let env = Env::sqlite().await;
    append_n(&env, 2).await;
    env.store.close().await;

    let clock: SharedClock = Arc::new(env.clock.clone());
    let ro = Store::open_sqlite_read_only(&env.path, clock)
        .await
        .unwrap();
    let mut tx = ro.begin(TenantScope::pre_auth(env.a.id)).await.unwrap();
    // Reading (for `audit verify`) works…
    let chain = audit::read_chain(&mut tx).await.unwrap();
    assert_eq!(verify(&chain.records, chain.head).unwrap().count, 2);
    // …writing fails, loudly, as "unavailable" (the caller answers 503 and does nothing).
    let err = audit::append_audit(&mut tx, &event(env.a.id, 3))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    drop(tx);

    // A store whose pool is gone fails the same way.
    ro.close().await;
    assert!(
        ro.begin(TenantScope::pre_auth(env.a.id))
            .await
            .unwrap_err()
            .is_unavailable()
    );
}

#[tokio::test]
async fn two_records_swapped_with_raw_sql_are_found() {
    let env = Env::sqlite().await;
    append_n(&env, 5).await;
    let mut raw = env.raw().await;
    sqlx::raw_sql("DROP TRIGGER audit_log_no_update")
        .execute(&mut raw)
        .await
        .unwrap();
    // Swap rows 2 and 4 wholesale (seq numbers move with them, then the keys are swapped back
    // so that the table reads 1,2,3,4,5 with the contents of 1,4,3,2,5).
    for sql in [
        "UPDATE audit_log SET seq = 100 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = 100",
    ] {
        sqlx::raw_sql(sql).execute(&mut raw).await.unwrap();
    }
    let chain = tampered_chain(&env).await;
    let err = verify(&chain.records, chain.head).unwrap_err();
    assert_eq!(err.position, 2, "{err}");
}
