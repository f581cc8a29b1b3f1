//! Property tests: random sequences of captures, refunds, disputes and fees on a few payments,
//! each committed in its own transaction, checked against a model. After every sequence:
//! all postings sum to zero per currency, every balance is the sum of its postings, every
//! entry balances, refunded + disputed ≤ captured for each payment, and the totals are the
//! model's to the minor unit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bastion_ledger::LedgerError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::{Env, eur, eur_minor, r, tenant};

#[derive(Debug, Clone, Copy)]
enum Op {
    Capture(u8, i64),
    Refund(u8, i64),
    Dispute(u8, i64),
    Fee(u8, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3_u8, 1..20_000_i64).prop_map(|(p, a)| Op::Capture(p, a)),
        (0..3_u8, 1..20_000_i64).prop_map(|(p, a)| Op::Refund(p, a)),
        (0..3_u8, 1..5_000_i64).prop_map(|(p, a)| Op::Dispute(p, a)),
        (0..3_u8, 1..500_i64).prop_map(|(p, a)| Op::Fee(p, a)),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct Model {
    captured: i64,
    refunded: i64,
    disputed: i64,
}

impl Model {
    fn left(&self) -> i64 {
        self.captured - self.refunded - self.disputed
    }
}

async fn run_case(env: &Env, n: usize, ops: Vec<Op>) {
    let t = tenant(&env.store, &format!("prop-{n}")).await;
    let mut model: BTreeMap<u8, Model> = BTreeMap::new();
    let mut fees = 0_i64;
    for op in ops {
        let mut tx = env.tx(t).await;
        let (p, res) = match op {
            Op::Capture(p, a) => {
                let res = bastion_ledger::capture(&mut tx, &pay(p), eur_minor(a), json!({})).await;
                res.as_ref().unwrap();
                model.entry(p).or_default().captured += a;
                (p, res)
            }
            Op::Refund(p, a) | Op::Dispute(p, a) => {
                let res = if matches!(op, Op::Refund(..)) {
                    bastion_ledger::refund(&mut tx, &pay(p), eur_minor(a), json!({})).await
                } else {
                    bastion_ledger::dispute(&mut tx, &pay(p), eur_minor(a), json!({})).await
                };
                match (model.get_mut(&p), &res) {
                    (None, Err(LedgerError::UnknownPayment)) => {}
                    (Some(m), Ok(_)) if a <= m.left() => {
                        if matches!(op, Op::Refund(..)) {
                            m.refunded += a;
                        } else {
                            m.disputed += a;
                        }
                    }
                    (Some(m), Err(LedgerError::RefundExceedsCapture { refundable_minor }))
                    | (Some(m), Err(LedgerError::DisputeExceedsCapture { refundable_minor }))
                        if a > m.left() && *refundable_minor == m.left() => {}
                    (m, got) => unreachable!("{op:?} on {m:?} gave {got:?}"),
                }
                (p, res)
            }
            Op::Fee(p, a) => {
                let res = bastion_ledger::fee(&mut tx, &pay(p), eur_minor(a), json!({})).await;
                res.as_ref().unwrap();
                fees += a;
                (p, res)
            }
        };
        let _ = p;
        if res.is_ok() {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }

    let mut tx = env.tx(t).await;
    let c = bastion_ledger::check(&mut tx).await.unwrap();
    assert!(c.holds(), "{c:?}");
    let captured: i64 = model.values().map(|m| m.captured).sum();
    let refunded: i64 = model.values().map(|m| m.refunded).sum();
    let disputed: i64 = model.values().map(|m| m.disputed).sum();
    let totals = bastion_ledger::totals(&mut tx, eur()).await.unwrap();
    assert_eq!(totals.customers_minor, -captured);
    assert_eq!(totals.refunds_minor, refunded);
    assert_eq!(totals.disputes_minor, disputed);
    assert_eq!(totals.fees_minor, fees);
    assert_eq!(
        totals.psp_clearing_minor,
        captured - refunded - disputed - fees
    );
    for (p, m) in &model {
        let pos = bastion_ledger::position(&mut tx, &pay(*p), eur())
            .await
            .unwrap();
        assert_eq!(
            (
                pos.captured_minor,
                pos.refunded_minor,
                pos.disputed_minor,
                pos.refundable_minor
            ),
            (m.captured, m.refunded, m.disputed, m.left())
        );
        assert!(pos.refunded_minor + pos.disputed_minor <= pos.captured_minor);
    }
    tx.rollback().await.unwrap();
}

fn pay(p: u8) -> bastion_ledger::Reference {
    r(&format!("pi_prop_{p}"))
}

#[test]
fn ledger_invariants_hold_for_random_sequences_of_captures_refunds_disputes_and_fees() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(Env::new());
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..24), |ops| {
            let n = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(run_case(&env, n, ops));
            Ok(())
        })
        .unwrap();
}
