//! `POST /v1/webhooks/{provider}`: the webhook receiver.
//!
//! Order of work, each step refusing before the next:
//! 1. the provider must be configured ([`WebhookEndpoint`]), else 404;
//! 2. the signature is verified over the **raw** body bytes, constant-time, with every
//!    configured secret (rotation) and a timestamp window checked in both directions
//!    (`bastion_payments::webhook`; cases P1–P3) — any failure is 401
//!    `urn:bastion:problem:webhook-signature`, audited on the system chain, and nothing else
//!    happens;
//! 3. the verified event goes into the durable inbox, deduplicated by the provider's event id
//!    (case P7: a redelivery is answered 200 with `"duplicate": true` and changes nothing),
//!    and a job `webhook.<provider>` is enqueued in the same transaction, with the audit
//!    record of the receipt. Handlers run later as jobs with retries and a dead-letter queue.
//!
//! The answer never says which check failed beyond the problem type, and never echoes the
//! body, a header or a secret.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bastion_audit::{AuditEvent, Outcome};
use bastion_payments::webhook::{VerifiedEvent, WebhookError, WebhookVerifier};
use bastion_store::{audit, jobs, webhook};
use bastion_types::TenantId;
use http::HeaderMap;
use serde_json::json;

use crate::problem::{Code, Problem};
use crate::routes::AppState;

/// Attempts a webhook job gets before it is dead-lettered.
pub const WEBHOOK_JOB_ATTEMPTS: i64 = 8;

/// One configured webhook provider: the path segment and its verifier.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// Path segment of `/v1/webhooks/{provider}`, `[a-z0-9_-]`, e.g. `stripe`.
    pub provider: String,
    /// Verifier with the provider's secrets (several during rotation).
    pub verifier: WebhookVerifier,
}

/// Webhook refusals logged and audited per provider and minute; the rest are only counted.
pub const REFUSALS_AUDITED_PER_MINUTE: u32 = 20;

/// Bounds the audit records and alert lines webhook refusals write (anyone can send a forged
/// webhook, and the audit log is append-only): per provider and clock minute, the first
/// [`REFUSALS_AUDITED_PER_MINUTE`] are recorded, later ones counted, and the next recorded
/// refusal carries that count (`refusals_not_recorded_before`). In memory, per instance.
#[derive(Debug, Clone, Default)]
pub struct RefusalAudit(Arc<Mutex<BTreeMap<String, RefusalWindow>>>);

#[derive(Debug, Clone, Copy, Default)]
struct RefusalWindow {
    minute: i64,
    recorded: u32,
    not_recorded: u64,
}

impl RefusalAudit {
    /// Counts one refusal for `provider` at `now` (Unix seconds). `Some(n)`: record it,
    /// with `n` refusals left unrecorded since the last recorded one; `None`: do not.
    #[must_use]
    pub fn admit(&self, provider: &str, now: i64) -> Option<u64> {
        let Ok(mut map) = self.0.lock() else {
            return Some(0);
        };
        let w = map.entry(provider.to_owned()).or_default();
        let minute = now.div_euclid(60);
        if w.minute != minute {
            w.minute = minute;
            w.recorded = 0;
        }
        if w.recorded < REFUSALS_AUDITED_PER_MINUTE {
            w.recorded += 1;
            let n = w.not_recorded;
            w.not_recorded = 0;
            Some(n)
        } else {
            w.not_recorded = w.not_recorded.saturating_add(1);
            None
        }
    }
}

fn nil_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

fn reason_of(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::BodyTooLarge { .. } => "body too large",
        WebhookError::InvalidEvent(_) => "not an event",
        WebhookError::TimestampOutsideTolerance { .. } => "timestamp outside tolerance",
        WebhookError::NoMatchingSignature => "no matching signature",
        WebhookError::MissingHeader(_) => "missing signature header",
        _ => "malformed signature",
    }
}

/// Appends a system-chain audit record; a failure here answers 503 (fail closed).
async fn audit_system(
    s: &AppState,
    action: &str,
    outcome: Outcome,
    target: Option<String>,
    detail: serde_json::Value,
) -> Result<(), Response> {
    let unavailable = || Problem::of(Code::Unavailable).into_response();
    let mut sys = s.store.system().await.map_err(|_| unavailable())?;
    let ev = AuditEvent {
        at: s.store.clock().now(),
        tenant_id: nil_tenant(),
        actor: None,
        action: action.to_owned(),
        target,
        outcome,
        policy_ids: Vec::new(),
        detail,
    };
    audit::system_append_audit(&mut sys, &ev)
        .await
        .map_err(|_| unavailable())?;
    sys.commit().await.map_err(|_| unavailable())
}

/// The handler.
pub async fn receive(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(endpoint) = s.options.webhooks.iter().find(|e| e.provider == provider) else {
        return Problem::of(Code::NotFound).into_response();
    };
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let event = match endpoint.verifier.verify(&pairs, &body) {
        Ok(e) => e,
        Err(e) => {
            let reason = reason_of(&e);
            // Anyone can send refusals: only the first few per provider and minute are logged
            // and audited; the count of the others goes into the next audited one.
            if let Some(suppressed) = s
                .options
                .webhook_refusals
                .admit(&endpoint.provider, s.store.clock().now())
            {
                tracing::warn!(target: "bastion::alert", provider = %endpoint.provider, reason, suppressed, "webhook refused");
                if let Err(r) = audit_system(
                    &s,
                    "webhook.refused",
                    Outcome::Deny,
                    Some(format!("webhook:{}", endpoint.provider)),
                    json!({ "provider": endpoint.provider, "reason": reason, "bytes": body.len(),
                            "refusals_not_recorded_before": suppressed }),
                )
                .await
                {
                    return r;
                }
            }
            let code = match e {
                WebhookError::BodyTooLarge { .. } => Code::PayloadTooLarge,
                WebhookError::InvalidEvent(_) => Code::BadRequest,
                _ => Code::WebhookSignature,
            };
            return Problem::of(code).into_response();
        }
    };
    match accept(&s, &endpoint.provider, &event).await {
        Ok(duplicate) => Json(json!({ "received": true, "duplicate": duplicate })).into_response(),
        Err(r) => r,
    }
}

/// Inbox, job and audit record in one system transaction. `Ok(true)` for a duplicate.
async fn accept(s: &AppState, provider: &str, event: &VerifiedEvent) -> Result<bool, Response> {
    let unavailable = || Problem::of(Code::Unavailable).into_response();
    let bad = || Problem::of(Code::BadRequest).into_response();
    let body = std::str::from_utf8(&event.body).map_err(|_| bad())?;
    // State changes are ordered by when the provider emitted them (the event's `created`;
    // handlers break ties within a second by the status's place in the object's life), so an
    // older event never overwrites a newer state (P6).
    let object_id = event.object_id.as_deref();
    let ordering = event.created;
    let mut sys = s.store.system().await.map_err(|_| unavailable())?;
    let recorded = webhook::record_event(
        &mut sys,
        &webhook::NewEvent {
            provider,
            event_id: &event.id,
            event_type: &event.provider_event_type,
            object_id,
            ordering_key: ordering,
            body,
        },
    )
    .await
    .map_err(|e| match e {
        bastion_store::StoreError::Invalid { .. } => bad(),
        _ => unavailable(),
    })?;
    let duplicate = recorded == webhook::Recorded::Duplicate;
    if !duplicate {
        let payload = json!({ "provider": provider, "event_id": event.id }).to_string();
        jobs::enqueue(
            &mut sys,
            &jobs::NewJob {
                kind: &format!("webhook.{provider}"),
                payload: &payload,
                max_attempts: WEBHOOK_JOB_ATTEMPTS,
                delay_secs: 0,
            },
        )
        .await
        .map_err(|_| unavailable())?;
    }
    let ev = AuditEvent {
        at: s.store.clock().now(),
        tenant_id: nil_tenant(),
        actor: None,
        action: if duplicate {
            "webhook.duplicate".to_owned()
        } else {
            "webhook.received".to_owned()
        },
        target: Some(format!("webhook:{provider}:{}", event.id)),
        outcome: Outcome::Ok,
        policy_ids: Vec::new(),
        detail: json!({ "provider": provider, "event_type": event.provider_event_type }),
    };
    audit::system_append_audit(&mut sys, &ev)
        .await
        .map_err(|_| unavailable())?;
    sys.commit().await.map_err(|_| unavailable())?;
    Ok(duplicate)
}
