//! Payments operations: `bastion reconcile`, the scheduled `reconcile` job, and
//! `bastion webhooks rotate-secret`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bastion_ledger::reconcile::{self, Day, ReconcileReport, Reconciliation};
use bastion_payments::psp::{ApiKey, StripeConfig, StripePsp};
use bastion_server::config::{Config, Profile, PspSection, WebhookScheme};
use bastion_store::jobs::{self, Job, NewJob};
use bastion_store::{Store, tenants};
use bastion_tools::worker::{HandlerFuture, JobFailure, JobHandler};
use bastion_types::{SharedClock, Slug};
use serde_json::json;

use crate::runtime;

/// The job kind of the daily reconciliation.
pub const RECONCILE_JOB: &str = "reconcile";
/// Attempts of one day's reconciliation job before it is dead-lettered (with an alert).
pub const RECONCILE_JOB_ATTEMPTS: i64 = 8;
/// How often the scheduler offers yesterday's job (it is stored once per day).
pub const RECONCILE_TICK: Duration = Duration::from_secs(15 * 60);
/// Random bytes of a new webhook secret (Standard Webhooks asks for 24 to 64; Stripe's are
/// 32 characters after `whsec_`, which 24 bytes in base64url give).
pub const WEBHOOK_SECRET_RANDOM_BYTES: usize = 32;

/// The PSP adapter of `[payments.psp]`, its key read from its file.
///
/// # Errors
/// An unreadable key file, a key or base URL the adapter refuses.
pub fn psp_from_config(section: &PspSection) -> anyhow::Result<StripePsp> {
    let key = String::from_utf8(runtime::read_secret_file(&section.api_key_file)?)
        .context("payments.psp.api_key_file is not text")?;
    let key = ApiKey::parse(&key).map_err(|e| anyhow::anyhow!("payments.psp.api_key_file: {e}"))?;
    StripePsp::new(StripeConfig::new(section.base_url.clone(), key))
        .map_err(|e| anyhow::anyhow!("payments.psp.base_url: {e}"))
}

/// Reconciles `day` against `psp`, then alerts and audits the result.
async fn run_day(
    store: &Store,
    psp: &StripePsp,
    daily_report: bool,
    day: Day,
    tenant: Option<bastion_types::TenantId>,
) -> Result<ReconcileReport, reconcile::ReconcileError> {
    let side = reconcile::fetch_psp_side(psp, daily_report.then_some(psp), day).await?;
    let report = reconcile::reconcile(store, &side, Reconciliation { day, tenant }).await?;
    reconcile::record(store, &report).await?;
    Ok(report)
}

/// `bastion reconcile --config FILE --date YYYY-MM-DD [--tenant SLUG] [--json]`: exit 0 on a
/// clean day, 1 when drift was found (or on an error).
pub async fn reconcile_cmd(
    config: &Path,
    date: &str,
    tenant: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    cfg.check_safe()?;
    let Some(section) = &cfg.payments.psp else {
        bail!("the config has no [payments.psp] section: nothing to reconcile against");
    };
    let day = Day::parse(date).map_err(|e| anyhow::anyhow!("--date: {e}"))?;
    let psp = psp_from_config(section)?;
    let store = runtime::open_store(&cfg.database.url, runtime::clock()).await?;
    let tenant_id = match tenant {
        None => None,
        Some(slug) => {
            let slug = Slug::parse(slug).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let mut sys = store.system().await?;
            let t = tenants::tenant_by_slug(&mut sys, &slug)
                .await?
                .with_context(|| format!("no tenant `{slug}`"))?;
            sys.rollback().await?;
            Some(t.id)
        }
    };
    let report = run_day(&store, &psp, section.daily_report, day, tenant_id)
        .await
        .context("reconciliation failed")?;
    let mut out = std::io::stdout().lock();
    if as_json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&report))?;
    }
    out.flush()?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The human form of a report.
fn table(r: &ReconcileReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "reconciliation {}: {} balance transaction(s), {} report line(s), {} ledger entr(ies), {} matched, {} drift",
        r.date,
        r.psp_transactions,
        r.report_lines
            .map_or_else(|| "no".to_owned(), |n| n.to_string()),
        r.ledger_entries,
        r.matched,
        r.drift_count
    );
    for (k, n) in &r.counts {
        let _ = writeln!(s, "  {:<18} {n}", k.as_str());
    }
    if !r.items.is_empty() {
        let _ = writeln!(
            s,
            "{:<18} {:<28} {:<8} {:>14} {:>14} {:>10} {:>10} {:>10}  tenant",
            "kind", "object", "currency", "ledger", "psp", "l.fee", "p.fee", "diff"
        );
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for i in &r.items {
            let currency = match i.psp_currency {
                Some(p) => format!("{}/{}", i.currency, p),
                None => i.currency.to_string(),
            };
            let _ = writeln!(
                s,
                "{:<18} {:<28} {:<8} {:>14} {:>14} {:>10} {:>10} {:>10}  {}",
                i.kind.as_str(),
                i.object,
                currency,
                opt(i.ledger_minor),
                opt(i.psp_minor),
                opt(i.ledger_fee_minor),
                opt(i.psp_fee_minor),
                opt(i.difference_minor),
                i.tenant.map_or_else(|| "-".to_owned(), |t| t.to_string())
            );
        }
        if r.truncated {
            let _ = writeln!(s, "(more items than listed; counts are complete)");
        }
    }
    s
}

/// The `reconcile` job: payload `{"date": "YYYY-MM-DD"}`; reconciles that day for every
/// tenant, alerting and auditing its drift. Drift is a result, not a failure: the job
/// succeeds; a PSP or store error fails the attempt (retried with backoff, then
/// dead-lettered with an alert).
#[derive(Debug, Clone)]
pub struct ReconcileJob {
    /// The PSP.
    pub psp: StripePsp,
    /// Whether to compare the daily report too.
    pub daily_report: bool,
}

impl JobHandler for ReconcileJob {
    fn handle<'a>(&'a self, store: &'a Store, job: &'a Job) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload: serde_json::Value =
                serde_json::from_str(&job.payload).map_err(|_| JobFailure("bad job payload"))?;
            let day = payload["date"]
                .as_str()
                .and_then(|d| Day::parse(d).ok())
                .ok_or(JobFailure("bad job payload"))?;
            match run_day(store, &self.psp, self.daily_report, day, None).await {
                Ok(_) => Ok(()),
                Err(reconcile::ReconcileError::Psp(e)) => {
                    tracing::warn!(error = %e, job = %job.id, "reconcile job: psp error");
                    Err(JobFailure("psp error"))
                }
                Err(reconcile::ReconcileError::Store(e)) => {
                    tracing::warn!(error = %e, job = %job.id, "reconcile job: store error");
                    Err(JobFailure("store error"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, job = %job.id, "reconcile job failed");
                    Err(JobFailure("psp report error"))
                }
            }
        })
    }
}

/// Enqueues the `reconcile` job of the day before `clock`'s today, once per day whatever
/// the number of instances and ticks ([`jobs::enqueue_once`]). Returns whether it was new.
///
/// # Errors
/// The store's.
pub async fn schedule_yesterday(store: &Store, clock: &SharedClock) -> anyhow::Result<bool> {
    let yesterday = Day::of(clock.now()).prev();
    let payload = json!({ "date": yesterday.to_string() }).to_string();
    let mut sys = store.system().await?;
    let id = jobs::enqueue_once(
        &mut sys,
        &NewJob {
            kind: RECONCILE_JOB,
            payload: &payload,
            max_attempts: RECONCILE_JOB_ATTEMPTS,
            delay_secs: 0,
        },
    )
    .await?;
    sys.commit().await?;
    Ok(id.is_some())
}

/// Offers yesterday's reconciliation every [`RECONCILE_TICK`] until `stop`.
pub fn spawn_scheduler(
    store: Store,
    clock: SharedClock,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                return;
            }
            match schedule_yesterday(&store, &clock).await {
                Ok(true) => tracing::info!("reconcile job of yesterday enqueued"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot enqueue the reconcile job"),
            }
            tokio::select! {
                () = tokio::time::sleep(RECONCILE_TICK) => {}
                _ = stop.changed() => {}
            }
        }
    });
}

/// The reconcile job handler for `cfg`, when it configures a PSP.
///
/// # Errors
/// As [`psp_from_config`].
pub fn reconcile_job(cfg: &Config) -> anyhow::Result<Option<ReconcileJob>> {
    cfg.payments
        .psp
        .as_ref()
        .map(|s| {
            Ok(ReconcileJob {
                psp: psp_from_config(s)?,
                daily_report: s.daily_report,
            })
        })
        .transpose()
}

/// `bastion psp-sandbox` refuses to run under a `stage` or `prod` config.
///
/// # Errors
/// The config does not load, or names `stage` or `prod`.
pub fn refuse_sandbox_outside_dev(config: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = config else { return Ok(()) };
    let cfg = Config::load(path)?;
    if cfg.profile != Profile::Dev {
        bail!(
            "refusing to start: the PSP sandbox is a test double and the config's profile is {:?}",
            cfg.profile
        );
    }
    Ok(())
}

/// A new webhook signing secret for `scheme`: Stripe style `whsec_` + 43 base64url
/// characters (32 random bytes), or Standard Webhooks `whsec_` + base64 of 32 random bytes.
///
/// # Errors
/// The system's random source failed.
pub fn new_webhook_secret(scheme: WebhookScheme) -> anyhow::Result<String> {
    Ok(match scheme {
        WebhookScheme::Stripe => format!(
            "whsec_{}",
            bastion_crypto::random_token(WEBHOOK_SECRET_RANDOM_BYTES)?
        ),
        WebhookScheme::Standard => {
            let bytes = bastion_crypto::random_bytes(WEBHOOK_SECRET_RANDOM_BYTES)?;
            format!("whsec_{}", data_encoding::BASE64.encode(&bytes))
        }
    })
}

fn toml_list(files: &[PathBuf]) -> String {
    let items: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", f.display().to_string()))
        .collect();
    format!("secret_files = [{}]", items.join(", "))
}

/// `bastion webhooks rotate-secret --config FILE --provider P [--retire OLD_FILE]`.
///
/// Without `--retire`: writes a new secret to a new 0600 file next to the provider's first
/// secret file (created exclusively, never overwriting), checks that the old and new secrets
/// together make a valid verifier, prints the new `secret_files` line (old files first, the
/// new one last: every listed secret is accepted) and, once, the new secret for the operator
/// to register at the PSP. Never logged.
///
/// With `--retire OLD_FILE`: checks OLD_FILE is listed and not the only secret, and prints
/// the `secret_files` line without it; once the config is changed and the server restarted,
/// signatures made with the old secret are refused and the file can be deleted.
///
/// # Errors
/// No such provider, an unlisted or last file to retire, I/O errors.
pub async fn rotate_secret(
    config: &Path,
    provider: &str,
    retire: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let Some(section) = cfg
        .payments
        .webhooks
        .iter()
        .find(|w| w.provider == provider)
    else {
        bail!("the config has no [[payments.webhooks]] with provider `{provider}`");
    };
    let mut out = std::io::stdout().lock();
    if let Some(old) = retire {
        if !section.secret_files.iter().any(|f| f == old) {
            bail!(
                "`{}` is not one of provider `{provider}`'s secret_files",
                old.display()
            );
        }
        let left: Vec<PathBuf> = section
            .secret_files
            .iter()
            .filter(|f| f.as_path() != old)
            .cloned()
            .collect();
        if left.is_empty() {
            bail!("refusing to retire the only secret of provider `{provider}`");
        }
        writeln!(
            out,
            "In {}, under [[payments.webhooks]] provider = \"{provider}\", set:\n  {}\nthen restart; afterwards delete {}.",
            config.display(),
            toml_list(&left),
            old.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let dir = section
        .secret_files
        .first()
        .and_then(|f| f.parent())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let secret = new_webhook_secret(section.scheme)?;
    // The old secrets and the new one must make a valid verifier (count, format).
    let mut all = Vec::new();
    for f in &section.secret_files {
        all.push(
            String::from_utf8(runtime::read_secret_file(f)?)
                .with_context(|| format!("{} is not text", f.display()))?,
        );
    }
    all.push(secret.clone());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let kind = match section.scheme {
        WebhookScheme::Stripe => bastion_payments::webhook::ProviderKind::Stripe,
        WebhookScheme::Standard => bastion_payments::webhook::ProviderKind::StandardWebhooks,
    };
    bastion_payments::webhook::WebhookVerifier::new(
        kind,
        &refs,
        section.tolerance_secs,
        runtime::clock(),
    )
    .map_err(|e| anyhow::anyhow!("the rotated secret list would not verify: {e}"))?;
    let now = runtime::clock().now();
    let path = dir.join(format!("{provider}-whsec-{now}"));
    write_new_private(&path, secret.as_bytes())?;
    let mut files = section.secret_files.clone();
    files.push(path.clone());
    writeln!(
        out,
        "New secret written to {} (mode 0600).\nIn {}, under [[payments.webhooks]] provider = \"{provider}\", set:\n  {}\nthen restart: the old and the new secret are both accepted.\nRegister this secret at the PSP (shown once, never logged):\n{secret}\nWhen the PSP signs with it, retire the old one: bastion webhooks rotate-secret --config {} --provider {provider} --retire OLD_FILE",
        path.display(),
        config.display(),
        toml_list(&files),
        config.display()
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` exclusively with mode 0600 and writes `bytes`.
fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
