//! `bastion tabletop` through the real binary: every scenario passes on a self-started
//! instance, the report exists in both forms and cites audit records; a scenario filter
//! runs only what it names; `--url` drives an already running demo over HTTP; and breaking
//! a control on purpose (the policy check, the approval gate, the signature check, the
//! idempotency store) makes the scenario that depends on it fail.

use serde_json::Value;

use crate::{bin, run, text};

fn report(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap()
}

fn scenario<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no scenario {id} in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabletop_self_started_passes_every_scenario_with_audit_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let out_base = tmp.path().join("report");
    let mut cmd = bin();
    cmd.args(["tabletop", "--report"]).arg(&out_base);
    let out = run(cmd, 600).await;
    let r = report(&out_base);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        std::fs::read_to_string(out_base.with_extension("md")).unwrap_or_default()
    );
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["skipped"], 0, "{r}");
    let scenarios = r["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 8, "{r}");
    for s in scenarios {
        assert_eq!(s["status"], "pass", "{s}");
        let cites = s["audit"].as_array().unwrap();
        if s["id"] != "audit-tamper" {
            assert!(!cites.is_empty(), "no audit evidence: {s}");
        }
        for c in cites {
            assert!(c["seq"].as_u64().unwrap() >= 1, "{c}");
        }
    }
    // The forged webhook's evidence is a refusal on the system chain.
    let forged = scenario(&r, "webhook-forged");
    assert!(
        forged["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["chain"] == "system" && a["action"] == "webhook.refused"),
        "{forged}"
    );
    let md = std::fs::read_to_string(out_base.with_extension("md")).unwrap();
    assert!(md.contains("| `webhook-forged` | PASS |"), "{md}");
    assert!(md.contains("Audit records:"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabletop_against_a_running_demo_over_http_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_running, demo) = crate::start_demo(&data, &tmp.path().join("demo.log")).await;
    let out_base = tmp.path().join("remote");
    let mut cmd = bin();
    cmd.args(["tabletop", "--url", &demo.url, "--credentials"])
        .arg(data.join("demo-credentials.json"))
        .args(["--only", "cross-tenant-rest", "--report"])
        .arg(&out_base);
    let out = run(cmd, 300).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let r = report(&out_base);
    assert_eq!(r["mode"], "existing instance");
    let scenarios = r["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "{r}");
    let s = &scenarios[0];
    assert_eq!(s["status"], "pass", "{s}");
    // Without store access the audit log is reported as not checked, never as proven.
    assert!(
        s["observed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("not checked: audit record")),
        "{s}"
    );
    assert!(s["audit"].as_array().unwrap().is_empty());
}

/// Runs `bastion tabletop --only ID` on a self-started instance with `extra` arguments and
/// returns the exit code and that scenario's entry of the JSON report.
async fn only(id: &str, extra: &[&std::ffi::OsStr]) -> (Option<i32>, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let out_base = tmp.path().join("report");
    let mut cmd = bin();
    cmd.args(["tabletop", "--only", id, "--report"])
        .arg(&out_base)
        .args(extra);
    let out = run(cmd, 300).await;
    let r = report(&out_base);
    (out.status.code(), scenario(&r, id).clone())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// vendor-quote with `edit` applied to its manifest and `policy` appended to its policies.
fn broken_app(dir: &std::path::Path, edit: impl Fn(&str) -> String, policy: &str) {
    copy_dir(&crate::app_dir(), dir);
    let manifest = std::fs::read_to_string(dir.join("app.toml")).unwrap();
    let edited = edit(&manifest);
    assert_ne!(
        edited.len() + policy.len(),
        manifest.len(),
        "the break changed nothing"
    );
    std::fs::write(dir.join("app.toml"), edited).unwrap();
    let path = dir.join("policies/vendor-quote.cedar");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(policy);
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_policy_check_fails_the_buyer_refund_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    // A policy that lets Buyers refund: the policy check no longer stops the attack.
    broken_app(
        &app,
        str::to_owned,
        "\n@id(\"broken-buyer-refund\")\npermit (principal in Role::\"buyer\", action == Action::\"issue_refund\", resource is Quote);\n",
    );
    let (code, s) = only(
        "refund-by-buyer-agent",
        &["--app".as_ref(), app.as_os_str()],
    )
    .await;
    assert_eq!(code, Some(1), "{s}");
    assert_eq!(s["status"], "fail", "{s}");
    let (code, s) = only("refund-by-buyer-agent", &[]).await;
    assert_eq!((code, &s["status"]), (Some(0), &Value::from("pass")), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_approval_gate_fails_the_refund_scenarios() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    // No four-eyes rule on refunds and a refund that is not high-risk: nothing holds it.
    broken_app(
        &app,
        |m| {
            let at = m.find("[tools.issue_refund]").unwrap();
            let (head, tail) = m.split_at(at);
            let tail = tail.replacen("risk = \"high\"", "risk = \"low\"", 1);
            let tail: String = tail
                .lines()
                .filter(|l| !l.starts_with("approval = "))
                .map(|l| format!("{l}\n"))
                .collect();
            format!("{head}{tail}")
        },
        "",
    );
    for id in ["refund-self-approval", "refund-by-finance-agent-injected"] {
        let (code, s) = only(id, &["--app".as_ref(), app.as_os_str()]).await;
        assert_eq!(code, Some(1), "{id}: {s}");
        assert_eq!(s["status"], "fail", "{id}: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_signature_check_fails_the_forged_webhook_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The instance's webhook secret is one the forger knows (leaked, or a default).
    let secret = data.join("psp-webhook.secret");
    std::fs::write(&secret, "whsec_tabletop_attacker_made_this_secret_up").unwrap();
    crate::private(&secret);
    let (code, s) = only("webhook-forged", &["--data".as_ref(), data.as_os_str()]).await;
    assert_eq!(code, Some(1), "{s}");
    assert_eq!(s["status"], "fail", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_idempotency_store_fails_the_duplicate_charge_scenario() {
    use sqlx::Connection;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Create the schema, then make the idempotency store lose every key it is given.
    let db = data.join("bastion.db");
    let clock: bastion_types::SharedClock = std::sync::Arc::new(bastion_types::SystemClock);
    let store = bastion_store::Store::open_sqlite(&db, clock).await.unwrap();
    drop(store);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER tabletop_lose_keys AFTER INSERT ON idempotency_keys BEGIN \
         DELETE FROM idempotency_keys WHERE rowid = NEW.rowid; END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let (code, s) = only("duplicate-charge", &["--data".as_ref(), data.as_os_str()]).await;
    assert_eq!(code, Some(1), "{s}");
    assert_eq!(s["status"], "fail", "{s}");
}
