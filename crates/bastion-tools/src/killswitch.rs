//! Changing and listing kill switches, each change audited in the same transaction as the
//! switch row (DESIGN.md, Platform; case A6). The check itself runs inside every tool call
//! ([`crate::Pipeline::call`], via `bastion_store::killswitch::is_blocked`).
//!
//! Two doors, one rule set:
//! - the operator (`bastion killswitch`, no principal) may switch anything: globally, one tool
//!   everywhere, one tenant, one tool of one tenant;
//! - a tenant admin (HTTP, a principal holding [`ADMIN_ROLE`]) may switch only its own tenant,
//!   whole or per tool. Global and tool-wide switches are refused to every principal.
//!
//! Audit: a global or tool-wide change goes to the system chain, a tenant change to that
//! tenant's chain, with `actor` (the user, or absent for the operator), `detail.via`
//! (`operator` or `http`), the scope, the tool and the reason. Refused attempts by a principal
//! are audited too (outcome `deny`).

use bastion_audit::{AuditEvent, Outcome};
use bastion_store::killswitch::{self as ks, Change, KillSwitch, Scope};
use bastion_store::{Store, StoreError, TenantScope};
use bastion_types::{Principal, TenantId};
use serde_json::json;

/// The role a principal needs to change its tenant's switches.
pub const ADMIN_ROLE: &str = "admin";

/// Why a switch change or listing failed. Messages are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KillSwitchError {
    /// The caller may not make this change (no admin role, or a scope beyond its tenant).
    #[error("not allowed to change this kill switch")]
    Forbidden,
    /// The tool name, reason or scope is not acceptable.
    #[error("invalid kill switch change: {0}")]
    Invalid(&'static str),
    /// The store or the audit sink is unavailable; nothing was changed.
    #[error("service unavailable; nothing was changed")]
    Unavailable,
}

impl From<StoreError> for KillSwitchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid { reason } => Self::Invalid(reason),
            other => {
                tracing::error!(error = %other, "kill switch store error");
                Self::Unavailable
            }
        }
    }
}

/// Who changes a switch.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The operator at the command line (no principal; `changed_by` = `operator`).
    Operator,
    /// An authenticated user (`changed_by` = `user:<uuid>`); must hold [`ADMIN_ROLE`] and may
    /// only change its own tenant's switches.
    User(&'a Principal),
}

impl Actor<'_> {
    fn changed_by(&self) -> String {
        match self {
            Self::Operator => "operator".to_owned(),
            Self::User(p) => format!("user:{}", p.user_id),
        }
    }

    fn via(&self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::User(_) => "http",
        }
    }
}

/// One requested change.
#[derive(Debug, Clone, Copy)]
pub struct SwitchChange<'a> {
    /// Engage (`true`) or release (`false`).
    pub engage: bool,
    /// The tenant, or `None` for a switch over every tenant (operator only).
    pub tenant: Option<TenantId>,
    /// The tool, or `None` for every tool.
    pub tool: Option<&'a str>,
    /// Why (1..=500 bytes, no control characters, nothing shaped like personal data: see
    /// [`looks_personal`]); recorded with the switch and audited.
    pub reason: &'a str,
}

impl SwitchChange<'_> {
    /// The scope the change addresses.
    #[must_use]
    pub fn scope(&self) -> Scope {
        match (self.tenant.is_some(), self.tool.is_some()) {
            (false, false) => Scope::Global,
            (false, true) => Scope::Tool,
            (true, false) => Scope::Tenant,
            (true, true) => Scope::TenantTool,
        }
    }

    fn action(&self) -> &'static str {
        if self.engage {
            "admin.killswitch.engage"
        } else {
            "admin.killswitch.release"
        }
    }

    fn target(&self) -> String {
        match self.tool {
            Some(t) => format!("killswitch:{}:{t}", self.scope()),
            None => format!("killswitch:{}", self.scope()),
        }
    }
}

/// Longest run of digits (spaces, dots and dashes between them ignored) a reason may hold:
/// longer runs look like card or account numbers (a date and a time, `2026-11-29 12:00`,
/// is ten).
pub const REASON_DIGIT_RUN_MAX: usize = 12;

/// Whether a kill-switch reason looks like it holds personal data: an e-mail address (an `@`
/// between word characters) or a run of more than [`REASON_DIGIT_RUN_MAX`] digits. Deliberately
/// coarse and cheap (a reason is a short operator note, e.g. `incident 42`); the reason is
/// written to the append-only audit log, where personal data could never be removed.
#[must_use]
pub fn looks_personal(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let email = bytes
        .windows(3)
        .any(|w| w[1] == b'@' && w[0].is_ascii_alphanumeric() && w[2].is_ascii_alphanumeric());
    let mut run = 0usize;
    let mut longest = 0usize;
    for &b in bytes {
        if b.is_ascii_digit() {
            run += 1;
            longest = longest.max(run);
        } else if !matches!(b, b' ' | b'-' | b'.') {
            run = 0;
        }
    }
    email || longest > REASON_DIGIT_RUN_MAX
}

/// Engages or releases one switch and audits it, in one transaction (no switch change
/// without its record). A tenant admin asking for another tenant, a global or a tool-wide
/// switch, or a principal without [`ADMIN_ROLE`], is refused and the refusal audited on the
/// principal's tenant chain.
///
/// # Errors
/// [`KillSwitchError::Forbidden`], [`KillSwitchError::Invalid`] (bad tool name or reason),
/// [`KillSwitchError::Unavailable`] when the store or the audit append fails (nothing
/// changed).
pub async fn change(
    store: &Store,
    actor: Actor<'_>,
    req: &SwitchChange<'_>,
) -> Result<Change, KillSwitchError> {
    // The reason is kept with the switch and in the append-only audit log: nothing shaped
    // like personal data in it.
    if looks_personal(req.reason) {
        return Err(KillSwitchError::Invalid(
            "the reason must not hold personal data (e-mail addresses, card or account numbers)",
        ));
    }
    if let Actor::User(p) = actor {
        let own_tenant = req.tenant == Some(p.tenant_id);
        if !p.has_role(ADMIN_ROLE) || !own_tenant {
            refuse(store, p, req).await?;
            return Err(KillSwitchError::Forbidden);
        }
    }
    let changed_by = actor.changed_by();
    let event = |tenant_id: TenantId, now: i64| AuditEvent {
        at: now,
        tenant_id,
        actor: match actor {
            Actor::Operator => None,
            Actor::User(p) => Some(p.user_id),
        },
        action: req.action().to_owned(),
        target: Some(req.target()),
        outcome: Outcome::Ok,
        policy_ids: Vec::new(),
        detail: json!({
            "scope": req.scope().as_str(),
            "tool": req.tool,
            "reason": req.reason,
            "via": actor.via(),
        }),
    };
    match req.tenant {
        None => {
            let mut sys = store.system().await?;
            let change = if req.engage {
                ks::engage_system(&mut sys, req.tool, req.reason, &changed_by).await?
            } else {
                ks::release_system(&mut sys, req.tool, req.reason, &changed_by).await?
            };
            let ev = event(TenantId::from_uuid(uuid::Uuid::nil()), sys.now());
            bastion_store::audit::system_append_audit(&mut sys, &ev).await?;
            sys.commit().await?;
            Ok(change)
        }
        Some(tenant) => {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await?;
            let change = if req.engage {
                ks::engage(&mut tx, req.tool, req.reason, &changed_by).await?
            } else {
                ks::release(&mut tx, req.tool, req.reason, &changed_by).await?
            };
            let ev = event(tenant, tx.now());
            bastion_store::audit::append_audit(&mut tx, &ev).await?;
            tx.commit().await?;
            Ok(change)
        }
    }
}

/// Records a refused change on the principal's own chain (outcome `deny`).
async fn refuse(
    store: &Store,
    p: &Principal,
    req: &SwitchChange<'_>,
) -> Result<(), KillSwitchError> {
    let mut tx = store.begin(TenantScope::of(p)).await?;
    let ev = AuditEvent {
        at: tx.now(),
        tenant_id: p.tenant_id,
        actor: Some(p.user_id),
        action: req.action().to_owned(),
        target: Some(req.target()),
        outcome: Outcome::Deny,
        policy_ids: Vec::new(),
        detail: json!({
            "scope": req.scope().as_str(),
            "tool": req.tool,
            "other_tenant": req.tenant.is_some_and(|t| t != p.tenant_id),
            "reason": "kill switch change not permitted",
            "via": "http",
        }),
    };
    bastion_store::audit::append_audit(&mut tx, &ev).await?;
    tx.commit().await?;
    Ok(())
}

/// Every switch (operator listing), engaged or released, at most
/// [`bastion_store::killswitch::LIST_MAX`].
///
/// # Errors
/// [`KillSwitchError::Unavailable`].
pub async fn list_all(store: &Store) -> Result<Vec<KillSwitch>, KillSwitchError> {
    let mut sys = store.system().await?;
    let out = ks::list(&mut sys).await?;
    sys.rollback().await?;
    Ok(out)
}

/// The switches that can affect `principal`'s tenant (global, tool-wide and its own), for a
/// principal holding [`ADMIN_ROLE`].
///
/// # Errors
/// [`KillSwitchError::Forbidden`] without the role; [`KillSwitchError::Unavailable`].
pub async fn list_for(
    store: &Store,
    principal: &Principal,
) -> Result<Vec<KillSwitch>, KillSwitchError> {
    if !principal.has_role(ADMIN_ROLE) {
        return Err(KillSwitchError::Forbidden);
    }
    let mut tx = store.begin(TenantScope::of(principal)).await?;
    let out = ks::list_for_tenant(&mut tx).await?;
    tx.rollback().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::looks_personal;

    #[test]
    fn reasons_with_personal_data_are_spotted_and_operator_notes_are_not() {
        for personal in [
            "card 4111 1111 1111 1111",
            "refund to DE89 3704 0044 0532 0130 00",
            "mail jane.doe@example.com",
            "4111-1111-1111-1111",
        ] {
            assert!(looks_personal(personal), "{personal}");
        }
        for note in [
            "incident 42",
            "abuse seen 2026-11-29 12:00",
            "tabletop: kill switch drill",
            "ticket INC-123456",
            "contact @oncall",
        ] {
            assert!(!looks_personal(note), "{note}");
        }
    }
}
