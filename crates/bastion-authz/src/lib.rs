//! Bastion's authorization: the Cedar schema generated from the app manifest, the app's
//! policies validated strictly against it, and decisions that name their deciding policies.
//!
//! This is the only crate that knows Cedar. Its rules:
//! - **Every policy has an `@id("...")`**, used as its policy id, so decisions and the audit
//!   log name policies the way their authors wrote them. A policy without one is a finding.
//! - **Strict validation or nothing**: [`Authorizer::new`] refuses a policy set with any
//!   validation error or warning. [`check`] reports them as [`Finding`]s with file and line.
//! - **Any evaluation error is a deny** ([`Decision::errors`] filled, the caller alerts).
//!   Cedar skips a policy whose condition errors, so a blanket permit plus an erroring forbid
//!   would allow; Bastion denies instead (case Z2, cedar#2428).
//! - The tenant comes from the principal; records are given to Cedar with the tenant they
//!   were read from, so a tenant guard policy can be written (see `examples/vendor-quote`).
//!
//! Request shape: principal `User::"<user id>"` with `tenant` (tenant id) and `username`,
//! member of `Role::"<role>"` for each role; action `Action::"<tool name>"`; resource a
//! `Tenant::"<tenant id>"` (create without parent, list) or a record entity
//! `<Entity>::"<record id>"` with `tenant`, `owner` and its policy-visible fields, plus the
//! parent record's entity when given; context `{ mfa_age_secs, now }` (seconds).

mod policies;
mod request;
mod schema;

use std::collections::BTreeSet;

use bastion_app::{AppSpec, Finding};
use bastion_types::{Principal, Record, TenantId};
use cedar_policy::{ActionConstraint, Effect, PolicySet, PrincipalConstraint, Schema};

pub use policies::ID_ANNOTATION;

/// Most evaluation errors kept in a [`Decision`].
pub const DECISION_ERRORS_MAX: usize = 10;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The policies (or the schema generated from the manifest) were refused; the findings
    /// say why and where.
    #[error("policy set refused: {} finding(s)", .0.len())]
    Refused(Vec<Finding>),
}

/// Checks the app's policies against the schema generated from its manifest, for
/// `bastion check`: parse errors, missing or duplicate `@id`s and strict validation errors
/// and warnings, each with file and 1-based line. Empty: [`Authorizer::new`] will succeed.
#[must_use]
pub fn check(spec: &AppSpec) -> Vec<Finding> {
    policies::build(spec, true).1
}

/// What a request acts on.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The caller's tenant: the resource of `record.list` and of `record.create` without a
    /// parent.
    Tenant,
    /// A record read through the caller's tenant transaction (so of the caller's tenant), and
    /// the record it references when the policy needs it (a proposal's quote). For
    /// `record.create` with a parent, `record` is the parent record.
    Record {
        /// The record acted on.
        record: &'a Record,
        /// The record it references, if any.
        parent: Option<&'a Record>,
    },
    /// Like [`Resource::Record`], for a record whose tenant is known from elsewhere than the
    /// caller's transaction (system jobs, tests). A tenant other than the caller's is denied
    /// by a tenant guard policy.
    RecordIn {
        /// The tenant the record belongs to.
        tenant: TenantId,
        /// The record acted on.
        record: &'a Record,
        /// The record it references, if any (same tenant).
        parent: Option<&'a Record>,
    },
}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// Who asks.
    pub principal: &'a Principal,
    /// The tool name (the Cedar action).
    pub action: &'a str,
    /// What it acts on.
    pub resource: Resource<'a>,
    /// The time of the request, Unix seconds (from the `Clock`).
    pub now: i64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// True only when a permit applies, no forbid applies and nothing errored.
    pub allowed: bool,
    /// The `@id`s of the deciding policies (the permits for an allow, the forbids for an
    /// explicit deny; empty for the default deny), sorted.
    pub policy_ids: Vec<String>,
    /// Evaluation or request-building errors (at most [`DECISION_ERRORS_MAX`]); non-empty
    /// means deny and alert.
    pub errors: Vec<String>,
}

impl Decision {
    fn error(message: String) -> Self {
        Self {
            allowed: false,
            policy_ids: Vec::new(),
            errors: vec![message],
        }
    }
}

/// The app's checked policies and schema, ready to answer requests. Cheap to share
/// (`Arc<Authorizer>`); `decide` takes `&self`.
#[derive(Debug)]
pub struct Authorizer {
    spec: AppSpec,
    policies: PolicySet,
    schema: Schema,
    schema_text: String,
}

impl Authorizer {
    /// Generates the schema, parses every policy file and validates strictly.
    ///
    /// # Errors
    /// [`AuthzError::Refused`] with the same findings [`check`] reports.
    pub fn new(spec: &AppSpec) -> Result<Self, AuthzError> {
        Self::build(spec, true)
    }

    /// Like [`Authorizer::new`] but without Cedar validation (ids and syntax are still
    /// checked). Only for tests that must show what happens to a policy set strict
    /// validation would refuse (case Z2); compiled only with the `unvalidated-for-tests`
    /// feature, which nothing but this crate's own tests enables.
    ///
    /// # Errors
    /// [`AuthzError::Refused`] on syntax errors or missing ids.
    #[cfg(feature = "unvalidated-for-tests")]
    pub fn new_unvalidated_for_tests(spec: &AppSpec) -> Result<Self, AuthzError> {
        Self::build(spec, false)
    }

    fn build(spec: &AppSpec, validate: bool) -> Result<Self, AuthzError> {
        match policies::build(spec, validate) {
            (Some(b), _) => Ok(Self {
                spec: spec.clone(),
                policies: b.policies,
                schema: b.schema,
                schema_text: b.schema_text,
            }),
            (None, findings) => Err(AuthzError::Refused(findings)),
        }
    }

    /// The generated Cedar schema in Cedar's human-readable schema syntax.
    #[must_use]
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// Every action (tool name), sorted.
    #[must_use]
    pub fn actions(&self) -> Vec<String> {
        self.spec.tools.keys().map(ToString::to_string).collect()
    }

    /// Answers one request. Never fails: anything that goes wrong (unknown action, a record
    /// that does not fit the schema, an erroring policy) is a deny with `errors` filled.
    #[must_use]
    pub fn decide(&self, req: &AuthzRequest<'_>) -> Decision {
        match request::decide(self, req) {
            Ok(d) => d,
            Err(message) => Decision::error(message),
        }
    }

    /// The tools `principal` could call at all, for `GET /v1/tools` (sorted).
    ///
    /// The rule: a tool whose resource is the tenant (`record.list`, `record.create` without
    /// parent) is listed when [`Authorizer::decide`] allows it on the caller's tenant now. A
    /// tool on a record is listed when some `permit` policy names its action (or any action)
    /// and its principal scope can match the caller (any principal, `in` one of the caller's
    /// roles or the caller itself, `is User`); conditions and forbids are not considered,
    /// because they depend on the record. Listing is a hint: every call is decided anew.
    #[must_use]
    pub fn allowed_actions(&self, principal: &Principal, now: i64) -> Vec<String> {
        self.spec
            .tools
            .keys()
            .filter(|name| self.may_call(principal, name.as_str(), now))
            .map(ToString::to_string)
            .collect()
    }

    /// Whether `principal` may call `action` at all, by the rule of
    /// [`Authorizer::allowed_actions`], for one tool (the pipeline's per-call check). An
    /// unknown action is `false`.
    #[must_use]
    pub fn may_call(&self, principal: &Principal, action: &str, now: i64) -> bool {
        let Some(tool) = self.spec.tools.values().find(|t| t.name.as_str() == action) else {
            return false;
        };
        let on_tenant = schema::resource_type(&self.spec, tool).as_deref() == Some(schema::TENANT);
        if on_tenant {
            self.decide(&AuthzRequest {
                principal,
                action,
                resource: Resource::Tenant,
                now,
            })
            .allowed
        } else {
            self.some_permit_may_apply(principal, action)
        }
    }

    fn some_permit_may_apply(&self, principal: &Principal, action: &str) -> bool {
        let me = principal.user_id.to_string();
        let roles: BTreeSet<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
        let holds = |uid: &cedar_policy::EntityUid| -> bool {
            let ty = uid.type_name().to_string();
            let id = uid.id().unescaped();
            (ty == schema::ROLE && roles.contains(id)) || (ty == schema::USER && id == me)
        };
        let is_action = |uid: &cedar_policy::EntityUid| uid.id().unescaped() == action;
        self.policies
            .policies()
            .filter(|p| p.effect() == Effect::Permit)
            .any(|p| {
                let action_ok = match p.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => is_action(&a),
                    ActionConstraint::In(list) => list.iter().any(is_action),
                };
                let principal_ok = match p.principal_constraint() {
                    PrincipalConstraint::Any => true,
                    PrincipalConstraint::Is(t) => t.to_string() == schema::USER,
                    PrincipalConstraint::In(uid) | PrincipalConstraint::Eq(uid) => holds(&uid),
                    PrincipalConstraint::IsIn(t, uid) => {
                        t.to_string() == schema::USER && holds(&uid)
                    }
                };
                action_ok && principal_ok
            })
    }
}
