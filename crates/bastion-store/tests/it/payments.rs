//! Payments: recording, routes for webhooks, forward-only status (P6), refunds that never
//! exceed the capture even when concurrent (P5), velocity sums, and tenant isolation —
//! through the store on both backends, and as raw SQL of the application role on PostgreSQL.

use bastion_store::payments::{self, NewPayment, Payment, RefundOutcome, StatusUpdate};
use bastion_store::velocity::{self, WindowTotals};
use bastion_store::{BackendKind, StoreError, TenantScope, TenantTx, records};
use bastion_types::{Currency, Money, RecordId, UserId};
use serde_json::json;
use sqlx::{Connection, PgConnection, Row};

use crate::Env;

fn eur(minor: i64) -> Money {
    Money {
        minor,
        currency: Currency::parse("EUR").unwrap(),
    }
}

async fn quote(tx: &mut TenantTx, owner: UserId) -> RecordId {
    records::insert_record(tx, "quote", owner, json!({"title": "q"}), &[])
        .await
        .unwrap()
        .id
}

fn new_payment<'a>(record: RecordId, customer: UserId, psp_id: &'a str) -> NewPayment<'a> {
    NewPayment {
        record_id: record,
        psp: "stripe",
        psp_payment_id: psp_id,
        amount: eur(10_000),
        status: "requires_payment_method",
        status_version: 10,
        customer_id: customer,
        card_fingerprint: Some("fp_abc"),
        next_action: None,
    }
}

/// A quote and a payment of 100.00 EUR in tenant A, and a quote in tenant B.
async fn setup(env: &Env) -> (Payment, RecordId) {
    let mut tx = env.tx_a().await;
    let q = quote(&mut tx, env.alice.id).await;
    let p = payments::insert(&mut tx, &new_payment(q, env.alice.id, "pi_a1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    let qb = quote(&mut tx, env.bob.id).await;
    tx.commit().await.unwrap();
    (p, qb)
}

#[tokio::test]
async fn a_payment_is_recorded_found_by_psp_id_and_routed_for_webhooks() {
    let env = Env::new().await;
    let (p, _) = setup(&env).await;
    assert_eq!(p.amount, eur(10_000));
    assert_eq!((p.captured_minor, p.refunded_minor), (0, 0));
    assert_eq!(p.status, "requires_payment_method");
    assert_eq!(p.card_fingerprint.as_deref(), Some("fp_abc"));

    let mut tx = env.tx_a().await;
    assert_eq!(payments::get(&mut tx, p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(
        payments::by_psp_id(&mut tx, "stripe", "pi_a1")
            .await
            .unwrap(),
        Some(p.clone())
    );
    let mut second = new_payment(p.record_id, env.alice.id, "pi_a2");
    let action = json!({"type": "redirect_to_url", "redirect_to_url": {"url": "https://x"}});
    second.next_action = Some(&action);
    second.card_fingerprint = None;
    env.clock.advance(1);
    let p2 = payments::insert(&mut tx, &second).await.unwrap();
    assert_eq!(p2.next_action, Some(action.clone()));
    let listed = payments::list_for_record(&mut tx, p.record_id)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![p.id, p2.id]
    );
    tx.commit().await.unwrap();

    let mut sys = env.store.system().await.unwrap();
    assert_eq!(
        payments::route_tenant(&mut sys, "stripe", "pi_a2")
            .await
            .unwrap(),
        Some(env.a.id)
    );
    assert_eq!(
        payments::route_tenant(&mut sys, "stripe", "pi_unknown")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        payments::route_tenant(&mut sys, "adyen", "pi_a2")
            .await
            .unwrap(),
        None
    );
    drop(sys);

    // The same PSP object twice is refused.
    let mut tx = env.tx_a().await;
    assert!(matches!(
        payments::insert(&mut tx, &new_payment(p.record_id, env.alice.id, "pi_a1")).await,
        Err(StoreError::Duplicate)
    ));
    drop(tx);
    let mut tx = env.tx_a().await;
    let bad = [
        NewPayment {
            amount: eur(0),
            ..new_payment(p.record_id, env.alice.id, "pi_x")
        },
        NewPayment {
            status: "Succeeded",
            ..new_payment(p.record_id, env.alice.id, "pi_x")
        },
        NewPayment {
            psp: "Stripe",
            ..new_payment(p.record_id, env.alice.id, "pi_x")
        },
        new_payment(p.record_id, env.alice.id, "pi x"),
        new_payment(p.record_id, env.alice.id, ""),
    ];
    for b in &bad {
        let r = payments::insert(&mut tx, b).await;
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
}

#[tokio::test]
async fn p6_an_older_event_never_overwrites_a_newer_status() {
    let env = Env::new().await;
    let (p, _) = setup(&env).await;
    let mut tx = env.tx_a().await;
    let action = json!({"type": "use_stripe_sdk"});
    assert_eq!(
        payments::apply_status_with_action(&mut tx, p.id, "requires_action", 15, Some(&action))
            .await
            .unwrap(),
        StatusUpdate::Applied
    );
    assert_eq!(
        payments::get(&mut tx, p.id)
            .await
            .unwrap()
            .unwrap()
            .next_action,
        Some(action)
    );
    // succeeded (t=30) arrives before processing (t=20).
    assert_eq!(
        payments::apply_status(&mut tx, p.id, "succeeded", 30)
            .await
            .unwrap(),
        StatusUpdate::Applied
    );
    assert_eq!(
        payments::apply_status(&mut tx, p.id, "processing", 20)
            .await
            .unwrap(),
        StatusUpdate::Stale
    );
    assert_eq!(
        payments::apply_status(&mut tx, p.id, "processing", 30)
            .await
            .unwrap(),
        StatusUpdate::Stale,
        "an equal version is not newer"
    );
    let now = payments::get(&mut tx, p.id).await.unwrap().unwrap();
    assert_eq!((now.status.as_str(), now.status_version), ("succeeded", 30));
    assert_eq!(
        now.next_action, None,
        "the action belonged to the older status"
    );
    let unknown: payments::PaymentId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
    assert!(matches!(
        payments::apply_status(&mut tx, unknown, "succeeded", 99).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn refunds_never_exceed_the_capture_and_a_capture_never_shrinks() {
    let env = Env::new().await;
    let (p, _) = setup(&env).await;
    let mut tx = env.tx_a().await;
    assert_eq!(
        payments::add_refund(&mut tx, p.id, 1).await.unwrap(),
        RefundOutcome::Exceeds {
            refundable_minor: 0
        },
        "nothing captured yet"
    );
    assert_eq!(
        payments::record_capture(&mut tx, p.id, 10_000)
            .await
            .unwrap(),
        10_000
    );
    assert_eq!(
        payments::record_capture(&mut tx, p.id, 4_000)
            .await
            .unwrap(),
        10_000,
        "a late, smaller capture report is ignored"
    );
    assert!(matches!(
        payments::record_capture(&mut tx, p.id, 10_001).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(
        payments::add_refund(&mut tx, p.id, 6_000).await.unwrap(),
        RefundOutcome::Applied {
            refunded_minor: 6_000
        }
    );
    assert_eq!(
        payments::add_refund(&mut tx, p.id, 6_000).await.unwrap(),
        RefundOutcome::Exceeds {
            refundable_minor: 4_000
        }
    );
    assert_eq!(
        payments::release_refund(&mut tx, p.id, 6_000)
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        payments::release_refund(&mut tx, p.id, 1).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(
        payments::add_refund(&mut tx, p.id, 10_000).await.unwrap(),
        RefundOutcome::Applied {
            refunded_minor: 10_000
        }
    );
    for amount in [0, -5] {
        assert!(matches!(
            payments::add_refund(&mut tx, p.id, amount).await,
            Err(StoreError::Invalid { .. })
        ));
    }
    tx.commit().await.unwrap();
}

/// P5: a capture of 100.00 and two (then ten) concurrent refunds of 60.00: exactly one is
/// applied, and refunded never exceeds captured.
async fn concurrent_refunds(kind: BackendKind) {
    let env = Env::on(kind).await;
    let (p, _) = setup(&env).await;
    let mut tx = env.tx_a().await;
    payments::record_capture(&mut tx, p.id, 10_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for round in [2, 10] {
        let mut tasks = Vec::new();
        for _ in 0..round {
            let store = env.store.clone();
            let tenant = env.a.id;
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
                let out = payments::add_refund(&mut tx, p.id, 6_000).await.unwrap();
                tx.commit().await.unwrap();
                out
            }));
        }
        let mut applied = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), RefundOutcome::Applied { .. }) {
                applied += 1;
            }
        }
        assert_eq!(applied, 1, "{kind:?}, {round} concurrent refunds");
        let mut tx = env.tx_a().await;
        let now = payments::get(&mut tx, p.id).await.unwrap().unwrap();
        assert_eq!(now.refunded_minor, 6_000);
        payments::release_refund(&mut tx, p.id, 6_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p5_concurrent_refunds_exceeding_the_capture_one_fails_on_sqlite() {
    concurrent_refunds(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p5_concurrent_refunds_exceeding_the_capture_one_fails_on_postgres() {
    concurrent_refunds(BackendKind::Postgres).await;
}

#[tokio::test]
async fn tenant_b_cannot_see_update_refund_or_hijack_tenant_a_payments() {
    let env = Env::new().await;
    let (p, qb) = setup(&env).await;
    let mut tx = env.tx_a().await;
    payments::record_capture(&mut tx, p.id, 10_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_b().await;
    assert_eq!(payments::get(&mut tx, p.id).await.unwrap(), None);
    assert_eq!(
        payments::by_psp_id(&mut tx, "stripe", "pi_a1")
            .await
            .unwrap(),
        None
    );
    assert!(
        payments::list_for_record(&mut tx, p.record_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        payments::apply_status(&mut tx, p.id, "canceled", 1_000).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        payments::add_refund(&mut tx, p.id, 100).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        payments::record_capture(&mut tx, p.id, 1).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        payments::release_refund(&mut tx, p.id, 1).await,
        Err(StoreError::NotFound)
    ));
    tx.commit().await.unwrap();
    // B cannot attach a payment to A's quote, bill A's user, or claim A's PSP object.
    for (record, customer, psp_id) in [
        (p.record_id, env.bob.id, "pi_b1"),
        (qb, env.alice.id, "pi_b2"),
    ] {
        let mut tx = env.tx_b().await;
        let r = payments::insert(&mut tx, &new_payment(record, customer, psp_id)).await;
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    let mut tx = env.tx_b().await;
    let r = payments::insert(&mut tx, &new_payment(qb, env.bob.id, "pi_a1")).await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");
    drop(tx);

    let mut tx = env.tx_a().await;
    let a = payments::get(&mut tx, p.id).await.unwrap().unwrap();
    assert_eq!(
        (a.status.as_str(), a.refunded_minor, a.captured_minor),
        ("requires_payment_method", 0, 10_000)
    );
    drop(tx);
    let mut sys = env.store.system().await.unwrap();
    assert_eq!(
        payments::route_tenant(&mut sys, "stripe", "pi_a1")
            .await
            .unwrap(),
        Some(env.a.id)
    );
}

#[tokio::test]
async fn velocity_sums_attempts_per_subject_in_a_sliding_window_per_tenant() {
    let env = Env::new().await;
    let card = "card:fp_abc";
    let mut tx = env.tx_a().await;
    assert_eq!(
        velocity::record(&mut tx, card, eur(5_000), 3600)
            .await
            .unwrap(),
        WindowTotals {
            count: 1,
            sum_minor: 5_000
        }
    );
    tx.commit().await.unwrap();
    env.clock.advance(1800);
    let mut tx = env.tx_a().await;
    assert_eq!(
        velocity::record(&mut tx, card, eur(2_500), 3600)
            .await
            .unwrap(),
        WindowTotals {
            count: 2,
            sum_minor: 7_500
        }
    );
    let usd = Money {
        minor: 999,
        currency: Currency::parse("USD").unwrap(),
    };
    assert_eq!(
        velocity::record(&mut tx, card, usd, 3600).await.unwrap(),
        WindowTotals {
            count: 3,
            sum_minor: 999
        },
        "amounts are summed per currency, attempts counted across"
    );
    tx.commit().await.unwrap();
    // The first attempt slides out of the hour.
    env.clock.advance(1800);
    let mut tx = env.tx_a().await;
    assert_eq!(
        velocity::totals(&mut tx, card, eur(0).currency, 3600)
            .await
            .unwrap(),
        WindowTotals {
            count: 2,
            sum_minor: 2_500
        }
    );
    assert_eq!(
        velocity::totals(&mut tx, "customer:other", eur(0).currency, 3600)
            .await
            .unwrap(),
        WindowTotals {
            count: 0,
            sum_minor: 0
        }
    );
    assert_eq!(
        velocity::purge_before(&mut tx, env.clock_now() - 3600 + 1, 100)
            .await
            .unwrap(),
        1
    );
    for r in [
        velocity::record(&mut tx, "", eur(1), 60).await,
        velocity::record(&mut tx, "card:x y", eur(1), 60).await,
        velocity::record(&mut tx, card, eur(1), 0).await,
        velocity::record(&mut tx, card, eur(-1), 60).await,
    ] {
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    tx.commit().await.unwrap();
    // Tenant B's counters for the same card are its own.
    let mut tx = env.tx_b().await;
    assert_eq!(
        velocity::totals(&mut tx, card, eur(0).currency, 86_400)
            .await
            .unwrap(),
        WindowTotals {
            count: 0,
            sum_minor: 0
        }
    );
    assert_eq!(
        velocity::purge_before(&mut tx, env.clock_now() + 1, 100)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_velocity_records_each_see_the_others_on_postgres() {
    let env = Env::postgres().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = env.store.clone();
        let tenant = env.a.id;
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let t = velocity::record(&mut tx, "card:fp", eur(100), 3600)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            t.count
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=20).collect::<Vec<i64>>(),
        "serialised per subject"
    );
}

async fn set_tenant(conn: &mut PgConnection, tenant: &str) {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *conn)
        .await
        .unwrap();
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn as_the_app_role_unfiltered_sql_sees_only_the_transaction_tenant_payment_rows() {
    let env = Env::postgres().await;
    let (_, qb) = setup(&env).await;
    let mut tx = env.tx_b().await;
    payments::insert(&mut tx, &new_payment(qb, env.bob.id, "pi_b1"))
        .await
        .unwrap();
    bastion_store::idempotency::claim(&mut tx, env.bob.id, "k", &[1; 32], 30)
        .await
        .unwrap();
    velocity::record(&mut tx, "card:fp_abc", eur(1), 60)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    bastion_store::idempotency::claim(&mut tx, env.alice.id, "k", &[1; 32], 30)
        .await
        .unwrap();
    velocity::record(&mut tx, "card:fp_abc", eur(1), 60)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let url = &env.pg.as_ref().unwrap().app_url;
    let mut conn = PgConnection::connect(url).await.unwrap();
    for (tenant, psp_id) in [(env.a.id, "pi_a1"), (env.b.id, "pi_b1")] {
        let t = tenant.to_string();
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, &t).await;
        let rows = sqlx::query("SELECT * FROM payments")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<String, _>("tenant_id"), t);
        assert_eq!(rows[0].get::<String, _>("psp_payment_id"), psp_id);
        for table in ["idempotency_keys", "velocity_events", "payment_routes"] {
            let seen: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT tenant_id FROM {table}"
            )))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            assert_eq!(seen, vec![t.clone()], "{table}");
        }
        // Unfiltered writes touch only this tenant's rows.
        let done = sqlx::query("UPDATE payments SET refunded_minor = 0, status = 'x'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        tx.rollback().await.unwrap();
    }
    // Writing a row into another tenant is refused by the policy.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, &env.a.id.to_string()).await;
    let err = sqlx::query(
        "INSERT INTO payment_routes (psp, psp_payment_id, tenant_id, created_at)
         VALUES ('stripe', 'pi_evil', $1, 0)",
    )
    .bind(env.b.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    tx.rollback().await.unwrap();
    // The system transaction may look routes up across tenants, but not write them, and sees
    // no tenant's payments.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, "00000000-0000-0000-0000-000000000000").await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_routes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let err = sqlx::query(
        "INSERT INTO payment_routes (psp, psp_payment_id, tenant_id, created_at)
         VALUES ('stripe', 'pi_evil', $1, 0)",
    )
    .bind(env.a.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    tx.rollback().await.unwrap();
    // Money history is never deleted by the application role; routes never change.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, &env.a.id.to_string()).await;
    for sql in [
        "DELETE FROM payments",
        "UPDATE payment_routes SET tenant_id = tenant_id",
        "DELETE FROM payment_routes",
    ] {
        let mut sp = tx.begin().await.unwrap();
        let err = sqlx::raw_sql(sql).execute(&mut *sp).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        sp.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();
    // And the isolation self-check passes with the new tables.
    assert!(env.store.isolation_findings().await.unwrap().is_empty());
}

#[tokio::test]
async fn migration_3_applies_on_a_database_created_before_it() {
    let env = Env::sqlite().await;
    let (p, _) = setup(&env).await;
    env.store.close().await;
    // Roll the file back to a pre-payments schema with data in it.
    let mut raw = env.raw().await;
    sqlx::raw_sql(
        "DROP TABLE idempotency_keys; DROP TABLE webhook_inbox; DROP TABLE jobs;
         DROP TABLE payments; DROP TABLE payment_routes; DROP TABLE velocity_events;
         DELETE FROM schema_migrations WHERE version = 3;",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    drop(raw);
    let clock: bastion_types::SharedClock = std::sync::Arc::new(env.clock.clone());
    let store = bastion_store::Store::open_sqlite(&env.path, clock)
        .await
        .unwrap();
    let mut tx = store.begin(TenantScope::pre_auth(env.a.id)).await.unwrap();
    assert_eq!(payments::get(&mut tx, p.id).await.unwrap(), None);
    payments::insert(&mut tx, &new_payment(p.record_id, env.alice.id, "pi_a1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
