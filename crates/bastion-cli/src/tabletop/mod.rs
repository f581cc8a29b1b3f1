//! `bastion tabletop`: the vendor-quote rollout's tabletop exercise as a command.
//!
//! Each scenario in [`scenarios::CATALOG`] states an attack, the control expected to stop it
//! and the evidence required; the command runs them against a demo instance it starts itself
//! (fresh data dir; SQLite, or PostgreSQL with `--database-url`) or against an existing one
//! (`--url`, driven only through its public HTTP interface with the demo credentials), and
//! writes a report (Markdown and JSON) citing the audit records that prove each outcome.
//! Exit status 1 when any scenario fails.

pub mod ai;
pub mod client;
pub mod model;
pub mod money;
pub mod report;
pub mod scenarios;
mod tamper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bastion_store::{Store, TenantScope};
use bastion_types::TenantId;
use serde_json::Value;

use self::client::Client;
use self::report::{AuditRef, Report, ScenarioReport, Status};

/// Options of `bastion tabletop`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Drive this existing instance instead of starting one.
    pub url: Option<String>,
    /// The demo credentials of the existing instance (`--url` only).
    pub credentials: Option<PathBuf>,
    /// Data dir of the instance (`--url`: optional, for audit evidence and the tamper
    /// scenario on SQLite; self-started: where to put it, default a fresh temp dir).
    pub data: Option<PathBuf>,
    /// PostgreSQL URL of a role that may create schemas and roles (self-started), or of the
    /// existing instance's database (`--url`, for evidence and the tamper scenario).
    pub database_url: Option<String>,
    /// App dir to serve (self-started only).
    pub app: Option<PathBuf>,
    /// Where to write the report: `FILE.md` and `FILE.json` (default: print Markdown).
    pub report: Option<PathBuf>,
    /// Run only the scenarios whose id contains this text.
    pub only: Option<String>,
}

/// What a scenario may use.
pub struct Target {
    /// HTTP client of the instance, with the demo credentials.
    pub client: Client,
    /// The instance's store, when reachable (evidence; kill switch as the operator).
    pub store: Option<Store>,
    /// PostgreSQL URL of the owner (self-started), for the tamper scenario.
    pub database_url: Option<String>,
    /// The URL the instance serves from (`sqlite://…`, or PostgreSQL as its app role).
    pub instance_db_url: Option<String>,
    /// The webhook signing secret the instance accepts (from DIR/psp-webhook.secret).
    pub webhook_secret: Option<String>,
    /// What the tabletop's obedient model received (self-started instances only).
    pub model: Option<model::Recorded>,
    /// The quote with a captured deposit the refund scenarios share (made on first use).
    pub paid: tokio::sync::OnceCell<money::PaidQuote>,
    /// Tenant slug → id (read on first use).
    pub tenants: tokio::sync::OnceCell<Vec<(String, TenantId)>>,
}

/// The id of the tenant `slug`.
///
/// # Errors
/// Without store access, or when there is no such tenant.
pub async fn tenant_id(t: &Target, slug: &str) -> anyhow::Result<TenantId> {
    t.chains()
        .await?
        .into_iter()
        .find(|(s, _)| s == slug)
        .map(|(_, id)| id)
        .with_context(|| format!("no tenant {slug} (or no store access)"))
}

impl Target {
    /// Tenant slug → id of every tenant, read once (the demo's tenants do not change during
    /// a run).
    async fn chains(&self) -> anyhow::Result<Vec<(String, TenantId)>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let tenants = self
            .tenants
            .get_or_try_init(|| async {
                let mut sys = store.system().await?;
                let tenants = bastion_store::tenants::list_tenants(&mut sys).await?;
                sys.rollback().await?;
                anyhow::Ok(
                    tenants
                        .into_iter()
                        .map(|t| (t.slug.as_str().to_owned(), t.id))
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        Ok(tenants.clone())
    }

    /// The current head (last seq) of every chain, keyed by chain name.
    pub async fn audit_marks(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut marks = BTreeMap::new();
        let Some(store) = &self.store else {
            return Ok(marks);
        };
        let mut sys = store.system().await?;
        let head = bastion_store::audit::system_chain_head(&mut sys).await?;
        sys.rollback().await?;
        marks.insert("system".to_owned(), head.map_or(0, |h| h.0));
        for (slug, id) in self.chains().await? {
            let mut tx = store.begin(TenantScope::pre_auth(id)).await?;
            let head = bastion_store::audit::chain_head(&mut tx).await?;
            tx.rollback().await?;
            marks.insert(slug, head.map_or(0, |h| h.0));
        }
        Ok(marks)
    }

    /// Every audit record appended after `marks`, with its parsed body.
    pub async fn audit_since(
        &self,
        marks: &BTreeMap<String, u64>,
    ) -> anyhow::Result<Vec<(AuditRef, Value)>> {
        /// Records read per chain per scenario: far more than any scenario writes.
        const PAGE: u32 = 1000;
        let mut out = Vec::new();
        let Some(store) = &self.store else {
            return Ok(out);
        };
        let mut sys = store.system().await?;
        let after = marks.get("system").copied().unwrap_or(0);
        let records = bastion_store::audit::system_read_chain_page(&mut sys, after, PAGE).await?;
        sys.rollback().await?;
        push_records(&mut out, "system", records);
        for (slug, id) in self.chains().await? {
            let after = marks.get(&slug).copied().unwrap_or(0);
            let mut tx = store.begin(TenantScope::pre_auth(id)).await?;
            let records = bastion_store::audit::read_chain_page(&mut tx, after, PAGE).await?;
            tx.rollback().await?;
            push_records(&mut out, &slug, records);
        }
        Ok(out)
    }
}

fn push_records(
    out: &mut Vec<(AuditRef, Value)>,
    chain: &str,
    records: Vec<bastion_audit::StoredAuditRecord>,
) {
    for r in records {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push((
            AuditRef {
                chain: chain.to_owned(),
                seq: r.seq,
                action: text("action"),
                outcome: text("outcome"),
            },
            body,
        ));
    }
}

/// Runs `bastion tabletop`.
///
/// # Errors
/// When the instance cannot be started or reached, or the report cannot be written.
pub async fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let report = match &opts.url {
        Some(url) => run_existing(url, &opts).await?,
        None => run_self_started(&opts).await?,
    };
    let md = report.markdown();
    match &opts.report {
        Some(path) => {
            let md_path = path.with_extension("md");
            let json_path = path.with_extension("json");
            std::fs::write(&md_path, &md)
                .with_context(|| format!("cannot write {}", md_path.display()))?;
            std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("cannot write {}", json_path.display()))?;
            print_out(&format!(
                "tabletop: {} passed, {} failed, {} skipped; report: {} and {}",
                report.passed,
                report.failed,
                report.skipped,
                md_path.display(),
                json_path.display()
            ));
        }
        None => print_out(&md),
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_self_started(opts: &Options) -> anyhow::Result<Report> {
    let tmp;
    let data = match &opts.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary data dir")?;
            tmp.path().join("data")
        }
    };
    let pg = opts.database_url.as_ref().map(|url| crate::demo::Postgres {
        url: url.clone(),
        app_role: "bastion_tabletop".to_owned(),
    });
    let mode = if pg.is_some() {
        "self-started (postgres)"
    } else {
        "self-started (sqlite)"
    };
    // The instance's model is the tabletop's attacker model: it obeys any instruction it reads.
    let (model_url, recorded) = model::start().await?;
    let agent =
        crate::demo::agent_section(Some(model_url), "tabletop-obedient".to_owned(), None, None)?;
    let started = crate::demo::start(
        &data,
        "127.0.0.1:0",
        opts.app.as_deref(),
        pg,
        crate::demo::PaymentOptions::default(),
        agent,
    )
    .await?;
    let target = Target {
        client: Client::new(&started.url, clone_creds(&started.creds)?)?,
        store: Some(started.store.clone()),
        database_url: opts.database_url.clone(),
        instance_db_url: Some(started.db_url.clone()),
        webhook_secret: read_webhook_secret(&data),
        model: Some(recorded),
        paid: tokio::sync::OnceCell::new(),
        tenants: tokio::sync::OnceCell::new(),
    };
    let url = started.url.clone();
    let mut results = run_catalog(&target, opts.only.as_deref(), scenarios::Phase::Live).await;
    started.stop().await;
    results.extend(run_catalog(&target, opts.only.as_deref(), scenarios::Phase::Stopped).await);
    Ok(Report::new(url, mode.to_owned(), results))
}

async fn run_existing(url: &str, opts: &Options) -> anyhow::Result<Report> {
    let creds_path = opts
        .credentials
        .clone()
        .or_else(|| opts.data.as_ref().map(|d| d.join("demo-credentials.json")))
        .unwrap_or_else(|| PathBuf::from("./bastion-data/demo-credentials.json"));
    let creds: crate::demo::Credentials = serde_json::from_slice(
        &std::fs::read(&creds_path)
            .with_context(|| format!("cannot read {}", creds_path.display()))?,
    )
    .with_context(|| format!("{} is not a demo credentials file", creds_path.display()))?;
    let store = match (&opts.database_url, &opts.data) {
        (Some(db), _) => Some(crate::runtime::open_store(db, crate::runtime::clock()).await?),
        (None, Some(d)) => Some(
            Store::open_sqlite_read_only(&d.join("bastion.db"), crate::runtime::clock())
                .await
                .context("cannot open the instance's database read-only")?,
        ),
        (None, None) => None,
    };
    let target = Target {
        client: Client::new(url, creds)?,
        store,
        database_url: None,
        instance_db_url: opts.database_url.clone().or_else(|| {
            opts.data
                .as_ref()
                .map(|d| format!("sqlite://{}", d.join("bastion.db").display()))
        }),
        webhook_secret: opts.data.as_deref().and_then(read_webhook_secret),
        model: None,
        paid: tokio::sync::OnceCell::new(),
        tenants: tokio::sync::OnceCell::new(),
    };
    let mut results = run_catalog(&target, opts.only.as_deref(), scenarios::Phase::Live).await;
    results.extend(run_catalog(&target, opts.only.as_deref(), scenarios::Phase::Stopped).await);
    Ok(Report::new(
        url.to_owned(),
        "existing instance".to_owned(),
        results,
    ))
}

fn clone_creds(c: &crate::demo::Credentials) -> anyhow::Result<crate::demo::Credentials> {
    Ok(serde_json::from_value(serde_json::to_value(c)?)?)
}

fn read_webhook_secret(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("psp-webhook.secret"))
        .ok()
        .map(|s| s.trim().to_owned())
}

async fn run_catalog(
    target: &Target,
    only: Option<&str>,
    phase: scenarios::Phase,
) -> Vec<ScenarioReport> {
    let mut out = Vec::new();
    for sc in scenarios::CATALOG {
        if sc.phase != phase || only.is_some_and(|o| !sc.id.contains(o)) {
            continue;
        }
        out.push(run_one(target, sc).await);
    }
    out
}

async fn run_one(target: &Target, sc: &scenarios::Scenario) -> ScenarioReport {
    let mut obs = scenarios::Obs {
        marks: target.audit_marks().await.unwrap_or_default(),
        ..scenarios::Obs::default()
    };
    let result = (sc.run)(target, &mut obs).await;
    if let Err(e) = result {
        obs.fail(&format!("could not run: {e:#}"));
    }
    let status = if obs.failed {
        Status::Fail
    } else if let Some(why) = &obs.skipped {
        obs.observed.push(format!("skipped: {why}"));
        Status::Skipped
    } else {
        Status::Pass
    };
    ScenarioReport {
        id: sc.id,
        attack: sc.attack,
        control: sc.control,
        evidence_required: sc.evidence,
        status,
        observed: obs.observed,
        audit: obs.audit,
    }
}

fn print_out(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}
