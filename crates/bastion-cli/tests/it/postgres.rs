//! Two `bastion serve` processes on one PostgreSQL database (issue: several stateless
//! instances). Seeded by `bastion demo --database-url`, served as the non-owner application
//! role: a refresh family revoked through one instance is dead on the other, 50 concurrent
//! refreshes split across both yield exactly one success, and the audit chains verify after
//! concurrent writes through both. `bastion check --database-url` and `bastion migrate`
//! are exercised on the way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bastion_store::testing::PgTestDb;
use bastion_types::SharedClock;
use serde_json::{Value, json};

use crate::{Demo, Running, app_dir, bin, run, start_demo_with, sub_of, text, totp};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_config(dir: &Path, data: &Path, port: u16, db_url: &str) -> PathBuf {
    let text = format!(
        "profile = \"dev\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n[app]\ndir = {:?}\n[database]\nurl = {db_url:?}\n[identity]\nissuer = \"http://bastion.test\"\naudience = \"bastion\"\nkey_dir = {:?}\nsecret_key_file = {:?}\n",
        app_dir().display().to_string(),
        data.join("keys").display().to_string(),
        data.join("secret.key").display().to_string(),
    );
    let path = dir.join(format!("serve-{port}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_serve(cfg: &Path, port: u16, log: &Path) -> Running {
    let child = bin()
        .args(["serve", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Some(status) = running.child().try_wait().unwrap() {
            panic!(
                "serve exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "serve did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Password + TOTP login through `base`; the whole token response.
async fn login(demo: &Demo, base: &str, tenant: &str, name: &str) -> Value {
    let u = demo.user(tenant, name);
    let res = demo
        .http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"tenant": tenant, "username": name, "password": u["password"]}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let mfa = body["mfa_token"].as_str().unwrap().to_owned();
    let res = demo
        .http
        .post(format!("{base}/v1/auth/mfa/totp"))
        .json(&json!({"mfa_token": mfa, "code": totp(u["totp_secret"].as_str().unwrap())}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn refresh(http: &reqwest::Client, base: &str, rt: &str) -> (u16, Value) {
    let res = http
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={rt}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tool: &str,
    args: &Value,
) -> (u16, Value) {
    let res = http
        .post(format!("{base}/v1/tools/{tool}"))
        .bearer_auth(token)
        .json(args)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_share_revocation_refresh_races_and_one_audit_chain() {
    let clock: SharedClock = Arc::new(bastion_types::SystemClock);
    let db = PgTestDb::create(&clock)
        .await
        .expect("PostgreSQL is required");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // `bastion migrate` as the owner is idempotent; `bastion check` passes for the app role
    // and names the superuser for the owner.
    let mut cmd = bin();
    cmd.args([
        "migrate",
        "--database-url",
        &db.owner_url,
        "--app-role",
        &db.app_role,
    ]);
    let out = run(cmd, 60).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut cmd = bin();
    cmd.args(["check", "--database-url", &db.app_url]);
    let out = run(cmd, 60).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut cmd = bin();
    cmd.args(["check", "--database-url", &db.owner_url]);
    let out = run(cmd, 60).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("role postgres: is a superuser"),
        "{}",
        text(&out.stdout)
    );

    // Seed through the demo on PostgreSQL, then stop it.
    let (demo_proc, demo) = start_demo_with(
        &data,
        &tmp.path().join("demo.log"),
        &["--database-url", &db.owner_url, "--app-role", &db.app_role],
    )
    .await;
    drop(demo_proc);

    let (pa, pb) = (free_port(), free_port());
    let a = format!("http://127.0.0.1:{pa}");
    let b = format!("http://127.0.0.1:{pb}");
    let _one = start_serve(
        &serve_config(tmp.path(), &data, pa, &db.app_url),
        pa,
        &tmp.path().join("a.log"),
    )
    .await;
    let _two = start_serve(
        &serve_config(tmp.path(), &data, pb, &db.app_url),
        pb,
        &tmp.path().join("b.log"),
    )
    .await;
    let http = reqwest::Client::new();

    // A session started on A works on B; logout on A kills it on B at once.
    let s = login(&demo, &a, "acme", "finance").await;
    let access = s["access_token"].as_str().unwrap();
    let (status, _) = call(&http, &b, access, "list_quotes", &json!({})).await;
    assert_eq!(status, 200);
    let (status, r2) = refresh(&http, &b, s["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{r2}");
    let access2 = r2["access_token"].as_str().unwrap();
    let res = http
        .post(format!("{a}/v1/auth/logout"))
        .bearer_auth(access2)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let (status, body) = refresh(&http, &b, r2["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = call(&http, &b, access2, "list_quotes", &json!({})).await;
    assert_eq!(
        status, 401,
        "an access token of a revoked family is dead on B too"
    );

    // 50 concurrent refreshes of one token, split across both: exactly one succeeds, and
    // the family is revoked (the winner's new token dies with it).
    let s = login(&demo, &a, "acme", "finance2").await;
    let rt = s["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = http.clone();
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let rt = rt.clone();
        tasks.push(tokio::spawn(
            async move { refresh(&http, &base, &rt).await },
        ));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => winners.push(body),
            400 => assert_eq!(body["error"], "invalid_grant"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one refresh wins");
    let (status, _) = refresh(&http, &a, winners[0]["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "reuse revoked the whole family");

    // Concurrent writes through both instances; then the chains verify.
    let buyer = login(&demo, &a, "acme", "buyer").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let seller = login(&demo, &b, "acme", "seller").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let args = json!({
        "title": "Chairs",
        "seller": sub_of(&seller),
        "line_items": [{"description": "chair", "quantity": 2, "unit_price_minor": 9000}],
        "amount_minor": 18000,
        "currency": "EUR",
    });
    let mut tasks = Vec::new();
    for i in 0..30 {
        let http = http.clone();
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (token, args) = (buyer.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            call(&http, &base, &token, "create_quote", &args).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(&http, &b, &buyer, "list_quotes", &json!({})).await;
    assert_eq!((status, body["result"]["total"].clone()), (200, json!(30)));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bastion"));
    cmd.args(["audit", "verify", "--database-url", &db.app_url]);
    let out = run(cmd, 60).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.matches("ok: chain").count(),
        3,
        "system, acme, globex: {stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
