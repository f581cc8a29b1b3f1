//! The pipeline proper.

use std::collections::BTreeMap;
use std::sync::Arc;

use bastion_app::record_output;
use bastion_app::{AppSpec, EntitySpec, FieldType, ListScope, ToolKind, ToolSpec, ToolValidators};
use bastion_audit::{AuditEvent, Outcome};
use bastion_authz::{Authorizer, AuthzRequest, Decision, Resource};
use bastion_store::killswitch;
use bastion_store::records::{self, FieldRef, ListFilter, Page, RefTarget};
use bastion_store::{Store, StoreError, TenantScope, TenantTx};
use bastion_types::{Principal, Record, RecordId, SharedClock, UserId};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::ToolError;
use crate::approvals::{self, Mode};

/// Largest page a list tool returns: the store's limit.
pub use bastion_store::PAGE_SIZE_MAX;
/// Page size when the caller does not ask.
pub const PAGE_SIZE_DEFAULT: u32 = 20;

/// Per-call facts from the transport.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Request id for correlation in logs and audit.
    pub request_id: String,
    /// Which door the call came through (`rest`, `mcp`, `agent`).
    pub channel: &'static str,
    /// The caller's `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header), already
    /// unwrapped from its structured-field string. Required by money-moving tools; kept with
    /// an approval and passed to its execution.
    pub idempotency_key: Option<String>,
}

/// The successful result of a tool call.
#[derive(Debug, Clone, Serialize)]
pub struct ToolOutput {
    /// The tool's output, valid against its output schema.
    pub result: Value,
    /// Sequence number of the audit record written with the effect (for a replay: of the
    /// record of the replay).
    pub audit_seq: u64,
    /// The result is the stored response of an earlier call with the same idempotency key
    /// (REST answers `Idempotent-Replayed: true`).
    #[serde(skip)]
    pub replayed: bool,
}

/// A tool as listed to a caller by `GET /v1/tools`.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// `low`, `medium` or `high`.
    pub risk: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// JSON Schema of the result.
    pub output_schema: Value,
}

/// The tool pipeline for one app. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) inner: Arc<Inner>,
    pub(crate) payments: crate::payments::PaymentsConfig,
}

pub(crate) struct Inner {
    pub(crate) app: Arc<AppSpec>,
    pub(crate) authz: Arc<Authorizer>,
    pub(crate) store: Store,
    pub(crate) clock: SharedClock,
    pub(crate) validators: BTreeMap<String, ToolValidators>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("app", &self.inner.app.name)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Builds the pipeline, compiling every tool's schemas.
    ///
    /// # Errors
    /// A message naming the tool whose schema does not compile (`bastion check` reports
    /// these earlier with file and line).
    pub fn new(
        app: Arc<AppSpec>,
        authz: Arc<Authorizer>,
        store: Store,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let mut validators = BTreeMap::new();
        for (name, tool) in &app.tools {
            let v = tool
                .validators()
                .map_err(|e| format!("tool `{name}`: {e}"))?;
            validators.insert(name.to_string(), v);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                app,
                authz,
                store,
                clock,
                validators,
            }),
            payments: crate::payments::PaymentsConfig::default(),
        })
    }

    /// Gives the pipeline a PSP for the `payment.charge` / `payment.refund` tools (without
    /// one they answer [`ToolError::Unavailable`]).
    #[must_use]
    pub fn with_psp(mut self, psp: Arc<dyn bastion_payments::psp::Psp>) -> Self {
        self.payments.psp = Some(psp);
        self
    }

    /// Sets how long a payment call holds its idempotency key before a retry may resume it
    /// (seconds, `1..=3600`; default [`crate::payments::PAYMENT_LEASE_SECS`]). It must
    /// exceed the PSP request timeout in production; tests of crash recovery shorten it.
    #[must_use]
    pub fn with_payment_lease_secs(mut self, secs: i64) -> Self {
        self.payments.lease_secs = secs.clamp(1, bastion_store::idempotency::LEASE_SECS_MAX);
        self
    }

    /// The app this pipeline serves.
    #[must_use]
    pub fn app(&self) -> &AppSpec {
        &self.inner.app
    }

    /// The app this pipeline serves, shared (for the background worker).
    #[must_use]
    pub fn app_arc(&self) -> Arc<AppSpec> {
        Arc::clone(&self.inner.app)
    }

    /// The tools `principal` may call at all, with their schemas (sorted by name).
    #[must_use]
    pub fn tools_for(&self, principal: &Principal) -> Vec<ToolInfo> {
        let allowed = self
            .inner
            .authz
            .allowed_actions(principal, self.inner.clock.now());
        self.inner
            .app
            .tools
            .iter()
            .filter(|(name, _)| allowed.iter().any(|a| a == name.as_str()))
            .map(|(name, t)| ToolInfo {
                name: name.to_string(),
                description: t.description.clone(),
                risk: t.risk.as_str().to_owned(),
                input_schema: t.input_schema.clone(),
                output_schema: t.output_schema.clone(),
            })
            .collect()
    }

    /// Runs one tool call for `principal` through the whole pipeline. A tool with a
    /// manifest `approval` is not run: the call is filed and answered with
    /// [`ToolError::PendingApproval`] (see [`crate::approvals`]).
    ///
    /// # Errors
    /// [`ToolError`]; every error after the tool lookup is audited.
    pub async fn call(
        &self,
        principal: &Principal,
        tool_name: &str,
        args: Value,
        ctx: &CallContext,
    ) -> Result<ToolOutput, ToolError> {
        self.call_mode(principal, tool_name, args, ctx, Mode::Call)
            .await
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    pub(crate) fn may_call(&self, principal: &Principal, tool: &str) -> bool {
        self.inner.authz.may_call(principal, tool, self.now())
    }

    /// [`Pipeline::call`], held for approval or executing an approved one per `mode`.
    pub(crate) async fn call_mode(
        &self,
        principal: &Principal,
        tool_name: &str,
        args: Value,
        ctx: &CallContext,
        mode: Mode<'_>,
    ) -> Result<ToolOutput, ToolError> {
        let inner = &self.inner;
        let Some((tool_key, tool)) = inner
            .app
            .tools
            .iter()
            .find(|(k, _)| k.as_str() == tool_name)
        else {
            let shown: String = tool_name.chars().take(64).collect();
            self.audit_unknown_tool(principal, &shown, ctx).await?;
            return Err(ToolError::UnknownTool(shown));
        };
        let name = tool_key.to_string();
        let entity = inner
            .app
            .entities
            .get(&tool.entity)
            .ok_or(ToolError::Internal)?;
        let audit = AuditCtx {
            principal,
            tool: &name,
            tool_spec: tool,
            entity,
            ctx,
            now: inner.clock.now(),
            mode,
        };

        // 1. Action level: can this principal call the tool at all?
        if !inner.authz.may_call(principal, &name, audit.now) {
            self.audit_alone(
                &audit,
                Outcome::Deny,
                None,
                &[],
                json!({"reason": "action not permitted"}),
                &args,
            )
            .await?;
            return Err(ToolError::Forbidden(name));
        }

        // 2. Input schema (before any data is touched), then integer fields made integers.
        let mut args = args;
        let compiled = inner.validators.get(&name).ok_or(ToolError::Internal)?;
        let errors: Vec<(String, String)> = bastion_app::schema_violations(&compiled.input, &args)
            .into_iter()
            .map(|v| (v.pointer, v.message))
            .collect();
        let errors = if errors.is_empty() {
            normalize_fields(entity, &mut args)
        } else {
            errors
        };
        if !errors.is_empty() {
            self.audit_alone(
                &audit,
                Outcome::Deny,
                None,
                &[],
                json!({"reason": "invalid input"}),
                &args,
            )
            .await?;
            return Err(ToolError::InvalidInput(errors));
        }

        // Money-moving tools: idempotency keys, the PSP and the ledger (payments.rs).
        if tool.kind.is_payment() {
            return crate::payments::call(self, &audit, &args).await;
        }

        // 3. One tenant transaction for the resource, the decision, the effect and its record.
        let mut tx = inner
            .store
            .begin(TenantScope::of(principal))
            .await
            .map_err(store_err)?;
        let outcome = self.execute(&mut tx, &audit, &args).await;
        match outcome {
            Ok((result, target, decision)) => {
                if !compiled.output.is_valid(&result) {
                    tracing::error!(target: "bastion::alert", tool = %name, "tool output failed its output schema; refused");
                    rollback(tx).await;
                    self.audit_alone(
                        &audit,
                        Outcome::Error,
                        target.as_deref(),
                        &decision.policy_ids,
                        json!({"reason": "output schema"}),
                        &args,
                    )
                    .await?;
                    return Err(ToolError::Internal);
                }
                if let Err(e) = approvals::mark_executed(&mut tx, mode, &result).await {
                    rollback(tx).await;
                    return Err(e);
                }
                let seq = append(
                    &mut tx,
                    &audit,
                    Outcome::Allow,
                    target.as_deref(),
                    &decision.policy_ids,
                    json!({}),
                    &args,
                )
                .await?;
                tx.commit().await.map_err(store_err)?;
                Ok(ToolOutput {
                    result,
                    audit_seq: seq,
                    replayed: false,
                })
            }
            Err(Failure {
                error,
                target,
                policy_ids,
                reason,
            }) => {
                if reason == approvals::HELD {
                    // Every check passed and nothing was written: file it instead.
                    return Err(approvals::file(self, tx, principal, tool, &args, ctx, mode).await);
                }
                // Nothing of the effect survives: roll back, then record the refusal.
                rollback(tx).await;
                let outcome = match error {
                    ToolError::NotFound
                    | ToolError::Forbidden(_)
                    | ToolError::InvalidInput(_)
                    | ToolError::Disabled(_) => Outcome::Deny,
                    _ => Outcome::Error,
                };
                self.audit_alone(
                    &audit,
                    outcome,
                    target.as_deref(),
                    &policy_ids,
                    json!({"reason": reason}),
                    &args,
                )
                .await?;
                Err(error)
            }
        }
    }

    async fn execute(
        &self,
        tx: &mut TenantTx,
        a: &AuditCtx<'_>,
        args: &Value,
    ) -> Result<(Value, Option<String>, Decision), Failure> {
        let tool = a.tool_spec;
        let entity_name = tool.entity.as_str();
        match tool.kind {
            ToolKind::PaymentCharge | ToolKind::PaymentRefund => {
                Err(Failure::internal("payment kinds run in payments.rs"))
            }
            ToolKind::RecordCreate => {
                let parent = match &tool.parent {
                    Some(field) => {
                        let pid = parse_id(args, field)?;
                        let parent_entity = a
                            .entity
                            .fields
                            .get(field)
                            .and_then(|f| f.entity.clone())
                            .ok_or_else(|| Failure::internal("parent field has no entity"))?;
                        Some(load(tx, &parent_entity, pid).await?)
                    }
                    None => None,
                };
                let resource = match &parent {
                    Some(p) => Resource::Record {
                        record: p,
                        parent: None,
                    },
                    None => Resource::Tenant,
                };
                let decision = self.decide(a, resource)?;
                let target_parent = parent.as_ref().map(|p| p.id.to_string());
                let mut data = args.as_object().cloned().unwrap_or_default();
                data.extend(tool.resolved_set(&a.principal.user_id));
                check_user_refs(tx, a.entity, &data).await?;
                let refs = field_refs(a.entity, &data);
                gate(tx, a).await?;
                let record = records::insert_record(
                    tx,
                    entity_name,
                    a.principal.user_id,
                    Value::Object(data),
                    &refs,
                )
                .await
                .map_err(|e| Failure::store(e, target_parent.clone()))?;
                if let Some(p) = &parent {
                    self.write_parent(tx, tool, p).await?;
                }
                Ok((
                    record_output(&record),
                    Some(record.id.to_string()),
                    decision,
                ))
            }
            ToolKind::RecordGet => {
                let id = parse_id(args, "id")?;
                let record = load(tx, entity_name, id).await?;
                let parent = load_parent(tx, a.entity, &record).await?;
                let decision = self.decide(
                    a,
                    Resource::Record {
                        record: &record,
                        parent: parent.as_ref(),
                    },
                )?;
                gate(tx, a).await?;
                Ok((
                    record_output(&record),
                    Some(record.id.to_string()),
                    decision,
                ))
            }
            ToolKind::RecordList => {
                let decision = self.decide(a, Resource::Tenant)?;
                let filter = list_filter(tool, a.principal);
                let limit = args
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map_or(PAGE_SIZE_DEFAULT, |l| {
                        u32::try_from(l).unwrap_or(PAGE_SIZE_MAX)
                    })
                    .clamp(1, PAGE_SIZE_MAX);
                let offset = args
                    .get("offset")
                    .and_then(Value::as_u64)
                    .map_or(0, |o| u32::try_from(o).unwrap_or(u32::MAX));
                let page = Page { offset, limit };
                gate(tx, a).await?;
                let (records, total) = records::list_records(tx, entity_name, &filter, page)
                    .await
                    .map_err(|e| Failure::store(e, None))?;
                // Defence in depth: every listed row must also be readable through the
                // entity's `record.get` tool. A row the SQL scope returns but policy denies
                // means the manifest's scope is broader than its policies: fail closed, alert.
                if let Some(get_tool) = self.get_tool_for(entity_name) {
                    for r in &records {
                        let parent = load_parent(tx, a.entity, r).await?;
                        let d = self.inner.authz.decide(&AuthzRequest {
                            principal: a.principal,
                            action: get_tool,
                            resource: Resource::Record {
                                record: r,
                                parent: parent.as_ref(),
                            },
                            now: a.now,
                        });
                        if !d.allowed || !d.errors.is_empty() {
                            tracing::error!(target: "bastion::alert", tool = %a.tool, "list scope returned a row that policy denies; refused");
                            return Err(Failure::internal("list scope broader than policy"));
                        }
                    }
                }
                let items: Vec<Value> = records.iter().map(record_output).collect();
                let result = json!({"items": items, "total": total});
                Ok((result, None, decision))
            }
            ToolKind::RecordUpdate => {
                let id = parse_id(args, "id")?;
                let record = load(tx, entity_name, id).await?;
                let parent = load_parent(tx, a.entity, &record).await?;
                let decision = self
                    .decide(
                        a,
                        Resource::Record {
                            record: &record,
                            parent: parent.as_ref(),
                        },
                    )
                    .map_err(|mut f| {
                        f.target = Some(record.id.to_string());
                        f
                    })?;
                let expected = args
                    .get("version")
                    .and_then(Value::as_i64)
                    .unwrap_or(record.version);
                let mut data = record.data.as_object().cloned().unwrap_or_default();
                if let Some(obj) = args.as_object() {
                    for (k, v) in obj {
                        if k != "id" && k != "version" {
                            data.insert(k.clone(), v.clone());
                        }
                    }
                }
                data.extend(tool.resolved_set(&a.principal.user_id));
                check_user_refs(tx, a.entity, &data).await?;
                let refs = field_refs(a.entity, &data);
                gate(tx, a).await?;
                let updated = records::update_record(
                    tx,
                    entity_name,
                    id,
                    expected,
                    Value::Object(data),
                    &refs,
                )
                .await
                .map_err(|e| Failure::store(e, Some(id.to_string())))?;
                if let Some(p) = &parent {
                    self.write_parent(tx, tool, p).await?;
                }
                Ok((
                    record_output(&updated),
                    Some(updated.id.to_string()),
                    decision,
                ))
            }
        }
    }

    /// Applies the tool's `set_parent` values to the parent record, in the caller's
    /// transaction (so the child and the parent change together or not at all).
    async fn write_parent(
        &self,
        tx: &mut TenantTx,
        tool: &ToolSpec,
        parent: &Record,
    ) -> Result<(), Failure> {
        if tool.set_parent.is_empty() {
            return Ok(());
        }
        let parent_entity = self
            .inner
            .app
            .entities
            .get(&parent.entity)
            .ok_or_else(|| Failure::internal("parent entity unknown"))?;
        let mut data = parent.data.as_object().cloned().unwrap_or_default();
        data.extend(tool.set_parent.clone());
        let refs = field_refs(parent_entity, &data);
        records::update_record(
            tx,
            &parent.entity,
            parent.id,
            parent.version,
            Value::Object(data),
            &refs,
        )
        .await
        .map_err(|e| Failure::store(e, Some(parent.id.to_string())))?;
        Ok(())
    }

    /// The `record.get` tool of an entity, if the manifest has one.
    fn get_tool_for(&self, entity: &str) -> Option<&str> {
        self.inner
            .app
            .tools
            .iter()
            .find(|(_, t)| t.kind == ToolKind::RecordGet && t.entity == entity)
            .map(|(k, _)| k.as_str())
    }

    /// One Cedar decision; a deny or any evaluation error refuses.
    pub(crate) fn decide(
        &self,
        a: &AuditCtx<'_>,
        resource: Resource<'_>,
    ) -> Result<Decision, Failure> {
        let target = match &resource {
            Resource::Record { record, .. } | Resource::RecordIn { record, .. } => {
                Some(record.id.to_string())
            }
            _ => None,
        };
        let record_scoped = target.is_some();
        let d = self.inner.authz.decide(&AuthzRequest {
            principal: a.principal,
            action: a.tool,
            resource,
            now: a.now,
        });
        if !d.errors.is_empty() {
            tracing::error!(target: "bastion::alert", tool = %a.tool, errors = ?d.errors, "policy evaluation error; denied");
        }
        if d.allowed && d.errors.is_empty() {
            return Ok(d);
        }
        // A record the caller may not act on is reported as absent, so existence does not leak.
        let error = if record_scoped {
            ToolError::NotFound
        } else {
            ToolError::Forbidden(a.tool.to_owned())
        };
        let reason = if d.errors.is_empty() {
            "policy denied"
        } else {
            "policy evaluation error"
        };
        Err(Failure {
            error,
            target,
            policy_ids: d.policy_ids,
            reason,
        })
    }

    /// Records a call to a tool the manifest does not have (arguments are not recorded:
    /// without a tool there is no schema telling which fields are sensitive).
    async fn audit_unknown_tool(
        &self,
        principal: &Principal,
        shown: &str,
        ctx: &CallContext,
    ) -> Result<(), ToolError> {
        let event = AuditEvent {
            at: self.inner.clock.now(),
            tenant_id: principal.tenant_id,
            actor: Some(principal.user_id),
            action: "tool.unknown".to_owned(),
            target: None,
            outcome: Outcome::Deny,
            policy_ids: Vec::new(),
            detail: json!({"tool": shown, "channel": ctx.channel, "request_id": ctx.request_id, "reason": "unknown tool"}),
        };
        let mut tx = self
            .inner
            .store
            .begin(TenantScope::of(principal))
            .await
            .map_err(store_err)?;
        if let Err(e) = bastion_store::audit::append_audit(&mut tx, &event).await {
            tracing::error!(target: "bastion::alert", error = %e, "audit append failed; call refused");
            return Err(ToolError::Unavailable);
        }
        tx.commit().await.map_err(store_err)
    }

    pub(crate) async fn audit_alone(
        &self,
        a: &AuditCtx<'_>,
        outcome: Outcome,
        target: Option<&str>,
        policy_ids: &[String],
        extra: Value,
        args: &Value,
    ) -> Result<(), ToolError> {
        let mut tx = self
            .inner
            .store
            .begin(TenantScope::of(a.principal))
            .await
            .map_err(store_err)?;
        append(&mut tx, a, outcome, target, policy_ids, extra, args).await?;
        tx.commit().await.map_err(store_err)
    }
}

pub(crate) struct AuditCtx<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) tool: &'a str,
    pub(crate) tool_spec: &'a ToolSpec,
    pub(crate) entity: &'a EntitySpec,
    pub(crate) ctx: &'a CallContext,
    pub(crate) now: i64,
    pub(crate) mode: Mode<'a>,
}

pub(crate) struct Failure {
    pub(crate) error: ToolError,
    pub(crate) target: Option<String>,
    pub(crate) policy_ids: Vec<String>,
    pub(crate) reason: &'static str,
}

impl Failure {
    pub(crate) fn internal(reason: &'static str) -> Self {
        tracing::error!(target: "bastion::alert", reason, "pipeline inconsistency");
        Self {
            error: ToolError::Internal,
            target: None,
            policy_ids: Vec::new(),
            reason: "internal",
        }
    }

    pub(crate) fn store(e: StoreError, target: Option<String>) -> Self {
        let (error, reason) = match e {
            StoreError::NotFound => (ToolError::NotFound, "not found"),
            StoreError::Conflict { current_version } => {
                (ToolError::Conflict { current_version }, "version conflict")
            }
            StoreError::Unavailable { .. } => (ToolError::Unavailable, "store unavailable"),
            StoreError::Invalid { reason } => (
                ToolError::InvalidInput(vec![(String::new(), reason.to_owned())]),
                "invalid input",
            ),
            other => {
                tracing::error!(error = %other, "store error during tool call");
                (ToolError::Internal, "store error")
            }
        };
        Self {
            error,
            target,
            policy_ids: Vec::new(),
            reason,
        }
    }

    pub(crate) fn invalid(pointer: &str, message: &str) -> Self {
        Self {
            error: ToolError::InvalidInput(vec![(pointer.to_owned(), message.to_owned())]),
            target: None,
            policy_ids: Vec::new(),
            reason: "invalid input",
        }
    }
}

/// Whether `c` may not appear in a stored string: C0/C1 controls other than tab, line feed
/// and carriage return (NUL truncates in C consumers), and the Unicode bidirectional
/// overrides and isolates that make text display differently from what it says
/// (CVE-2021-42574, "Trojan Source").
fn forbidden_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Makes arguments safe to store, or says why not. Returns the errors, empty when fine.
///
/// - JSON Schema's `integer` accepts `1.0`, `1e2` and `-0`; the store and Cedar must only
///   ever see `i64`. Integral values of `integer` fields are rewritten as integers; anything
///   else (fractions, values beyond ±9e15) is an input error.
/// - `string` fields may not hold control characters (but tab and newlines) or
///   bidirectional overrides ([`forbidden_char`]).
fn normalize_fields(entity: &EntitySpec, args: &mut Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let Some(obj) = args.as_object_mut() else {
        return errors;
    };
    for (k, f) in &entity.fields {
        if f.ty == FieldType::String {
            let bad = obj
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| s.chars().any(forbidden_char));
            if bad {
                errors.push((
                    format!("/{k}"),
                    "must not contain control or bidirectional-override characters".to_owned(),
                ));
            }
            continue;
        }
        if f.ty != FieldType::Integer {
            continue;
        }
        let Some(v) = obj.get_mut(k) else { continue };
        if v.is_i64() {
            continue;
        }
        let as_int = v
            .as_f64()
            .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
            .map(|x| {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "integral and below 2^53 in magnitude"
                )]
                let i = x as i64;
                i
            });
        match as_int {
            Some(i) => *v = Value::from(i),
            None => errors.push((
                format!("/{k}"),
                "must be an integer between -9e15 and 9e15".to_owned(),
            )),
        }
    }
    errors
}

/// Largest serialized argument summary kept in an audit record, bytes.
const AUDIT_ARGS_BYTES_MAX: usize = 8 * 1024;

/// Redacted arguments for the audit record, replaced by a summary (size and top-level keys)
/// when they are too large, so that an oversized request is still recorded.
fn audit_args(tool: &ToolSpec, entity: &EntitySpec, args: &Value) -> Value {
    let redacted = crate::redact::redact_args(tool, entity, args);
    let bytes = redacted.to_string().len();
    if bytes <= AUDIT_ARGS_BYTES_MAX {
        return redacted;
    }
    let keys: Vec<String> = args
        .as_object()
        .map(|o| {
            o.keys()
                .take(32)
                .map(|k| k.chars().take(64).collect())
                .collect()
        })
        .unwrap_or_default();
    json!({"omitted": "arguments too large to record", "bytes": bytes, "keys": keys})
}

/// Rolls back; a failed rollback is logged (the connection is discarded by the pool).
pub(crate) async fn rollback(tx: TenantTx) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "rollback failed");
    }
}

pub(crate) fn store_err(e: StoreError) -> ToolError {
    match e {
        StoreError::Unavailable { .. } => ToolError::Unavailable,
        other => {
            tracing::error!(error = %other, "store error");
            ToolError::Unavailable
        }
    }
}

pub(crate) async fn append(
    tx: &mut TenantTx,
    a: &AuditCtx<'_>,
    outcome: Outcome,
    target: Option<&str>,
    policy_ids: &[String],
    extra: Value,
    args: &Value,
) -> Result<u64, ToolError> {
    let mut detail = Map::new();
    detail.insert("tool".to_owned(), json!(a.tool));
    detail.insert("risk".to_owned(), json!(a.tool_spec.risk.as_str()));
    detail.insert("channel".to_owned(), json!(a.ctx.channel));
    detail.insert("request_id".to_owned(), json!(a.ctx.request_id));
    detail.insert("args".to_owned(), audit_args(a.tool_spec, a.entity, args));
    if let Some(id) = a.mode.approval_id() {
        detail.insert("approval_id".to_owned(), json!(id.to_string()));
    }
    if let Value::Object(m) = extra {
        detail.extend(m);
    }
    let event = AuditEvent {
        at: a.now,
        tenant_id: a.principal.tenant_id,
        actor: Some(a.principal.user_id),
        action: format!("tool.{}", a.tool),
        target: target.map(str::to_owned),
        outcome,
        policy_ids: policy_ids.to_vec(),
        detail: Value::Object(detail),
    };
    match bastion_store::audit::append_audit(tx, &event).await {
        Ok((seq, _hash)) => Ok(seq),
        Err(e) => {
            tracing::error!(target: "bastion::alert", error = %e, "audit append failed; call refused");
            Err(ToolError::Unavailable)
        }
    }
}

/// The kill switch, checked in the call's own transaction as the last step before the
/// effect (a write, or for read tools the data handed back). Refuses with
/// [`ToolError::Disabled`] (audited as a deny, reason `kill switch`); a failing check refuses
/// too (fail closed). Called before any write of the transaction, so on PostgreSQL the shared
/// switch lock is the first lock a switch change could wait behind.
///
/// Then the approval hold: a call that must be approved first stops here, after every check
/// and before any write, with the [`approvals::HELD`] failure (the caller files it).
pub(crate) async fn gate(tx: &mut TenantTx, a: &AuditCtx<'_>) -> Result<(), Failure> {
    let tool = a.tool;
    match killswitch::is_blocked(tx, tool).await {
        Ok(None) if a.mode.holds(a.tool_spec) => Err(Failure {
            error: ToolError::Internal,
            target: None,
            policy_ids: Vec::new(),
            reason: approvals::HELD,
        }),
        Ok(None) => Ok(()),
        Ok(Some(block)) => {
            tracing::info!(tool, scope = %block.scope, "tool call refused by a kill switch");
            Err(Failure {
                error: ToolError::Disabled(tool.to_owned()),
                target: None,
                policy_ids: Vec::new(),
                reason: "kill switch",
            })
        }
        Err(e) => Err(Failure::store(e, None)),
    }
}

pub(crate) fn parse_id(args: &Value, field: &str) -> Result<RecordId, Failure> {
    args.get(field)
        .and_then(Value::as_str)
        .and_then(|s| RecordId::parse(s).ok())
        .ok_or_else(|| Failure::invalid(&format!("/{field}"), "must be a record id"))
}

pub(crate) async fn load(tx: &mut TenantTx, entity: &str, id: RecordId) -> Result<Record, Failure> {
    match records::get_record(tx, entity, id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(Failure::store(StoreError::NotFound, Some(id.to_string()))),
        Err(e) => Err(Failure::store(e, Some(id.to_string()))),
    }
}

/// The parent record of `record`, when its entity has a `ref` field (e.g. a proposal's quote).
async fn load_parent(
    tx: &mut TenantTx,
    entity: &EntitySpec,
    record: &Record,
) -> Result<Option<Record>, Failure> {
    let Some((field, parent_entity)) = entity.fields.iter().find_map(|(k, f)| {
        (f.ty == FieldType::Ref)
            .then(|| f.entity.clone().map(|e| (k.clone(), e)))
            .flatten()
    }) else {
        return Ok(None);
    };
    let Some(pid) = record
        .data
        .get(&field)
        .and_then(Value::as_str)
        .and_then(|s| RecordId::parse(s).ok())
    else {
        return Ok(None);
    };
    load(tx, &parent_entity, pid).await.map(Some)
}

/// The user- and ref-typed fields present in `data`, for the store to index (list scopes)
/// and to check with composite foreign keys (same tenant, existing row).
pub(crate) fn field_refs(entity: &EntitySpec, data: &Map<String, Value>) -> Vec<FieldRef> {
    let mut out = Vec::new();
    for (k, f) in &entity.fields {
        let Some(text) = data.get(k).and_then(Value::as_str) else {
            continue;
        };
        let target = match f.ty {
            FieldType::User => UserId::parse(text).ok().map(RefTarget::User),
            FieldType::Ref => match (&f.entity, RecordId::parse(text)) {
                (Some(e), Ok(id)) => Some(RefTarget::Record {
                    entity: e.clone(),
                    id,
                }),
                _ => None,
            },
            _ => None,
        };
        if let Some(target) = target {
            out.push(FieldRef {
                field: k.clone(),
                target,
            });
        }
    }
    out
}

/// Every user-typed field must name a user of the caller's own tenant, holding the field's
/// `role` when the manifest gives one.
async fn check_user_refs(
    tx: &mut TenantTx,
    entity: &EntitySpec,
    data: &Map<String, Value>,
) -> Result<(), Failure> {
    for (k, f) in &entity.fields {
        if f.ty != FieldType::User {
            continue;
        }
        let Some(v) = data.get(k) else { continue };
        let Some(uid) = v.as_str().and_then(|s| UserId::parse(s).ok()) else {
            return Err(Failure::invalid(&format!("/{k}"), "must be a user id"));
        };
        match bastion_store::users::user_by_id(tx, uid).await {
            Ok(Some(u)) => {
                if let Some(role) = f
                    .role
                    .as_ref()
                    .filter(|r| u.disabled || !u.roles.contains(r))
                {
                    return Err(Failure::invalid(
                        &format!("/{k}"),
                        &format!("must be a user with role {role}"),
                    ));
                }
            }
            Ok(None) | Err(StoreError::NotFound) => {
                return Err(Failure::invalid(&format!("/{k}"), "no such user"));
            }
            Err(e) => return Err(Failure::store(e, None)),
        }
    }
    Ok(())
}

/// The SQL filter of a list tool for this principal: the union of the scopes of the roles it
/// holds; no scoped role → nothing.
fn list_filter(tool: &ToolSpec, principal: &Principal) -> ListFilter {
    let mut parts = Vec::new();
    for (role, scope) in &tool.scope {
        if !principal.has_role(role.as_str()) {
            continue;
        }
        match scope {
            ListScope::Tenant => return ListFilter::All,
            ListScope::Owner => parts.push(ListFilter::Owner(principal.user_id)),
            ListScope::Field(f) => parts.push(ListFilter::Field(f.clone(), principal.user_id)),
        }
    }
    match parts.len() {
        0 => ListFilter::Nothing,
        1 => parts.pop().unwrap_or(ListFilter::Nothing),
        _ => ListFilter::AnyOf(parts),
    }
}
