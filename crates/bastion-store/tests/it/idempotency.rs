//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header): claim, mismatch, in-flight,
//! resume after a crashed worker, replay, release, retention, tenant isolation, and exactly
//! one winner among concurrent claims on both backends.

use bastion_store::idempotency::{self, Claim, IDEMPOTENCY_RETENTION_SECS, RECOVERY_STARTED};
use bastion_store::{BackendKind, StoreError, TenantScope};
use serde_json::json;

use crate::Env;

const FP: [u8; 32] = [7; 32];
const OTHER_FP: [u8; 32] = [8; 32];
const LEASE: i64 = 30;

#[tokio::test]
async fn a_key_is_claimed_once_then_in_flight_mismatched_resumed_and_replayed() {
    const { assert!(IDEMPOTENCY_RETENTION_SECS >= 86_400) };
    let env = Env::new().await;
    let who = env.alice.id;
    let key = "3f1e2d9c-idem-key";

    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    tx.commit().await.unwrap();

    // A retry while the first request runs: 409; another payload under the key: 422.
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    // The first worker records that it called the PSP, then crashes.
    idempotency::advance(
        &mut tx,
        who,
        key,
        "psp_called",
        &json!({"psp_payment_id": "pi_123"}),
        LEASE,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    env.clock.advance(LEASE - 1);
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        Claim::InFlight,
        "advance renewed the lease"
    );
    drop(tx);
    env.clock.advance(1);
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        Claim::Resume {
            recovery_point: "psp_called".into(),
            recovery_data: json!({"psp_payment_id": "pi_123"}),
        }
    );
    tx.commit().await.unwrap();
    // The resumed request holds a fresh lease: a third retry waits.
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        Claim::InFlight
    );
    idempotency::complete(&mut tx, who, key, 201, r#"{"charged":true}"#)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    let replay = Claim::Completed {
        status: 201,
        body: r#"{"charged":true}"#.into(),
    };
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        replay
    );
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    // Completed is final: no second completion, no advance, no release.
    assert!(matches!(
        idempotency::complete(&mut tx, who, key, 500, "{}").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        idempotency::advance(&mut tx, who, key, "x", &json!({}), LEASE).await,
        Err(StoreError::NotFound)
    ));
    assert!(!idempotency::release(&mut tx, who, key).await.unwrap());
    // Another principal's key of the same name is another key.
    assert_eq!(
        idempotency::claim(&mut tx, env.bob.id, key, &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    tx.commit().await.unwrap();

    // Still replayed just before retention ends, purged and reusable after.
    env.clock.advance(IDEMPOTENCY_RETENTION_SECS - LEASE - 2);
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &FP, LEASE)
            .await
            .unwrap(),
        replay
    );
    assert_eq!(idempotency::purge_expired(&mut tx, 100).await.unwrap(), 0);
    tx.commit().await.unwrap();
    env.clock.advance(LEASE + 2);
    let mut tx = env.tx_a().await;
    assert_eq!(idempotency::purge_expired(&mut tx, 100).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, key, &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn an_expired_completed_key_is_reclaimed_but_an_old_in_flight_key_only_resumes() {
    let env = Env::new().await;
    let who = env.alice.id;
    let mut tx = env.tx_a().await;
    for key in ["done", "stuck"] {
        assert_eq!(
            idempotency::claim(&mut tx, who, key, &FP, LEASE)
                .await
                .unwrap(),
            Claim::New
        );
    }
    idempotency::complete(&mut tx, who, "done", 200, "ok")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    env.clock.advance(IDEMPOTENCY_RETENTION_SECS + 10);
    let mut tx = env.tx_a().await;
    // Without a purge, a completed key past retention is claimed afresh (another payload).
    assert_eq!(
        idempotency::claim(&mut tx, who, "done", &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    // An in-flight key's outcome is unknown: never purged, never reused for another payload.
    assert_eq!(idempotency::purge_expired(&mut tx, 100).await.unwrap(), 0);
    assert_eq!(
        idempotency::claim(&mut tx, who, "stuck", &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    assert_eq!(
        idempotency::claim(&mut tx, who, "stuck", &FP, LEASE)
            .await
            .unwrap(),
        Claim::Resume {
            recovery_point: RECOVERY_STARTED.into(),
            recovery_data: json!({}),
        }
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_released_key_runs_afresh_and_bad_input_is_refused() {
    let env = Env::new().await;
    let who = env.alice.id;
    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, "k", &FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    assert!(idempotency::release(&mut tx, who, "k").await.unwrap());
    assert_eq!(
        idempotency::claim(&mut tx, who, "k", &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    assert!(matches!(
        idempotency::complete(&mut tx, who, "never", 200, "").await,
        Err(StoreError::NotFound)
    ));
    for r in [
        idempotency::claim(&mut tx, who, "", &FP, LEASE).await,
        idempotency::claim(&mut tx, who, &"k".repeat(256), &FP, LEASE).await,
        idempotency::claim(&mut tx, who, "tab\there", &FP, LEASE).await,
        idempotency::claim(&mut tx, who, "k2", &FP[..31], LEASE).await,
        idempotency::claim(&mut tx, who, "k2", &FP, 0).await,
        idempotency::claim(&mut tx, who, "k2", &FP, 3601).await,
    ] {
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    for r in [
        idempotency::complete(&mut tx, who, "k", 99, "").await,
        idempotency::complete(&mut tx, who, "k", 600, "").await,
        idempotency::complete(&mut tx, who, "k", 200, &"x".repeat(256 * 1024 + 1)).await,
        idempotency::advance(&mut tx, who, "k", "Bad-Point", &json!({}), LEASE).await,
        idempotency::advance(&mut tx, who, "k", "p", &json!("x".repeat(16 * 1024)), LEASE).await,
    ] {
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn tenant_b_cannot_see_replay_advance_complete_or_purge_tenant_a_keys() {
    let env = Env::new().await;
    let who = env.alice.id;
    let mut tx = env.tx_a().await;
    idempotency::claim(&mut tx, who, "charge-1", &FP, LEASE)
        .await
        .unwrap();
    idempotency::claim(&mut tx, who, "charge-2", &FP, LEASE)
        .await
        .unwrap();
    idempotency::complete(&mut tx, who, "charge-2", 200, "secret-result")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // B names A's principal and key: nothing of A's is visible or changeable.
    let mut tx = env.tx_b().await;
    assert!(matches!(
        idempotency::advance(&mut tx, who, "charge-1", "psp_called", &json!({}), LEASE).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        idempotency::complete(&mut tx, who, "charge-1", 200, "forged").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !idempotency::release(&mut tx, who, "charge-1")
            .await
            .unwrap()
    );
    // B's own claim of the same names is a different key, not A's replay.
    assert_eq!(
        idempotency::claim(&mut tx, who, "charge-2", &OTHER_FP, LEASE)
            .await
            .unwrap(),
        Claim::New
    );
    idempotency::complete(&mut tx, who, "charge-2", 201, "b")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    env.clock.advance(IDEMPOTENCY_RETENTION_SECS + 1);
    let mut tx = env.tx_b().await;
    assert_eq!(idempotency::purge_expired(&mut tx, 100).await.unwrap(), 1);
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    assert_eq!(
        idempotency::claim(&mut tx, who, "charge-1", &FP, LEASE)
            .await
            .unwrap(),
        Claim::Resume {
            recovery_point: RECOVERY_STARTED.into(),
            recovery_data: json!({}),
        },
        "A's key is untouched by B"
    );
    drop(tx);
    // The all-tenant purge reaches A's expired completed key.
    assert_eq!(
        idempotency::purge_expired_all(&env.store, 100)
            .await
            .unwrap(),
        1
    );
}

/// 100 concurrent claims of one key: exactly one New, the rest InFlight; then, after the
/// lease expired, 20 concurrent retries: exactly one Resume.
async fn concurrent_claims(kind: BackendKind) {
    let env = Env::on(kind).await;
    let tenant = env.a.id;
    let who = env.alice.id;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let store = env.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let c = idempotency::claim(&mut tx, who, "race", &FP, LEASE)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            c
        }));
    }
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    let new = claims.iter().filter(|c| **c == Claim::New).count();
    let in_flight = claims.iter().filter(|c| **c == Claim::InFlight).count();
    assert_eq!((new, in_flight), (1, 99), "{kind:?}");

    env.clock.advance(LEASE);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = env.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let c = idempotency::claim(&mut tx, who, "race", &FP, LEASE)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            c
        }));
    }
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    let resumed = claims
        .iter()
        .filter(|c| matches!(c, Claim::Resume { .. }))
        .count();
    let in_flight = claims.iter().filter(|c| **c == Claim::InFlight).count();
    assert_eq!((resumed, in_flight), (1, 19), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_claims_make_exactly_one_new_on_sqlite() {
    concurrent_claims(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_claims_make_exactly_one_new_on_postgres() {
    concurrent_claims(BackendKind::Postgres).await;
}
