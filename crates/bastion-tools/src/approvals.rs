//! Human approval (issue 4 item 4; cases A1, A2): a tool call held until a **different**
//! user holding the approver role, with a fresh second factor, approves it; then it runs
//! exactly once, as its requester, with exactly the filed arguments.
//!
//! When a call is held:
//! - the tool has `approval = { role, mfa_max_age_secs, ttl_secs }` in the manifest, or
//! - a caller (the agent loop, after untrusted content entered its context) asks for it with
//!   [`Pipeline::request_approval`]. For a tool without a manifest `approval`, an approver is
//!   anyone the policy lets call the tool, other than the requester, with a second factor at
//!   most [`DEFAULT_MFA_MAX_AGE_SECS`] old, within [`DEFAULT_TTL_SECS`].
//!
//! The hold happens inside the normal pipeline, after the action check, the input schema,
//! the Cedar decision on the resource and the kill switch — right where the effect would
//! start. So a caller the policy denies gets a denial, never a pending approval (a Buyer
//! calling `issue_refund` is refused, not queued). The approval record and its
//! `approval.requested` audit record are written in the call's own tenant transaction; the
//! effect is not run.
//!
//! [`Pipeline::execute_approval`] checks, in order: the approval exists in the approver's
//! tenant (else not found), the approver is not the requester (four eyes), holds the role,
//! proved a second factor recently enough, and the stored arguments still hash to the stored
//! hash; then one conditional transition `pending → approved` (single use, see
//! [`bastion_store::approvals::decide`]) with an `approval.approved` record. The call then
//! runs through the whole pipeline again **as the requester** — reloaded from the store with
//! the roles held now, so policy is re-checked at execution — with the stored arguments and
//! idempotency key; the approval is marked `executed` in the call's transaction, or `failed`
//! (audited as `approval.failed`) when the call is refused.

use bastion_app::ToolSpec;
use bastion_audit::{AuditEvent, Outcome};
use bastion_store::approvals::{self, Approval, Decided, NewApproval};
use bastion_store::{StoreError, TenantScope, TenantTx};
use bastion_types::{AuthMethod, Principal};
use serde_json::{Value, json};

use crate::ToolError;
use crate::pipeline::{CallContext, Pipeline, ToolOutput};
use crate::redact::redact_args;

/// Lifetime of an approval requested for a tool without a manifest `approval`, seconds.
pub const DEFAULT_TTL_SECS: i64 = 3600;
/// Oldest approver second factor accepted for a tool without a manifest `approval`, seconds.
pub const DEFAULT_MFA_MAX_AGE_SECS: i64 = 300;
/// The reason recorded when the manifest requires the approval.
pub const MANIFEST_REASON: &str = "the manifest requires a human approval for this tool";
/// Most approvals one listing returns.
pub const LIST_MAX: u32 = approvals::LIST_MAX;

/// The `reason` of the pipeline failure that means "hold this call" (never shown).
pub(crate) const HELD: &str = "approval required";

/// How a call goes through the pipeline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// An ordinary call: held when the tool has a manifest `approval`.
    Call,
    /// Held whatever the tool, for this reason.
    Request(&'a str),
    /// The execution of this approved approval: never held.
    Approved(uuid::Uuid),
}

impl Mode<'_> {
    /// Whether a call of `tool` in this mode is held for approval.
    pub(crate) fn holds(self, tool: &ToolSpec) -> bool {
        match self {
            Self::Call => tool.approval.is_some(),
            Self::Request(_) => true,
            Self::Approved(_) => false,
        }
    }

    /// The approval being executed.
    pub(crate) fn approval_id(self) -> Option<uuid::Uuid> {
        match self {
            Self::Approved(id) => Some(id),
            _ => None,
        }
    }
}

/// What an approved execution produced.
#[derive(Debug, Clone)]
pub struct ApprovalExecution {
    /// The approval, now `executed`.
    pub approval: Approval,
    /// The tool's result.
    pub output: ToolOutput,
}

/// Files the held call in `tx` (the call's own transaction, before any write), writes
/// `approval.requested`, commits, and answers [`ToolError::PendingApproval`].
pub(crate) async fn file(
    pipeline: &Pipeline,
    mut tx: TenantTx,
    principal: &Principal,
    tool: &ToolSpec,
    args: &Value,
    ctx: &CallContext,
    mode: Mode<'_>,
) -> ToolError {
    let reason = match mode {
        Mode::Request(r) => r,
        _ => MANIFEST_REASON,
    };
    let ttl = tool
        .approval
        .as_ref()
        .map_or(DEFAULT_TTL_SECS, |a| a.ttl_secs);
    let new = NewApproval {
        tool: tool.name.as_str(),
        args,
        requested_by: principal.user_id,
        reason,
        ttl_secs: ttl,
        idempotency_key: ctx.idempotency_key.as_deref(),
    };
    let approval = match approvals::create(&mut tx, &new).await {
        Ok(a) => a,
        Err(StoreError::Invalid { reason }) => {
            return ToolError::InvalidInput(vec![(String::new(), reason.to_owned())]);
        }
        Err(e) => return store_error(e),
    };
    let detail = json!({
        "tool": tool.name.as_str(),
        "risk": tool.risk.as_str(),
        "channel": ctx.channel,
        "request_id": ctx.request_id,
        "args": pipeline.display_args(tool, args),
        "args_hash": approval.args_hash,
        "reason": reason,
        "expires_at": approval.expires_at,
    });
    if let Err(e) = audit(
        &mut tx,
        principal,
        "approval.requested",
        &approval,
        Outcome::Allow,
        detail,
    )
    .await
    {
        return e;
    }
    if let Err(e) = tx.commit().await {
        return store_error(e);
    }
    ToolError::PendingApproval {
        approval: Box::new(approval),
    }
}

/// In the call's transaction, after the effect: marks the approval being executed as
/// `executed` with the result. Refuses when it is no longer `approved`.
pub(crate) async fn mark_executed(
    tx: &mut TenantTx,
    mode: Mode<'_>,
    result: &Value,
) -> Result<(), ToolError> {
    let Some(id) = mode.approval_id() else {
        return Ok(());
    };
    match approvals::finish(tx, id, true, result).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::error!(target: "bastion::alert", approval = %id, "approved execution found its approval no longer approved; refused");
            Err(ToolError::Internal)
        }
        Err(e) => Err(store_error(e)),
    }
}

fn store_error(e: StoreError) -> ToolError {
    match e {
        StoreError::Unavailable { .. } => ToolError::Unavailable,
        other => {
            tracing::error!(error = %other, "store error in an approval");
            ToolError::Unavailable
        }
    }
}

async fn audit(
    tx: &mut TenantTx,
    actor: &Principal,
    action: &str,
    approval: &Approval,
    outcome: Outcome,
    extra: Value,
) -> Result<u64, ToolError> {
    let mut detail = json!({
        "approval_id": approval.id.to_string(),
        "tool": approval.tool,
        "args_hash": approval.args_hash,
        "requested_by": approval.requested_by.to_string(),
    });
    if let (Some(d), Value::Object(m)) = (detail.as_object_mut(), extra) {
        d.extend(m);
    }
    let event = AuditEvent {
        at: tx.now(),
        tenant_id: actor.tenant_id,
        actor: Some(actor.user_id),
        action: action.to_owned(),
        target: Some(approval.id.to_string()),
        outcome,
        policy_ids: Vec::new(),
        detail,
    };
    match bastion_store::audit::append_audit(tx, &event).await {
        Ok((seq, _)) => Ok(seq),
        Err(e) => {
            tracing::error!(target: "bastion::alert", error = %e, "audit append failed; approval step refused");
            Err(ToolError::Unavailable)
        }
    }
}

/// Why a decider may not decide.
enum Refusal {
    SelfDecision,
    Role,
    MfaStale(i64),
}

impl Pipeline {
    /// Files `tool(args)` for `principal` as a pending approval instead of running it, after
    /// the same checks as a call (action, schema, Cedar on the resource, kill switch), and
    /// returns the approval. Used by the agent loop for a high-risk call proposed after
    /// untrusted content entered its context; `reason` (1..=500 bytes) says why.
    ///
    /// # Errors
    /// Every [`ToolError`] of [`Pipeline::call`] (a denied call is denied, not filed).
    pub async fn request_approval(
        &self,
        principal: &Principal,
        tool: &str,
        args: Value,
        reason: &str,
        ctx: &CallContext,
    ) -> Result<Approval, ToolError> {
        match self
            .call_mode(principal, tool, args, ctx, Mode::Request(reason))
            .await
        {
            Err(ToolError::PendingApproval { approval }) => Ok(*approval),
            Err(e) => Err(e),
            Ok(_) => {
                tracing::error!(target: "bastion::alert", tool, "a requested approval executed instead of being held");
                Err(ToolError::Internal)
            }
        }
    }

    /// The approval `id`, if `principal` requested it or may decide it; otherwise (and for
    /// another tenant's id) [`ToolError::NotFound`].
    ///
    /// # Errors
    /// [`ToolError::NotFound`], [`ToolError::Unavailable`].
    pub async fn approval(
        &self,
        principal: &Principal,
        id: uuid::Uuid,
    ) -> Result<Approval, ToolError> {
        let mut tx = self.begin(principal).await?;
        let found = approvals::get(&mut tx, id).await.map_err(store_error)?;
        drop(tx);
        match found {
            Some(a)
                if a.requested_by == principal.user_id || self.may_decide(principal, &a.tool) =>
            {
                Ok(a)
            }
            _ => Err(ToolError::NotFound),
        }
    }

    /// Approvals `principal` requested, and pending ones it may decide; pending first, then
    /// newest first; `limit` clamped to `1..=`[`LIST_MAX`].
    ///
    /// # Errors
    /// [`ToolError::Unavailable`].
    pub async fn approvals(
        &self,
        principal: &Principal,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Approval>, ToolError> {
        let tools: Vec<&str> = self
            .app()
            .tools
            .keys()
            .map(|k| k.as_str())
            .filter(|t| self.may_decide(principal, t))
            .collect();
        let mut tx = self.begin(principal).await?;
        let out = approvals::list(
            &mut tx,
            principal.user_id,
            &tools,
            limit.clamp(1, LIST_MAX),
            offset,
        )
        .await
        .map_err(store_error)?;
        drop(tx);
        Ok(out)
    }

    /// The approval as shown to people: arguments redacted per field sensitivity (the
    /// record's `id`, `version`, `limit` and `offset` shown as they are), no result.
    #[must_use]
    pub fn approval_json(&self, a: &Approval) -> Value {
        let args = match self.app().tool(&a.tool) {
            Some(t) => self.display_args(t, &a.args),
            None => json!("[redacted:unknown-tool]"),
        };
        json!({
            "id": a.id.to_string(),
            "tool": a.tool,
            "arguments": args,
            "args_hash": a.args_hash,
            "requester": a.requested_by.to_string(),
            "reason": a.reason,
            "status": a.status.as_str(),
            "created_at": a.created_at,
            "expires_at": a.expires_at,
            "decided_by": a.decided_by.map(|u| u.to_string()),
            "decided_at": a.decided_at,
        })
    }

    /// Approves the approval `id` as `approver` and runs the held call as its requester (see
    /// the module docs for the checks, in order). Every refusal is audited.
    ///
    /// # Errors
    /// [`ToolError::NotFound`] (no such approval visible), [`ToolError::SelfApproval`],
    /// [`ToolError::ApprovalForbidden`] (role), [`ToolError::MfaStale`],
    /// [`ToolError::ApprovalExpired`], [`ToolError::ApprovalDecided`], or any error of the
    /// execution itself (the approval is then `failed`).
    pub async fn execute_approval(
        &self,
        approver: &Principal,
        id: uuid::Uuid,
        ctx: &CallContext,
    ) -> Result<ApprovalExecution, ToolError> {
        let (approval, requester) = self.decide_approval(approver, id, true, ctx).await?;
        let Some(requester) = requester else {
            return Err(ToolError::Internal);
        };
        let exec_ctx = CallContext {
            request_id: ctx.request_id.clone(),
            channel: ctx.channel,
            idempotency_key: approval.idempotency_key.clone(),
        };
        let result = self
            .call_mode(
                &requester,
                &approval.tool,
                approval.args.clone(),
                &exec_ctx,
                Mode::Approved(id),
            )
            .await;
        match result {
            Ok(output) => {
                let mut done = approval;
                done.status = approvals::Status::Executed;
                done.result = Some(output.result.clone());
                Ok(ApprovalExecution {
                    approval: done,
                    output,
                })
            }
            Err(e) => {
                let mut tx = self.begin(approver).await?;
                let shown = json!({"error": e.to_string()});
                approvals::finish(&mut tx, id, false, &shown)
                    .await
                    .map_err(store_error)?;
                audit(
                    &mut tx,
                    approver,
                    "approval.failed",
                    &approval,
                    Outcome::Error,
                    json!({"channel": ctx.channel, "request_id": ctx.request_id, "error": e.to_string()}),
                )
                .await?;
                tx.commit().await.map_err(store_error)?;
                Err(e)
            }
        }
    }

    /// Rejects the approval `id` as `approver` (a different user who may decide it; no MFA
    /// age limit: refusing is the safe direction). Audited as `approval.rejected`.
    ///
    /// # Errors
    /// As [`Pipeline::execute_approval`], but for [`ToolError::MfaStale`] and the execution.
    pub async fn reject_approval(
        &self,
        approver: &Principal,
        id: uuid::Uuid,
        ctx: &CallContext,
    ) -> Result<Approval, ToolError> {
        self.decide_approval(approver, id, false, ctx)
            .await
            .map(|(a, _)| a)
    }

    /// Whether `principal` may decide approvals of `tool`: holds the manifest's approver
    /// role, or for a tool without one, may call the tool itself.
    fn may_decide(&self, principal: &Principal, tool: &str) -> bool {
        match self.app().tool(tool) {
            Some(t) => match &t.approval {
                Some(spec) => principal.has_role(spec.role.as_str()),
                None => self.may_call(principal, tool),
            },
            None => false,
        }
    }

    async fn begin(&self, principal: &Principal) -> Result<TenantTx, ToolError> {
        self.store()
            .begin(TenantScope::of(principal))
            .await
            .map_err(store_error)
    }

    /// One decision: checks, the single-use transition, its audit record. For an approval,
    /// also returns the requester as a principal to run the call as.
    async fn decide_approval(
        &self,
        approver: &Principal,
        id: uuid::Uuid,
        approve: bool,
        ctx: &CallContext,
    ) -> Result<(Approval, Option<Principal>), ToolError> {
        let action = if approve {
            "approval.approved"
        } else {
            "approval.rejected"
        };
        let now = self.now();
        let mut tx = self.begin(approver).await?;
        let Some(a) = approvals::get(&mut tx, id).await.map_err(store_error)? else {
            return Err(ToolError::NotFound);
        };
        let Some(tool) = self.app().tool(&a.tool) else {
            return Err(ToolError::NotFound);
        };
        let base = json!({"channel": ctx.channel, "request_id": ctx.request_id});
        let refusal = if approver.user_id == a.requested_by {
            Some(Refusal::SelfDecision)
        } else if !self.may_decide(approver, &a.tool) {
            Some(Refusal::Role)
        } else {
            let max_age = tool
                .approval
                .as_ref()
                .map_or(DEFAULT_MFA_MAX_AGE_SECS, |s| s.mfa_max_age_secs);
            let fresh = approver
                .amr
                .iter()
                .any(|m| matches!(m, AuthMethod::Otp | AuthMethod::Rec | AuthMethod::Mfa))
                && now.saturating_sub(approver.auth_time) <= max_age;
            (approve && !fresh).then_some(Refusal::MfaStale(max_age))
        };
        if let Some(r) = refusal {
            let (why, err) = match r {
                Refusal::SelfDecision => (
                    "the requester cannot decide their own request",
                    ToolError::SelfApproval,
                ),
                Refusal::Role => (
                    "the approver does not hold the approver role",
                    ToolError::ApprovalForbidden,
                ),
                Refusal::MfaStale(max) => (
                    "the approver's second factor is too old",
                    ToolError::MfaStale { max_age_secs: max },
                ),
            };
            let mut detail = base;
            detail["reason"] = json!(why);
            audit(&mut tx, approver, action, &a, Outcome::Deny, detail).await?;
            tx.commit().await.map_err(store_error)?;
            return Err(err);
        }
        // The arguments to execute must be the ones filed (and hashed) at request time.
        if approve && approvals::args_hash(&a.args) != a.args_hash {
            tracing::error!(target: "bastion::alert", approval = %id, "stored approval arguments do not match their hash; refused");
            let mut detail = base;
            detail["reason"] = json!("arguments do not match their hash");
            audit(&mut tx, approver, action, &a, Outcome::Error, detail).await?;
            tx.commit().await.map_err(store_error)?;
            return Err(ToolError::Internal);
        }
        let requester = if approve {
            match bastion_store::users::user_by_id(&mut tx, a.requested_by).await {
                Ok(Some(u)) if !u.disabled => Some(Principal {
                    tenant_id: approver.tenant_id,
                    tenant: approver.tenant.clone(),
                    user_id: u.id,
                    username: u.username,
                    roles: u.roles,
                    // The requester is not present: the fresh factor is the approver's.
                    amr: approver.amr.clone(),
                    auth_time: approver.auth_time,
                    token_id: format!("approval:{id}"),
                }),
                Ok(_) => {
                    let mut detail = base;
                    detail["reason"] = json!("the requester is no longer an active user");
                    audit(&mut tx, approver, action, &a, Outcome::Deny, detail).await?;
                    tx.commit().await.map_err(store_error)?;
                    return Err(ToolError::ApprovalForbidden);
                }
                Err(e) => return Err(store_error(e)),
            }
        } else {
            None
        };
        let decided = approvals::decide(&mut tx, id, approve, approver.user_id)
            .await
            .map_err(store_error)?;
        let (outcome, why, result) = match decided {
            Decided::Done(now_a) => (Outcome::Allow, None, Ok(*now_a)),
            Decided::Missing => return Err(ToolError::NotFound),
            Decided::Expired => (
                Outcome::Deny,
                Some("the approval expired"),
                Err(ToolError::ApprovalExpired),
            ),
            Decided::NotPending(s) => (
                Outcome::Deny,
                Some("the approval was already decided"),
                Err(ToolError::ApprovalDecided(s.as_str().to_owned())),
            ),
        };
        let mut detail = base;
        if let Some(w) = why {
            detail["reason"] = json!(w);
        }
        audit(&mut tx, approver, action, &a, outcome, detail).await?;
        tx.commit().await.map_err(store_error)?;
        result.map(|a| (a, requester))
    }

    /// Arguments for display and audit: redacted per field sensitivity, the envelope keys
    /// (`id`, `version`, `limit`, `offset`) shown as they are.
    pub(crate) fn display_args(&self, tool: &ToolSpec, args: &Value) -> Value {
        let Some(entity) = self.app().entity(&tool.entity) else {
            return json!("[redacted:unknown-entity]");
        };
        let mut shown = redact_args(tool, entity, args);
        if let (Some(out), Some(orig)) = (shown.as_object_mut(), args.as_object()) {
            for k in ["id", "version", "limit", "offset"] {
                if let Some(v) = orig.get(k)
                    && !entity.fields.contains_key(k)
                {
                    out.insert(k.to_owned(), v.clone());
                }
            }
        }
        shown
    }
}
