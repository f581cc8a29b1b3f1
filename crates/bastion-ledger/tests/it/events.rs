//! The money events through the domain API: refunds, disputes, fees, payouts, reversals,
//! currency mismatches, limits, and tenant isolation.

use bastion_ledger::{LedgerError, Money, chart};
use bastion_store::StoreError;
use bastion_store::ledger::{self, NewEntry, Refusal};
use serde_json::json;

use crate::{Env, eur, eur_minor, r, usd};

#[tokio::test]
async fn a_payment_lifecycle_balances_at_every_step() {
    let env = Env::new().await;
    let p = r("pi_life");
    let mut tx = env.tx_a().await;
    let cap = bastion_ledger::capture(&mut tx, &p, eur_minor(10_000), json!({"psp": "stripe"}))
        .await
        .unwrap();
    bastion_ledger::fee(&mut tx, &p, eur_minor(320), json!({}))
        .await
        .unwrap();
    let rf = bastion_ledger::refund(&mut tx, &p, eur_minor(2_500), json!({}))
        .await
        .unwrap();
    let dp = bastion_ledger::dispute(&mut tx, &p, eur_minor(5_000), json!({}))
        .await
        .unwrap();
    // Disputes and refunds share what is left: 10,000 − 2,500 − 5,000 = 2,500.
    let err = bastion_ledger::dispute(&mut tx, &p, eur_minor(2_501), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::DisputeExceedsCapture {
                refundable_minor: 2_500
            }
        ),
        "{err:?}"
    );
    bastion_ledger::payout(&mut tx, &r("po_1"), eur_minor(1_000), json!({}))
        .await
        .unwrap();
    // The dispute is won: its reversal gives the money back and frees it for refunds.
    let won = bastion_ledger::reverse(&mut tx, dp, "dispute won")
        .await
        .unwrap();
    assert!(matches!(
        bastion_ledger::reverse(&mut tx, dp, "again").await,
        Err(LedgerError::AlreadyReversed)
    ));
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    let pos = bastion_ledger::position(&mut tx, &p, eur()).await.unwrap();
    assert_eq!(pos.captured_minor, 10_000);
    assert_eq!(pos.refunded_minor, 2_500);
    assert_eq!(pos.disputed_minor, 0);
    assert_eq!(pos.refundable_minor, 7_500);
    let t = bastion_ledger::totals(&mut tx, eur()).await.unwrap();
    assert_eq!(t.customers_minor, -10_000);
    assert_eq!(t.fees_minor, 320);
    assert_eq!(t.refunds_minor, 2_500);
    assert_eq!(t.disputes_minor, 0);
    assert_eq!(t.payouts_minor, 1_000);
    assert_eq!(t.psp_clearing_minor, 10_000 - 320 - 2_500 - 1_000);
    assert_eq!(
        t.customers_minor
            + t.psp_clearing_minor
            + t.fees_minor
            + t.refunds_minor
            + t.disputes_minor
            + t.payouts_minor,
        0
    );
    let entries = ledger::entries_for_reference(&mut tx, p.as_str())
        .await
        .unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    for k in ["capture", "fee", "refund", "dispute", "reversal"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    let rev = entries.iter().find(|e| e.id == won).unwrap();
    assert_eq!(rev.reverses, Some(dp));
    assert_eq!(rev.detail, json!({"reason": "dispute won"}));
    for e in &entries {
        assert_eq!(e.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
        assert!(e.postings.len() >= 2);
    }
    assert!(entries.iter().any(|e| e.id == cap) && entries.iter().any(|e| e.id == rf));
    assert!(bastion_ledger::check(&mut tx).await.unwrap().holds());
}

#[tokio::test]
async fn reversing_a_capture_that_was_partly_refunded_is_refused() {
    let env = Env::new().await;
    let p = r("pi_rev");
    let mut tx = env.tx_a().await;
    let cap = bastion_ledger::capture(&mut tx, &p, eur_minor(1_000), json!({}))
        .await
        .unwrap();
    bastion_ledger::refund(&mut tx, &p, eur_minor(1), json!({}))
        .await
        .unwrap();
    let err = bastion_ledger::reverse(&mut tx, cap, "wrong amount")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Overdraft { .. }), "{err:?}");
    let unknown = bastion_store::ledger::EntryId::new_random();
    assert!(matches!(
        bastion_ledger::reverse(&mut tx, unknown, "x").await,
        Err(LedgerError::UnknownEntry)
    ));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn currencies_amounts_and_references_are_checked() {
    let env = Env::new().await;
    let p = r("pi_cur");
    let mut tx = env.tx_a().await;
    bastion_ledger::capture(&mut tx, &p, eur_minor(500), json!({}))
        .await
        .unwrap();
    let in_usd = Money {
        minor: 100,
        currency: usd(),
    };
    assert!(matches!(
        bastion_ledger::refund(&mut tx, &p, in_usd, json!({})).await,
        Err(LedgerError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        bastion_ledger::capture(&mut tx, &p, in_usd, json!({})).await,
        Err(LedgerError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        bastion_ledger::refund(&mut tx, &r("pi_never"), eur_minor(1), json!({})).await,
        Err(LedgerError::UnknownPayment)
    ));
    for bad in [0, -5, bastion_ledger::AMOUNT_MINOR_MAX + 1] {
        assert!(matches!(
            bastion_ledger::capture(&mut tx, &p, eur_minor(bad), json!({})).await,
            Err(LedgerError::Amount)
        ));
    }
    for bad in ["", "a b", "pi:x", &"x".repeat(101)] {
        assert!(matches!(
            bastion_ledger::Reference::parse(bad),
            Err(LedgerError::Reference)
        ));
    }
    // Store limits: too many postings, too large a detail, a zero posting.
    let a = ledger::account(&mut tx, "x", eur(), true).await.unwrap();
    let b = ledger::account(&mut tx, "y", eur(), true).await.unwrap();
    let mut many = vec![(a.id, 1); 9];
    many.extend(vec![(b.id, -1); 9]);
    for (postings, detail) in [
        (many, json!({})),
        (vec![(a.id, 1), (b.id, -1)], json!({"d": "x".repeat(5000)})),
        (vec![(a.id, 0), (b.id, 0)], json!({})),
        (vec![(a.id, 1)], json!({})),
    ] {
        let err = ledger::post_entry(
            &mut tx,
            NewEntry {
                kind: "t".into(),
                reference: "r".into(),
                reverses: None,
                detail,
                postings,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
    // An unbalanced entry and one mixing currencies are refused before any write.
    let u = ledger::account(&mut tx, "z", usd(), true).await.unwrap();
    for postings in [vec![(a.id, 5), (b.id, -4)], vec![(a.id, 5), (u.id, -5)]] {
        let got = ledger::post_entry(
            &mut tx,
            NewEntry {
                kind: "t".into(),
                reference: "r".into(),
                reverses: None,
                detail: json!({}),
                postings,
            },
        )
        .await
        .unwrap();
        assert!(matches!(got, Err(Refusal::Unbalanced { .. })), "{got:?}");
    }
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    assert!(bastion_ledger::check(&mut tx).await.unwrap().holds());
}

#[tokio::test]
async fn accounts_are_get_or_create_and_keep_their_overdraft_rule() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let one = ledger::account(&mut tx, "psp_clearing", eur(), true)
        .await
        .unwrap();
    let two = ledger::account(&mut tx, "psp_clearing", eur(), true)
        .await
        .unwrap();
    assert_eq!(one, two);
    assert!(matches!(
        ledger::account(&mut tx, "psp_clearing", eur(), false).await,
        Err(StoreError::Invalid { .. })
    ));
    let other = ledger::account(&mut tx, "psp_clearing", usd(), true)
        .await
        .unwrap();
    assert_ne!(one.id, other.id);
    assert_eq!(
        ledger::accounts_with_code(&mut tx, "psp_clearing")
            .await
            .unwrap()
            .len(),
        2
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn tenant_a_cannot_post_to_or_read_tenant_b_accounts() {
    let env = Env::new().await;
    let p = r("pi_b");
    let mut tx = env.tx_b().await;
    bastion_ledger::capture(&mut tx, &p, eur_minor(700), json!({}))
        .await
        .unwrap();
    let b_clearing = ledger::account_by_code(&mut tx, chart::PSP_CLEARING, eur())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    // Tenant A does not see B's payment or accounts.
    assert!(matches!(
        bastion_ledger::refund(&mut tx, &p, eur_minor(1), json!({})).await,
        Err(LedgerError::UnknownPayment)
    ));
    assert!(matches!(
        ledger::account_balance(&mut tx, b_clearing.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        ledger::entries_for_reference(&mut tx, p.as_str())
            .await
            .unwrap()
            .is_empty()
    );
    // Naming B's account id in an entry of A: refused, nothing written.
    let mine = ledger::account(&mut tx, "mine", eur(), true).await.unwrap();
    let got = ledger::post_entry(
        &mut tx,
        NewEntry {
            kind: "steal".into(),
            reference: "x".into(),
            reverses: None,
            detail: json!({}),
            postings: vec![(mine.id, -700), (b_clearing.id, 700)],
        },
    )
    .await
    .unwrap();
    assert_eq!(got, Err(Refusal::UnknownAccount));
    tx.commit().await.unwrap();

    let mut tx = env.tx_b().await;
    assert_eq!(
        ledger::account_balance(&mut tx, b_clearing.id)
            .await
            .unwrap(),
        eur_minor(700)
    );
    assert!(bastion_ledger::check(&mut tx).await.unwrap().holds());
}
