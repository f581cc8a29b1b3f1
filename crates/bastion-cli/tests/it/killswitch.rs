//! `bastion killswitch` end to end: engaged through the binary against a running demo's data
//! dir, the next tool call answers 503 `tool-disabled` (other tenant unaffected), `list`
//! shows it, release restores, and the audit chains still verify.

use serde_json::{Value, json};

use crate::{Demo, audit_verify, bin, run, start_demo, sub_of, text};

fn quote(seller_id: &str) -> Value {
    json!({
        "title": "Standing desks",
        "seller": seller_id,
        "line_items": [{"description": "desk", "quantity": 1, "unit_price_minor": 45000}],
        "amount_minor": 45000,
        "currency": "EUR",
    })
}

async fn killswitch(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("killswitch").args(args).arg("--data").arg(data);
    run(cmd, 60).await
}

async fn create(demo: &Demo, token: &str, seller: &str) -> (u16, Value) {
    demo.post("/v1/tools/create_quote", Some(token), &quote(seller))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_engage_stops_the_running_demo_and_release_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_running, demo) = start_demo(&data, &tmp.path().join("demo.log")).await;
    let buyer = demo.login("acme", "buyer").await;
    let seller = sub_of(&demo.login("acme", "seller").await);
    let g_buyer = demo.login("globex", "buyer").await;
    let g_seller = sub_of(&demo.login("globex", "seller").await);
    assert_eq!(create(&demo, &buyer, &seller).await.0, 200);

    let out = killswitch(
        &data,
        &[
            "engage",
            "--tenant",
            "acme",
            "--tool",
            "create_quote",
            "--reason",
            "suspicious volume",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("tenant_tool"),
        "{}",
        text(&out.stdout)
    );

    let (status, body) = create(&demo, &buyer, &seller).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:bastion:problem:tool-disabled");
    assert_eq!(create(&demo, &g_buyer, &g_seller).await.0, 200);

    let out = killswitch(&data, &["list"]).await;
    let listed = text(&out.stdout);
    assert!(
        listed.contains("tenant_tool tenant=acme tool=create_quote ENGAGED")
            && listed.contains("suspicious volume"),
        "{listed}"
    );

    // Global, from the CLI only: globex stops too.
    let out = killswitch(&data, &["engage", "--reason", "stop everything"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(create(&demo, &g_buyer, &g_seller).await.0, 503);
    let out = killswitch(&data, &["release", "--reason", "all clear"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(create(&demo, &g_buyer, &g_seller).await.0, 200);
    assert_eq!(create(&demo, &buyer, &seller).await.0, 503);

    let out = killswitch(
        &data,
        &[
            "release",
            "--tenant",
            "acme",
            "--tool",
            "create_quote",
            "--reason",
            "resolved",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(was engaged)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(create(&demo, &buyer, &seller).await.0, 200);

    // Refusals: an unknown tenant, a missing reason.
    let out = killswitch(&data, &["engage", "--tenant", "nope", "--reason", "x"]).await;
    assert!(!out.status.success());
    let out = killswitch(&data, &["engage", "--tool", "create_quote"]).await;
    assert_eq!(out.status.code(), Some(2), "clap usage error");

    let out = audit_verify(&data).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
}
