//! `cargo bench -p bastion-bench --bench webhooks`: webhook ingestion — signature check over
//! the raw body, dedupe into the durable inbox, job enqueue and audit record, one committed
//! transaction per delivery — through the real router (`POST /v1/webhooks/stripe`, in-process
//! `oneshot`, no socket), on SQLite and on PostgreSQL side by side; plus redeliveries of an
//! event already stored (the duplicate path, case P7) and forged deliveries (refused and
//! audited). `BENCH_QUICK=1` for a smoke run.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Body;
use bastion_payments::webhook::stripe::sign;
use bastion_payments::webhook::{ProviderKind, StripeSecret, WebhookVerifier};
use bastion_server::webhooks::WebhookEndpoint;
use bastion_store::Store;
use bastion_store::testing::PgTestDb;
use bastion_types::{SharedClock, SystemClock};
use tower::ServiceExt;

use crate::setup::Fixture;
use crate::stats::{Samples, fmt_ns, now};
use crate::{BenchError, Ctx};

const SECRET: &str = "whsec_benchmark_secret_for_ingestion";

fn event(i: usize, t: i64) -> String {
    format!(
        "{{\"id\":\"evt_{i}\",\"object\":\"event\",\"type\":\"payment_intent.succeeded\",\"created\":{t},\"data\":{{\"object\":{{\"id\":\"pi_{i}\",\"object\":\"payment_intent\",\"status\":\"succeeded\",\"amount\":1000,\"currency\":\"eur\",\"created\":{t}}}}}}}"
    )
}

async fn deliver(router: &axum::Router, sig: &str, body: String) -> Result<u16, BenchError> {
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(Body::from(body))
        .ctx("request")?;
    let res = router.clone().oneshot(req).await.ctx("router")?;
    Ok(res.status().as_u16())
}

/// Ingestion, duplicates and forgeries on one backend.
async fn one(store: Store, dir: tempfile::TempDir, n: usize) -> Result<[Samples; 3], BenchError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let fx = Fixture::on(dir, std::path::PathBuf::new(), store, Arc::clone(&clock)).await?;
    let mut state = fx.state.clone();
    let mut opts = (*state.options).clone();
    opts.webhooks = vec![WebhookEndpoint {
        provider: "stripe".to_owned(),
        verifier: WebhookVerifier::new(ProviderKind::Stripe, &[SECRET], 300, Arc::clone(&clock))
            .ctx("verifier")?,
    }];
    state.options = Arc::new(opts);
    let router = bastion_server::router(state);
    let secret = StripeSecret::parse(SECRET).ctx("secret")?;
    let mut fresh = Samples::with_capacity(n);
    let mut dup = Samples::with_capacity(n);
    let mut forged = Samples::with_capacity(n);
    let start = now();
    for i in 0..n {
        let t = clock.now();
        let body = event(i, t);
        let sig = sign(&secret, t, body.as_bytes());
        let s = now();
        let status = deliver(&router, &sig, body).await?;
        fresh.push(s.elapsed());
        if status != 200 {
            return Err(BenchError(format!("delivery {i}: {status}")));
        }
    }
    fresh.wall = start.elapsed();
    let start = now();
    for i in 0..n {
        let t = clock.now();
        let body = event(i, t);
        let sig = sign(&secret, t, body.as_bytes());
        let s = now();
        let status = deliver(&router, &sig, body).await?;
        dup.push(s.elapsed());
        if status != 200 {
            return Err(BenchError(format!("redelivery {i}: {status}")));
        }
    }
    dup.wall = start.elapsed();
    let attacker = StripeSecret::parse("whsec_attacker_guess").ctx("secret")?;
    let start = now();
    for i in 0..n {
        let t = clock.now();
        let body = event(n + i, t);
        let sig = sign(&attacker, t, body.as_bytes());
        let s = now();
        let status = deliver(&router, &sig, body).await?;
        forged.push(s.elapsed());
        if status != 401 {
            return Err(BenchError(format!("forgery {i}: {status}")));
        }
    }
    forged.wall = start.elapsed();
    fx.store.close().await;
    Ok([fresh, dup, forged])
}

/// Runs both backends and renders Markdown.
///
/// # Errors
/// The first failing step.
pub async fn run(n: usize) -> Result<String, BenchError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let sqlite = Store::open_sqlite(&dir.path().join("bastion.db"), Arc::clone(&clock))
        .await
        .ctx("sqlite")?;
    let s = one(sqlite, dir, n).await?;
    let db = PgTestDb::create(&clock)
        .await
        .ctx("PostgreSQL on 127.0.0.1:5432")?;
    let pg = db.open(Arc::clone(&clock)).await.ctx("postgres")?;
    let p = one(pg, tempfile::tempdir().ctx("temp dir")?, n).await?;
    let mut md = String::from(
        "## Webhook ingestion\n\n| delivery | backend | n | per s | mean | p50 | p99 |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for (label, i) in [
        ("new event: verify + inbox + job + audit, committed", 0),
        ("redelivery of a stored event (duplicate, audited)", 1),
        ("forged signature (401, audited)", 2),
    ] {
        for (backend, set) in [("SQLite", &s), ("PostgreSQL", &p)] {
            let x = set[i].summary();
            md.push_str(&format!(
                "| {label} | {backend} | {} | {:.0} | {} | {} | {} |\n",
                x.n,
                x.ops_per_sec,
                fmt_ns(x.mean_ns),
                fmt_ns(crate::p(x.p50_ns)),
                fmt_ns(crate::p(x.p99_ns)),
            ));
        }
    }
    Ok(md)
}

/// Entry point of the `webhooks` bench target.
#[must_use]
pub fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "bastion-bench webhooks: run with `cargo bench -p bastion-bench --bench webhooks`"
        );
        return ExitCode::SUCCESS;
    }
    let n = if crate::Sizes::from_env().quick {
        200
    } else {
        2_000
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-bench webhooks: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(n)) {
        Ok(md) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bastion-bench webhooks: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
