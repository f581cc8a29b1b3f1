//! Daily reconciliation against the real psp-sandbox over HTTP (StripePsp adapter), on the
//! backend `BASTION_TEST_DATABASE` names; case P10 (major-unit report vs minor-unit ledger).

use std::sync::Arc;

use bastion_ledger::reconcile::{
    self, Day, DriftKind, LedgerLine, PspLine, PspSide, PspSource, Reconciliation, parse_major,
    report_from, report_lines,
};
use bastion_ledger::{Currency, EntryId, Money};
use bastion_payments::psp::{
    ApiKey, CreatePaymentIntent, CreateRefund, IdempotencyKey, PaymentMethodToken, Psp,
    StripeConfig, StripePsp,
};
use bastion_psp_sandbox::{FeeSchedule, Sandbox, SandboxConfig};
use bastion_store::{Store, TenantScope, audit};
use bastion_types::{SharedClock, TenantId};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{Env, eur, r, usd};

const KEY: &str = "sk_test_reconcile_key_0123456789";
/// 2023-11-14 00:00:00 UTC (the day of `T0`).
const D: i64 = 1_699_920_000;
const DATE: &str = "2023-11-14";

struct World {
    env: Env,
    psp: StripePsp,
    _task: tokio::task::JoinHandle<()>,
    n: std::cell::Cell<u32>,
}

async fn world() -> World {
    let env = Env::new().await;
    let shared: SharedClock = Arc::new(env.clock.clone());
    let sandbox = Sandbox::new(SandboxConfig::new(KEY, shared).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { sandbox.serve(listener).await.unwrap() });
    let psp = StripePsp::new(StripeConfig::new(url, ApiKey::parse(KEY).unwrap())).unwrap();
    World {
        env,
        psp,
        _task: task,
        n: std::cell::Cell::new(0),
    }
}

/// What a charge left at the PSP.
struct Charged {
    pi: String,
    ch: String,
    amount: Money,
    fee: i64,
}

impl World {
    fn key(&self) -> IdempotencyKey {
        self.n.set(self.n.get() + 1);
        IdempotencyKey::parse(&format!("idem-{}", self.n.get())).unwrap()
    }

    fn at(&self, t: i64) {
        self.env.clock.set(t);
    }

    async fn charge_at_psp(&self, tenant: TenantId, minor: i64, currency: Currency) -> Charged {
        let req = CreatePaymentIntent {
            amount: Money { minor, currency },
            payment_method: PaymentMethodToken::parse("pm_card_visa").unwrap(),
            tenant,
            payment_id: format!("pay-{}", self.n.get()),
            customer: None,
        };
        let pi = self
            .psp
            .create_payment_intent(&req, &self.key())
            .await
            .unwrap();
        Charged {
            ch: pi.latest_charge.clone().unwrap(),
            pi: pi.id,
            amount: req.amount,
            fee: FeeSchedule::default().fee_minor(minor),
        }
    }

    async fn post_capture(&self, tenant: TenantId, c: &Charged, amount: Money, fee: i64) {
        let mut tx = self.env.tx(tenant).await;
        let detail = json!({ "psp_object": c.ch });
        bastion_ledger::capture(&mut tx, &r(&c.pi), amount, detail.clone())
            .await
            .unwrap();
        let fee = Money {
            minor: fee,
            currency: amount.currency,
        };
        bastion_ledger::fee(&mut tx, &r(&c.pi), fee, detail)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Charge at the PSP and post the matching entries.
    async fn charge(&self, tenant: TenantId, minor: i64) -> Charged {
        let c = self.charge_at_psp(tenant, minor, eur()).await;
        self.post_capture(tenant, &c, c.amount, c.fee).await;
        c
    }

    async fn refund(&self, tenant: TenantId, c: &Charged, minor: i64) -> String {
        let re = self
            .psp
            .create_refund(
                &CreateRefund {
                    payment_intent: c.pi.clone(),
                    amount_minor: minor,
                    tenant,
                    refund_id: format!("ref-{}", self.n.get()),
                },
                &self.key(),
            )
            .await
            .unwrap();
        let mut tx = self.env.tx(tenant).await;
        bastion_ledger::refund(
            &mut tx,
            &r(&c.pi),
            Money {
                minor,
                currency: c.amount.currency,
            },
            json!({ "psp_object": re.id }),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        re.id
    }

    async fn run(&self, tenant: Option<TenantId>) -> reconcile::ReconcileReport {
        let day = Day::parse(DATE).unwrap();
        let side = reconcile::fetch_psp_side(&self.psp, Some(&self.psp), day)
            .await
            .unwrap();
        reconcile::reconcile(&self.env.store, &side, Reconciliation { day, tenant })
            .await
            .unwrap()
    }
}

async fn actions(store: &Store, tenant: Option<TenantId>) -> Vec<Value> {
    let chain = match tenant {
        Some(t) => {
            let mut tx = store.begin(TenantScope::pre_auth(t)).await.unwrap();
            audit::read_chain(&mut tx).await.unwrap()
        }
        None => {
            let mut sys = store.system().await.unwrap();
            audit::system_read_chain(&mut sys).await.unwrap()
        }
    };
    chain
        .records
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|v| {
            v["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("reconcile."))
        })
        .collect()
}

#[tokio::test]
async fn a_clean_day_reports_zero_drift_and_balances_equal_the_psp() {
    let w = world().await;
    w.at(D + 3_600);
    let a1 = w.charge(w.env.a, 1_234).await;
    w.at(D + 7_200);
    let _b1 = w.charge(w.env.b, 5_000).await;
    w.at(D + 10_000);
    w.refund(w.env.a, &a1, 500).await;
    // The day before and after hold other money, which must not disturb day D.
    w.at(D - 100);
    w.charge(w.env.a, 700).await;
    w.at(D + 86_400 + 100);
    w.charge(w.env.b, 900).await;

    let report = w.run(None).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.date, DATE);
    assert_eq!(report.psp_transactions, 3);
    assert_eq!(report.report_lines, Some(3));
    assert_eq!(report.ledger_entries, 5, "2 captures, 2 fees, 1 refund");
    assert_eq!(report.matched, 3, "ch a1, ch b1, re a1");
    assert!(report.counts.values().all(|c| *c == 0));
    assert_eq!(report.counts.len(), 6);

    // The ledger's PSP balance equals the PSP's net (gross − fee) over everything.
    let all = w
        .psp
        .list_balance_transactions(bastion_payments::psp::TimeRange {
            from: 0,
            to: D + 3 * 86_400,
        })
        .await
        .unwrap();
    let psp_net: i64 = all.iter().map(|t| t.amount_minor - t.fee_minor).sum();
    let mut ledger_net = 0;
    for t in [w.env.a, w.env.b] {
        let mut tx = w.env.tx(t).await;
        ledger_net += bastion_ledger::totals(&mut tx, eur())
            .await
            .unwrap()
            .psp_clearing_minor;
        assert!(bastion_ledger::check(&mut tx).await.unwrap().holds());
    }
    assert_eq!(ledger_net, psp_net);

    reconcile::record(&w.env.store, &report).await.unwrap();
    let sys = actions(&w.env.store, None).await;
    assert_eq!(sys.len(), 1);
    assert_eq!(sys[0]["action"], "reconcile.completed");
    assert_eq!(sys[0]["outcome"], "ok");
    assert_eq!(sys[0]["detail"]["drift_count"], 0);
    assert!(actions(&w.env.store, Some(w.env.a)).await.is_empty());
}

#[tokio::test]
async fn each_kind_of_drift_is_found_alerted_and_audited() {
    let w = world().await;
    w.at(D + 1_000);
    // missing_in_ledger: charged at the PSP, never posted.
    let lost = w.charge_at_psp(w.env.a, 2_000, eur()).await;
    // missing_at_psp: an entry for a charge the PSP never made.
    let mut tx = w.env.tx_a().await;
    bastion_ledger::capture(
        &mut tx,
        &r("pi_ghost"),
        Money {
            minor: 3_000,
            currency: eur(),
        },
        json!({ "psp_object": "ch_ghost" }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // amount: one cent short.
    let short = w.charge_at_psp(w.env.a, 1_234, eur()).await;
    let one_less = Money {
        minor: 1_233,
        currency: eur(),
    };
    w.post_capture(w.env.a, &short, one_less, short.fee).await;
    // fee: the ledger booked one cent more fee.
    let fee = w.charge_at_psp(w.env.b, 4_000, eur()).await;
    w.post_capture(w.env.b, &fee, fee.amount, fee.fee + 1).await;
    // currency: USD at the PSP, EUR in the ledger.
    let cur = w.charge_at_psp(w.env.b, 1_500, usd()).await;
    let as_eur = Money {
        minor: 1_500,
        currency: eur(),
    };
    w.post_capture(w.env.b, &cur, as_eur, cur.fee).await;
    // timing: at the PSP at 23:59:59, posted at 00:00:05 the next day.
    w.at(D + 86_399);
    let late = w.charge_at_psp(w.env.a, 800, eur()).await;
    w.at(D + 86_405);
    w.post_capture(w.env.a, &late, late.amount, late.fee).await;
    // And one clean charge.
    w.at(D + 5_000);
    w.charge(w.env.a, 999).await;

    let report = w.run(None).await;
    assert_eq!(report.drift_count, 6, "{report:#?}");
    for kind in [
        DriftKind::MissingInLedger,
        DriftKind::MissingAtPsp,
        DriftKind::Amount,
        DriftKind::Fee,
        DriftKind::Currency,
        DriftKind::Timing,
    ] {
        assert_eq!(report.counts[&kind], 1, "{kind:?}");
    }
    assert_eq!(report.matched, 1);
    let find = |k: DriftKind| report.items.iter().find(|i| i.kind == k).unwrap();
    let both = vec![PspSource::BalanceTransactions, PspSource::DailyReport];

    let i = find(DriftKind::MissingInLedger);
    assert_eq!(i.object, lost.ch);
    assert_eq!(i.tenant, None);
    assert_eq!(i.psp_minor, Some(2_000));
    assert_eq!(i.ledger_minor, None);
    assert_eq!(i.seen_in, both);

    let i = find(DriftKind::MissingAtPsp);
    assert_eq!(i.object, "ch_ghost");
    assert_eq!(i.tenant, Some(w.env.a));
    assert_eq!(i.ledger_minor, Some(3_000));

    let i = find(DriftKind::Amount);
    assert_eq!(i.object, short.ch);
    assert_eq!(
        (i.ledger_minor, i.psp_minor, i.difference_minor),
        (Some(1_233), Some(1_234), Some(-1))
    );
    assert_eq!(i.seen_in, both, "the major-unit report agrees with the API");

    let i = find(DriftKind::Fee);
    assert_eq!(i.object, fee.ch);
    assert_eq!(i.tenant, Some(w.env.b));
    assert_eq!(i.difference_minor, Some(1));
    assert_eq!(i.psp_fee_minor, Some(fee.fee));

    let i = find(DriftKind::Currency);
    assert_eq!(i.object, cur.ch);
    assert_eq!((i.currency, i.psp_currency), (eur(), Some(usd())));

    let i = find(DriftKind::Timing);
    assert_eq!(i.object, late.ch);
    assert_eq!(i.psp_minor, Some(800));

    // Narrowed to tenant b: its two items, plus the PSP money no tenant claims.
    let b_only = w.run(Some(w.env.b)).await;
    let kinds: Vec<DriftKind> = b_only.items.iter().map(|i| i.kind).collect();
    assert_eq!(b_only.drift_count, 3, "{kinds:?}");
    assert!(kinds.contains(&DriftKind::MissingInLedger));

    // One audit record per item on the right chain, and one completed record.
    reconcile::record(&w.env.store, &report).await.unwrap();
    let sys = actions(&w.env.store, None).await;
    let a = actions(&w.env.store, Some(w.env.a)).await;
    let b = actions(&w.env.store, Some(w.env.b)).await;
    assert_eq!(sys.len(), 2, "missing_in_ledger + completed");
    assert_eq!(sys[0]["action"], "reconcile.drift");
    assert_eq!(sys[0]["detail"]["kind"], "missing_in_ledger");
    assert_eq!(sys[1]["action"], "reconcile.completed");
    assert_eq!(sys[1]["outcome"], "fail");
    assert_eq!(sys[1]["detail"]["drift_count"], 6);
    assert_eq!(a.len(), 3, "missing_at_psp, amount, timing");
    assert_eq!(b.len(), 2, "fee, currency");
    assert!(a.iter().all(|v| v["action"] == "reconcile.drift"));
    let amount = a.iter().find(|v| v["detail"]["kind"] == "amount").unwrap();
    assert_eq!(amount["target"], format!("psp:{}", short.ch));
    assert_eq!(amount["detail"]["difference_minor"], -1);
}

#[tokio::test]
async fn a_reversed_entry_no_longer_counts() {
    let w = world().await;
    w.at(D + 100);
    let c = w.charge(w.env.a, 2_500).await;
    // A duplicate capture booked by mistake, then reversed: the day is clean again.
    let mut tx = w.env.tx_a().await;
    let dup = bastion_ledger::capture(&mut tx, &r(&c.pi), c.amount, json!({ "psp_object": c.ch }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = w.run(None).await;
    assert_eq!(report.counts[&DriftKind::Amount], 1);
    assert_eq!(report.items[0].difference_minor, Some(2_500));
    let mut tx = w.env.tx_a().await;
    bastion_ledger::reverse(&mut tx, dup, "duplicate capture")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(w.run(None).await.is_clean());
}

fn line(object: &str, cur: &str, minor: i64, created: i64) -> LedgerLine {
    LedgerLine {
        tenant: TenantId::from_uuid(uuid::Uuid::nil()),
        object: object.to_owned(),
        keyed: true,
        entry: EntryId::new_random(),
        currency: Currency::parse(cur).unwrap(),
        amount_minor: minor,
        fee_minor: 0,
        created,
    }
}

#[test]
fn p10_major_units_in_the_report_against_minor_units_in_the_ledger() {
    let day = Day::parse(DATE).unwrap();
    let ledger = vec![
        line("ch_eur", "EUR", 1_234, D + 10),
        line("ch_jpy", "JPY", 1_234, D + 10),
        line("ch_kwd", "KWD", 1_234, D + 10),
    ];
    let report = |eur: &str| {
        json!({"lines": [
            {"source": "ch_eur", "currency": "eur", "gross": eur, "fee": "0.00", "created": D + 20},
            {"source": "ch_jpy", "currency": "jpy", "gross": "1234", "fee": "0", "created": D + 20},
            {"source": "ch_kwd", "currency": "kwd", "gross": "1.234", "fee": "0.000", "created": D + 20},
        ]})
    };
    // The API's balance transactions say the same in minor units.
    let api = report_lines(&report("12.34")).unwrap();
    assert_eq!(api[0].amount_minor, 1_234);
    assert_eq!(api[1].amount_minor, 1_234);
    assert_eq!(api[2].amount_minor, 1_234);
    let side = |eur: &str| PspSide {
        transactions: api.clone(),
        report: Some(report_lines(&report(eur)).unwrap()),
    };
    let r = Reconciliation { day, tenant: None };
    let clean = report_from(r, &ledger, &side("12.34"));
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!(clean.matched, 3);
    let off = report_from(r, &ledger, &side("12.35"));
    assert_eq!(off.drift_count, 1);
    assert_eq!(off.items[0].kind, DriftKind::Amount);
    assert_eq!(off.items[0].difference_minor, Some(-1));
    assert_eq!(off.items[0].seen_in, vec![PspSource::DailyReport]);
    assert_eq!(off.matched, 2);

    // The conversion itself: integers only, nothing rounded.
    assert_eq!(parse_major("12.34", 2).unwrap(), 1_234);
    assert_eq!(parse_major("12.3", 2).unwrap(), 1_230);
    assert_eq!(parse_major("12", 2).unwrap(), 1_200);
    assert_eq!(parse_major("-0.05", 2).unwrap(), -5);
    assert_eq!(parse_major("1234", 0).unwrap(), 1_234);
    assert_eq!(parse_major("1.234", 3).unwrap(), 1_234);
    assert_eq!(parse_major("92233720368547758.07", 2).unwrap(), i64::MAX);
    for bad in [
        "1.234",
        "5.",
        ".5",
        "+1",
        "1e2",
        " 1",
        "1,00",
        "",
        "--1",
        "0x10",
        "92233720368547758.08",
    ] {
        assert!(parse_major(bad, 2).is_err(), "{bad}");
    }
    assert!(parse_major("5.0", 0).is_err(), "JPY has no fraction digits");
}

#[test]
fn days_parse_and_print() {
    let d = Day::parse(DATE).unwrap();
    assert_eq!(d.start(), D);
    assert_eq!(d.to_string(), DATE);
    assert_eq!(d.prev().to_string(), "2023-11-13");
    assert_eq!(
        Day::parse("2024-02-29").unwrap().next().to_string(),
        "2024-03-01"
    );
    assert_eq!(Day::of(D + 86_399), d);
    assert_eq!(Day::of(D - 1), d.prev());
    for bad in [
        "2023-02-29",
        "2023-13-01",
        "1969-12-31",
        "2023-1-01",
        "20231114",
    ] {
        assert!(Day::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn psp_lines_of_the_day_before_only_are_not_drift_of_the_day() {
    let day = Day::parse(DATE).unwrap();
    let psp = vec![PspLine {
        object: "ch_old".into(),
        currency: eur(),
        amount_minor: 100,
        fee_minor: 0,
        created: D - 10,
    }];
    let side = PspSide {
        transactions: psp,
        report: None,
    };
    let rep = report_from(Reconciliation { day, tenant: None }, &[], &side);
    assert!(rep.is_clean());
    assert_eq!(rep.report_lines, None);
}

#[tokio::test]
async fn a_scheduled_job_is_stored_once_per_key() {
    let env = Env::new().await;
    let payload = json!({ "date": DATE }).to_string();
    let job = bastion_store::jobs::NewJob {
        kind: "reconcile",
        payload: &payload,
        max_attempts: 8,
        delay_secs: 0,
    };
    let mut sys = env.store.system().await.unwrap();
    let first = bastion_store::jobs::enqueue_once(&mut sys, &job)
        .await
        .unwrap();
    assert!(first.is_some());
    assert!(
        bastion_store::jobs::enqueue_once(&mut sys, &job)
            .await
            .unwrap()
            .is_none()
    );
    sys.commit().await.unwrap();
    // Other instances, concurrently: still one.
    let store = Arc::new(env.store.clone());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        let payload = json!({ "date": "2023-11-15" }).to_string();
        tasks.push(tokio::spawn(async move {
            let mut sys = store.system().await.unwrap();
            let id = bastion_store::jobs::enqueue_once(
                &mut sys,
                &bastion_store::jobs::NewJob {
                    kind: "reconcile",
                    payload: &payload,
                    max_attempts: 8,
                    delay_secs: 0,
                },
            )
            .await
            .unwrap();
            sys.commit().await.unwrap();
            id.is_some()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

#[derive(Debug, Clone, Copy)]
enum PropOp {
    /// Charge `amount` for tenant a (false) or b (true), in EUR (false) or JPY (true).
    Charge(bool, bool, i64),
    /// Refund up to `amount` of the n-th charge (modulo the number of charges).
    Refund(usize, i64),
}

fn prop_op() -> impl proptest::strategy::Strategy<Value = PropOp> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<bool>(), any::<bool>(), 50..100_000_i64)
            .prop_map(|(t, c, a)| PropOp::Charge(t, c, a)),
        (0..8_usize, 1..100_000_i64).prop_map(|(i, a)| PropOp::Refund(i, a)),
    ]
}

async fn prop_case(ops: Vec<PropOp>) {
    let w = world().await;
    let jpy = Currency::parse("JPY").unwrap();
    let mut charges: Vec<(TenantId, Charged, i64)> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        w.at(D + 60 * i64::try_from(i).unwrap());
        match op {
            PropOp::Charge(t, c, a) => {
                let tenant = if t { w.env.b } else { w.env.a };
                let cur = if c { jpy } else { eur() };
                let ch = w.charge_at_psp(tenant, a, cur).await;
                w.post_capture(tenant, &ch, ch.amount, ch.fee).await;
                charges.push((tenant, ch, 0));
            }
            PropOp::Refund(n, a) => {
                if charges.is_empty() {
                    continue;
                }
                let k = n % charges.len();
                let left = charges[k].1.amount.minor - charges[k].2;
                let amount = a.min(left);
                if amount == 0 {
                    continue;
                }
                let (tenant, ch, _) = &charges[k];
                w.refund(*tenant, ch, amount).await;
                charges[k].2 += amount;
            }
        }
    }
    let report = w.run(None).await;
    assert!(report.is_clean(), "{report:#?}");
    // After a clean reconciliation the ledger's PSP balance is the PSP's, per currency.
    let all = w
        .psp
        .list_balance_transactions(bastion_payments::psp::TimeRange {
            from: 0,
            to: D + 2 * 86_400,
        })
        .await
        .unwrap();
    for cur in [eur(), jpy] {
        let psp_net: i64 = all
            .iter()
            .filter(|t| t.currency == cur)
            .map(|t| t.amount_minor - t.fee_minor)
            .sum();
        let mut ledger_net = 0;
        for t in [w.env.a, w.env.b] {
            let mut tx = w.env.tx(t).await;
            ledger_net += bastion_ledger::totals(&mut tx, cur)
                .await
                .unwrap()
                .psp_clearing_minor;
            tx.rollback().await.unwrap();
        }
        assert_eq!(ledger_net, psp_net, "{cur}");
    }
}

#[test]
fn after_a_clean_reconciliation_ledger_balances_equal_the_psps() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 8,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(prop_op(), 1..10), |ops| {
            rt.block_on(prop_case(ops));
            Ok(())
        })
        .unwrap();
}
