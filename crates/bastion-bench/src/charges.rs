//! `cargo bench -p bastion-bench --bench charges`: 100 concurrent identical charge requests
//! (same principal, same `Idempotency-Key`, same body) through `Pipeline::call` against
//! the real psp-sandbox over HTTP, on SQLite. Exactly one request may reach the PSP; the
//! other 99 are answered from the stored response (a request that arrives while the first
//! is still running gets 409 `idempotency-key-in-flight` and retries after
//! [`RETRY_PAUSE_MS`], as a client following `Retry-After` would, faster). Reports the PSP
//! calls counted at the adapter (must be 1) and the latency of the 99 replays, retries
//! included.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bastion_payments::psp::{
    ApiKey, BalanceTransaction, CreatePaymentIntent, CreateRefund, IdempotencyKey, PaymentIntent,
    Psp, PspFuture, Refund, StripeConfig, StripePsp, TimeRange,
};
use bastion_psp_sandbox::{Sandbox, SandboxConfig};
use bastion_tools::{CallContext, ToolError};
use serde_json::json;

use crate::setup::Fixture;
use crate::stats::{Samples, fmt_ns, now};
use crate::{BenchError, Ctx};

/// Concurrent identical requests.
pub const REQUESTS: usize = 100;
/// Pause before retrying after a 409 in-flight answer, milliseconds.
pub const RETRY_PAUSE_MS: u64 = 2;
/// Most retries of one request before the run is declared failed.
pub const RETRIES_MAX: usize = 5_000;

const KEY: &str = "sk_test_bench_charges_0123456789";

/// The real Stripe adapter, counting the charges it sends (not a mock: every call goes to
/// the sandbox over HTTP).
#[derive(Debug)]
struct Counting {
    inner: StripePsp,
    creates: AtomicUsize,
}

impl Psp for Counting {
    fn create_payment_intent<'a>(
        &'a self,
        req: &'a CreatePaymentIntent,
        key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create_payment_intent(req, key)
    }
    fn retrieve_payment_intent<'a>(&'a self, id: &'a str) -> PspFuture<'a, PaymentIntent> {
        self.inner.retrieve_payment_intent(id)
    }
    fn confirm_payment_intent<'a>(
        &'a self,
        id: &'a str,
        key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent> {
        self.inner.confirm_payment_intent(id, key)
    }
    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        key: &'a IdempotencyKey,
    ) -> PspFuture<'a, Refund> {
        self.inner.create_refund(req, key)
    }
    fn list_balance_transactions(
        &self,
        range: TimeRange,
    ) -> PspFuture<'_, Vec<BalanceTransaction>> {
        self.inner.list_balance_transactions(range)
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct ChargeRun {
    /// Charges the pipeline sent to the PSP.
    pub psp_calls: usize,
    /// Requests answered from the stored response.
    pub replays: Samples,
    /// The one request that charged.
    pub original: Samples,
    /// 409 answers seen (then retried).
    pub in_flight_answers: usize,
}

/// Runs the 100 requests once.
///
/// # Errors
/// The first failing step, or more than one PSP call.
pub async fn run() -> Result<ChargeRun, BenchError> {
    let fx = Fixture::new().await?;
    let sandbox = Sandbox::new(SandboxConfig::new(KEY, Arc::clone(&fx.clock)).ctx("sandbox")?)
        .ctx("sandbox")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .ctx("listen")?;
    let url = format!("http://{}", listener.local_addr().ctx("addr")?);
    tokio::spawn(sandbox.serve(listener));
    let psp = Arc::new(Counting {
        inner: StripePsp::new(StripeConfig::new(&url, ApiKey::parse(KEY).ctx("key")?))
            .ctx("psp")?,
        creates: AtomicUsize::new(0),
    });
    let pipeline = fx.pipeline.clone().with_psp(psp.clone());
    let buyer = fx.add_user("acme", "charge_buyer", "buyer").await?;
    let seller = fx.add_user("acme", "charge_seller", "seller").await?;
    let finance = fx.add_user("acme", "charge_finance", "finance").await?;
    let (_, buyer_p) = fx.principal(&buyer).await?;
    let (_, finance_p) = fx.principal(&finance).await?;
    let mut seed = Samples::with_capacity(1);
    let quotes = fx
        .seed_quotes(&buyer_p, seller.user_id, 1, &mut seed)
        .await?;
    let quote = quotes
        .first()
        .and_then(|q| q["id"].as_str())
        .ctx("seeded quote id")?
        .to_owned();
    let args = json!({"quote_id": quote, "amount_minor": 25_000, "currency": "EUR",
                      "payment_method": "pm_card_visa"});

    let mut tasks = Vec::with_capacity(REQUESTS);
    let start = now();
    for i in 0..REQUESTS {
        let pipeline = pipeline.clone();
        let principal = finance_p.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = CallContext {
                request_id: format!("bench-{i}"),
                channel: "rest",
                idempotency_key: Some("bench-charge-1".to_owned()),
            };
            let t = now();
            let mut conflicts = 0;
            for _ in 0..RETRIES_MAX {
                match pipeline
                    .call(&principal, "charge_deposit", args.clone(), &ctx)
                    .await
                {
                    Ok(out) => return Ok((t.elapsed(), out.replayed, conflicts)),
                    Err(ToolError::IdempotencyKeyInFlight) => {
                        conflicts += 1;
                        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                    }
                    Err(e) => return Err(BenchError(format!("request {i}: {e}"))),
                }
            }
            Err(BenchError(format!("request {i}: still in flight")))
        }));
    }
    let mut replays = Samples::with_capacity(REQUESTS);
    let mut original = Samples::with_capacity(1);
    let mut in_flight_answers = 0;
    for t in tasks {
        let (elapsed, replayed, conflicts) = t.await.ctx("task")??;
        in_flight_answers += conflicts;
        if replayed {
            replays.push(elapsed);
        } else {
            original.push(elapsed);
        }
    }
    replays.wall = start.elapsed();
    original.wall = replays.wall;
    let psp_calls = psp.creates.load(Ordering::SeqCst);
    fx.store.close().await;
    if psp_calls != 1 || original.summary().n != 1 {
        return Err(BenchError(format!(
            "{psp_calls} PSP calls and {} non-replayed answers for one idempotency key",
            original.summary().n
        )));
    }
    Ok(ChargeRun {
        psp_calls,
        replays,
        original,
        in_flight_answers,
    })
}

/// Renders a run as Markdown.
#[must_use]
pub fn markdown(r: &ChargeRun) -> String {
    let x = r.replays.summary();
    let o = r.original.summary();
    format!(
        "## 100 concurrent identical charge requests (SQLite, psp-sandbox over HTTP)\n\n\
         | PSP calls | replays | replay p50 | replay p99 | replay max | the charging request | 409 answers retried |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} | {} | {} | {} |\n",
        r.psp_calls,
        x.n,
        fmt_ns(crate::p(x.p50_ns)),
        fmt_ns(crate::p(x.p99_ns)),
        fmt_ns(crate::p(x.max_ns)),
        fmt_ns(crate::p(o.p50_ns)),
        r.in_flight_answers,
    )
}

/// Entry point of the `charges` bench target.
#[must_use]
pub fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("bastion-bench charges: run with `cargo bench -p bastion-bench --bench charges`");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-bench charges: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(r) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", markdown(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bastion-bench charges: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
