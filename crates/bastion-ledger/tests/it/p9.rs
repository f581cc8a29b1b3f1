//! P9: 1,000 postings of amounts like 0.10 + 0.20 — every entry sums to exactly zero and the
//! totals are exact, because amounts are integer minor units (runmyaccounts#649 summed float
//! cents).

use bastion_ledger::{Money, chart};
use bastion_store::ledger::{self, NewEntry};
use serde_json::json;

use crate::{Env, eur, eur_minor, r};

#[tokio::test]
async fn p9_a_thousand_postings_of_ten_and_twenty_cents_sum_to_exactly_zero() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let src = ledger::account(&mut tx, "source", eur(), true)
        .await
        .unwrap();
    let ten = ledger::account(&mut tx, "ten", eur(), false).await.unwrap();
    let twenty = ledger::account(&mut tx, "twenty", eur(), false)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // 250 entries × 4 postings = 1,000 postings: 0.10 + 0.20 + 0.30 out of 0.60.
    let mut postings = 0;
    let mut tx = env.tx_a().await;
    for i in 0..250 {
        let id = ledger::post_entry(
            &mut tx,
            NewEntry {
                kind: "transfer".into(),
                reference: format!("p9-{i}"),
                reverses: None,
                detail: json!({}),
                postings: vec![
                    (ten.id, 10),
                    (twenty.id, 20),
                    (twenty.id, 30),
                    (src.id, -60),
                ],
            },
        )
        .await
        .unwrap()
        .unwrap();
        let e = ledger::entry(&mut tx, id).await.unwrap().unwrap();
        assert_eq!(e.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
        postings += e.postings.len();
    }
    tx.commit().await.unwrap();
    assert_eq!(postings, 1_000);

    let mut tx = env.tx_a().await;
    let c = ledger::check(&mut tx).await.unwrap();
    assert!(c.holds(), "{c:?}");
    assert_eq!(c.totals, vec![(eur(), 0)]);
    assert_eq!(
        ledger::account_balance(&mut tx, ten.id).await.unwrap(),
        eur_minor(2_500)
    );
    assert_eq!(
        ledger::account_balance(&mut tx, twenty.id).await.unwrap(),
        eur_minor(12_500)
    );
    assert_eq!(
        ledger::account_balance(&mut tx, src.id).await.unwrap(),
        eur_minor(-15_000)
    );

    // The same sums in binary floating point are not exact: the bug integer minor units avoid.
    let float: f64 = (0..250).map(|_| 0.10_f64 + 0.20).sum();
    assert_ne!(float, 75.0);
}

#[tokio::test]
async fn p9_five_hundred_ten_and_twenty_cent_captures_and_fees_reconcile_exactly() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    for i in 0..250 {
        let p = r(&format!("pi_{i}"));
        let amount = if i % 2 == 0 { 10 } else { 20 };
        bastion_ledger::capture(&mut tx, &p, eur_minor(amount), json!({}))
            .await
            .unwrap();
        bastion_ledger::fee(&mut tx, &p, eur_minor(1), json!({}))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    let t = bastion_ledger::totals(&mut tx, eur()).await.unwrap();
    assert_eq!(t.customers_minor, -3_750);
    assert_eq!(t.fees_minor, 250);
    assert_eq!(t.psp_clearing_minor, 3_500);
    let c = bastion_ledger::check(&mut tx).await.unwrap();
    assert!(c.holds(), "{c:?}");
    let refundable = ledger::account_by_code(&mut tx, &chart::refundable_code(&r("pi_1")), eur())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        refundable.balance(),
        Money {
            minor: 20,
            currency: eur()
        }
    );
}
