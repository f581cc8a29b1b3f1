//! Case P4, crash recovery, with real processes: `bastion demo` charges through a
//! psp-sandbox that records the PaymentIntent and answers late; the server is killed
//! (SIGKILL) while the PSP call is outstanding, restarted on the same data, and the client
//! retries with the same `Idempotency-Key`: exactly one PaymentIntent at the PSP, one
//! journal entry, and the response completed then replayed.

use std::sync::Arc;
use std::time::Duration;

use bastion_payments::psp::{
    ApiKey, BalanceTransactionKind, Psp, StripeConfig, StripePsp, TimeRange,
};
use bastion_psp_sandbox::{Sandbox, SandboxConfig};
use bastion_types::{Clock, SharedClock, SystemClock};
use serde_json::{Value, json};

use crate::{start_demo_with, sub_of};

const KEY: &str = "sk_test_p4_crash_recovery_0123";

async fn charges(psp: &StripePsp) -> usize {
    let now = SystemClock.now();
    psp.list_balance_transactions(TimeRange {
        from: now - 3600,
        to: now + 3600,
    })
    .await
    .unwrap()
    .iter()
    .filter(|t| t.kind == BalanceTransactionKind::Charge)
    .count()
}

async fn charge(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let res = http
        .post(format!("{url}/v1/tools/charge_deposit"))
        .bearer_auth(token)
        .header("idempotency-key", "\"p4-deposit-1\"")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_kill_between_psp_call_and_commit_then_retry_charges_once() {
    // The PSP: records the intent at once, answers 4 s later.
    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = SandboxConfig::new(KEY, clock).unwrap();
    config.create_delay_ms = 4_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let psp_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Sandbox::new(config).unwrap().serve(listener));
    let psp = StripePsp::new(StripeConfig::new(&psp_url, ApiKey::parse(KEY).unwrap())).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key_file = tmp.path().join("psp.key");
    std::fs::write(&key_file, KEY).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key_arg = key_file.to_str().unwrap().to_owned();
    let extra = [
        "--psp-url",
        psp_url.as_str(),
        "--psp-api-key-file",
        key_arg.as_str(),
        "--payment-lease-secs",
        "2",
    ];
    let (mut running, demo) = start_demo_with(&data, &tmp.path().join("demo1.log"), &extra).await;
    let buyer = demo.login("acme", "buyer").await;
    let seller = sub_of(&demo.login("acme", "seller").await);
    let (status, body) = demo
        .post(
            "/v1/tools/create_quote",
            Some(&buyer),
            &json!({"title": "Deposit", "seller": seller,
                    "line_items": [{"description": "desk", "quantity": 1, "unit_price_minor": 45000}],
                    "amount_minor": 45000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let quote = body["result"]["id"].as_str().unwrap().to_owned();
    let finance = demo.login("acme", "finance").await;
    let args = json!({"quote_id": quote, "amount_minor": 15000, "currency": "EUR",
                      "payment_method": "pm_card_visa"});

    // First attempt: the PSP records the intent, then the server dies before it answers.
    let first = {
        let (http, url, token, args) = (
            demo.http.clone(),
            demo.url.clone(),
            finance.clone(),
            args.clone(),
        );
        tokio::spawn(async move { charge(&http, &url, &token, &args).await })
    };
    let mut recorded = false;
    for _ in 0..60 {
        if charges(&psp).await == 1 {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the PSP never saw the charge");
    running.child().kill().unwrap(); // SIGKILL
    running.child().wait().unwrap();
    drop(running);
    // The client saw the connection drop, not an answer.
    let lost = first.await;
    assert!(lost.is_err(), "the first attempt got an answer: {lost:?}");

    // Nothing was committed for the payment: no money in the ledger yet.
    assert_eq!(ledger(&data, "none").await, (0, 0));

    // Restart on the same data; wait out the lease; retry with the same key.
    let (_running, demo2) = start_demo_with(&data, &tmp.path().join("demo2.log"), &extra).await;
    // Wait out the lease (2 s) and the TOTP step finance last used (RFC 6238 replay
    // protection), then log in again: the same principal, so the same key scope.
    let step_left = 30 - SystemClock.now() % 30;
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(step_left.max(2)).unwrap() + 1,
    ))
    .await;
    let finance = demo2.login("acme", "finance").await;
    let (status, replayed, body) = charge(&demo2.http, &demo2.url, &finance, &args).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(replayed, None);
    assert_eq!(body["result"]["status"], "succeeded");
    assert_eq!(body["result"]["captured_minor"], 15000);
    assert_eq!(
        charges(&psp).await,
        1,
        "exactly one PaymentIntent at the PSP"
    );
    let pi = body["result"]["psp_payment_id"].as_str().unwrap();
    assert_eq!(
        ledger(&data, pi).await,
        (1, 15000),
        "exactly one capture entry, of the whole amount"
    );

    // And once more: the stored response, replayed.
    let (status, replayed, again) = charge(&demo2.http, &demo2.url, &finance, &args).await;
    assert_eq!(status, 200);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again["result"], body["result"]);
    assert_eq!(charges(&psp).await, 1);
}

/// (capture entries about `reference`, the amount they captured in minor units), read from
/// the demo's SQLite file over all tenants. (The PSP's fee on the charge is its own entry.)
async fn ledger(data: &std::path::Path, reference: &str) -> (usize, i64) {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = bastion_store::Store::open_sqlite_read_only(&data.join("bastion.db"), clock)
        .await
        .unwrap();
    let mut sys = store.system().await.unwrap();
    let tenants = bastion_store::tenants::list_tenants(&mut sys)
        .await
        .unwrap();
    drop(sys);
    let (mut captures, mut captured) = (0, 0);
    for t in tenants {
        let mut tx = store
            .begin(bastion_store::TenantScope::pre_auth(t.id))
            .await
            .unwrap();
        let eur = bastion_types::Currency::parse("EUR").unwrap();
        let totals = bastion_ledger::totals(&mut tx, eur).await.unwrap();
        // Captures go into the PSP clearing account; the fee moves part of it to `fees`.
        captured += totals.psp_clearing_minor + totals.fees_minor;
        captures += bastion_store::ledger::entries_for_reference(&mut tx, reference)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == "capture")
            .count();
        drop(tx);
    }
    store.close().await;
    (captures, captured)
}
