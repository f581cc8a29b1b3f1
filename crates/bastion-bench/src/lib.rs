//! Bastion's benchmarks, run with `cargo bench -p bastion-bench` (`BENCH_QUICK=1` for a
//! smoke run of a few hundred iterations).
//!
//! One run measures, side by side, on the real stack (the vendor-quote app over a SQLite file
//! in a temporary directory, built the way `bastion-cli`'s runtime builds it):
//!
//! 1. Cedar decision latency: `Authorizer::decide` over a mix of allowed and denied requests.
//! 2. `list_quotes` through the whole pipeline — over HTTP on a socket, through the router
//!    in-process, and `Pipeline::call` alone — against the bare `records::list_records` call.
//! 3. Refresh-token rotations per second through `IdentityService::refresh`: a sequential
//!    chain, independent families in parallel, and a chain over `POST /oauth/token`.
//! 4. PostgreSQL ([`pg`]): `list_quotes`'s query over 100 tenants × 10,000 quotes through
//!    row-level security as the application role against the owner's explicitly filtered
//!    query without it; and the pipeline with one instance against two on one database.
//!
//! `BENCH_SUITE=sqlite` or `BENCH_SUITE=postgres` runs one part only (default: both).
//!
//! A second target, `cargo bench -p bastion-bench --bench ledger` ([`ledger`]), measures
//! durable journal entries per second on SQLite and PostgreSQL side by side.
//!
//! `--bench charges` ([`charges`]): 100 concurrent identical charge requests through the
//! pipeline and the psp-sandbox — one PSP call, the latency of the 99 replays.
//! `--bench agent` ([`agent`]) measures a masked agent tool call against the same REST call.
//!
//! It prints a Markdown table on stdout (progress goes to stderr). Time is measured with
//! `std::time::Instant` in one function, [`stats::now`]; nothing else in Bastion reads it.
//!
//! The benchmark target only runs when given `--bench` (as `cargo bench` does), so
//! `cargo test --all-targets` builds it and returns at once.

pub mod agent;
pub mod cedar;
pub mod charges;
pub mod ledger;
pub mod list;
pub mod pg;
pub mod refresh;
pub mod setup;
pub mod stats;
pub mod webhooks;

use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use bastion_server::listen::{self, ConnLimits};
use bastion_store::TenantScope;
use bastion_store::records::{self, ListFilter, Page};

use crate::stats::{Samples, Summary, fmt_ns, now};

/// A benchmark failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError(pub String);

impl Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// Adds context to a failure.
pub trait Ctx<T> {
    /// The value, or a [`BenchError`] saying `what` failed and why.
    ///
    /// # Errors
    /// When `self` is an error or `None`.
    fn ctx(self, what: &str) -> Result<T, BenchError>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.ok_or_else(|| BenchError(what.to_owned()))
    }
}

/// How many of everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Smoke run.
    pub quick: bool,
    /// Timed Cedar decisions.
    pub decisions: usize,
    /// Quotes seeded per tenant.
    pub quotes: usize,
    /// Sequential requests per list variant.
    pub list_requests: usize,
    /// Concurrent HTTP clients (each does `list_requests / list_concurrency`).
    pub list_concurrency: usize,
    /// Rotations in the sequential refresh chain.
    pub refresh_chain: usize,
    /// Independent refresh families rotated in parallel.
    pub refresh_families: usize,
    /// Rotations per parallel family.
    pub refresh_per_family: usize,
    /// Rotations over HTTP.
    pub refresh_http: usize,
    /// fsync probes.
    pub fsyncs: usize,
}

impl Sizes {
    /// The full run (about a minute and a half on 2 cores, most of it waiting on fsync).
    pub const FULL: Self = Self {
        quick: false,
        decisions: 100_000,
        quotes: 1_000,
        list_requests: 2_000,
        list_concurrency: 4,
        refresh_chain: 2_000,
        refresh_families: 8,
        refresh_per_family: 250,
        refresh_http: 1_000,
        fsyncs: 300,
    };

    /// `BENCH_QUICK=1`: a few hundred iterations of each, for a smoke test.
    pub const QUICK: Self = Self {
        quick: true,
        decisions: 3_000,
        quotes: 100,
        list_requests: 200,
        list_concurrency: 4,
        refresh_chain: 200,
        refresh_families: 4,
        refresh_per_family: 50,
        refresh_http: 100,
        fsyncs: 30,
    };

    /// From the environment: `BENCH_QUICK=1` (or any value but `0` / empty) picks [`Self::QUICK`].
    #[must_use]
    pub fn from_env() -> Self {
        match std::env::var("BENCH_QUICK") {
            Ok(v) if !v.is_empty() && v != "0" => Self::QUICK,
            _ => Self::FULL,
        }
    }
}

/// Entry point of the bench target.
#[must_use]
pub fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "bastion-bench: run with `cargo bench -p bastion-bench` (BENCH_QUICK=1 for a smoke run)"
        );
        return ExitCode::SUCCESS;
    }
    let sizes = Sizes::from_env();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = now();
    let suite = std::env::var("BENCH_SUITE").unwrap_or_default();
    let pg_sizes = if sizes.quick {
        pg::PgSizes::QUICK
    } else {
        pg::PgSizes::FULL
    };
    let result = rt.block_on(async {
        let mut report = String::new();
        if suite != "postgres" {
            report.push_str(&run(sizes).await?);
        }
        if suite != "sqlite" {
            report.push_str(&run_pg(pg_sizes).await?);
        }
        Ok::<_, BenchError>(report)
    });
    match result {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{report}");
            let _ = out.flush();
            eprintln!(
                "bastion-bench: done in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bastion-bench: failed: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn progress(msg: &str) {
    eprintln!("bastion-bench: {msg}");
}

/// One table row.
struct Row {
    label: String,
    summary: Summary,
    anchor: String,
}

impl Row {
    fn new(label: impl Into<String>, s: &Samples, anchor: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            summary: s.summary(),
            anchor: anchor.into(),
        }
    }
}

/// Writes and fdatasyncs a 4 KiB block `n` times next to the database: the floor under any
/// committed SQLite transaction (`synchronous=FULL` syncs the WAL at each commit).
pub(crate) fn fsync_floor(dir: &Path, n: usize) -> Result<Samples, BenchError> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).ctx("fsync probe")?;
    let block = [0x5a_u8; 4096];
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        f.write_all(&block).ctx("fsync probe write")?;
        f.sync_data().ctx("fsync probe sync")?;
        s.push(t.elapsed());
    }
    s.wall = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(s)
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews every figure.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Runs everything and renders the Markdown report.
///
/// # Errors
/// The first failing step.
pub async fn run(sz: Sizes) -> Result<String, BenchError> {
    progress(if sz.quick {
        "quick mode (BENCH_QUICK)"
    } else {
        "full mode"
    });
    let load_before = load_average();
    let fx = setup::Fixture::new().await?;

    // --- accounts --------------------------------------------------------------------
    progress("creating users");
    let buyer = fx.add_user("acme", "buyer", "buyer").await?;
    let buyer2 = fx.add_user("acme", "buyer2", "buyer").await?;
    let seller = fx.add_user("acme", "seller", "seller").await?;
    let finance = fx.add_user("acme", "finance", "finance").await?;
    let finance2 = fx.add_user("acme", "finance2", "finance").await?;
    let g_buyer = fx.add_user("globex", "buyer", "buyer").await?;
    let g_seller = fx.add_user("globex", "seller", "seller").await?;
    let rt_seq = fx.add_user("acme", "rt-seq", "buyer").await?;
    let rt_http = fx.add_user("acme", "rt-http", "buyer").await?;
    let mut rt_par = Vec::new();
    for i in 0..sz.refresh_families {
        rt_par.push(fx.add_user("acme", &format!("rt-{i}"), "buyer").await?);
    }
    let (_, p_buyer) = fx.principal(&buyer).await?;
    let (_, p_buyer2) = fx.principal(&buyer2).await?;
    let (_, p_seller) = fx.principal(&seller).await?;
    let (_, p_finance) = fx.principal(&finance).await?;
    let (_, p_gbuyer) = fx.principal(&g_buyer).await?;

    // --- seed --------------------------------------------------------------------------
    progress(&format!(
        "seeding {} quotes per tenant through the pipeline",
        sz.quotes
    ));
    let mut seed_acme = Samples::with_capacity(sz.quotes);
    fx.seed_quotes(&p_buyer, seller.user_id, sz.quotes, &mut seed_acme)
        .await?;
    let mut seed_globex = Samples::with_capacity(sz.quotes);
    fx.seed_quotes(&p_gbuyer, g_seller.user_id, sz.quotes, &mut seed_globex)
        .await?;

    // --- fsync floor ---------------------------------------------------------------------
    progress("fsync probe");
    let fsync = fsync_floor(fx.dir.path(), sz.fsyncs)?;

    // --- 1. Cedar ----------------------------------------------------------------------
    progress(&format!("cedar: {} decisions", sz.decisions));
    let quote = {
        let mut tx = fx
            .store
            .begin(TenantScope::of(&p_buyer))
            .await
            .ctx("begin")?;
        let (rows, _) = records::list_records(&mut tx, "quote", &ListFilter::All, Page::first(1))
            .await
            .ctx("list_records")?;
        tx.rollback().await.ctx("rollback")?;
        rows.into_iter().next().ctx("no quote seeded")?
    };
    let case = cedar::CedarCase {
        buyer: &p_buyer,
        other_buyer: &p_buyer2,
        seller: &p_seller,
        finance: &p_finance,
        foreign_buyer: &p_gbuyer,
        quote: &quote,
        acme: fx.acme,
    };
    let cedar_res = cedar::run(&fx.authz, &case, sz.decisions, fx.clock.now())?;

    // --- 2. list_quotes ----------------------------------------------------------------
    progress("list_quotes: HTTP server on 127.0.0.1:0");
    let (fin_pair, p_finance2) = fx.principal(&finance2).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .ctx("bind 127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr().ctx("local addr")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(listen::serve(
        listener,
        bastion_server::router(fx.state.clone()),
        None,
        ConnLimits::default(),
        stop_rx,
    ));
    progress(&format!(
        "list_quotes over HTTP: {} sequential, then {} clients",
        sz.list_requests, sz.list_concurrency
    ));
    let (http_seq, http_par) = list::http(
        addr,
        &fin_pair.access_token,
        sz.list_requests,
        sz.list_concurrency,
        sz.quotes,
    )
    .await?;
    progress("list_quotes through the router in-process (oneshot)");
    let oneshot = list::oneshot(
        bastion_server::router(fx.state.clone()),
        &fin_pair.access_token,
        sz.list_requests,
        sz.quotes,
    )
    .await?;
    progress("list_quotes through Pipeline::call");
    let pipe = list::pipeline(&fx.pipeline, &p_finance2, sz.list_requests, sz.quotes).await?;
    progress("records::list_records alone");
    let bare = list::store(
        &fx.store,
        &p_finance2,
        &ListFilter::All,
        sz.list_requests,
        sz.quotes,
    )
    .await?;

    // --- 3. refresh ----------------------------------------------------------------------
    progress(&format!("refresh: chain of {}", sz.refresh_chain));
    let seq_pair = fx.login(&rt_seq).await?;
    let (rt_chain, _) =
        refresh::chain(&fx.identity, seq_pair.refresh_token, sz.refresh_chain).await?;
    progress(&format!(
        "refresh: {} families x {}",
        sz.refresh_families, sz.refresh_per_family
    ));
    let mut tokens = Vec::new();
    for a in &rt_par {
        tokens.push(fx.login(a).await?.refresh_token);
    }
    let rt_parallel = refresh::parallel(&fx.identity, tokens, sz.refresh_per_family).await?;
    progress(&format!("refresh over HTTP: chain of {}", sz.refresh_http));
    let http_pair = fx.login(&rt_http).await?;
    let rt_over_http = refresh::http_chain(addr, http_pair.refresh_token, sz.refresh_http).await?;

    let _ = stop_tx.send(true);
    let _ = server.await;
    fx.store.close().await;

    // --- report --------------------------------------------------------------------------
    let mut rows = vec![Row::new(
        format!("Cedar `decide`, mix of {} kinds (all)", cedar::KINDS.len()),
        &cedar_res.all,
        "Cedar paper: 4–11 µs median",
    )];
    for (k, s) in cedar::KINDS.iter().zip(&cedar_res.per_kind) {
        let verdict = if k.expect_allow { "allow" } else { "deny" };
        rows.push(Row::new(format!("  · {} ({verdict})", k.label), s, ""));
    }
    let page = format!("page {} of {}", list::PAGE_LIMIT, sz.quotes);
    rows.push(Row::new(
        format!("`list_quotes` HTTP, 1 keep-alive client ({page})"),
        &http_seq,
        "",
    ));
    rows.push(Row::new(
        format!(
            "`list_quotes` HTTP, {} concurrent clients",
            sz.list_concurrency
        ),
        &http_par,
        "",
    ));
    rows.push(Row::new(
        "`list_quotes` router in-process (`oneshot`)",
        &oneshot,
        "",
    ));
    rows.push(Row::new(
        "`list_quotes` `Pipeline::call` (no HTTP, no JWT)",
        &pipe,
        "",
    ));
    rows.push(Row::new(
        "`records::list_records` alone (tx, query, rollback)",
        &bare,
        "",
    ));
    rows.push(Row::new(
        "`IdentityService::refresh`, sequential chain",
        &rt_chain,
        "Keycloak: 120/s per vCPU",
    ));
    rows.push(Row::new(
        format!(
            "`IdentityService::refresh`, {} families in parallel",
            sz.refresh_families
        ),
        &rt_parallel,
        "Keycloak: 120/s per vCPU",
    ));
    rows.push(Row::new(
        "`POST /oauth/token` refresh over HTTP, sequential",
        &rt_over_http,
        "Keycloak: 120/s per vCPU",
    ));
    rows.push(Row::new(
        "`create_quote` via `Pipeline::call` (seeding, acme)",
        &seed_acme,
        "",
    ));
    rows.push(Row::new("fsync floor: 4 KiB write + fdatasync", &fsync, ""));

    let mut md = String::new();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    md.push_str(&format!(
        "## Bastion benchmark ({} run)\n\n",
        if sz.quick { "quick" } else { "full" }
    ));
    md.push_str(&format!(
        "- machine: {cores} CPU(s), {}; load average (1/5/15 min) at start {load_before}, at end {}\n- store: SQLite file (WAL, synchronous=FULL) in {}\n- seeded: 2 tenants × {} quotes (created through the pipeline); list page size {}\n- Cedar: {} decisions, {} allowed\n\n",
        cpu_model(),
        load_average(),
        fx.db_path.parent().map_or_else(String::new, |p| p.display().to_string()),
        sz.quotes,
        list::PAGE_LIMIT,
        cedar_res.all.nanos.len(),
        cedar_res.allowed,
    ));
    md.push_str("| measurement | n | ops/s | mean | p50 | p99 | max | anchor |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for r in &rows {
        let s = r.summary;
        md.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
            r.label,
            s.n,
            s.ops_per_sec,
            fmt_ns(s.mean_ns),
            fmt_ns(p(s.p50_ns)),
            fmt_ns(p(s.p99_ns)),
            fmt_ns(p(s.max_ns)),
            r.anchor
        ));
    }
    let (hs, hp, os, ps, bs) = (
        http_seq.summary(),
        http_par.summary(),
        oneshot.summary(),
        pipe.summary(),
        bare.summary(),
    );
    let (rc, rp, rh, fs) = (
        rt_chain.summary(),
        rt_parallel.summary(),
        rt_over_http.summary(),
        fsync.summary(),
    );
    let c = cedar_res.all.summary();
    md.push_str("\n### Ratios\n\n");
    md.push_str(&format!(
        "- `list_quotes` HTTP (1 client) vs bare store: p50 ×{:.1}, p99 ×{:.1}, throughput ÷{:.1}\n",
        ratio(p(hs.p50_ns), p(bs.p50_ns)),
        ratio(p(hs.p99_ns), p(bs.p99_ns)),
        ratio(bs.ops_per_sec, hs.ops_per_sec),
    ));
    md.push_str(&format!(
        "- `list_quotes` HTTP ({} clients) vs bare store: throughput ÷{:.1}; vs HTTP 1 client: ×{:.2}\n",
        sz.list_concurrency,
        ratio(bs.ops_per_sec, hp.ops_per_sec),
        ratio(hp.ops_per_sec, hs.ops_per_sec),
    ));
    md.push_str(&format!(
        "- where the time goes (p50): socket+HTTP {} · router layers+JWT verify {} · pipeline minus store {} · store {}\n",
        fmt_ns(p(hs.p50_ns) - p(os.p50_ns)),
        fmt_ns(p(os.p50_ns) - p(ps.p50_ns)),
        fmt_ns(p(ps.p50_ns) - p(bs.p50_ns)),
        fmt_ns(p(bs.p50_ns)),
    ));
    md.push_str(&format!(
        "- pipeline p50 / fsync p50: ×{:.1} (each pipeline call commits an audit record)\n",
        ratio(p(ps.p50_ns), p(fs.p50_ns)),
    ));
    md.push_str(&format!(
        "- Cedar p50 {} vs the paper's 4–11 µs median: ×{:.2} of 4 µs, ×{:.2} of 11 µs\n",
        fmt_ns(p(c.p50_ns)),
        ratio(p(c.p50_ns), 4_000.0),
        ratio(p(c.p50_ns), 11_000.0),
    ));
    md.push_str(&format!(
        "- refresh/s vs Keycloak's 120/s per vCPU × {cores} vCPU = {}/s: chain ×{:.2}, parallel ×{:.2}, HTTP ×{:.2}\n",
        120 * cores,
        ratio(rc.ops_per_sec, 120.0 * p(cores as u64)),
        ratio(rp.ops_per_sec, 120.0 * p(cores as u64)),
        ratio(rh.ops_per_sec, 120.0 * p(cores as u64)),
    ));
    Ok(md)
}

/// The PostgreSQL part, rendered as Markdown.
///
/// # Errors
/// The first failing step.
pub async fn run_pg(sz: pg::PgSizes) -> Result<String, BenchError> {
    let load_before = load_average();
    let r = pg::rls(sz, &progress).await?;
    let i = pg::instances(sz, &progress).await?;
    let mut md = String::new();
    md.push_str(&format!(
        "\n## PostgreSQL: row-level security and instances\n\n- load average at start {load_before}, at end {}\n- data: {} tenants × {} quotes, bulk-loaded by the owner; every count saw {} rows\n- plan of the RLS page query: `{}`\n- plan of the owner's page query: `{}`\n\n",
        load_average(),
        sz.tenants,
        sz.quotes,
        r.counted,
        r.plan_rls.trim(),
        r.plan_owner.trim(),
    ));
    md.push_str("| measurement | n | ops/s | mean | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n");
    let rows = [
        (
            "page 20 + count, store as app role (RLS + WHERE tenant_id)",
            &r.store,
        ),
        (
            "page 20 + count, app role, RLS only (no tenant filter in SQL)",
            &r.rls_only,
        ),
        (
            "page 20 + count, owner, explicit WHERE tenant_id, no RLS",
            &r.owner,
        ),
        (
            &*format!("`list_quotes` HTTP, {} clients, one instance", sz.clients),
            &i.list_one,
        ),
        (
            &*format!("`list_quotes` HTTP, {} clients, two instances", sz.clients),
            &i.list_two,
        ),
        (
            &*format!("`create_quote` HTTP, {} clients, one instance", sz.clients),
            &i.create_one,
        ),
        (
            &*format!("`create_quote` HTTP, {} clients, two instances", sz.clients),
            &i.create_two,
        ),
    ];
    for (label, s) in rows {
        let x = s.summary();
        md.push_str(&format!(
            "| {label} | {} | {:.0} | {} | {} | {} | {} |\n",
            x.n,
            x.ops_per_sec,
            fmt_ns(x.mean_ns),
            fmt_ns(p(x.p50_ns)),
            fmt_ns(p(x.p99_ns)),
            fmt_ns(p(x.max_ns)),
        ));
    }
    let (st, ro, ow) = (r.store.summary(), r.rls_only.summary(), r.owner.summary());
    md.push_str("\n### Ratios\n\n");
    md.push_str(&format!(
        "- RLS only vs owner without RLS: p50 ×{:.2}, p99 ×{:.2}, throughput ×{:.2}\n",
        ratio(p(ro.p50_ns), p(ow.p50_ns)),
        ratio(p(ro.p99_ns), p(ow.p99_ns)),
        ratio(ro.ops_per_sec, ow.ops_per_sec),
    ));
    md.push_str(&format!(
        "- store (RLS + filter) vs owner without RLS: p50 ×{:.2}, throughput ×{:.2}\n",
        ratio(p(st.p50_ns), p(ow.p50_ns)),
        ratio(st.ops_per_sec, ow.ops_per_sec),
    ));
    let (l1, l2, c1, c2) = (
        i.list_one.summary(),
        i.list_two.summary(),
        i.create_one.summary(),
        i.create_two.summary(),
    );
    md.push_str(&format!(
        "- two instances vs one: `list_quotes` throughput ×{:.2}, `create_quote` throughput ×{:.2} (both instances share this machine's {} CPU(s) with PostgreSQL)\n",
        ratio(l2.ops_per_sec, l1.ops_per_sec),
        ratio(c2.ops_per_sec, c1.ops_per_sec),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    ));
    Ok(md)
}

/// u64 → f64 for display arithmetic (values far below 2^52).
pub(crate) fn p(x: u64) -> f64 {
    x as f64
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}
