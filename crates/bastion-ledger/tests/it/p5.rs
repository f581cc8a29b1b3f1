//! P5: a capture of 100.00 and two concurrent refunds of 60.00 — exactly one succeeds, and
//! refunded never exceeds captured (hyperswitch#13182), on SQLite and on PostgreSQL.

use std::sync::Arc;

use bastion_ledger::{LedgerError, Reference};
use bastion_store::BackendKind;
use serde_json::json;

use crate::{Env, eur, eur_minor, r};

/// Rounds of the race (each on its own payment), to give the interleavings a chance.
const ROUNDS: usize = 8;

async fn race(env: Arc<Env>) {
    let pg = env.store.kind() == BackendKind::Postgres;
    for round in 0..ROUNDS {
        let payment = r(&format!("pi_p5_{round}"));
        let mut tx = env.tx_a().await;
        bastion_ledger::capture(&mut tx, &payment, eur_minor(10_000), json!({}))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // On PostgreSQL both transactions are open before either refunds (a barrier); on
        // SQLite the second `BEGIN IMMEDIATE` waits for the first commit by design.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let env = Arc::clone(&env);
            let payment: Reference = payment.clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                let mut tx = env.tx_a().await;
                if pg {
                    barrier.wait().await;
                }
                let res =
                    bastion_ledger::refund(&mut tx, &payment, eur_minor(6_000), json!({})).await;
                if res.is_ok() {
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
                res
            }));
        }
        let mut ok = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(LedgerError::RefundExceedsCapture { refundable_minor }) => {
                    assert_eq!(refundable_minor, 4_000);
                    refused += 1;
                }
                Err(e) => unreachable!("unexpected refund error: {e:?}"),
            }
        }
        assert_eq!((ok, refused), (1, 1), "round {round}");
        let mut tx = env.tx_a().await;
        let pos = bastion_ledger::position(&mut tx, &payment, eur())
            .await
            .unwrap();
        assert_eq!(pos.captured_minor, 10_000);
        assert_eq!(pos.refunded_minor, 6_000);
        assert_eq!(pos.refundable_minor, 4_000);
        let c = bastion_ledger::check(&mut tx).await.unwrap();
        assert!(c.holds(), "{c:?}");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_two_concurrent_refunds_of_60_on_a_capture_of_100_exactly_one_succeeds() {
    race(Arc::new(Env::new().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_on_postgresql_row_locks_let_exactly_one_refund_through() {
    race(Arc::new(Env::postgres().await)).await;
}

#[tokio::test]
async fn p5_a_refund_up_to_the_capture_passes_and_one_cent_more_is_refused() {
    let env = Env::new().await;
    let p = r("pi_exact");
    let mut tx = env.tx_a().await;
    bastion_ledger::capture(&mut tx, &p, eur_minor(10_000), json!({}))
        .await
        .unwrap();
    bastion_ledger::refund(&mut tx, &p, eur_minor(6_000), json!({}))
        .await
        .unwrap();
    bastion_ledger::refund(&mut tx, &p, eur_minor(4_000), json!({}))
        .await
        .unwrap();
    // The transaction is still usable after a refusal (nothing was written).
    let err = bastion_ledger::refund(&mut tx, &p, eur_minor(1), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RefundExceedsCapture {
                refundable_minor: 0
            }
        ),
        "{err:?}"
    );
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    let pos = bastion_ledger::position(&mut tx, &p, eur()).await.unwrap();
    assert_eq!((pos.captured_minor, pos.refunded_minor), (10_000, 10_000));
}
