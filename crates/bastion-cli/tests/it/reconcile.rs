//! `bastion reconcile` against the real psp-sandbox over HTTP (exit 0 on a clean day, 1 on
//! drift, `--json`), the scheduled job's once-per-day enqueue, `bastion webhooks
//! rotate-secret` (old and new secrets both verify, the retired one no longer), and
//! `bastion psp-sandbox --config` refusing a prod profile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bastion_ledger::{Currency, Money, Reference};
use bastion_payments::psp::{
    ApiKey, CreatePaymentIntent, IdempotencyKey, PaymentMethodToken, Psp, StripeConfig, StripePsp,
};
use bastion_payments::webhook::{ProviderKind, StripeSecret, WebhookVerifier};
use bastion_psp_sandbox::{FeeSchedule, Sandbox, SandboxConfig};
use bastion_store::{Store, TenantScope, audit, jobs, tenants};
use bastion_types::{Clock, SharedClock, Slug, SystemClock};
use serde_json::{Value, json};

use crate::{bin, private, run, text};

const KEY: &str = "sk_test_cli_reconcile_key_0123";

fn write_private(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    private(path);
}

fn dev_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join(format!("bastion-{}.toml", extra.len()));
    std::fs::write(
        &cfg,
        format!(
            "profile = \"dev\"\n[server]\nlisten = \"127.0.0.1:0\"\n[app]\ndir = \"x\"\n[database]\nurl = \"sqlite://{}\"\n[identity]\nissuer = \"http://bastion.test\"\naudience = \"bastion\"\nkey_dir = {:?}\n{extra}",
            dir.join("bastion.db").display(),
            dir.join("keys").display().to_string(),
        ),
    )
    .unwrap();
    cfg
}

async fn reconcile(cfg: &Path, date: &str, json: bool) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["reconcile", "--config"])
        .arg(cfg)
        .args(["--date", date]);
    if json {
        cmd.arg("--json");
    }
    run(cmd, 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exits_0_on_a_clean_day_and_1_on_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock: SharedClock = Arc::new(SystemClock);
    let sandbox = Sandbox::new(SandboxConfig::new(KEY, Arc::clone(&clock)).unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _task = tokio::spawn(async move { sandbox.serve(listener).await.unwrap() });
    write_private(&dir.join("sk"), KEY);
    let cfg = dev_config(
        dir,
        &format!(
            "[payments.psp]\nbase_url = \"{url}\"\napi_key_file = {:?}\ndaily_report = true\n",
            dir.join("sk").display().to_string()
        ),
    );

    // A tenant, a charge at the sandbox and its two entries.
    let store = Store::open_sqlite(&dir.join("bastion.db"), Arc::clone(&clock))
        .await
        .unwrap();
    let mut sys = store.system().await.unwrap();
    let tenant = tenants::create_tenant(&mut sys, &Slug::parse("acme").unwrap(), "eu")
        .await
        .unwrap();
    sys.commit().await.unwrap();
    let psp = StripePsp::new(StripeConfig::new(url, ApiKey::parse(KEY).unwrap())).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let pi = psp
        .create_payment_intent(
            &CreatePaymentIntent {
                amount: Money {
                    minor: 1_234,
                    currency: eur,
                },
                payment_method: PaymentMethodToken::parse("pm_card_visa").unwrap(),
                tenant,
                payment_id: "pay-1".into(),
                customer: None,
            },
            &IdempotencyKey::parse("idem-1").unwrap(),
        )
        .await
        .unwrap();
    let ch = pi.latest_charge.clone().unwrap();
    let payment = Reference::parse(&pi.id).unwrap();
    let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    let detail = json!({ "psp_object": ch });
    bastion_ledger::capture(
        &mut tx,
        &payment,
        Money {
            minor: 1_234,
            currency: eur,
        },
        detail.clone(),
    )
    .await
    .unwrap();
    bastion_ledger::fee(
        &mut tx,
        &payment,
        Money {
            minor: FeeSchedule::default().fee_minor(1_234),
            currency: eur,
        },
        detail,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let today = bastion_ledger::reconcile::Day::of(clock.now()).to_string();
    let out = reconcile(&cfg, &today, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("1 matched, 0 drift"), "{stdout}");

    // A capture the PSP never saw: drift, exit 1, and the JSON report says what.
    let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    bastion_ledger::capture(
        &mut tx,
        &Reference::parse("pi_ghost").unwrap(),
        Money {
            minor: 500,
            currency: eur,
        },
        json!({ "psp_object": "ch_ghost" }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let out = reconcile(&cfg, &today, true).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["drift_count"], 1);
    assert_eq!(report["counts"]["missing_at_psp"], 1);
    assert_eq!(report["items"][0]["object"], "ch_ghost");
    assert_eq!(report["items"][0]["tenant"], tenant.to_string());
    assert_eq!(
        report["items"][0]["seen_in"],
        json!(["balance_transactions", "daily_report"])
    );
    // The human table names it too.
    let out = reconcile(&cfg, &today, false).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("missing_at_psp"));
    // Audited: the drift on the tenant's chain, one completed record per run.
    let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    let chain = audit::read_chain(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let drift = chain
        .records
        .iter()
        .filter(|r| r.body.contains("\"reconcile.drift\""))
        .count();
    assert_eq!(drift, 2, "two runs with drift");
    let mut sys = store.system().await.unwrap();
    let sys_chain = audit::system_read_chain(&mut sys).await.unwrap();
    let completed = sys_chain
        .records
        .iter()
        .filter(|r| r.body.contains("\"reconcile.completed\""))
        .count();
    assert_eq!(completed, 3);

    // A bad date is a usage error.
    let out = reconcile(&cfg, "2023-02-30", false).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("YYYY-MM-DD"));

    // The scheduled job of a day is stored once, however often it is offered.
    let payload = json!({ "date": "2023-11-14" }).to_string();
    let new = jobs::NewJob {
        kind: "reconcile",
        payload: &payload,
        max_attempts: 8,
        delay_secs: 0,
    };
    assert!(jobs::enqueue_once(&mut sys, &new).await.unwrap().is_some());
    assert!(jobs::enqueue_once(&mut sys, &new).await.unwrap().is_none());
    sys.commit().await.unwrap();
}

fn stripe_header(secret: &str, body: &[u8]) -> String {
    let s = StripeSecret::parse(secret).unwrap();
    bastion_payments::webhook::stripe::sign(&s, SystemClock.now(), body)
}

fn verifies(secrets: &[&str], signed_with: &str) -> bool {
    let v =
        WebhookVerifier::new(ProviderKind::Stripe, secrets, 300, Arc::new(SystemClock)).unwrap();
    let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded","created":1700000000,"data":{"object":{"id":"pi_1","object":"payment_intent"}}}"#;
    let header = stripe_header(signed_with, body);
    v.verify(&[("stripe-signature", header.as_bytes())], body)
        .is_ok()
}

/// The `secret_files = [...]` line a command printed.
fn printed_files(stdout: &str) -> Vec<PathBuf> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("secret_files = "))
        .unwrap();
    let v: toml::Value = toml::from_str(line.trim()).unwrap();
    v["secret_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_secret_keeps_the_old_secret_until_it_is_retired() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old_secret = "whsec_the_old_secret_0123456789abcdef";
    let old = dir.join("whsec-old");
    write_private(&old, old_secret);
    let section = |files: &[PathBuf]| {
        let list: Vec<String> = files
            .iter()
            .map(|f| format!("{:?}", f.display().to_string()))
            .collect();
        format!(
            "[[payments.webhooks]]\nprovider = \"stripe\"\nscheme = \"stripe\"\nsecret_files = [{}]\n[[payments.webhooks]]\nprovider = \"svix\"\nscheme = \"standard\"\nsecret_files = [{:?}]\n",
            list.join(", "),
            dir.join("whsec-std").display().to_string()
        )
    };
    write_private(
        &dir.join("whsec-std"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let cfg = dev_config(dir, &section(std::slice::from_ref(&old)));

    let mut cmd = bin();
    cmd.args([
        "webhooks",
        "rotate-secret",
        "--provider",
        "stripe",
        "--config",
    ])
    .arg(&cfg);
    let out = run(cmd, 30).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let files = printed_files(&stdout);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], old);
    let new = files[1].clone();
    assert_eq!(new.parent(), Some(dir));
    let mode = std::fs::metadata(&new).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let new_secret = std::fs::read_to_string(&new).unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret.len() >= 6 + 43);
    assert!(stdout.contains(&new_secret), "printed once for the PSP");
    assert!(!text(&out.stderr).contains(&new_secret), "never in the log");
    // During the rotation both secrets verify; a stranger's does not.
    let both = [old_secret, new_secret.as_str()];
    assert!(verifies(&both, old_secret));
    assert!(verifies(&both, &new_secret));
    assert!(!verifies(&both, "whsec_someone_else"));

    // Retire the old one: the printed list holds only the new file.
    let cfg = dev_config(dir, &section(&files));
    let mut cmd = bin();
    cmd.args([
        "webhooks",
        "rotate-secret",
        "--provider",
        "stripe",
        "--config",
    ])
    .arg(&cfg)
    .arg("--retire")
    .arg(&old);
    let out = run(cmd, 30).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left = printed_files(&text(&out.stdout));
    assert_eq!(left, vec![new.clone()]);
    let after = [new_secret.as_str()];
    assert!(
        !verifies(&after, old_secret),
        "the retired secret is refused"
    );
    assert!(verifies(&after, &new_secret));

    // The last secret cannot be retired; an unlisted file neither.
    let cfg_last = dev_config(dir, &format!("{}\n", section(&left).trim_end()));
    for target in [&new, &dir.join("nope")] {
        let mut cmd = bin();
        cmd.args([
            "webhooks",
            "rotate-secret",
            "--provider",
            "stripe",
            "--config",
        ])
        .arg(&cfg_last)
        .arg("--retire")
        .arg(target);
        let out = run(cmd, 30).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    }

    // Standard Webhooks: `whsec_` + base64 of 32 random bytes, which the verifier takes.
    let mut cmd = bin();
    cmd.args([
        "webhooks",
        "rotate-secret",
        "--provider",
        "svix",
        "--config",
    ])
    .arg(&cfg);
    let out = run(cmd, 30).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let std_files = printed_files(&text(&out.stdout));
    let std_secret = std::fs::read_to_string(&std_files[1]).unwrap();
    let key = bastion_payments::webhook::StandardSecret::parse(&std_secret);
    assert!(key.is_ok());
    assert_eq!(std_secret.len(), 6 + 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psp_sandbox_refuses_a_prod_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_private(&dir.join("sk"), KEY);
    let cfg = dir.join("prod.toml");
    std::fs::write(
        &cfg,
        "profile = \"prod\"\n[server]\nlisten = \"127.0.0.1:0\"\n[app]\ndir = \"x\"\n[database]\nurl = \"sqlite://x.db\"\n[identity]\nissuer = \"https://b.example\"\naudience = \"bastion\"\nkey_dir = \"k\"\n",
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["psp-sandbox", "--listen", "127.0.0.1:0", "--api-key-file"])
        .arg(dir.join("sk"))
        .arg("--config")
        .arg(&cfg);
    let out = run(cmd, 30).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to start"));
    assert!(!text(&out.stdout).contains("listening"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `bastion serve --config cfg` and waits for its health endpoint.
async fn start_serve(cfg: &Path, port: u16, log: &Path) -> crate::Running {
    let mut serve = crate::Running(Some(
        bin()
            .args(["serve", "--config"])
            .arg(cfg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(
                std::fs::File::create(log).unwrap(),
            ))
            .spawn()
            .unwrap(),
    ));
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Some(status) = serve.child().try_wait().unwrap() {
            panic!(
                "exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            return serve;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "serve did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn reconcile_jobs(db: &Path) -> Vec<(String, String)> {
    use sqlx::{Connection, Row};
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let rows = sqlx::query("SELECT payload, state FROM jobs WHERE kind = 'reconcile'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get::<String, _>("payload"), r.get::<String, _>("state")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reconciles_yesterday_once_as_a_scheduled_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock: SharedClock = Arc::new(SystemClock);
    let sandbox = Sandbox::new(SandboxConfig::new(KEY, Arc::clone(&clock)).unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _task = tokio::spawn(async move { sandbox.serve(listener).await.unwrap() });
    write_private(&dir.join("sk"), KEY);
    write_private(
        &dir.join("secret.key"),
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
    );
    let port = free_port();
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "profile = \"dev\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n[app]\ndir = {:?}\n[database]\nurl = \"sqlite://{}\"\n[identity]\nissuer = \"http://bastion.test\"\naudience = \"bastion\"\nkey_dir = {:?}\nsecret_key_file = {:?}\n[payments.psp]\nbase_url = \"{url}\"\napi_key_file = {:?}\ndaily_report = true\n",
            crate::app_dir().display().to_string(),
            dir.join("bastion.db").display(),
            dir.join("keys").display().to_string(),
            dir.join("secret.key").display().to_string(),
            dir.join("sk").display().to_string(),
        ),
    )
    .unwrap();
    let yesterday = bastion_ledger::reconcile::Day::of(clock.now())
        .prev()
        .to_string();
    let db = dir.join("bastion.db");
    let log = dir.join("serve.log");
    let serve = start_serve(&cfg, port, &log).await;
    // The scheduler enqueues yesterday's job at start; the worker runs it.
    let mut done = false;
    for _ in 0..600 {
        let jobs = reconcile_jobs(&db).await;
        if jobs.iter().any(|(_, s)| s == "done") {
            assert_eq!(jobs.len(), 1, "{jobs:?}");
            let payload: Value = serde_json::from_str(&jobs[0].0).unwrap();
            assert_eq!(payload["date"], yesterday.as_str());
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        done,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(serve);

    // A restart offers the same day again: still one job.
    let serve = start_serve(&cfg, port, &log).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(serve);
    assert_eq!(reconcile_jobs(&db).await.len(), 1);

    // The run is audited: one completed record for yesterday, clean.
    let store = Store::open_sqlite(&db, clock).await.unwrap();
    let mut sys = store.system().await.unwrap();
    let chain = audit::system_read_chain(&mut sys).await.unwrap();
    let completed: Vec<Value> = chain
        .records
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|v| v["action"] == "reconcile.completed")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["target"], format!("day:{yesterday}"));
    assert_eq!(completed[0]["outcome"], "ok");
}
