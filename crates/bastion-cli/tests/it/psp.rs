//! `bastion psp-sandbox` delivers signed webhooks to a `bastion serve` configured with
//! `[[payments.webhooks]]`: the event is verified, stored once and audited; a forged copy
//! posted straight to the server is refused (401) and audited.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bastion_types::SharedClock;

use crate::{Running, app_dir, bin, private};

fn write_secret(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    private(path);
}

async fn wait_http(url: &str, log: &Path, running: &mut Running) {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Some(status) = running.child().try_wait().unwrap() {
            panic!(
                "exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{url} did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_webhooks_reach_serve_verified_once_and_forgeries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let whsec = "whsec_sandbox_to_serve_test_secret";
    write_secret(&dir.join("whsec"), whsec);
    write_secret(&dir.join("sk"), "sk_test_sandbox_key_for_tests");
    write_secret(
        &dir.join("secret.key"),
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
    );
    let (serve_port, psp_port) = (free_port(), free_port());
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "profile = \"dev\"\n[server]\nlisten = \"127.0.0.1:{serve_port}\"\n[app]\ndir = {:?}\n[database]\nurl = \"sqlite://{}\"\n[identity]\nissuer = \"http://bastion.test\"\naudience = \"bastion\"\nkey_dir = {:?}\nsecret_key_file = {:?}\n[[payments.webhooks]]\nprovider = \"stripe\"\nscheme = \"stripe\"\nsecret_files = [{:?}]\n",
            app_dir().display().to_string(),
            dir.join("bastion.db").display(),
            dir.join("keys").display().to_string(),
            dir.join("secret.key").display().to_string(),
            dir.join("whsec").display().to_string(),
        ),
    )
    .unwrap();
    let serve_log = dir.join("serve.log");
    let mut serve = Running(Some(
        bin()
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&serve_log).unwrap()))
            .spawn()
            .unwrap(),
    ));
    wait_http(
        &format!("http://127.0.0.1:{serve_port}/healthz"),
        &serve_log,
        &mut serve,
    )
    .await;

    let psp_log = dir.join("psp.log");
    let mut psp = Running(Some(
        bin()
            .args([
                "psp-sandbox",
                "--listen",
                &format!("127.0.0.1:{psp_port}"),
                "--api-key-file",
            ])
            .arg(dir.join("sk"))
            .args([
                "--webhook-url",
                &format!("http://127.0.0.1:{serve_port}/v1/webhooks/stripe"),
                "--webhook-secret-file",
            ])
            .arg(dir.join("whsec"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&psp_log).unwrap()))
            .spawn()
            .unwrap(),
    ));
    wait_http(&format!("http://127.0.0.1:{psp_port}/"), &psp_log, &mut psp).await;

    // A charge at the sandbox: it succeeds and the sandbox sends a signed webhook.
    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://127.0.0.1:{psp_port}/v1/payment_intents"))
        .bearer_auth("sk_test_sandbox_key_for_tests")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("amount=1000&currency=eur&payment_method=pm_card_visa&confirm=true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );

    // A forged delivery straight to the server.
    let forged = http
        .post(format!("http://127.0.0.1:{serve_port}/v1/webhooks/stripe"))
        .header("stripe-signature", "t=1,v1=00")
        .body("{\"id\":\"evt_forged\",\"type\":\"payment_intent.succeeded\",\"created\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The genuine event arrives (delivery is asynchronous).
    let clock: SharedClock = std::sync::Arc::new(bastion_types::SystemClock);
    let mut received = 0;
    for _ in 0..100 {
        let store =
            bastion_store::Store::open_sqlite_read_only(&dir.join("bastion.db"), clock.clone())
                .await
                .unwrap();
        let mut sys = store.system().await.unwrap();
        let chain = bastion_store::audit::system_read_chain(&mut sys)
            .await
            .unwrap();
        drop(sys);
        store.close().await;
        received = chain
            .records
            .iter()
            .filter(|r| r.body.contains("\"webhook.received\""))
            .count();
        let refused = chain
            .records
            .iter()
            .filter(|r| r.body.contains("\"webhook.refused\""))
            .count();
        if received >= 1 {
            assert_eq!(refused, 1, "the forgery is audited");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        received >= 1,
        "no verified webhook: {}",
        std::fs::read_to_string(&psp_log).unwrap_or_default()
    );
}
