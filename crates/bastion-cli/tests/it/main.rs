//! End to end through the real `bastion` binary: the demo over real HTTP (login with TOTP,
//! create and list quotes, 404 across tenants), `audit verify` before and after tampering,
//! `check` on a good and a broken app, and `serve` refusing unsafe production configs
//! (L2, L3).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure aborts the test"
)]

mod agent;
mod killswitch;
mod p4;
mod postgres;
mod psp;
mod reconcile;
mod tabletop;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bastion_types::{Clock, SystemClock};
use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bastion"))
}

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vendor-quote")
}

/// Kills the child when dropped, so a failing test leaves no server behind.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a command to completion with a time limit (a server that starts instead of
/// refusing would otherwise hang the test). Output goes to files, not pipes, so a command
/// that prints more than a pipe holds cannot block on a reader that is not reading yet.
async fn run(mut cmd: Command, limit_secs: u64) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    for _ in 0..limit_secs * 10 {
        if let Some(status) = running.child().try_wait().unwrap() {
            running.0.take();
            return Output {
                status,
                stdout: std::fs::read(&out_path).unwrap(),
                stderr: std::fs::read(&err_path).unwrap(),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("command still running after {limit_secs} s: {cmd:?}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn totp(secret_b32: &str) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret_b32.as_bytes())
        .unwrap();
    bastion_identity::totp_code(&secret, u64::try_from(SystemClock.now()).unwrap(), 6)
}

fn sub_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.as_bytes())
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

struct Demo {
    url: String,
    creds: Value,
    http: reqwest::Client,
}

impl Demo {
    fn user(&self, tenant: &str, name: &str) -> &Value {
        self.creds["tenants"][tenant]["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn login(&self, tenant: &str, name: &str) -> String {
        let u = self.user(tenant, name);
        let (status, body) = self
            .post(
                "/v1/auth/login",
                None,
                &json!({"tenant": tenant, "username": name, "password": u["password"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("access_token").is_none());
        let mfa = body["mfa_token"].as_str().unwrap().to_owned();
        let code = totp(u["totp_secret"].as_str().unwrap());
        let (status, body) = self
            .post(
                "/v1/auth/mfa/totp",
                None,
                &json!({"mfa_token": mfa, "code": code}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// Starts `bastion demo` on port 0 and waits for demo-credentials.json to name its URL.
async fn start_demo(data: &Path, log: &Path) -> (Running, Demo) {
    start_demo_with(data, log, &[]).await
}

/// [`start_demo`] with more arguments (e.g. `--database-url`).
async fn start_demo_with(data: &Path, log: &Path, extra: &[&str]) -> (Running, Demo) {
    let child = bin()
        .args(["demo", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--app"])
        .arg(app_dir())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(log.with_extension("out")).unwrap(),
        ))
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    let creds_path = data.join("demo-credentials.json");
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if let Some(status) = running.child().try_wait().unwrap() {
            panic!(
                "demo exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Some(creds) = std::fs::read(&creds_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            let url = creds["url"].as_str().unwrap_or_default().to_owned();
            if !url.ends_with(":0")
                && http
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                return (running, Demo { url, creds, http });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(running);
    panic!(
        "demo did not come up in 120 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn audit_verify(data: &Path) -> Output {
    let mut cmd = bin();
    cmd.args(["audit", "verify", "--data"]).arg(data);
    run(cmd, 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_end_to_end_then_audit_verify_detects_a_flipped_byte_and_prod_refuses_demo_users() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (running, demo) = start_demo(&data, &tmp.path().join("demo.log")).await;
    assert!(demo.url.starts_with("http://127.0.0.1:"), "{}", demo.url);
    let printed = std::fs::read_to_string(tmp.path().join("demo.out")).unwrap();
    assert!(
        printed.contains("serving") && printed.contains(&format!("at {}", demo.url)),
        "{printed}"
    );
    // The credentials file is private (0600) and so is the data dir.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("demo-credentials.json")), 0o600);
        assert_eq!(mode(&data), 0o700);
    }
    for t in ["acme", "globex"] {
        let users = demo.creds["tenants"][t]["users"].as_array().unwrap();
        let names: Vec<&str> = users
            .iter()
            .map(|u| u["username"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["buyer", "seller", "finance", "finance2"], "{t}");
    }

    let buyer = demo.login("acme", "buyer").await;
    let seller = demo.login("acme", "seller").await;
    let seller_id = sub_of(&seller);
    let args = json!({
        "title": "Standing desks",
        "seller": seller_id,
        "line_items": [{"description": "desk", "quantity": 3, "unit_price_minor": 45000}],
        "amount_minor": 135000,
        "currency": "EUR",
    });
    let (status, body) = demo
        .post("/v1/tools/create_quote", Some(&buyer), &args)
        .await;
    assert_eq!(status, 200, "{body}");
    let quote = body["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["result"]["status"], "open");
    let (status, body) = demo
        .post("/v1/tools/list_quotes", Some(&buyer), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["total"], 1);
    assert_eq!(body["result"]["items"][0]["id"], quote.as_str());
    let (status, body) = demo
        .post("/v1/tools/list_quotes", Some(&seller), &json!({}))
        .await;
    assert_eq!((status, body["result"]["total"].clone()), (200, json!(1)));

    // Across tenants: not found, and invisible in lists.
    let g_finance = demo.login("globex", "finance").await;
    let (status, body) = demo
        .post(
            "/v1/tools/get_quote",
            Some(&g_finance),
            &json!({"id": quote}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "urn:bastion:problem:not-found");
    let (status, body) = demo
        .post("/v1/tools/list_quotes", Some(&g_finance), &json!({}))
        .await;
    assert_eq!((status, body["result"]["total"].clone()), (200, json!(0)));
    let (status, _) = demo
        .post("/v1/tools/create_quote", Some(&seller), &args)
        .await;
    assert_eq!(status, 403);

    // The demo's test-mode PSP: a charge there sends a signed webhook to the demo, which
    // verifies it and records it (system audit chain).
    let psp_url = demo.creds["psp"]["url"].as_str().unwrap().to_owned();
    let psp_key = demo.creds["psp"]["api_key"].as_str().unwrap().to_owned();
    assert!(psp_url.starts_with("http://127.0.0.1:"), "{psp_url}");
    let res = demo
        .http
        .post(format!("{psp_url}/v1/payment_intents"))
        .bearer_auth(&psp_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("amount=2500&currency=eur&payment_method=pm_card_visa&confirm=true")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut received = false;
    for _ in 0..100 {
        let clock: bastion_types::SharedClock = std::sync::Arc::new(SystemClock);
        let store = bastion_store::Store::open_sqlite_read_only(&data.join("bastion.db"), clock)
            .await
            .unwrap();
        let mut sys = store.system().await.unwrap();
        let chain = bastion_store::audit::system_read_chain(&mut sys)
            .await
            .unwrap();
        drop(sys);
        store.close().await;
        if chain
            .records
            .iter()
            .any(|r| r.body.contains("\"webhook.received\""))
        {
            received = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        received,
        "the sandbox's webhook was not received and verified"
    );

    drop(running);

    // The audit log verifies.
    let out = audit_verify(&data).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ok: chain"),
        "{}",
        text(&out.stdout)
    );

    // Flip one byte of one audit record (dropping the append-only trigger first).
    let db = data.join("bastion.db");
    {
        use sqlx::{Connection, Row};
        let url = format!("sqlite://{}", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query("SELECT tenant_id, body FROM audit_log WHERE seq = 2 AND tenant_id <> '00000000-0000-0000-0000-000000000000' ORDER BY tenant_id LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let tenant: String = row.get("tenant_id");
        let mut body: Vec<u8> = row.get::<String, _>("body").into_bytes();
        let i = body.len() / 2;
        body[i] ^= 0x01;
        let n = sqlx::query("UPDATE audit_log SET body = ? WHERE tenant_id = ? AND seq = 2")
            .bind(String::from_utf8(body).unwrap())
            .bind(&tenant)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1);
        conn.close().await.unwrap();
        let out = audit_verify(&data).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        let fail = stdout
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_default();
        assert!(fail.contains(&tenant), "{stdout}");
        assert!(fail.contains("position 2"), "{stdout}");
    }

    // L3: a production config over this database (it holds demo users) refuses to start.
    let secret = tmp.path().join("secret.key");
    std::fs::write(
        &secret,
        "k".repeat(8) + "3f9a0c1e7b2d4f6a8c0e2b4d6f8a0c1e3b5d",
    )
    .unwrap();
    private(&secret);
    let cfg = prod_config(tmp.path(), &db, "trusted_proxy = true", Some(&secret));
    let out = serve(&cfg).await;
    assert_refusal(&out, "demo or test account");
}

/// Secret files must be private to their owner (`bastion serve` refuses 0644).
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn prod_config(dir: &Path, db: &Path, server_extra: &str, secret: Option<&Path>) -> PathBuf {
    let secret_line = secret.map_or(String::new(), |p| {
        format!("secret_key_file = {:?}\n", p.display().to_string())
    });
    let text = format!(
        "profile = \"prod\"\n[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n[app]\ndir = {:?}\n[database]\nurl = \"sqlite://{}\"\n[identity]\nissuer = \"https://bastion.example\"\naudience = \"bastion\"\nkey_dir = {:?}\n{secret_line}",
        app_dir().display().to_string(),
        db.display(),
        dir.join("keys").display().to_string(),
    );
    let path = dir.join(format!("bastion-{}.toml", RecordIdLike::next()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Unique file names without clocks or randomness crates.
struct RecordIdLike;
impl RecordIdLike {
    fn next() -> usize {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve(cfg: &Path) -> Output {
    let mut cmd = bin();
    cmd.args(["serve", "--config"]).arg(cfg);
    run(cmd, 60).await
}

/// Exited non-zero, with a one-line reason on stderr naming `why`.
fn assert_refusal(out: &Output, why: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert_ne!(out.status.code(), None, "killed rather than exited");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line reason expected: {stderr}");
    assert!(lines[0].contains(why), "{stderr}");
    assert!(!text(&out.stdout).contains("listening"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_unsafe_production_configs_exit_before_binding() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("prod.db");
    let good = tmp.path().join("good.key");
    std::fs::write(&good, "0123456789abcdef0123456789abcdef-prod-secret").unwrap();
    private(&good);
    let default = tmp.path().join("default.key");
    std::fs::write(&default, "changeme\n").unwrap();
    let short = tmp.path().join("short.key");
    std::fs::write(&short, "too-short-secret").unwrap();
    // Hold a port: a server that got as far as binding it would say so instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap();
    let cases: Vec<(String, Option<&Path>, &str)> = vec![
        (
            "trusted_proxy = true".to_owned(),
            None,
            "secret_key_file is not set",
        ),
        (
            "trusted_proxy = true".to_owned(),
            Some(&default),
            "known default",
        ),
        (
            "trusted_proxy = true".to_owned(),
            Some(&short),
            "shorter than",
        ),
        (
            "trusted_proxy = true\ncors_allowed_origins = [\"*\"]".to_owned(),
            Some(&good),
            "CORS origin",
        ),
        (
            String::new(),
            Some(&good),
            "plain HTTP without a trusted proxy",
        ),
    ];
    for (extra, secret, why) in cases {
        let cfg = prod_config(tmp.path(), &db, &extra, secret);
        let text_cfg = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("127.0.0.1:0", &held_addr.to_string());
        std::fs::write(&cfg, text_cfg).unwrap();
        let out = serve(&cfg).await;
        assert_refusal(&out, why);
        assert!(!text(&out.stderr).contains("cannot listen"), "{why}");
    }
    // Nothing was created for a refused config: no database file.
    assert!(!db.exists(), "a refused config opened the database");
    drop(held);
}

#[tokio::test]
async fn check_accepts_vendor_quote_and_names_file_and_line_for_a_broken_copy() {
    let mut cmd = bin();
    cmd.arg("check").arg(app_dir());
    let out = run(cmd, 60).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("ok:"));

    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("vendor-quote");
    copy_dir(&app_dir(), &copy);
    let manifest = copy.join("app.toml");
    let broken = std::fs::read_to_string(&manifest).unwrap().replacen(
        "entity = \"quote\"\nrisk = \"low\"",
        "entity = \"quotes\"\nrisk = \"low\"",
        1,
    );
    std::fs::write(&manifest, broken).unwrap();
    let mut cmd = bin();
    cmd.arg("check").arg(&copy);
    let out = run(cmd, 60).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let finding = stdout
        .lines()
        .find(|l| l.contains("app.toml:"))
        .unwrap_or_else(|| panic!("no app.toml finding: {stdout}"));
    let after = finding.split("app.toml:").nth(1).unwrap();
    let line: String = after.chars().take_while(char::is_ascii_digit).collect();
    assert!(
        !line.is_empty() && after[line.len()..].starts_with(':'),
        "{finding}"
    );
    assert!(line.parse::<u32>().unwrap() > 1, "{finding}");

    // A broken policy file is reported with its file and line too.
    let copy2 = tmp.path().join("vendor-quote-2");
    copy_dir(&app_dir(), &copy2);
    let policy = copy2.join("policies/vendor-quote.cedar");
    let p = std::fs::read_to_string(&policy).unwrap().replace(
        "resource.owner == principal",
        "resource.no_such_attr == principal",
    );
    std::fs::write(&policy, p).unwrap();
    let mut cmd = bin();
    cmd.arg("check").arg(&copy2);
    let out = run(cmd, 60).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains("vendor-quote.cedar:")),
        "{stdout}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
