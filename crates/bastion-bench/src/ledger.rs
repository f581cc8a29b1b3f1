//! Journal entries per second, durable, on SQLite and PostgreSQL side by side
//! (`cargo bench -p bastion-bench --bench ledger`; `BENCH_QUICK=1` for a smoke run).
//!
//! Each entry is posted with `bastion_store::ledger::post_entry` in its own transaction and
//! committed before the next one starts (SQLite: WAL, `synchronous=FULL`; PostgreSQL:
//! `synchronous_commit` as the server has it, reported in the output), so every counted
//! entry is on disk. Workloads, on each backend:
//!
//! 1. transfers: a 2-posting entry between two accounts picked at random among
//!    [`ACCOUNTS`], one writer — the shape of pgledger's benchmark (transfers between
//!    accounts; its README reports about 10,000 transfers/s on PostgreSQL);
//! 2. the same with [`WRITERS`] concurrent writers;
//! 3. PSP captures through `bastion_ledger::capture` (4 postings, account look-ups, one new
//!    per-payment account each), one writer.
//!
//! Anchors: pgledger ~10k transfers/s (PostgreSQL, its own benchmark and hardware); Formance
//! Ledger ~1k writes/s (its published figures). Both are orders of magnitude, not like for
//! like.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use bastion_ledger::{Currency, Money, Reference};
use bastion_store::ledger::{self, AccountId, NewEntry};
use bastion_store::testing::PgTestDb;
use bastion_store::{BackendKind, Store, TenantScope, tenants};
use bastion_types::{SharedClock, Slug, SystemClock, TenantId};
use serde_json::json;

use crate::stats::{Samples, fmt_ns, now};
use crate::{BenchError, Ctx};

/// Accounts the transfers pick from.
pub const ACCOUNTS: usize = 1_000;
/// Concurrent writers in workload 2.
pub const WRITERS: usize = 8;

/// How many entries each workload posts.
#[derive(Debug, Clone, Copy)]
pub struct LedgerSizes {
    /// Smoke run.
    pub quick: bool,
    /// Sequential transfers.
    pub transfers: usize,
    /// Transfers per concurrent writer.
    pub per_writer: usize,
    /// Sequential captures.
    pub captures: usize,
}

impl LedgerSizes {
    /// The full run.
    pub const FULL: Self = Self {
        quick: false,
        transfers: 3_000,
        per_writer: 500,
        captures: 1_000,
    };
    /// `BENCH_QUICK=1`.
    pub const QUICK: Self = Self {
        quick: true,
        transfers: 200,
        per_writer: 40,
        captures: 100,
    };
}

/// A deterministic xorshift64* generator: the same account pairs on both backends.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }
}

/// Results of one backend.
struct BackendRun {
    name: &'static str,
    settings: String,
    transfers: Samples,
    concurrent: Samples,
    captures: Samples,
}

async fn open(kind: BackendKind, dir: &std::path::Path) -> Result<(Store, String), BenchError> {
    let clock: SharedClock = Arc::new(SystemClock);
    match kind {
        BackendKind::Sqlite => Ok((
            Store::open_sqlite(&dir.join("ledger.db"), clock)
                .await
                .ctx("open SQLite")?,
            "file in a temporary directory, WAL, synchronous=FULL".to_owned(),
        )),
        BackendKind::Postgres => {
            let db = PgTestDb::create(&clock)
                .await
                .ctx("PostgreSQL test schema (BASTION_TEST_PG, default 127.0.0.1:5432/test)")?;
            let settings = pg_settings(&db.owner_url).await?;
            Ok((db.open(clock).await.ctx("open PostgreSQL")?, settings))
        }
    }
}

/// `fsync` and `synchronous_commit` of the server: they decide what "durable" means there.
async fn pg_settings(owner_url: &str) -> Result<String, BenchError> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(owner_url)
        .await
        .ctx("connect")?;
    let mut out = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
    ] {
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut c)
            .await
            .ctx("SHOW")?;
        out.push(format!("{name}={v}"));
    }
    Ok(format!("application role under RLS, {}", out.join(", ")))
}

async fn transfer(
    store: &Store,
    tenant: TenantId,
    from: AccountId,
    to: AccountId,
    i: usize,
) -> Result<(), BenchError> {
    let mut tx = store
        .begin(TenantScope::pre_auth(tenant))
        .await
        .ctx("begin")?;
    ledger::post_entry(
        &mut tx,
        NewEntry {
            kind: "transfer".to_owned(),
            reference: format!("t{i}"),
            reverses: None,
            detail: json!({}),
            postings: vec![(from, -10), (to, 10)],
        },
    )
    .await
    .ctx("post_entry")?
    .map_err(|r| BenchError(format!("refused: {r}")))?;
    tx.commit().await.ctx("commit")
}

async fn run_backend(
    kind: BackendKind,
    sz: LedgerSizes,
    dir: &std::path::Path,
) -> Result<BackendRun, BenchError> {
    let name = match kind {
        BackendKind::Sqlite => "SQLite",
        BackendKind::Postgres => "PostgreSQL",
    };
    crate::progress(&format!("ledger on {name}: setting up {ACCOUNTS} accounts"));
    let (store, settings) = open(kind, dir).await?;
    let mut sys = store.system().await.ctx("system tx")?;
    let slug = Slug::parse("ledger-bench").ctx("slug")?;
    let tenant = tenants::create_tenant(&mut sys, &slug, "eu")
        .await
        .ctx("tenant")?;
    sys.commit().await.ctx("commit")?;
    let eur = Currency::parse("EUR").ctx("currency")?;
    let mut ids = Vec::with_capacity(ACCOUNTS);
    let mut tx = store
        .begin(TenantScope::pre_auth(tenant))
        .await
        .ctx("begin")?;
    for i in 0..ACCOUNTS {
        ids.push(
            ledger::account(&mut tx, &format!("acc{i}"), eur, true)
                .await
                .ctx("account")?
                .id,
        );
    }
    tx.commit().await.ctx("commit")?;
    let ids = Arc::new(ids);

    crate::progress(&format!(
        "ledger on {name}: {} transfers, 1 writer",
        sz.transfers
    ));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut transfers = Samples::with_capacity(sz.transfers);
    let start = now();
    for i in 0..sz.transfers {
        let (a, b) = pair(&mut rng, &ids);
        let t = now();
        transfer(&store, tenant, a, b, i).await?;
        transfers.push(t.elapsed());
    }
    transfers.wall = start.elapsed();

    crate::progress(&format!(
        "ledger on {name}: {WRITERS} writers x {} transfers",
        sz.per_writer
    ));
    let start = now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let ids = Arc::clone(&ids);
        let n = sz.per_writer;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x1234_5678_9abc_def1 ^ (w as u64 + 1));
            let mut s = Samples::with_capacity(n);
            for i in 0..n {
                let (a, b) = pair(&mut rng, &ids);
                let t = now();
                transfer(&store, tenant, a, b, w * n + i).await?;
                s.push(t.elapsed());
            }
            Ok::<Samples, BenchError>(s)
        }));
    }
    let mut concurrent = Samples::with_capacity(WRITERS * sz.per_writer);
    for t in tasks {
        concurrent.extend(&t.await.ctx("writer task")??);
    }
    concurrent.wall = start.elapsed();

    crate::progress(&format!("ledger on {name}: {} captures", sz.captures));
    let mut captures = Samples::with_capacity(sz.captures);
    let start = now();
    for i in 0..sz.captures {
        let payment = Reference::parse(&format!("pi_bench_{i}")).ctx("reference")?;
        let t = now();
        let mut tx = store
            .begin(TenantScope::pre_auth(tenant))
            .await
            .ctx("begin")?;
        bastion_ledger::capture(
            &mut tx,
            &payment,
            Money {
                minor: 1_000 + i64::try_from(i).unwrap_or(0),
                currency: eur,
            },
            json!({}),
        )
        .await
        .ctx("capture")?;
        tx.commit().await.ctx("commit")?;
        captures.push(t.elapsed());
    }
    captures.wall = start.elapsed();

    let mut tx = store
        .begin(TenantScope::pre_auth(tenant))
        .await
        .ctx("begin")?;
    let check = ledger::check(&mut tx).await.ctx("check")?;
    tx.rollback().await.ctx("rollback")?;
    if !check.holds() {
        return Err(BenchError(format!(
            "ledger check failed on {name}: {check:?}"
        )));
    }
    store.close().await;
    Ok(BackendRun {
        name,
        settings,
        transfers,
        concurrent,
        captures,
    })
}

fn pair(rng: &mut Rng, ids: &[AccountId]) -> (AccountId, AccountId) {
    let a = rng.below(ids.len());
    let mut b = rng.below(ids.len());
    if b == a {
        b = (a + 1) % ids.len();
    }
    (
        ids.get(a).copied().unwrap_or_else(AccountId::new_random),
        ids.get(b).copied().unwrap_or_else(AccountId::new_random),
    )
}

/// Runs both backends and renders the Markdown report.
///
/// # Errors
/// The first failing step (PostgreSQL must be reachable).
pub async fn run(sz: LedgerSizes) -> Result<String, BenchError> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let load_before = crate::load_average();
    let mut runs = Vec::new();
    for kind in [BackendKind::Sqlite, BackendKind::Postgres] {
        runs.push(run_backend(kind, sz, dir.path()).await?);
    }
    crate::progress("fsync probe next to the SQLite file");
    let fsync = crate::fsync_floor(dir.path(), if sz.quick { 30 } else { 300 })?.summary();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mut md = format!(
        "## Ledger benchmark ({} run)\n\n- machine: {cores} CPU(s), {}; load average (1/5/15 min) at start {load_before}, at end {}\n",
        if sz.quick { "quick" } else { "full" },
        crate::cpu_model(),
        crate::load_average(),
    );
    for r in &runs {
        md.push_str(&format!("- {}: {}\n", r.name, r.settings));
    }
    md.push_str(&format!(
        "- {ACCOUNTS} accounts (may go negative); each entry its own committed transaction\n\n"
    ));
    md.push_str("| backend | workload | entries | entries/s | mean | p50 | p99 | max | anchor |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---|\n");
    for r in &runs {
        for (label, s, anchor) in [
            (
                "transfer (2 postings), 1 writer".to_owned(),
                &r.transfers,
                "pgledger ~10k transfers/s (PostgreSQL)",
            ),
            (
                format!("transfer (2 postings), {WRITERS} writers"),
                &r.concurrent,
                "pgledger ~10k transfers/s (PostgreSQL)",
            ),
            (
                "`bastion_ledger::capture` (4 postings), 1 writer".to_owned(),
                &r.captures,
                "Formance ~1k writes/s",
            ),
        ] {
            let m = s.summary();
            md.push_str(&format!(
                "| {} | {label} | {} | {:.0} | {} | {} | {} | {} | {anchor} |\n",
                r.name,
                m.n,
                m.ops_per_sec,
                fmt_ns(m.mean_ns),
                fmt_ns(crate::p(m.p50_ns)),
                fmt_ns(crate::p(m.p99_ns)),
                fmt_ns(crate::p(m.max_ns)),
            ));
        }
    }
    md.push_str(&format!(
        "| disk | fsync floor: 4 KiB write + fdatasync | {} | {:.0} | {} | {} | {} | {} | |\n",
        fsync.n,
        fsync.ops_per_sec,
        fmt_ns(fsync.mean_ns),
        fmt_ns(crate::p(fsync.p50_ns)),
        fmt_ns(crate::p(fsync.p99_ns)),
        fmt_ns(crate::p(fsync.max_ns)),
    ));
    Ok(md)
}

/// Entry point of the `ledger` bench target.
#[must_use]
pub fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "bastion-bench ledger: run with `cargo bench -p bastion-bench --bench ledger` (BENCH_QUICK=1 for a smoke run)"
        );
        return ExitCode::SUCCESS;
    }
    let sz = if crate::Sizes::from_env().quick {
        LedgerSizes::QUICK
    } else {
        LedgerSizes::FULL
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-bench ledger: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = now();
    match rt.block_on(run(sz)) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{report}");
            let _ = out.flush();
            eprintln!(
                "bastion-bench ledger: done in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bastion-bench ledger: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
