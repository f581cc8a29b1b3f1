//! The resolved, checked manifest types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bastion_types::{Slug, UserId};
use serde_json::{Map, Value};

use crate::{AppError, Finding};

/// A loaded and checked app: what `app.toml`, its schemas and its policy files say.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// `[app] name`: a slug.
    pub name: String,
    /// `[app] region`: informational for now (e.g. `eu`).
    pub region: String,
    /// The directory the app was loaded from.
    pub dir: PathBuf,
    /// `[roles.<name>]`.
    pub roles: BTreeMap<Slug, RoleSpec>,
    /// `[entities.<name>]`, keyed by the lowercase entity name (`quote`).
    pub entities: BTreeMap<String, EntitySpec>,
    /// `[tools.<name>]`.
    pub tools: BTreeMap<Slug, ToolSpec>,
    /// Every `policies/*.cedar` file, sorted by path.
    pub policies: Vec<PolicyFile>,
    /// `[payments]`: velocity rules for the `payment.charge` tools.
    pub payments: PaymentsSpec,
}

/// `[payments]`: app-level payment settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentsSpec {
    /// `[[payments.velocity]]`: every rule is checked on every `payment.charge` call; one
    /// over its limit refuses the charge before the PSP is called.
    pub velocity: Vec<VelocityRule>,
}

/// What a velocity rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VelocitySubject {
    /// The paying user (the charged record's `buyer`, else the caller).
    Customer,
    /// The payment method token (`pm_…`): the card as Bastion sees it before the PSP does.
    Card,
    /// The `address` argument of the charge, when the tool's input has one (a rule on
    /// `address` does not apply to a charge without it).
    Address,
}

impl VelocitySubject {
    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "customer" => Self::Customer,
            "card" => Self::Card,
            "address" => Self::Address,
            _ => return None,
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Card => "card",
            Self::Address => "address",
        }
    }
}

/// `[[payments.velocity]] subject = "card", window_secs = 3600, max_count = 5,
/// max_amount_minor = 500000`: at most `max_count` charge attempts and at most
/// `max_amount_minor` (minor units, per currency) per subject within a sliding window of
/// `window_secs` seconds. Every key is required (limits are explicit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VelocityRule {
    /// What is counted per.
    pub subject: VelocitySubject,
    /// The sliding window, seconds (`1..=2678400`).
    pub window_secs: i64,
    /// Most attempts in the window, the current one included (`>= 1`).
    pub max_count: i64,
    /// Most money in the window, minor units of the charge's currency, the current one
    /// included (`>= 1`).
    pub max_amount_minor: i64,
}

impl AppSpec {
    /// Reads and checks the app in `dir`: `app.toml`, the schemas it names, `policies/*.cedar`.
    ///
    /// # Errors
    /// Every problem found, each with file and 1-based line (see the crate docs).
    pub fn load(dir: &Path) -> Result<AppSpec, Vec<Finding>> {
        crate::load::load(dir)
    }

    /// The tool named `name`, if any.
    #[must_use]
    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }

    /// The entity named `name`, if any.
    #[must_use]
    pub fn entity(&self, name: &str) -> Option<&EntitySpec> {
        self.entities.get(name)
    }

    /// Every tool's compiled validators (build them once at startup).
    ///
    /// # Errors
    /// [`AppError::Schema`] only for a spec not built by [`AppSpec::load`].
    pub fn validators(&self) -> Result<BTreeMap<Slug, ToolValidators>, AppError> {
        self.tools
            .iter()
            .map(|(name, tool)| Ok((name.clone(), tool.validators()?)))
            .collect()
    }

    /// The file `app.toml` of this app.
    #[must_use]
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("app.toml")
    }
}

/// A role (`[roles.buyer]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role name.
    pub name: Slug,
    /// Free text.
    pub description: String,
}

/// An entity (`[entities.quote]`): a kind of record with typed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EntitySpec {
    /// Lowercase name: `[a-z][a-z0-9_]*`, at most 63 characters.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The fields, by name (same naming rule as entities; system names are reserved).
    pub fields: BTreeMap<String, FieldSpec>,
    /// Line of the entity's header in `app.toml` (for findings added later).
    pub line: usize,
}

impl EntitySpec {
    /// The Cedar entity type name: the entity name in PascalCase (`vendor_quote` →
    /// `VendorQuote`).
    #[must_use]
    pub fn type_name(&self) -> String {
        pascal_case(&self.name)
    }

    /// Names of this entity's fields of type `ref`, with the entity each references.
    pub fn ref_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .filter_map(|(n, f)| f.entity.as_deref().map(|e| (n.as_str(), e)))
    }
}

/// `vendor_quote` → `VendorQuote`.
#[must_use]
pub(crate) fn pascal_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A field of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// How sensitive its values are; `pii`, `pci` and `secret` fields are never shown to
    /// Cedar and are masked before any model sees them.
    pub sensitivity: Sensitivity,
    /// For `ref` fields: the referenced entity (its records are the field's values).
    pub entity: Option<String>,
    /// For `user` fields: a role the referenced user must hold (`role = "seller"`); checked
    /// by the pipeline on every write.
    pub role: Option<Slug>,
    /// Free text.
    pub description: String,
}

/// The type of a field's values in a record's JSON `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON integer (i64).
    Integer,
    /// A JSON boolean.
    Boolean,
    /// A user id (UUID string) of the same tenant; a Cedar `User`.
    User,
    /// A record id (UUID string) of the field's `entity`, same tenant; a Cedar entity.
    Ref,
    /// Any JSON value; never shown to Cedar.
    Json,
}

impl FieldType {
    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "user" => Self::User,
            "ref" => Self::Ref,
            "json" => Self::Json,
            _ => return None,
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::User => "user",
            Self::Ref => "ref",
            Self::Json => "json",
        }
    }
}

/// Data sensitivity of a field, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sensitivity {
    /// May be shown to anyone who may see the record.
    Public,
    /// Business data; not for outsiders.
    Internal,
    /// Personal data (GDPR): masked for models and logs.
    Pii,
    /// Cardholder data: should never be stored (PCI-DSS SAQ A keeps it at the PSP).
    Pci,
    /// Credentials and keys.
    Secret,
}

impl Sensitivity {
    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Self::Public,
            "internal" => Self::Internal,
            "pii" => Self::Pii,
            "pci" => Self::Pci,
            "secret" => Self::Secret,
            _ => return None,
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Pii => "pii",
            Self::Pci => "pci",
            Self::Secret => "secret",
        }
    }

    /// Whether values may be given to the policy engine (`public` and `internal` only).
    #[must_use]
    pub fn visible_to_policies(self) -> bool {
        matches!(self, Self::Public | Self::Internal)
    }
}

/// What a tool does. Only these kinds are implemented; any other kind is a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ToolKind {
    /// `record.create`: insert a record of the entity; the caller becomes its owner.
    RecordCreate,
    /// `record.get`: read one record by `id`.
    RecordGet,
    /// `record.list`: list the records the caller's role scope allows.
    RecordList,
    /// `record.update`: change fields of one record by `id`.
    RecordUpdate,
    /// `payment.charge`: charge a payment method through the PSP for a record of the entity
    /// (the Cedar resource). Fixed arguments: `<entity>_id`, `amount_minor`, `currency`,
    /// `payment_method` (a PSP token such as `pm_card_visa`), optional `address`. Needs an
    /// idempotency key.
    PaymentCharge,
    /// `payment.refund`: refund part of a captured payment of a record of the entity (the
    /// Cedar resource). Fixed arguments: `<entity>_id`, `amount_minor`, `reason`, optional
    /// `payment_id`. Needs an idempotency key.
    PaymentRefund,
}

impl ToolKind {
    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "record.create" => Self::RecordCreate,
            "record.get" => Self::RecordGet,
            "record.list" => Self::RecordList,
            "record.update" => Self::RecordUpdate,
            "payment.charge" => Self::PaymentCharge,
            "payment.refund" => Self::PaymentRefund,
            _ => return None,
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecordCreate => "record.create",
            Self::RecordGet => "record.get",
            Self::RecordList => "record.list",
            Self::RecordUpdate => "record.update",
            Self::PaymentCharge => "payment.charge",
            Self::PaymentRefund => "payment.refund",
        }
    }

    /// Whether the kind moves money (needs a PSP and an idempotency key).
    #[must_use]
    pub fn is_payment(self) -> bool {
        matches!(self, Self::PaymentCharge | Self::PaymentRefund)
    }

    /// The fixed argument names of a payment kind: (required, optional). Empty for record
    /// kinds. `{entity}` stands for the tool's entity name.
    #[must_use]
    pub fn payment_arguments(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::PaymentCharge => (
                &["{entity}_id", "amount_minor", "currency", "payment_method"],
                &["address"],
            ),
            Self::PaymentRefund => (&["{entity}_id", "amount_minor", "reason"], &["payment_id"]),
            _ => (&[], &[]),
        }
    }
}

/// How risky a tool is; `high` tools need a human approval (see the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Risk {
    /// Reads and ordinary writes.
    Low,
    /// Writes that matter (state changes other users rely on).
    Medium,
    /// Money or irreversible effects: approval required.
    High,
}

impl Risk {
    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => return None,
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// Which records of a `record.list` tool a role sees. Roles not named see nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Every record of the entity in the caller's tenant.
    Tenant,
    /// Records the caller owns (created).
    Owner,
    /// Records whose user-typed field (named here) is the caller.
    Field(String),
}

/// The value in a `set` table that stands for the calling user's id (only allowed for
/// fields of type `user`), e.g. `set = { buyer = "$caller" }`.
pub const SET_CALLER: &str = "$caller";

/// A tool (`[tools.<name>]`): one Cedar action, one input and one output schema.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// The tool (and Cedar action) name.
    pub name: Slug,
    /// What it does.
    pub kind: ToolKind,
    /// The entity it works on.
    pub entity: String,
    /// How risky it is.
    pub risk: Risk,
    /// Shown to users and models.
    pub description: String,
    /// The input JSON Schema (Draft 2020-12), checked and compilable.
    pub input_schema: Value,
    /// The output JSON Schema (Draft 2020-12), checked and compilable.
    pub output_schema: Value,
    /// Where the input schema was read from.
    pub input_schema_path: PathBuf,
    /// Where the output schema was read from.
    pub output_schema_path: PathBuf,
    /// `record.create` only: the `ref` input field whose record is the Cedar resource.
    pub parent: Option<String>,
    /// Fixed field values applied after the input fields (`record.create` and
    /// `record.update`). A `user` field may be set to [`SET_CALLER`].
    pub set: Map<String, Value>,
    /// Fixed field values written to the parent record in the same transaction
    /// (`set_parent = { status = "accepted" }`); literals only.
    pub set_parent: Map<String, Value>,
    /// `record.list` only: which records each role sees.
    pub scope: BTreeMap<Slug, ListScope>,
    /// `approval = { role, mfa_max_age_secs, ttl_secs }`: every call is held until a
    /// different user holding `role` approves it.
    pub approval: Option<ApprovalSpec>,
}

/// Longest `mfa_max_age_secs` of an [`ApprovalSpec`], seconds (1 hour).
pub const APPROVAL_MFA_MAX_AGE_SECS_MAX: i64 = 3600;
/// Longest `ttl_secs` of an [`ApprovalSpec`], seconds (7 days).
pub const APPROVAL_TTL_SECS_MAX: i64 = 7 * 24 * 3600;
/// Shortest `mfa_max_age_secs` and `ttl_secs`, seconds.
pub const APPROVAL_SECS_MIN: i64 = 30;

/// A tool's human-approval rule (`approval = { role = "finance", mfa_max_age_secs = 300,
/// ttl_secs = 3600 }`): a call is filed as a pending approval instead of executing, and runs
/// (as its requester, with exactly the filed arguments) once a **different** user holding
/// `role`, whose last second factor is at most `mfa_max_age_secs` old, approves it within
/// `ttl_secs` of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// The role an approver must hold (a role of the manifest).
    pub role: Slug,
    /// Oldest second factor accepted from the approver, seconds
    /// ([`APPROVAL_SECS_MIN`]..=[`APPROVAL_MFA_MAX_AGE_SECS_MAX`]).
    pub mfa_max_age_secs: i64,
    /// How long the request stays decidable, seconds
    /// ([`APPROVAL_SECS_MIN`]..=[`APPROVAL_TTL_SECS_MAX`]).
    pub ttl_secs: i64,
}

impl ToolSpec {
    /// The compiled input validator.
    ///
    /// # Errors
    /// [`AppError::Schema`] only for a spec not built by [`AppSpec::load`].
    pub fn input_validator(&self) -> Result<jsonschema::Validator, AppError> {
        crate::schema::compile_schema(&self.input_schema)
    }

    /// The compiled output validator.
    ///
    /// # Errors
    /// [`AppError::Schema`] only for a spec not built by [`AppSpec::load`].
    pub fn output_validator(&self) -> Result<jsonschema::Validator, AppError> {
        crate::schema::compile_schema(&self.output_schema)
    }

    /// Both validators, compiled once (build them at startup, not per call).
    ///
    /// # Errors
    /// As [`ToolSpec::input_validator`].
    pub fn validators(&self) -> Result<ToolValidators, AppError> {
        Ok(ToolValidators {
            input: self.input_validator()?,
            output: self.output_validator()?,
        })
    }

    /// The `set` values with [`SET_CALLER`] replaced by `caller`'s id, ready to be written
    /// over the input fields.
    #[must_use]
    pub fn resolved_set(&self, caller: &UserId) -> Map<String, Value> {
        self.set
            .iter()
            .map(|(k, v)| {
                let v = if v.as_str() == Some(SET_CALLER) {
                    Value::String(caller.to_string())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The list scopes of a caller holding `roles`: they see the union of these (empty: the
    /// caller sees nothing).
    #[must_use]
    pub fn scopes_for<'a>(&'a self, roles: &[Slug]) -> Vec<&'a ListScope> {
        roles.iter().filter_map(|r| self.scope.get(r)).collect()
    }
}

/// A tool's compiled input and output validators.
#[derive(Debug)]
pub struct ToolValidators {
    /// Validates the arguments.
    pub input: jsonschema::Validator,
    /// Validates the result.
    pub output: jsonschema::Validator,
}

/// A Cedar policy file, as text (parsed by `bastion-authz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The file's path (app directory joined with `policies/<name>.cedar`).
    pub path: PathBuf,
    /// Its UTF-8 contents.
    pub text: String,
}
