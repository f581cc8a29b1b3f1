//! Money-moving tools (`payment.charge`, `payment.refund`): idempotency keys
//! (draft-ietf-httpapi-idempotency-key-header), velocity limits, the PSP call with a derived
//! PSP idempotency key, and one commit for the payment row, its journal entry, the record's
//! status, the audit record and the stored response.
//!
//! A charge runs in recovery points (bastion-store `idempotency`):
//!
//! ```text
//! tx1: load record → Cedar on it → kill switch → claim key → velocity → commit   (started)
//! PSP: create+confirm PaymentIntent, Idempotency-Key = derive(tenant, principal, key)
//! tx:  advance(psp_called, {psp_payment_id}) → commit
//! tx2: payments::insert (+route) → ledger capture if succeeded → record status →
//!      audit → complete(key, response) → commit                                   (finished)
//! ```
//!
//! A crash anywhere leaves the key in flight; once its lease expires a retry with the same
//! key gets [`Claim::Resume`] and calls the PSP again with the same derived key, which
//! returns the same PaymentIntent (Stripe and the sandbox replay by key), so there is one
//! charge and one journal entry (case P4). A refund reserves its amount against the
//! captured amount in tx1 (`payments::add_refund`, case P5), then calls the PSP, then posts
//! the ledger refund in tx2; a PSP refusal gives the reservation and the key back.
//!
//! Statuses written to the charged record's `status` field: `deposit_pending` (3DS or
//! processing), `deposit_paid` (captured), `partially_refunded`, `refunded`. A 3DS payment
//! is captured later by the webhook worker on `payment_intent.succeeded`
//! ([`crate::worker::StripeWebhook`]), which posts the capture entry exactly once.

use std::sync::Arc;

use bastion_audit::Outcome;
use bastion_ledger::Reference;
use bastion_ledger::reconcile::PSP_OBJECT_KEY;
use bastion_payments::psp::{
    CreatePaymentIntent, CreateRefund, IdempotencyKey, PaymentIntent, PaymentIntentStatus,
    PaymentMethodToken, Psp, PspError,
};
use bastion_store::idempotency::{self, Claim};
use bastion_store::payments::{self as pay, NewPayment, Payment, PaymentId, RefundOutcome};
use bastion_store::{StoreError, TenantScope, TenantTx, records, velocity};
use bastion_types::{Currency, Money, Record, RecordId, UserId};
use serde_json::{Map, Value, json};

use crate::ToolError;
use crate::pipeline::{
    AuditCtx, Failure, Pipeline, ToolOutput, append, field_refs, gate, load, rollback, store_err,
};
use bastion_app::{ToolKind, VelocitySubject};
use bastion_authz::Resource;

/// Default lease of a payment call on its idempotency key, seconds: above the PSP request
/// timeout (30 s), so a live request is never resumed by a retry.
pub const PAYMENT_LEASE_SECS: i64 = 60;
/// The PSP name stored on payments (the Stripe-compatible API).
pub const PSP_NAME: &str = "stripe";
/// Recovery point after the PSP answered.
pub const POINT_PSP_CALLED: &str = "psp_called";
/// Recovery point of a refund whose amount is reserved.
pub const POINT_RESERVED: &str = "reserved";
/// HTTP status stored with a declined charge's response.
pub const STATUS_DECLINED: u16 = 402;

/// Record statuses a payment writes (documented in the module docs).
pub const STATUS_DEPOSIT_PENDING: &str = "deposit_pending";
/// The deposit is captured.
pub const STATUS_DEPOSIT_PAID: &str = "deposit_paid";
/// Part of the captured deposit is refunded.
pub const STATUS_PARTIALLY_REFUNDED: &str = "partially_refunded";
/// All of the captured deposit is refunded.
pub const STATUS_REFUNDED: &str = "refunded";

/// The pipeline's payment settings.
#[derive(Clone, Debug)]
pub(crate) struct PaymentsConfig {
    pub(crate) psp: Option<Arc<dyn Psp>>,
    pub(crate) lease_secs: i64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            psp: None,
            lease_secs: PAYMENT_LEASE_SECS,
        }
    }
}

/// JSON with object keys sorted at every level, no whitespace: the canonical form the
/// request fingerprint is computed over (independent of the client's key order).
#[must_use]
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String((*k).clone()),
                        canonical_json(m.get(*k).unwrap_or(&Value::Null))
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// The request fingerprint stored with an idempotency key: SHA-256 over the tool name, a
/// newline and the canonical arguments.
#[must_use]
pub fn fingerprint(tool: &str, args: &Value) -> [u8; 32] {
    bastion_crypto::sha256(format!("{tool}\n{}", canonical_json(args)).as_bytes())
}

/// The idempotency key sent to the PSP for the caller's key: `bastion_` + hex SHA-256 over
/// (tenant, principal, tool, key). A retry with the same key reaches the PSP with the same
/// key; two principals (or tenants) using the same key never share a PSP object.
#[must_use]
pub fn psp_key_text(tenant: &str, principal: &str, tool: &str, key: &str) -> String {
    format!(
        "bastion_{}",
        bastion_crypto::sha256_hex(format!("{tenant}\n{principal}\n{tool}\n{key}").as_bytes())
    )
}

fn failure(error: ToolError, reason: &'static str, target: Option<String>) -> Failure {
    Failure {
        error,
        target,
        policy_ids: Vec::new(),
        reason,
    }
}

fn outcome_of(e: &ToolError) -> Outcome {
    match e {
        ToolError::NotFound
        | ToolError::Forbidden(_)
        | ToolError::InvalidInput(_)
        | ToolError::Disabled(_)
        | ToolError::IdempotencyKeyMissing
        | ToolError::IdempotencyKeyMismatch
        | ToolError::IdempotencyKeyInFlight
        | ToolError::VelocityExceeded { .. }
        | ToolError::RefundExceedsCapture { .. } => Outcome::Deny,
        ToolError::PaymentDeclined { .. } | ToolError::PaymentRejected => Outcome::Fail,
        _ => Outcome::Error,
    }
}

/// What the first transaction decided.
enum Start {
    /// Run the PSP call (fresh or resumed); for a refund, the reserved payment.
    Run { payment: Option<PaymentId> },
    /// Answer with this (a replay).
    Done(Result<ToolOutput, ToolError>),
}

struct Call<'a, 'b> {
    p: &'a Pipeline,
    a: &'a AuditCtx<'b>,
    args: &'a Value,
    key: String,
    psp: Arc<dyn Psp>,
    record_id: RecordId,
    lease: i64,
}

/// Runs a `payment.charge` or `payment.refund` call after the action check and the input
/// schema. Every outcome is audited.
pub(crate) async fn call(
    p: &Pipeline,
    a: &AuditCtx<'_>,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    let pre = (|| {
        let key = a.ctx.idempotency_key.clone().ok_or_else(|| {
            failure(
                ToolError::IdempotencyKeyMissing,
                "idempotency key missing",
                None,
            )
        })?;
        if key.is_empty()
            || key.len() > idempotency::KEY_LEN_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(Failure::invalid(
                "",
                "the Idempotency-Key must be 1..=255 visible ascii characters",
            ));
        }
        let psp = p
            .payments
            .psp
            .clone()
            .ok_or_else(|| failure(ToolError::Unavailable, "no psp configured", None))?;
        let field = format!("{}_id", a.entity.name);
        let record_id = crate::pipeline::parse_id(args, &field)?;
        Ok((key, psp, record_id))
    })();
    let (key, psp, record_id) = match pre {
        Ok(v) => v,
        Err(f) => return refuse(p, a, args, f).await,
    };
    let c = Call {
        p,
        a,
        args,
        key,
        psp,
        record_id,
        lease: p.payments.lease_secs,
    };
    if a.mode.holds(a.tool_spec) {
        return c.hold().await;
    }
    let result = match a.tool_spec.kind {
        ToolKind::PaymentCharge => c.charge().await,
        _ => c.refund().await,
    };
    match result {
        Ok(out) => Ok(out),
        Err(f) => refuse(p, a, args, f).await,
    }
}

async fn refuse(
    p: &Pipeline,
    a: &AuditCtx<'_>,
    args: &Value,
    f: Failure,
) -> Result<ToolOutput, ToolError> {
    // A failure already audited with its effect carries the reason "recorded".
    if f.reason != "recorded" {
        p.audit_alone(
            a,
            outcome_of(&f.error),
            f.target.as_deref(),
            &f.policy_ids,
            json!({"reason": f.reason}),
            args,
        )
        .await?;
    }
    Err(f.error)
}

fn store_f(e: StoreError) -> Failure {
    Failure::store(e, None)
}

impl Call<'_, '_> {
    /// A call that needs a human approval first: the record, Cedar on it and the kill switch
    /// as for a run, then the call is filed as a pending approval (with its idempotency key)
    /// instead of reaching the PSP. Nothing else is written.
    async fn hold(&self) -> Result<ToolOutput, ToolError> {
        let mut tx = match self.begin().await {
            Ok(tx) => tx,
            Err(f) => return refuse(self.p, self.a, self.args, f).await,
        };
        let checked = async {
            let record = load(&mut tx, &self.a.tool_spec.entity, self.record_id).await?;
            self.p.decide(
                self.a,
                Resource::Record {
                    record: &record,
                    parent: None,
                },
            )?;
            gate(&mut tx, self.a).await
        }
        .await;
        match checked {
            Err(f) if f.reason == crate::approvals::HELD => Err(crate::approvals::file(
                self.p,
                tx,
                self.a.principal,
                self.a.tool_spec,
                self.args,
                self.a.ctx,
                self.a.mode,
            )
            .await),
            Err(f) => {
                rollback(tx).await;
                refuse(self.p, self.a, self.args, f).await
            }
            Ok(()) => {
                rollback(tx).await;
                refuse(
                    self.p,
                    self.a,
                    self.args,
                    Failure::internal("hold without a hold"),
                )
                .await
            }
        }
    }

    fn principal(&self) -> UserId {
        self.a.principal.user_id
    }

    fn psp_key(&self) -> Result<IdempotencyKey, Failure> {
        let text = psp_key_text(
            &self.a.principal.tenant_id.to_string(),
            &self.principal().to_string(),
            self.a.tool,
            &self.key,
        );
        IdempotencyKey::parse(&text).map_err(|_| Failure::internal("derived psp key refused"))
    }

    async fn begin(&self) -> Result<TenantTx, Failure> {
        self.p
            .inner
            .store
            .begin(TenantScope::of(self.a.principal))
            .await
            .map_err(|e| failure(store_err(e), "store unavailable", None))
    }

    /// tx1 common part: the record, Cedar on it, the kill switch, the key claim. On a
    /// replay answers it; the transaction is returned open for a new or resumed claim.
    async fn start(&self, tx: &mut TenantTx) -> Result<(Record, Claim, Vec<String>), Failure> {
        let record = load(tx, &self.a.tool_spec.entity, self.record_id).await?;
        let decision = self.p.decide(
            self.a,
            Resource::Record {
                record: &record,
                parent: None,
            },
        )?;
        // A deposit is in the currency of what it pays for (before the key is claimed, so a
        // refusal leaves nothing behind).
        if self.a.tool_spec.kind == ToolKind::PaymentCharge {
            let asked = self.args.get("currency").and_then(Value::as_str);
            let own = record.data.get("currency").and_then(Value::as_str);
            if let (Some(asked), Some(own)) = (asked, own)
                && asked != own
            {
                return Err(Failure::invalid(
                    "/currency",
                    "must be the currency of the record paid for",
                ));
            }
        }
        gate(tx, self.a).await?;
        let fp = fingerprint(self.a.tool, self.args);
        let claim = idempotency::claim(tx, self.principal(), &self.key, &fp, self.lease)
            .await
            .map_err(store_f)?;
        Ok((record, claim, decision.policy_ids))
    }

    /// Answers a non-running claim; `None` for New / Resume.
    async fn settle_claim(
        &self,
        tx: &mut TenantTx,
        claim: &Claim,
        target: &str,
        policy_ids: &[String],
    ) -> Result<Option<ToolOutput>, Failure> {
        let t = Some(target.to_owned());
        match claim {
            Claim::New | Claim::Resume { .. } => Ok(None),
            Claim::Mismatch => Err(failure(
                ToolError::IdempotencyKeyMismatch,
                "idempotency key reused with another request",
                t,
            )),
            Claim::InFlight => Err(failure(
                ToolError::IdempotencyKeyInFlight,
                "idempotency key in flight",
                t,
            )),
            Claim::Completed { status, body } => {
                let stored: Value = serde_json::from_str(body)
                    .map_err(|_| Failure::internal("stored response is not json"))?;
                if *status == STATUS_DECLINED {
                    let code = stored["code"].as_str().unwrap_or("declined").to_owned();
                    return Err(failure(
                        ToolError::PaymentDeclined {
                            code,
                            replayed: true,
                        },
                        "payment declined (replayed)",
                        t,
                    ));
                }
                // Recorded in the claim's own transaction (committed by the caller).
                let seq = append(
                    tx,
                    self.a,
                    Outcome::Allow,
                    Some(target),
                    policy_ids,
                    json!({"replayed": true}),
                    self.args,
                )
                .await
                .map_err(|e| failure(e, "audit", None))?;
                Ok(Some(ToolOutput {
                    result: stored,
                    audit_seq: seq,
                    replayed: true,
                }))
            }
        }
    }

    fn amount(&self) -> Result<i64, Failure> {
        self.args
            .get("amount_minor")
            .and_then(Value::as_i64)
            .filter(|a| (1..=bastion_payments::psp::AMOUNT_MINOR_MAX).contains(a))
            .ok_or_else(|| Failure::invalid("/amount_minor", "must be 1..=99999999"))
    }

    // ---- charge ----------------------------------------------------------------------

    async fn charge(&self) -> Result<ToolOutput, Failure> {
        let amount = self.amount()?;
        let currency = self
            .args
            .get("currency")
            .and_then(Value::as_str)
            .and_then(|c| Currency::parse(c).ok())
            .ok_or_else(|| Failure::invalid("/currency", "must be an ISO 4217 code"))?;
        let money = Money {
            minor: amount,
            currency,
        };
        let token = self
            .args
            .get("payment_method")
            .and_then(Value::as_str)
            .and_then(|t| PaymentMethodToken::parse(t).ok())
            .ok_or_else(|| Failure::invalid("/payment_method", "must be a payment-method token"))?;
        let target = self.record_id.to_string();

        // tx1
        let start = {
            let mut tx = self.begin().await?;
            match self.charge_start(&mut tx, money, &token, &target).await {
                Ok((Start::Run { .. }, record, pol)) => {
                    tx.commit()
                        .await
                        .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                    Ok((record, pol))
                }
                Ok((Start::Done(r), _, _)) => {
                    // A replay: its audit record is in this transaction.
                    tx.commit()
                        .await
                        .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                    return r.map_err(|e| failure(e, "recorded", None));
                }
                Err(f) => {
                    rollback(tx).await;
                    Err(f)
                }
            }
        };
        let (record, policy_ids) = start?;
        let customer = record
            .data
            .get("buyer")
            .and_then(Value::as_str)
            .and_then(|s| UserId::parse(s).ok())
            .unwrap_or(self.principal());

        // The PSP, with the derived key (same key on a retry or resume).
        let psp_key = self.psp_key()?;
        let reference = uuid::Uuid::from_slice(
            bastion_crypto::sha256(psp_key.as_str().as_bytes())
                .get(..16)
                .unwrap_or_default(),
        )
        .map_err(|_| Failure::internal("reference"))?;
        let req = CreatePaymentIntent {
            amount: money,
            payment_method: token,
            tenant: self.a.principal.tenant_id,
            payment_id: reference.to_string(),
            customer: None,
        };
        let pi = match self.psp.create_payment_intent(&req, &psp_key).await {
            Ok(pi) => pi,
            Err(PspError::Declined { code }) => {
                return self.finish_declined(&code, &target, &policy_ids).await;
            }
            Err(PspError::InvalidRequest { .. }) => {
                // The PSP refused before charging: give the key back.
                self.release_key(None).await;
                return Err(failure(
                    ToolError::PaymentRejected,
                    "psp refused the request",
                    Some(target),
                ));
            }
            Err(e) => {
                // Outcome unknown: keep the key in flight; a retry resumes after the lease.
                tracing::warn!(error = %e, "psp call failed; the idempotency key stays in flight");
                return Err(failure(
                    ToolError::Unavailable,
                    "psp unavailable",
                    Some(target),
                ));
            }
        };
        {
            let mut tx = self.begin().await?;
            idempotency::advance(
                &mut tx,
                self.principal(),
                &self.key,
                POINT_PSP_CALLED,
                &json!({"psp_payment_id": pi.id}),
                self.lease,
            )
            .await
            .map_err(store_f)?;
            tx.commit()
                .await
                .map_err(|e| failure(store_err(e), "store unavailable", None))?;
        }

        // The PSP's fee on the charge, read before tx2 (no network call inside a transaction).
        let fee = self.charge_fee(&pi).await;
        // tx2
        let mut tx = self.begin().await?;
        match self
            .charge_finish(&mut tx, &pi, money, customer, &target, &policy_ids, fee)
            .await
        {
            Ok(out) => {
                tx.commit()
                    .await
                    .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                Ok(out)
            }
            Err(f) => {
                rollback(tx).await;
                Err(f)
            }
        }
    }

    async fn charge_start(
        &self,
        tx: &mut TenantTx,
        money: Money,
        token: &PaymentMethodToken,
        target: &str,
    ) -> Result<(Start, Record, Vec<String>), Failure> {
        let (record, claim, policy_ids) = self.start(tx).await?;
        if let Some(out) = self.settle_claim(tx, &claim, target, &policy_ids).await? {
            return Ok((Start::Done(Ok(out)), record, policy_ids));
        }
        if claim == Claim::New {
            self.velocity(tx, &record, money, token).await?;
        }
        Ok((Start::Run { payment: None }, record, policy_ids))
    }

    /// Records the attempt for every velocity rule; one over its limit refuses (the whole
    /// transaction, the claim included, is rolled back by the caller).
    async fn velocity(
        &self,
        tx: &mut TenantTx,
        record: &Record,
        money: Money,
        token: &PaymentMethodToken,
    ) -> Result<(), Failure> {
        for rule in &self.p.inner.app.payments.velocity {
            let subject = match rule.subject {
                VelocitySubject::Customer => {
                    let c = record
                        .data
                        .get("buyer")
                        .and_then(Value::as_str)
                        .map_or_else(|| self.principal().to_string(), str::to_owned);
                    format!("customer:{c}")
                }
                VelocitySubject::Card => format!("card:{}", token.as_str()),
                VelocitySubject::Address => {
                    let Some(addr) = self.args.get("address").and_then(Value::as_str) else {
                        continue;
                    };
                    // Never the address itself (PII): a digest of its normalized form.
                    let norm: String = addr
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase();
                    format!("address:{}", bastion_crypto::sha256_hex(norm.as_bytes()))
                }
            };
            let totals = velocity::record(tx, &subject, money, rule.window_secs)
                .await
                .map_err(store_f)?;
            if totals.count > rule.max_count || totals.sum_minor > rule.max_amount_minor {
                tracing::info!(tool = %self.a.tool, subject = rule.subject.as_str(), "payment refused by a velocity limit");
                return Err(failure(
                    ToolError::VelocityExceeded {
                        subject: rule.subject.as_str(),
                    },
                    "velocity limit",
                    Some(record.id.to_string()),
                ));
            }
        }
        Ok(())
    }

    async fn release_key(&self, refund: Option<(PaymentId, i64)>) {
        let done = async {
            let mut tx = self.begin().await.map_err(|_| ())?;
            if let Some((id, amount)) = refund {
                pay::release_refund(&mut tx, id, amount)
                    .await
                    .map_err(|_| ())?;
            }
            idempotency::release(&mut tx, self.principal(), &self.key)
                .await
                .map_err(|_| ())?;
            tx.commit().await.map_err(|_| ())
        }
        .await;
        if done.is_err() {
            tracing::error!(target: "bastion::alert", tool = %self.a.tool, "could not release an idempotency key after a psp refusal; it expires with its lease");
        }
    }

    async fn finish_declined(
        &self,
        code: &str,
        target: &str,
        policy_ids: &[String],
    ) -> Result<ToolOutput, Failure> {
        let mut tx = self.begin().await?;
        let body = json!({"code": code}).to_string();
        let r = async {
            idempotency::complete(&mut tx, self.principal(), &self.key, STATUS_DECLINED, &body)
                .await
                .map_err(store_f)?;
            append(
                &mut tx,
                self.a,
                Outcome::Fail,
                Some(target),
                policy_ids,
                json!({"reason": "payment declined", "decline_code": code}),
                self.args,
            )
            .await
            .map_err(|e| failure(e, "audit", None))?;
            Ok::<(), Failure>(())
        }
        .await;
        match r {
            Ok(()) => {
                tx.commit()
                    .await
                    .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                Err(failure(
                    ToolError::PaymentDeclined {
                        code: code.to_owned(),
                        replayed: false,
                    },
                    "recorded",
                    Some(target.to_owned()),
                ))
            }
            Err(f) => {
                rollback(tx).await;
                Err(f)
            }
        }
    }

    async fn set_record_status(&self, tx: &mut TenantTx, status: &str) -> Result<String, Failure> {
        write_record_status(tx, self.a.entity, self.record_id, status).await
    }

    /// The fee the PSP took on `pi`'s charge, from its balance transaction (`source` = the
    /// charge), when the charge succeeded and the PSP reports a non-zero fee. A PSP that
    /// cannot answer now gives `None`: the capture is posted without its fee and the daily
    /// reconciliation reports the missing fee as `fee` drift.
    async fn charge_fee(&self, pi: &PaymentIntent) -> Option<(String, i64)> {
        /// How far back the charge's balance transaction is looked for, seconds: it was
        /// made with the charge a moment ago, so the listing stays short on a busy account.
        const FEE_LOOKBACK_SECS: i64 = 120;
        let charge = pi.latest_charge.clone()?;
        if pi.status != PaymentIntentStatus::Succeeded {
            return None;
        }
        let now = self.p.now();
        let range = bastion_payments::psp::TimeRange {
            from: now - FEE_LOOKBACK_SECS,
            to: now + 60,
        };
        match self.psp.list_balance_transactions(range).await {
            Ok(txns) => txns
                .into_iter()
                .find(|t| t.source.as_deref() == Some(charge.as_str()))
                .filter(|t| t.fee_minor > 0)
                .map(|t| (charge, t.fee_minor)),
            Err(e) => {
                tracing::warn!(error = %e, "the PSP fee of a charge could not be read; reconciliation will flag it");
                None
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one call site; the tx2 inputs")]
    async fn charge_finish(
        &self,
        tx: &mut TenantTx,
        pi: &PaymentIntent,
        money: Money,
        customer: UserId,
        target: &str,
        policy_ids: &[String],
        fee: Option<(String, i64)>,
    ) -> Result<ToolOutput, Failure> {
        let status = pi.status.as_str();
        let next_action = if pi.status == PaymentIntentStatus::RequiresAction {
            pi.next_action.as_ref()
        } else {
            None
        };
        let payment = match pay::by_psp_id(tx, PSP_NAME, &pi.id)
            .await
            .map_err(store_f)?
        {
            Some(p) => p,
            None => pay::insert(
                tx,
                &NewPayment {
                    record_id: self.record_id,
                    psp: PSP_NAME,
                    psp_payment_id: &pi.id,
                    amount: money,
                    status: safe_status(status),
                    status_version: crate::worker::stripe_rank(status),
                    customer_id: customer,
                    card_fingerprint: None,
                    next_action,
                },
            )
            .await
            .map_err(store_f)?,
        };
        let paid = pi.status == PaymentIntentStatus::Succeeded;
        let mut payment = payment;
        if paid {
            // The charge (`ch_…`) is what the PSP's balance transactions name: reconciliation
            // matches the entry by it.
            let detail = match &pi.latest_charge {
                Some(ch) => json!({"tool": self.a.tool, PSP_OBJECT_KEY: ch}),
                None => json!({"tool": self.a.tool}),
            };
            let posted = capture_once(tx, &mut payment, &detail).await?;
            if let (true, Some((charge, fee_minor))) = (posted, fee) {
                let reference = Reference::parse(&payment.psp_payment_id)
                    .map_err(|_| Failure::internal("ref"))?;
                bastion_ledger::fee(
                    tx,
                    &reference,
                    Money {
                        minor: fee_minor,
                        currency: money.currency,
                    },
                    json!({"tool": self.a.tool, PSP_OBJECT_KEY: charge}),
                )
                .await
                .map_err(|e| ledger_f(&e))?;
            }
        }
        let record_status = self
            .set_record_status(
                tx,
                if paid {
                    STATUS_DEPOSIT_PAID
                } else {
                    STATUS_DEPOSIT_PENDING
                },
            )
            .await?;
        let mut result = payment_json(&payment, &record_status);
        if let (Some(na), Value::Object(m)) = (next_action, &mut result) {
            m.insert("next_action".to_owned(), na.clone());
        }
        self.finish_ok(tx, result, target, policy_ids, &payment)
            .await
    }

    async fn finish_ok(
        &self,
        tx: &mut TenantTx,
        result: Value,
        target: &str,
        policy_ids: &[String],
        payment: &Payment,
    ) -> Result<ToolOutput, Failure> {
        let compiled = self
            .p
            .inner
            .validators
            .get(self.a.tool)
            .ok_or_else(|| Failure::internal("validators"))?;
        if !compiled.output.is_valid(&result) {
            tracing::error!(target: "bastion::alert", tool = %self.a.tool, "payment result failed its output schema; the key stays in flight");
            return Err(Failure::internal("output schema"));
        }
        // An approved execution marks its approval executed in the effect's transaction.
        crate::approvals::mark_executed(tx, self.a.mode, &result)
            .await
            .map_err(|e| failure(e, "approval", None))?;
        let seq = append(
            tx,
            self.a,
            Outcome::Allow,
            Some(target),
            policy_ids,
            json!({
                "payment_id": payment.id.to_string(),
                "psp_payment_id": payment.psp_payment_id,
                "status": payment.status,
            }),
            self.args,
        )
        .await
        .map_err(|e| failure(e, "audit", None))?;
        idempotency::complete(tx, self.principal(), &self.key, 200, &result.to_string())
            .await
            .map_err(store_f)?;
        Ok(ToolOutput {
            result,
            audit_seq: seq,
            replayed: false,
        })
    }

    // ---- refund ----------------------------------------------------------------------

    async fn refund(&self) -> Result<ToolOutput, Failure> {
        let amount = self.amount()?;
        let target = self.record_id.to_string();
        let mut tx = self.begin().await?;
        let started = self.refund_start(&mut tx, amount, &target).await;
        let (payment_id, policy_ids) = match started {
            Ok((Start::Run { payment: Some(id) }, pol)) => {
                tx.commit()
                    .await
                    .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                (id, pol)
            }
            Ok((Start::Done(r), _)) => {
                // A replay: its audit record is in this transaction.
                tx.commit()
                    .await
                    .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                return r.map_err(|e| failure(e, "recorded", None));
            }
            Ok((Start::Run { payment: None }, _)) => {
                rollback(tx).await;
                return Err(Failure::internal("refund without payment"));
            }
            Err(f) => {
                rollback(tx).await;
                return Err(f);
            }
        };

        let payment = {
            let mut tx = self.begin().await?;
            let p = pay::get(&mut tx, payment_id).await.map_err(store_f)?;
            rollback(tx).await;
            p.ok_or_else(|| Failure::internal("reserved payment vanished"))?
        };
        let psp_key = self.psp_key()?;
        let req = CreateRefund {
            payment_intent: payment.psp_payment_id.clone(),
            amount_minor: amount,
            tenant: self.a.principal.tenant_id,
            refund_id: psp_key.as_str().to_owned(),
        };
        let refund = match self.psp.create_refund(&req, &psp_key).await {
            Ok(r) => r,
            Err(PspError::Declined { .. } | PspError::InvalidRequest { .. }) => {
                self.release_key(Some((payment_id, amount))).await;
                return Err(failure(
                    ToolError::PaymentRejected,
                    "psp refused the refund",
                    Some(target),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "psp refund failed; the idempotency key stays in flight");
                return Err(failure(
                    ToolError::Unavailable,
                    "psp unavailable",
                    Some(target),
                ));
            }
        };

        let mut tx = self.begin().await?;
        let r = async {
            let reference =
                Reference::parse(&payment.psp_payment_id).map_err(|_| Failure::internal("ref"))?;
            bastion_ledger::refund(
                &mut tx,
                &reference,
                Money {
                    minor: amount,
                    currency: payment.amount.currency,
                },
                json!({"psp_refund_id": refund.id, PSP_OBJECT_KEY: refund.id, "tool": self.a.tool}),
            )
            .await
            .map_err(|e| ledger_f(&e))?;
            let now = pay::get(&mut tx, payment_id)
                .await
                .map_err(store_f)?
                .ok_or_else(|| Failure::internal("payment vanished"))?;
            let status = if now.refunded_minor >= now.captured_minor {
                STATUS_REFUNDED
            } else {
                STATUS_PARTIALLY_REFUNDED
            };
            let record_status = self.set_record_status(&mut tx, status).await?;
            let mut result = payment_json(&now, &record_status);
            if let Value::Object(m) = &mut result {
                m.insert(
                    "refund".to_owned(),
                    json!({
                        "psp_refund_id": refund.id,
                        "amount_minor": amount,
                        "status": refund.status,
                        "reason": self.args.get("reason").cloned().unwrap_or(Value::Null),
                    }),
                );
            }
            self.finish_ok(&mut tx, result, &target, &policy_ids, &now)
                .await
        }
        .await;
        match r {
            Ok(out) => {
                tx.commit()
                    .await
                    .map_err(|e| failure(store_err(e), "store unavailable", None))?;
                Ok(out)
            }
            Err(f) => {
                rollback(tx).await;
                Err(f)
            }
        }
    }

    async fn refund_start(
        &self,
        tx: &mut TenantTx,
        amount: i64,
        target: &str,
    ) -> Result<(Start, Vec<String>), Failure> {
        let (record, claim, policy_ids) = self.start(tx).await?;
        if let Some(out) = self.settle_claim(tx, &claim, target, &policy_ids).await? {
            return Ok((Start::Done(Ok(out)), policy_ids));
        }
        if let Claim::Resume { recovery_data, .. } = &claim {
            let id = recovery_data["payment_id"]
                .as_str()
                .and_then(|s| s.parse::<PaymentId>().ok())
                .ok_or_else(|| Failure::internal("resumed refund without a reservation"))?;
            return Ok((Start::Run { payment: Some(id) }, policy_ids));
        }
        // Which payment: the one named, else the record's most recent captured one.
        let payments = pay::list_for_record(tx, record.id).await.map_err(store_f)?;
        let chosen = match self.args.get("payment_id").and_then(Value::as_str) {
            Some(s) => payments.iter().find(|p| p.id.to_string() == s),
            None => payments.iter().rev().find(|p| p.captured_minor > 0),
        };
        let Some(payment) = chosen else {
            return Err(failure(
                ToolError::RefundExceedsCapture {
                    refundable_minor: 0,
                },
                "no captured payment",
                Some(target.to_owned()),
            ));
        };
        match pay::add_refund(tx, payment.id, amount)
            .await
            .map_err(store_f)?
        {
            RefundOutcome::Applied { .. } => {}
            RefundOutcome::Exceeds { refundable_minor } => {
                return Err(failure(
                    ToolError::RefundExceedsCapture { refundable_minor },
                    "refund exceeds capture",
                    Some(target.to_owned()),
                ));
            }
        }
        idempotency::advance(
            tx,
            self.principal(),
            &self.key,
            POINT_RESERVED,
            &json!({"payment_id": payment.id.to_string()}),
            self.lease,
        )
        .await
        .map_err(store_f)?;
        Ok((
            Start::Run {
                payment: Some(payment.id),
            },
            policy_ids,
        ))
    }
}

fn ledger_f(e: &bastion_ledger::LedgerError) -> Failure {
    match e {
        bastion_ledger::LedgerError::RefundExceedsCapture { .. } => failure(
            ToolError::RefundExceedsCapture {
                refundable_minor: 0,
            },
            "refund exceeds capture (ledger)",
            None,
        ),
        e if e.is_unavailable() => failure(ToolError::Unavailable, "store unavailable", None),
        e => {
            tracing::error!(target: "bastion::alert", error = %e, "ledger refused a payment entry");
            Failure::internal("ledger")
        }
    }
}

/// A PSP status as stored (`[a-z0-9_]`, at most 32 bytes); anything else is `unknown`.
fn safe_status(s: &str) -> &str {
    if !s.is_empty()
        && s.len() <= bastion_store::payments::STATUS_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        s
    } else {
        "unknown"
    }
}

/// Captures the whole payment once: raises `captured_minor` to the amount and posts the
/// ledger capture entry, unless it is already captured. Used by the charge (synchronous
/// success) and by the webhook worker (`payment_intent.succeeded` after 3DS). Call it after
/// a write on the payment row in the same transaction (it is then locked on PostgreSQL;
/// SQLite serialises writers), so two callers cannot both post.
///
/// # Errors
/// A [`Failure`] when the store or the ledger refuses.
pub(crate) async fn capture_once(
    tx: &mut TenantTx,
    payment: &mut Payment,
    detail: &Value,
) -> Result<bool, Failure> {
    let current = pay::get(tx, payment.id)
        .await
        .map_err(store_f)?
        .ok_or_else(|| Failure::internal("payment vanished"))?;
    if current.captured_minor >= current.amount.minor {
        *payment = current;
        return Ok(false);
    }
    pay::record_capture(tx, payment.id, current.amount.minor)
        .await
        .map_err(store_f)?;
    let reference =
        Reference::parse(&current.psp_payment_id).map_err(|_| Failure::internal("ref"))?;
    bastion_ledger::capture(tx, &reference, current.amount, detail.clone())
        .await
        .map_err(|e| ledger_f(&e))?;
    *payment = pay::get(tx, payment.id)
        .await
        .map_err(store_f)?
        .ok_or_else(|| Failure::internal("payment vanished"))?;
    Ok(true)
}

/// Sets the `status` of the record a payment attaches to and returns the status it has now
/// (empty when the entity has no `status` field). A further deposit still waiting for 3DS
/// does not make a paid record pending again.
///
/// # Errors
/// A [`Failure`] when the record cannot be read or written.
async fn write_record_status(
    tx: &mut TenantTx,
    entity: &bastion_app::EntitySpec,
    record_id: RecordId,
    status: &str,
) -> Result<String, Failure> {
    if !entity.fields.contains_key("status") {
        return Ok(String::new());
    }
    let record = load(tx, &entity.name, record_id).await?;
    let current = record
        .data
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status == STATUS_DEPOSIT_PENDING
        && matches!(
            current,
            STATUS_DEPOSIT_PAID | STATUS_PARTIALLY_REFUNDED | STATUS_REFUNDED
        )
    {
        return Ok(current.to_owned());
    }
    let mut data = record.data.as_object().cloned().unwrap_or_default();
    data.insert("status".to_owned(), Value::String(status.to_owned()));
    let refs = field_refs(entity, &data);
    records::update_record(
        tx,
        &record.entity,
        record.id,
        record.version,
        Value::Object(data),
        &refs,
    )
    .await
    .map_err(|e| Failure::store(e, Some(record.id.to_string())))?;
    Ok(status.to_owned())
}

/// Moves the record a payment attaches to (the entity of the app's `payment.charge` tool) to
/// `deposit_paid` after a capture the webhook worker posted (3DS completed later), as the
/// charge tool does for a payment that succeeds at once. No charge tool: nothing to do.
///
/// # Errors
/// A fixed phrase when the record cannot be read or written.
pub(crate) async fn record_paid(
    tx: &mut TenantTx,
    app: &bastion_app::AppSpec,
    record_id: RecordId,
) -> Result<(), &'static str> {
    let Some(entity) = app
        .tools
        .values()
        .find(|t| t.kind == ToolKind::PaymentCharge)
        .and_then(|t| app.entities.get(&t.entity))
    else {
        return Ok(());
    };
    write_record_status(tx, entity, record_id, STATUS_DEPOSIT_PAID)
        .await
        .map(|_| ())
        .map_err(|_| "payment record not updated")
}

/// Public entry for the worker: capture once, mapping failures to a fixed phrase.
pub(crate) async fn capture_for_webhook(
    tx: &mut TenantTx,
    payment: &mut Payment,
    event_id: &str,
    latest_charge: Option<&str>,
) -> Result<bool, &'static str> {
    let detail = match latest_charge {
        Some(ch) => json!({"webhook_event": event_id, PSP_OBJECT_KEY: ch}),
        None => json!({"webhook_event": event_id}),
    };
    capture_once(tx, payment, &detail)
        .await
        .map_err(|f| f.reason)
}

fn payment_json(p: &Payment, record_status: &str) -> Value {
    let mut m = Map::new();
    m.insert("payment_id".to_owned(), json!(p.id.to_string()));
    m.insert("psp_payment_id".to_owned(), json!(p.psp_payment_id));
    m.insert("status".to_owned(), json!(p.status));
    m.insert("amount_minor".to_owned(), json!(p.amount.minor));
    m.insert("currency".to_owned(), json!(p.amount.currency.as_str()));
    m.insert("captured_minor".to_owned(), json!(p.captured_minor));
    m.insert("refunded_minor".to_owned(), json!(p.refunded_minor));
    m.insert("quote_status".to_owned(), json!(record_status));
    Value::Object(m)
}
