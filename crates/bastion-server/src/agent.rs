//! `POST /v1/agent/chat`: the agent loop of `bastion-agent` over HTTP, acting as the
//! authenticated principal.
//!
//! ```text
//! bearer token (MFA) → chat rate limits (user, tenant) → daily token budget → tenant region
//! → Agent::chat { model sees tools_for(principal) only; every call → Pipeline::call as the
//!   principal, channel "agent"; pii/pci/secret fields withheld from results }
//! → token usage counted → audit `agent.chat` (masked prompt, masked model output, tool
//!   calls with outcome, taint, injection signals) → reply
//! ```
//!
//! Refusals (rate limit, budget, region) are problems (`rate-limited`, `region-mismatch`)
//! and are audited (a rate-limit refusal once per tenant and minute, so a flood does not
//! become a flood of audit writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bastion_agent::{
    Agent, AgentError, ChatInput, ChatMessage, ChatOutcome, ExecError, Limits, ModelProvider, Role,
    ToolDef, ToolExecutor, ToolOutcome,
};
use bastion_app::Sensitivity;
use bastion_audit::{AuditEvent, Outcome};
use bastion_guard::{EntityKind, MaskMode, Masker, UrlAllowlist};
use bastion_store::{Store, TenantScope};
use bastion_tools::{CallContext, Pipeline, ToolError};
use bastion_types::{Principal, RecordId, SharedClock, TenantId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http_layers::JsonBody;
use crate::limits::{AgentGovernor, AgentQuotas, RetryAfter, secs_to_next_day, token_key};
use crate::problem::{Code, Problem};
use crate::routes::{AppState, Authenticated};

/// Longest `conversation_id` accepted, in bytes.
pub const CONVERSATION_ID_LEN_MAX: usize = 128;
/// Longest text kept per string in an `agent.chat` audit record, in characters.
pub const AUDIT_TEXT_CHARS_MAX: usize = 2_000;
/// Largest `detail` of an `agent.chat` audit record before tool arguments are dropped, bytes
/// (the audit body limit is 64 KiB).
const AUDIT_DETAIL_BYTES_MAX: usize = 48 * 1024;
/// The marker that replaces a `pii`, `pci` or `secret` field of a tool result before the
/// model sees it.
pub const WITHHELD: &str = "[withheld]";
/// Everything the agent routes need beyond the REST state. Cheap to share (`Arc`).
pub struct AgentService {
    provider: Arc<dyn ModelProvider>,
    offline: bool,
    limits: Limits,
    url_allowlist: UrlAllowlist,
    governor: AgentGovernor,
    clock: SharedClock,
    /// The manifest's `[app] region`, used when a tenant has none.
    default_region: String,
    /// Tenants (and minutes) whose rate-limit refusal was already audited.
    refusals_audited: Mutex<HashMap<TenantId, i64>>,
}

impl std::fmt::Debug for AgentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService")
            .field("provider", &self.provider.name())
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

/// The settings of [`AgentService::new`].
pub struct AgentSettings {
    /// The model provider (from `[agent]`; never from a request).
    pub provider: Arc<dyn ModelProvider>,
    /// Whether it is the offline stand-in (reported in every reply).
    pub offline: bool,
    /// Steps and tokens per chat.
    pub limits: Limits,
    /// Hosts whose links and images survive in replies.
    pub url_allowlist: UrlAllowlist,
    /// Rate limits and budgets.
    pub quotas: AgentQuotas,
    /// The manifest's `[app] region` (fallback for a tenant without one).
    pub default_region: String,
}

impl AgentService {
    /// The service on `clock`.
    #[must_use]
    pub fn new(s: AgentSettings, clock: SharedClock) -> Self {
        AgentService {
            governor: AgentGovernor::new(s.quotas, clock.clone()),
            provider: s.provider,
            offline: s.offline,
            limits: s.limits,
            url_allowlist: s.url_allowlist,
            clock,
            default_region: s.default_region,
            refusals_audited: Mutex::new(HashMap::new()),
        }
    }

    /// The limiters (shared with `/mcp`).
    #[must_use]
    pub fn governor(&self) -> &AgentGovernor {
        &self.governor
    }

    /// The provider's label.
    #[must_use]
    pub fn provider_name(&self) -> String {
        self.provider.name()
    }

    /// The provider.
    #[must_use]
    pub fn provider(&self) -> &Arc<dyn ModelProvider> {
        &self.provider
    }

    /// Whether the provider is the offline stand-in.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The server clock.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The manifest's region (fallback for tenants without one).
    #[must_use]
    pub fn default_region(&self) -> &str {
        &self.default_region
    }

    /// Hosts whose links survive in model output.
    #[must_use]
    pub fn url_allowlist(&self) -> &UrlAllowlist {
        &self.url_allowlist
    }

    /// Whether a rate-limit refusal of `tenant` in this minute still needs its audit record.
    fn first_refusal_this_minute(&self, tenant: TenantId) -> bool {
        let minute = self.clock.now().div_euclid(60);
        let Ok(mut m) = self.refusals_audited.lock() else {
            return false;
        };
        if m.len() > 100_000 {
            m.retain(|_, v| *v >= minute);
        }
        m.insert(tenant, minute) != Some(minute)
    }
}

/// `POST /v1/agent/chat` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChatBody {
    messages: Vec<InMessage>,
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InMessage {
    role: String,
    content: String,
}

/// Runs tool calls through the REST pipeline as one principal. What the model gets back has
/// every `pii`, `pci` and `secret` field of the tool's entity replaced by [`WITHHELD`], so
/// such fields never reach a model, in clear or masked.
pub struct PipelineExecutor<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// The caller.
    pub principal: &'a Principal,
    /// Channel (`agent`) and request id.
    pub ctx: CallContext,
    /// Tool-call rate limits, if any.
    pub governor: Option<&'a AgentGovernor>,
}

impl PipelineExecutor<'_> {
    async fn run(&self, name: &str, arguments: &Value) -> Result<Value, ExecError> {
        if let Some(g) = self.governor
            && g.check_tool_call(self.principal.tenant_id, self.principal.user_id)
                .is_err()
        {
            return Err(ExecError::Failed {
                reason: "rate limited: too many tool calls; try again later".to_owned(),
            });
        }
        let ctx = agent_call_ctx(&self.ctx, name, arguments);
        match self
            .pipeline
            .call(self.principal, name, arguments.clone(), &ctx)
            .await
        {
            Ok(out) => Ok(withhold_sensitive(self.pipeline, name, out.result)),
            Err(e) => Err(exec_error(e)),
        }
    }
}

/// The context of one tool call the model made: the chat's, with an idempotency key derived
/// from the chat's own `Idempotency-Key` (else its request id), the tool and its arguments
/// (`agent-<sha256 prefix>`), so money-moving tools work from the agent, the same call twice
/// in one chat is one effect, and a retried chat (same key) replays instead of charging again.
fn agent_call_ctx(base: &CallContext, tool: &str, args: &Value) -> CallContext {
    let scope = base.idempotency_key.as_deref().unwrap_or(&base.request_id);
    let digest = bastion_crypto::sha256_hex(format!("{scope}\n{tool}\n{args}").as_bytes());
    let short: String = digest.chars().take(48).collect();
    CallContext {
        request_id: base.request_id.clone(),
        channel: base.channel,
        idempotency_key: Some(format!("agent-{short}")),
    }
}

/// Maps a pipeline error to what the agent records: policy refusals are `Denied`, the rest
/// `Failed` (a record of another tenant or hidden by policy stays "record not found").
#[must_use]
pub fn exec_error(e: ToolError) -> ExecError {
    match e {
        ToolError::Forbidden(_) | ToolError::Disabled(_) => ExecError::Denied {
            reason: e.to_string(),
        },
        ToolError::PendingApproval { approval } => ExecError::PendingApproval {
            id: approval.id.to_string(),
        },
        ToolError::InvalidInput(errs) => ExecError::Failed {
            reason: format!(
                "invalid arguments: {}",
                errs.iter()
                    .take(8)
                    .map(|(p, m)| format!("{p} {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
        other => ExecError::Failed {
            reason: other.to_string(),
        },
    }
}

/// Files an approval request for a held high-risk call (`Pipeline::request_approval`: the
/// call is checked as the user — action, schema, Cedar on the resource, kill switch — and
/// filed, never run) and returns the approval's id.
///
/// # Errors
/// The pipeline's refusal, mapped by [`exec_error`].
pub async fn file_approval(
    pipeline: &Pipeline,
    principal: &Principal,
    tool: &str,
    args: &Value,
    reason: &str,
    ctx: &CallContext,
) -> Result<String, ExecError> {
    match pipeline
        .request_approval(principal, tool, args.clone(), reason, ctx)
        .await
    {
        Ok(approval) => Ok(approval.id.to_string()),
        Err(e) => Err(exec_error(e)),
    }
}

impl ToolExecutor for PipelineExecutor<'_> {
    fn execute<'a>(
        &'a self,
        name: &'a str,
        arguments: &'a Value,
    ) -> bastion_agent::BoxFuture<'a, Result<Value, ExecError>> {
        Box::pin(self.run(name, arguments))
    }

    fn request_approval<'a>(
        &'a self,
        name: &'a str,
        arguments: &'a Value,
        reason: &'a str,
    ) -> bastion_agent::BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            let ctx = agent_call_ctx(&self.ctx, name, arguments);
            file_approval(self.pipeline, self.principal, name, arguments, reason, &ctx).await
        })
    }
}

/// `result` with the tool entity's `pii`, `pci` and `secret` fields replaced by
/// [`WITHHELD`], in a record or in each record of an `items` list.
#[must_use]
pub fn withhold_sensitive(pipeline: &Pipeline, tool: &str, result: Value) -> Value {
    let app = pipeline.app();
    let Some(entity) = app
        .tools
        .iter()
        .find(|(k, _)| k.as_str() == tool)
        .and_then(|(_, t)| app.entities.get(&t.entity))
    else {
        return result;
    };
    let fix = |mut rec: Map<String, Value>| {
        for (k, f) in &entity.fields {
            if matches!(
                f.sensitivity,
                Sensitivity::Pii | Sensitivity::Pci | Sensitivity::Secret
            ) && let Some(v) = rec.get_mut(k)
            {
                *v = Value::String(WITHHELD.to_owned());
            }
        }
        Value::Object(rec)
    };
    match result {
        Value::Object(mut o) => {
            if let Some(Value::Array(items)) = o.get_mut("items") {
                let taken = std::mem::take(items);
                *items = taken
                    .into_iter()
                    .map(|i| match i {
                        Value::Object(r) => fix(r),
                        other => other,
                    })
                    .collect();
                Value::Object(o)
            } else {
                fix(o)
            }
        }
        other => other,
    }
}

/// The tools `principal` may call, as the model is offered them.
#[must_use]
pub fn tool_defs(pipeline: &Pipeline, principal: &Principal) -> Vec<ToolDef> {
    pipeline
        .tools_for(principal)
        .into_iter()
        .map(|t| ToolDef {
            high_risk: t.risk == "high",
            name: t.name,
            description: t.description,
            parameters: t.input_schema,
        })
        .collect()
}

/// Kinds restored in replies and tool arguments: every kind but secrets. Every value in the
/// model's context was typed by this user in this request or returned to this user by the
/// pipeline under their own permissions (with `pii`/`pci`/`secret` fields withheld), so a
/// restored value is one the user may read; secret-shaped values stay placeholders.
#[must_use]
pub fn restore_allowed(kind: EntityKind) -> bool {
    !kind.is_secret() && kind != EntityKind::SensitiveField
}

fn rate_limited(r: RetryAfter, what: &str) -> Problem {
    let mut p = Problem::new(
        Code::TooManyRequests,
        format!("too many {what}; try again later"),
    );
    p.retry_after_secs = Some(r.0);
    p
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Appends one audit record to the principal's tenant chain; a failure is logged as an
/// alert (the chat has already happened; its tool calls have their own records).
pub(crate) async fn audit(
    store: &Store,
    clock: &SharedClock,
    principal: &Principal,
    action: &str,
    outcome: Outcome,
    detail: Value,
) -> Result<(), ()> {
    let event = AuditEvent {
        at: clock.now(),
        tenant_id: principal.tenant_id,
        actor: Some(principal.user_id),
        action: action.to_owned(),
        target: None,
        outcome,
        policy_ids: Vec::new(),
        detail,
    };
    let result = async {
        let mut tx = store.begin(TenantScope::of(principal)).await?;
        bastion_store::audit::append_audit(&mut tx, &event).await?;
        tx.commit().await
    }
    .await;
    result.map_err(|e| {
        tracing::error!(target: "bastion::alert", error = %e, action, "audit append failed");
    })
}

/// One tool call as the reply and the audit show it: `{id, name, arguments (masked),
/// tainted, outcome: executed|denied|pending_approval|refused|failed, summary? | reason? |
/// approval_id?}`, texts cut to `max` characters.
fn call_json(c: &bastion_agent::ToolCallRecord, max: usize) -> Value {
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "arguments": c.arguments,
        "tainted": c.tainted,
    });
    let (outcome, key, text) = match &c.outcome {
        ToolOutcome::Executed { summary } => ("executed", "summary", summary.as_str()),
        ToolOutcome::Denied { reason } => ("denied", "reason", reason.as_str()),
        ToolOutcome::PendingApproval { id } => ("pending_approval", "approval_id", id.as_str()),
        ToolOutcome::Refused { reason } => ("refused", "reason", reason.as_str()),
        ToolOutcome::Failed { reason } => ("failed", "reason", reason.as_str()),
        _ => ("failed", "reason", "unknown outcome"),
    };
    v["outcome"] = json!(outcome);
    v[key] = json!(truncate(text, max));
    v
}

/// The `agent.chat` audit detail: masked texts only (never the restored reply).
fn chat_detail(
    out: &ChatOutcome,
    provider: &str,
    conversation_id: Option<&str>,
    request_id: &str,
) -> Value {
    let prompt: Vec<String> = out
        .transcript
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| truncate(m.content_str(), AUDIT_TEXT_CHARS_MAX))
        .collect();
    let model_output: Vec<String> = out
        .transcript
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .filter_map(|m| m.content.as_deref())
        .map(|c| truncate(c, AUDIT_TEXT_CHARS_MAX))
        .collect();
    let calls: Vec<Value> = out
        .tool_calls
        .iter()
        .map(|c| call_json(c, AUDIT_TEXT_CHARS_MAX))
        .collect();
    let mut detail = json!({
        "channel": "agent",
        "request_id": request_id,
        "conversation_id": conversation_id,
        "provider": provider,
        "prompt": prompt,
        "model_output": model_output,
        "tool_calls": calls,
        "tainted": out.tainted,
        "injection_signals": out.injection_signals,
        "steps": out.steps,
        "usage": out.usage,
        "stop_reason": out.stop,
        "urls_removed": out.urls_removed,
        "dlp_blocked": out.dlp_blocked,
    });
    if detail.to_string().len() > AUDIT_DETAIL_BYTES_MAX {
        if let Some(calls) = detail["tool_calls"].as_array_mut() {
            for c in calls {
                c["arguments"] = json!("[omitted: record too large]");
            }
        }
        detail["model_output"] = json!(
            model_output
                .iter()
                .map(|s| truncate(s, 200))
                .collect::<Vec<_>>()
        );
        detail["prompt"] = json!(prompt.iter().map(|s| truncate(s, 200)).collect::<Vec<_>>());
    }
    detail
}

/// The tenant's region: the tenant's own setting, else the manifest's `[app] region`.
pub(crate) async fn tenant_region(
    store: &Store,
    tenant: TenantId,
    default: &str,
) -> Result<String, Problem> {
    let mut sys = store
        .system()
        .await
        .map_err(|_| Problem::of(Code::Unavailable))?;
    let t = bastion_store::tenants::tenant_by_id(&mut sys, tenant).await;
    let _ = sys.rollback().await;
    match t {
        Ok(Some(t)) if !t.region.trim().is_empty() => Ok(t.region),
        Ok(_) => Ok(default.to_owned()),
        Err(_) => Err(Problem::of(Code::Unavailable)),
    }
}

/// Audits a refusal of an AI request (`action`, outcome `deny`, `detail.reason`).
pub(crate) async fn refuse(
    s: &AppState,
    svc: &AgentService,
    p: &Principal,
    request_id: &str,
    action: &str,
    reason: &str,
    extra: Value,
) {
    let mut detail = json!({"channel": "agent", "request_id": request_id, "reason": reason});
    if let (Value::Object(d), Value::Object(e)) = (&mut detail, extra) {
        d.extend(e);
    }
    let _ = audit(&s.store, &svc.clock, p, action, Outcome::Deny, detail).await;
}

/// Admits one model request of `p` (`action` names it in refusal records): the chat rate
/// limits (user, then tenant; in memory, before any I/O), the spike alert, then the tenant's
/// daily token budget (shared through the store). Returns `(tokens used today, budget)`.
pub(crate) async fn admit(
    s: &AppState,
    svc: &AgentService,
    p: &Principal,
    request_id: &str,
    action: &str,
) -> Result<(u64, u64), Problem> {
    // 1. Rate limits (in memory, before any I/O).
    if let Err(r) = svc.governor.check_chat(p.tenant_id, p.user_id) {
        tracing::info!(tenant = %p.tenant_id, "agent chat rate-limited");
        if svc.first_refusal_this_minute(p.tenant_id) {
            refuse(
                s,
                svc,
                p,
                request_id,
                action,
                "rate limited",
                json!({"retry_after_secs": r.0}),
            )
            .await;
        }
        return Err(rate_limited(r, "chat requests"));
    }
    if let Some(spike) = svc.governor.note_chat(p.tenant_id) {
        tracing::warn!(target: "bastion::alert", tenant = %p.tenant_id, per_minute = spike.per_minute,
            trailing_average = spike.trailing_average, "agent chat traffic spike");
        let _ = audit(
            &s.store,
            &svc.clock,
            p,
            "agent.spike",
            Outcome::Ok,
            json!({"per_minute": spike.per_minute, "trailing_average": spike.trailing_average}),
        )
        .await;
    }

    // 2. The tenant's daily token budget (shared by instances through the store).
    let now = svc.clock.now();
    let budget = svc.governor.quotas().tenant_daily_tokens;
    let used = {
        let mut sys = s
            .store
            .system()
            .await
            .map_err(|_| Problem::of(Code::Unavailable))?;
        let used = bastion_store::throttle::throttle_count(
            &mut sys,
            &token_key(p.tenant_id, now),
            crate::limits::DAY_SECS,
        )
        .await;
        let _ = sys.rollback().await;
        u64::try_from(used.map_err(|_| Problem::of(Code::Unavailable))?).unwrap_or(0)
    };
    if used >= budget {
        refuse(
            s,
            svc,
            p,
            request_id,
            action,
            "daily token budget spent",
            json!({"used": used, "budget": budget}),
        )
        .await;
        let mut p = Problem::new(
            Code::TooManyRequests,
            "the tenant's daily model-token budget is spent".to_owned(),
        );
        p.retry_after_secs = Some(secs_to_next_day(now));
        return Err(p);
    }

    Ok((used, budget))
}

/// Adds `usage` to the tenant's token count of the UTC day of `now` (an alert if it fails).
pub(crate) async fn count_tokens(
    s: &AppState,
    p: &Principal,
    now: i64,
    usage: bastion_agent::Usage,
) {
    let spent = i64::try_from(usage.total()).unwrap_or(i64::MAX);
    if let Ok(mut sys) = s.store.system().await {
        let r = bastion_store::throttle::throttle_add(
            &mut sys,
            &token_key(p.tenant_id, now),
            crate::limits::DAY_SECS,
            spent.min(bastion_store::throttle::ADD_AMOUNT_MAX),
        )
        .await;
        if r.is_ok() && sys.commit().await.is_ok() {
            return;
        }
    }
    tracing::error!(target: "bastion::alert", tenant = %p.tenant_id, "cannot record model-token usage");
}

/// `POST /v1/agent/chat`: `{messages: [{role: "user"|"assistant", content}],
/// conversation_id?}` → 200 `{reply, provider: {name, offline}, tool_calls: [{id, name,
/// arguments (masked), outcome, tainted, …}], usage: {prompt_tokens, completion_tokens},
/// steps, tainted, stop_reason, conversation_id}`. 400 bad body; 401; 404 when no agent is
/// configured; 403 `region-mismatch`; 422 invalid chat input; 429 `rate-limited` with
/// `Retry-After` (chat rate or daily tokens); 502 `model-unavailable`; 503 store.
pub(crate) async fn chat(
    State(s): State<AppState>,
    headers: http::HeaderMap,
    Authenticated(p): Authenticated,
    JsonBody(body): JsonBody<ChatBody>,
) -> Response {
    let Some(svc) = s.agent.clone() else {
        return Problem::new(Code::NotFound, "no agent is configured".to_owned()).into_response();
    };
    // A chat the client may retry carries an Idempotency-Key: every tool call the model
    // makes derives its key from it, so a retried chat replays a charge instead of repeating it.
    let chat_key = match crate::routes::parse_idempotency_key(&headers) {
        Ok(k) => k,
        Err(why) => return Problem::new(Code::BadRequest, why.to_owned()).into_response(),
    };
    match run_chat(&s, &svc, &p, body, chat_key).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(problem) => problem.into_response(),
    }
}

async fn run_chat(
    s: &AppState,
    svc: &AgentService,
    p: &Principal,
    body: ChatBody,
    chat_key: Option<String>,
) -> Result<Value, Problem> {
    let request_id = RecordId::new_random().to_string();
    let conversation_id = match body.conversation_id {
        Some(c)
            if c.is_empty()
                || c.len() > CONVERSATION_ID_LEN_MAX
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            return Err(Problem::new(
                Code::BadRequest,
                format!("conversation_id must be 1 to {CONVERSATION_ID_LEN_MAX} of [A-Za-z0-9._-]"),
            ));
        }
        other => other,
    };
    let (used, budget) = admit(s, svc, p, &request_id, "agent.chat").await?;
    let now = svc.clock.now();
    let refuse_audit = async |reason: &str, extra: Value| {
        refuse(s, svc, p, &request_id, "agent.chat", reason, extra).await;
    };

    // 3. The chat, as the principal.
    let region = tenant_region(&s.store, p.tenant_id, &svc.default_region).await?;
    let messages: Result<Vec<ChatMessage>, Problem> = body
        .messages
        .into_iter()
        .map(|m| match m.role.as_str() {
            "user" => Ok(ChatMessage::user(m.content)),
            "assistant" => Ok(ChatMessage::assistant(m.content)),
            _ => Err(Problem::new(
                Code::BadRequest,
                "messages[].role must be `user` or `assistant`".to_owned(),
            )),
        })
        .collect();
    let messages = messages?;
    let mut limits = svc.limits;
    limits.max_total_tokens = limits.max_total_tokens.min(budget - used);
    let agent = Agent::new(svc.provider.clone(), limits, svc.url_allowlist.clone());
    let executor = PipelineExecutor {
        pipeline: &s.pipeline,
        principal: p,
        ctx: CallContext {
            request_id: request_id.clone(),
            channel: "agent",
            idempotency_key: chat_key,
        },
        governor: Some(&svc.governor),
    };
    let mut masker = Masker::new(MaskMode::Counter).map_err(|_| Problem::of(Code::Internal))?;
    let input = ChatInput {
        messages,
        tools: tool_defs(&s.pipeline, p),
        executor: &executor,
        masker: &mut masker,
        restore_allowed: &restore_allowed,
        tenant_region: &region,
    };
    let provider = svc.provider.name();
    let out = match agent.chat(input).await {
        Ok(out) => out,
        Err(AgentError::Region(e)) => {
            tracing::warn!(target: "bastion::alert", tenant = %p.tenant_id, error = %e, "agent refused: provider region");
            refuse_audit(
                "region mismatch",
                json!({"provider": provider, "provider_region": svc.provider.region(), "tenant_region": region}),
            )
            .await;
            return Err(Problem::new(
                Code::RegionMismatch,
                "the configured model provider is outside this tenant's region".to_owned(),
            ));
        }
        Err(AgentError::InvalidInput { reason }) => {
            return Err(Problem::new(Code::ValidationFailed, reason.to_owned()));
        }
        Err(AgentError::Provider(e)) => {
            tracing::warn!(error = %e, provider, "model provider failed");
            refuse_audit("model provider failed", json!({"provider": provider})).await;
            return Err(Problem::new(Code::ModelUnavailable, e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "agent chat failed");
            return Err(Problem::of(Code::Internal));
        }
    };

    // 4. Count the tokens, then audit the turn.
    count_tokens(s, p, now, out.usage).await;
    let detail = chat_detail(&out, &provider, conversation_id.as_deref(), &request_id);
    let outcome = if out.tool_calls.iter().any(|c| {
        matches!(
            c.outcome,
            ToolOutcome::Denied { .. } | ToolOutcome::Refused { .. }
        )
    }) {
        Outcome::Deny
    } else {
        Outcome::Ok
    };
    if audit(&s.store, &svc.clock, p, "agent.chat", outcome, detail)
        .await
        .is_err()
    {
        return Err(Problem::of(Code::Unavailable));
    }
    Ok(json!({
        "reply": out.reply,
        "provider": {"name": provider, "offline": svc.offline},
        "tool_calls": out.tool_calls.iter().map(|c| call_json(c, usize::MAX)).collect::<Vec<_>>(),
        "usage": out.usage,
        "steps": out.steps,
        "tainted": out.tainted,
        "stop_reason": out.stop,
        "conversation_id": conversation_id,
        "request_id": request_id,
    }))
}
