//! Approvals: canonical arguments and hash, single-use decisions, expiry, the four-eyes
//! CHECK, tenant isolation (and RLS on PostgreSQL), listing order and bounds.

use bastion_store::approvals::{self, Decided, NewApproval, Status};
use bastion_store::users;
use bastion_store::{StoreError, TenantTx};
use bastion_types::UserId;
use serde_json::{Value, json};

use crate::{Env, T0, new_user};

fn new<'a>(args: &'a Value, by: UserId) -> NewApproval<'a> {
    NewApproval {
        tool: "issue_refund",
        args,
        requested_by: by,
        reason: "manifest",
        ttl_secs: 3600,
        idempotency_key: Some("idem-1"),
    }
}

async fn second_user(env: &Env) -> UserId {
    let mut tx = env.tx_a().await;
    let u = users::create_user(&mut tx, new_user("carol", &["finance"]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    u.id
}

async fn file(env: &Env, args: &Value) -> approvals::Approval {
    let mut tx = env.tx_a().await;
    let a = approvals::create(&mut tx, &new(args, env.alice.id))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    a
}

async fn decide(env: &Env, id: uuid::Uuid, approve: bool, by: UserId) -> Decided {
    let mut tx: TenantTx = env.tx_a().await;
    let d = approvals::decide(&mut tx, id, approve, by).await.unwrap();
    tx.commit().await.unwrap();
    d
}

#[test]
fn the_hash_is_sha256_of_canonical_json_whatever_the_key_order() {
    let a = json!({"b": 1, "a": {"y": [2, {"d": true, "c": "x"}], "x": null}});
    let b: Value =
        serde_json::from_str(r#"{ "a": {"x": null, "y": [2, {"c": "x", "d": true}]}, "b": 1 }"#)
            .unwrap();
    assert_eq!(
        approvals::canonical_json(&a),
        r#"{"a":{"x":null,"y":[2,{"c":"x","d":true}]},"b":1}"#
    );
    assert_eq!(approvals::args_hash(&a), approvals::args_hash(&b));
    // SHA-256("{}") (FIPS 180-4 test vector style: a known digest).
    assert_eq!(
        approvals::args_hash(&json!({})),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_ne!(
        approvals::args_hash(&json!({"amount": 100})),
        approvals::args_hash(&json!({"amount": 101}))
    );
}

#[tokio::test]
async fn create_get_and_a_single_use_decision() {
    let env = Env::new().await;
    let carol = second_user(&env).await;
    let args = json!({"payment_id": "p1", "amount_minor": 500});
    let a = file(&env, &args).await;
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.created_at, T0);
    assert_eq!(a.expires_at, T0 + 3600);
    assert_eq!(a.args_hash, approvals::args_hash(&args));
    let mut tx = env.tx_a().await;
    let got = approvals::get(&mut tx, a.id).await.unwrap().unwrap();
    drop(tx);
    assert_eq!(got, a);

    // The requester cannot decide it: the database refuses.
    let mut tx = env.tx_a().await;
    let err = approvals::decide(&mut tx, a.id, true, env.alice.id)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    drop(tx);

    let Decided::Done(done) = decide(&env, a.id, true, carol).await else {
        panic!("first decision must succeed")
    };
    assert_eq!(done.status, Status::Approved);
    assert_eq!(done.decided_by, Some(carol));
    assert_eq!(done.decided_at, Some(T0));
    // Used once: a second approval or a rejection changes nothing.
    assert_eq!(
        decide(&env, a.id, true, carol).await,
        Decided::NotPending(Status::Approved)
    );
    assert_eq!(
        decide(&env, a.id, false, carol).await,
        Decided::NotPending(Status::Approved)
    );
    // Executed once, with its result; finishing again does nothing.
    let mut tx = env.tx_a().await;
    assert!(
        approvals::finish(&mut tx, a.id, true, &json!({"ok": 1}))
            .await
            .unwrap()
    );
    assert!(
        !approvals::finish(&mut tx, a.id, false, &json!({}))
            .await
            .unwrap()
    );
    let got = approvals::get(&mut tx, a.id).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(got.status, Status::Executed);
    assert_eq!(got.result, Some(json!({"ok": 1})));
    assert_eq!(got.idempotency_key.as_deref(), Some("idem-1"));
}

#[tokio::test]
async fn an_expired_approval_is_marked_expired_and_cannot_be_decided() {
    let env = Env::new().await;
    let carol = second_user(&env).await;
    let a = file(&env, &json!({"x": 1})).await;
    env.clock.advance(3600);
    assert_eq!(decide(&env, a.id, true, carol).await, Decided::Expired);
    let mut tx = env.tx_a().await;
    assert_eq!(
        approvals::get(&mut tx, a.id).await.unwrap().unwrap().status,
        Status::Expired
    );
    // An expired approval never executes.
    assert!(
        !approvals::finish(&mut tx, a.id, true, &json!({}))
            .await
            .unwrap()
    );
    drop(tx);
    assert_eq!(decide(&env, a.id, true, carol).await, Decided::Expired);
}

#[tokio::test]
async fn another_tenant_neither_sees_nor_decides_an_approval() {
    let env = Env::new().await;
    let a = file(&env, &json!({"x": 1})).await;
    let mut tx = env.tx_b().await;
    assert_eq!(approvals::get(&mut tx, a.id).await.unwrap(), None);
    assert_eq!(
        approvals::decide(&mut tx, a.id, true, env.bob.id)
            .await
            .unwrap(),
        Decided::Missing
    );
    assert!(
        approvals::list(&mut tx, env.bob.id, &["issue_refund"], 100, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // A user of another tenant cannot be named as the requester either.
    let err = approvals::create(&mut tx, &new(&json!({}), env.alice.id))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    drop(tx);
    let mut tx = env.tx_a().await;
    assert_eq!(
        approvals::get(&mut tx, a.id).await.unwrap().unwrap().status,
        Status::Pending
    );
}

#[tokio::test]
async fn list_shows_own_requests_and_decidable_pending_ones_pending_first_bounded() {
    let env = Env::new().await;
    let carol = second_user(&env).await;
    let first = file(&env, &json!({"n": 1})).await;
    env.clock.advance(1);
    let second = file(&env, &json!({"n": 2})).await;
    let Decided::Done(_) = decide(&env, first.id, false, carol).await else {
        panic!("reject")
    };
    let mut tx = env.tx_a().await;
    // Carol may decide issue_refund: she sees the pending one only.
    let ids: Vec<_> = approvals::list(&mut tx, carol, &["issue_refund"], 100, 0)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec![second.id]);
    // Carol deciding other tools: nothing.
    assert!(
        approvals::list(&mut tx, carol, &["other"], 100, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Alice sees both of her requests, pending first.
    let mine: Vec<_> = approvals::list(&mut tx, env.alice.id, &[], 100, 0)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.id, a.status))
        .collect();
    assert_eq!(
        mine,
        vec![(second.id, Status::Pending), (first.id, Status::Rejected)]
    );
    assert_eq!(
        approvals::list(&mut tx, env.alice.id, &[], 1, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    for bad in [0, approvals::LIST_MAX + 1] {
        assert!(matches!(
            approvals::list(&mut tx, env.alice.id, &[], bad, 0).await,
            Err(StoreError::Invalid { .. })
        ));
    }
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let args = json!({"x": 1});
    let cases: Vec<NewApproval<'_>> = vec![
        NewApproval {
            tool: "Bad Tool",
            ..new(&args, env.alice.id)
        },
        NewApproval {
            reason: "",
            ..new(&args, env.alice.id)
        },
        NewApproval {
            reason: "line\nbreak",
            ..new(&args, env.alice.id)
        },
        NewApproval {
            ttl_secs: 0,
            ..new(&args, env.alice.id)
        },
        NewApproval {
            ttl_secs: approvals::TTL_SECS_MAX + 1,
            ..new(&args, env.alice.id)
        },
        NewApproval {
            idempotency_key: Some(""),
            ..new(&args, env.alice.id)
        },
        NewApproval {
            args: &Value::Null,
            ..new(&args, env.alice.id)
        },
    ];
    for c in &cases {
        assert!(
            matches!(
                approvals::create(&mut tx, c).await,
                Err(StoreError::Invalid { .. })
            ),
            "{c:?}"
        );
    }
    let big = json!({"x": "a".repeat(approvals::ARGS_BYTES_MAX)});
    assert!(matches!(
        approvals::create(&mut tx, &new(&big, env.alice.id)).await,
        Err(StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn postgres_rls_hides_and_protects_approvals_of_other_tenants() {
    use sqlx::{Connection, Row};
    let env = Env::postgres().await;
    let a = file(&env, &json!({"x": 1})).await;
    let db = env.pg.as_ref().unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.app_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(env.b.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    // No WHERE clause: still only the transaction's tenant (none of acme's rows).
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM approvals")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let changed = sqlx::query("UPDATE approvals SET status = 'approved'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);
    // Writing a row for acme from globex's transaction is refused by the policy.
    let err = sqlx::query(
        "INSERT INTO approvals (tenant_id, id, tool, args, args_hash, requested_by, reason,
                                status, created_at, expires_at)
         VALUES ($1, $2, 't', '{}', $3, $4, 'r', 'pending', 1, 2)",
    )
    .bind(env.a.id.to_string())
    .bind(uuid::Uuid::new_v4().to_string())
    .bind("0".repeat(64))
    .bind(env.alice.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);
    let mut tx = env.tx_a().await;
    assert_eq!(
        approvals::get(&mut tx, a.id).await.unwrap().unwrap().status,
        Status::Pending
    );
}
