//! The job worker: claims due jobs from the shared queue, runs their handler, and retries
//! failures with exponential backoff and full jitter ("Exponential Backoff And Jitter", AWS
//! Architecture Blog, 2015) until a job runs out of attempts; then it is dead-lettered with an
//! alert (a `bastion::alert` log line and a system audit record). Dead letters are listed and
//! replayed with `bastion jobs`.
//!
//! Several instances may run workers on one PostgreSQL database: claims use
//! `FOR UPDATE SKIP LOCKED` and leases, and completion is fenced by the attempt number
//! (bastion-store `jobs`).
//!
//! Handlers here: `webhook.stripe` — applies a verified Stripe event from the inbox to the
//! payment it names, forward-only by the object's own ordering (case P6); a
//! `succeeded` status posts the capture journal entry once (3DS payments are captured here).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bastion_audit::{AuditEvent, Outcome};
use bastion_store::jobs::{self, FailOutcome, Job};
use bastion_store::{Store, StoreError, TenantScope, audit, payments, webhook};
use bastion_types::TenantId;
use serde_json::{Value, json};

/// A handler's future.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send + 'a>>;

/// Why a job attempt failed: a fixed phrase, stored on the job (never a secret or PII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure(pub &'static str);

/// Runs one kind of job.
pub trait JobHandler: Send + Sync {
    /// Handles `job`; `Err` makes the worker retry it later (or dead-letter it).
    fn handle<'a>(&'a self, store: &'a Store, job: &'a Job) -> HandlerFuture<'a>;
}

/// Worker settings; every limit explicit.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker name stored on claimed jobs (`[a-z0-9_.-]`).
    pub name: String,
    /// Seconds a claimed job stays leased to this worker.
    pub lease_secs: i64,
    /// Jobs claimed per round.
    pub batch: u32,
    /// First retry delay cap, seconds (doubles each attempt, with full jitter).
    pub backoff_base_secs: u64,
    /// Largest retry delay, seconds.
    pub backoff_cap_secs: u64,
    /// Pause between rounds that found nothing to do.
    pub idle_poll: Duration,
}

impl WorkerConfig {
    /// Defaults: 60 s lease, 16 jobs per round, backoff 2 s doubling up to 15 min, 1 s idle poll.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            lease_secs: 60,
            batch: 16,
            backoff_base_secs: 2,
            backoff_cap_secs: 900,
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Jobs that succeeded.
    pub done: usize,
    /// Jobs queued again for a later attempt.
    pub retried: usize,
    /// Jobs moved to the dead-letter queue.
    pub dead: usize,
}

/// The worker.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    config: WorkerConfig,
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn nil_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

impl Worker {
    /// A worker with no handlers.
    #[must_use]
    pub fn new(store: Store, config: WorkerConfig) -> Self {
        Self {
            store,
            config,
            handlers: BTreeMap::new(),
        }
    }

    /// Registers `handler` for jobs of `kind`.
    #[must_use]
    pub fn with_handler(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// The standard handlers (`webhook.stripe`).
    #[must_use]
    pub fn with_standard_handlers(self) -> Self {
        self.with_handler("webhook.stripe", Arc::new(StripeWebhook::default()))
    }

    /// [`Worker::with_standard_handlers`] for an app: a payment the webhook captures also
    /// moves its record's `status` to `deposit_paid`, as the charge tool does.
    #[must_use]
    pub fn with_app_handlers(self, app: Arc<bastion_app::AppSpec>) -> Self {
        self.with_handler("webhook.stripe", Arc::new(StripeWebhook { app: Some(app) }))
    }

    /// Claims up to `batch` due jobs and runs each once.
    ///
    /// # Errors
    /// [`StoreError`] when the queue cannot be read or updated (the round stops; leases
    /// make unfinished jobs claimable again).
    pub async fn run_once(&self) -> Result<RoundReport, StoreError> {
        let mut sys = self.store.system().await?;
        let claimed = jobs::claim_due(
            &mut sys,
            &self.config.name,
            self.config.lease_secs,
            self.config.batch,
        )
        .await?;
        sys.commit().await?;
        let mut report = RoundReport::default();
        for job in &claimed {
            let result = match self.handlers.get(&job.kind) {
                Some(h) => h.handle(&self.store, job).await,
                None => Err(JobFailure("no handler for this job kind")),
            };
            let mut sys = self.store.system().await?;
            match result {
                Ok(()) => {
                    jobs::complete(&mut sys, job).await?;
                    report.done += 1;
                }
                Err(JobFailure(why)) => {
                    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
                    let random = uuid::Uuid::new_v4().as_u64_pair().0;
                    let backoff = jobs::backoff_secs(
                        attempt,
                        self.config.backoff_base_secs,
                        self.config.backoff_cap_secs,
                        random,
                    );
                    let backoff = i64::try_from(backoff).unwrap_or(i64::MAX);
                    match jobs::fail(&mut sys, job, why, backoff).await? {
                        FailOutcome::Retrying { .. } => report.retried += 1,
                        FailOutcome::Dead => {
                            report.dead += 1;
                            tracing::error!(
                                target: "bastion::alert",
                                job = %job.id,
                                kind = %job.kind,
                                attempts = job.attempts,
                                reason = why,
                                "job dead-lettered"
                            );
                            let ev = AuditEvent {
                                at: sys.now(),
                                tenant_id: nil_tenant(),
                                actor: None,
                                action: "job.dead_lettered".to_owned(),
                                target: Some(format!("job:{}", job.id)),
                                outcome: Outcome::Fail,
                                policy_ids: Vec::new(),
                                detail: json!({ "kind": job.kind, "attempts": job.attempts, "reason": why }),
                            };
                            audit::system_append_audit(&mut sys, &ev).await?;
                        }
                    }
                }
            }
            sys.commit().await?;
        }
        Ok(report)
    }

    /// Runs rounds until `stop` turns true; pauses [`WorkerConfig::idle_poll`] after a round
    /// with nothing to do (or a store error, which is logged).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let busy = match self.run_once().await {
                Ok(r) => r.done + r.retried + r.dead > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "job worker round failed");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    () = tokio::time::sleep(self.config.idle_poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Rank of a Stripe PaymentIntent status along its life, so two events of the same second
/// still order (`status_version = created · 16 + rank`).
pub(crate) fn stripe_rank(status: &str) -> i64 {
    match status {
        "requires_payment_method" => 1,
        "requires_confirmation" => 2,
        "requires_action" => 3,
        "processing" => 4,
        "requires_capture" => 5,
        "canceled" => 6,
        "succeeded" => 7,
        _ => 0,
    }
}

/// `webhook.stripe`: the inbox event → the payment it names (via the payment route of the
/// PSP object id) → `apply_status` forward-only, audited on the payment's tenant chain.
/// Events about objects Bastion does not know are marked processed and audited as
/// unmatched on the system chain (they change nothing).
#[derive(Debug, Default)]
pub struct StripeWebhook {
    /// The app, to move a captured payment's record to `deposit_paid` (none: the payment and
    /// the ledger only).
    pub app: Option<Arc<bastion_app::AppSpec>>,
}

impl JobHandler for StripeWebhook {
    fn handle<'a>(&'a self, store: &'a Store, job: &'a Job) -> HandlerFuture<'a> {
        Box::pin(async move {
            let failed = |e: StoreError| {
                tracing::warn!(error = %e, job = %job.id, "webhook job: store error");
                JobFailure("store error")
            };
            let payload: Value =
                serde_json::from_str(&job.payload).map_err(|_| JobFailure("bad job payload"))?;
            let event_id = payload["event_id"]
                .as_str()
                .ok_or(JobFailure("bad job payload"))?;
            let mut sys = store.system().await.map_err(failed)?;
            let Some(event) = webhook::get_event(&mut sys, "stripe", event_id)
                .await
                .map_err(failed)?
            else {
                return Err(JobFailure("event not in the inbox"));
            };
            if event.processed_at.is_some() {
                return Ok(());
            }
            let body: Value =
                serde_json::from_str(&event.body).map_err(|_| JobFailure("bad event body"))?;
            let object = &body["data"]["object"];
            let status = object["status"].as_str().unwrap_or_default().to_owned();
            let tenant = match &event.object_id {
                Some(o) => payments::route_tenant(&mut sys, "stripe", o)
                    .await
                    .map_err(failed)?,
                None => None,
            };
            let Some(tenant) = tenant else {
                webhook::mark_processed(&mut sys, "stripe", event_id)
                    .await
                    .map_err(failed)?;
                let ev = AuditEvent {
                    at: sys.now(),
                    tenant_id: nil_tenant(),
                    actor: None,
                    action: "webhook.unmatched".to_owned(),
                    target: Some(format!("webhook:stripe:{event_id}")),
                    outcome: Outcome::Ok,
                    policy_ids: Vec::new(),
                    detail: json!({ "event_type": event.event_type }),
                };
                audit::system_append_audit(&mut sys, &ev)
                    .await
                    .map_err(failed)?;
                sys.commit().await.map_err(failed)?;
                return Ok(());
            };
            sys.rollback().await.map_err(failed)?;

            let mut tx = store
                .begin(TenantScope::pre_auth(tenant))
                .await
                .map_err(failed)?;
            let object_id = event.object_id.clone().unwrap_or_default();
            let Some(payment) = payments::by_psp_id(&mut tx, "stripe", &object_id)
                .await
                .map_err(failed)?
            else {
                return Err(JobFailure("routed payment not found"));
            };
            let version = event.ordering_key.saturating_mul(16) + stripe_rank(&status);
            let applied = if status.is_empty() {
                None
            } else {
                Some(
                    payments::apply_status(&mut tx, payment.id, &status, version)
                        .await
                        .map_err(failed)?,
                )
            };
            // A payment that succeeded after 3DS (or asynchronous processing) is captured
            // here: the capture entry is posted once, whichever of the charge call and the
            // webhooks sees the success first.
            let mut payment = payment;
            let captured = if status == "succeeded"
                && matches!(applied, Some(payments::StatusUpdate::Applied))
            {
                let charge = object["latest_charge"].as_str();
                crate::payments::capture_for_webhook(&mut tx, &mut payment, event_id, charge)
                    .await
                    .map_err(JobFailure)?
            } else {
                false
            };
            if captured && let Some(app) = &self.app {
                crate::payments::record_paid(&mut tx, app, payment.record_id)
                    .await
                    .map_err(JobFailure)?;
            }
            let ev = AuditEvent {
                at: tx.now(),
                tenant_id: tenant,
                actor: None,
                action: "payment.status".to_owned(),
                target: Some(format!("payment:{}", payment.id)),
                outcome: Outcome::Ok,
                policy_ids: Vec::new(),
                detail: json!({
                    "event": event_id,
                    "event_type": event.event_type,
                    "status": status,
                    "applied": matches!(applied, Some(payments::StatusUpdate::Applied)),
                    "captured": captured,
                }),
            };
            audit::append_audit(&mut tx, &ev).await.map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            let mut sys = store.system().await.map_err(failed)?;
            webhook::mark_processed(&mut sys, "stripe", event_id)
                .await
                .map_err(failed)?;
            sys.commit().await.map_err(failed)?;
            Ok(())
        })
    }
}
