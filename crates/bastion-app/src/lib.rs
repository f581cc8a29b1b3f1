//! Bastion's app manifest: `app.toml`, the JSON Schemas it names and the Cedar policy files,
//! parsed, validated and resolved into a typed [`AppSpec`].
//!
//! [`AppSpec::load`] either returns a fully checked spec or every problem it found as a
//! [`Finding`] (file + 1-based line + message), so `bastion check` can print them all at once.
//! Nothing here knows Cedar: the policy files are read as text and handed to `bastion-authz`,
//! which adds its own findings.
//!
//! Security properties this crate guarantees for a loaded spec:
//! - only the tool kinds Bastion implements (`record.create|get|list|update`) exist;
//! - every JSON Schema compiles under Draft 2020-12 with formats validated, and no `$ref`
//!   leaves the document (remote and file references are findings, never fetched);
//! - tool input schemas are closed objects (`additionalProperties: false`) whose properties
//!   are fields of the tool's entity (or `id` for get/update), so a caller cannot smuggle
//!   system fields such as `owner_id` or `tenant_id`;
//! - every input is bounded: files at most [`limits::FILE_BYTES_MAX`], and counts of roles,
//!   entities, fields, tools and policy files.

mod load;
mod output;
mod schema;
mod spec;

pub use output::{OUTPUT_SYSTEM_FIELDS, record_output};
pub use schema::{SchemaViolation, VIOLATIONS_MAX, compile_schema, schema_violations};
pub use spec::{
    APPROVAL_MFA_MAX_AGE_SECS_MAX, APPROVAL_SECS_MIN, APPROVAL_TTL_SECS_MAX, AppSpec, ApprovalSpec,
    EntitySpec, FieldSpec, FieldType, ListScope, PaymentsSpec, PolicyFile, Risk, RoleSpec,
    SET_CALLER, Sensitivity, ToolKind, ToolSpec, ToolValidators, VelocityRule, VelocitySubject,
};

use std::path::PathBuf;

/// Explicit limits on what a manifest may contain.
pub mod limits {
    /// Largest accepted file (`app.toml`, a schema, a policy file), in bytes: 1 MiB.
    pub const FILE_BYTES_MAX: u64 = 1024 * 1024;
    /// Most roles in one app.
    pub const ROLES_MAX: usize = 32;
    /// Most `[[payments.velocity]]` rules.
    pub const VELOCITY_RULES_MAX: usize = 16;
    /// Longest velocity window, seconds (31 days).
    pub const VELOCITY_WINDOW_SECS_MAX: i64 = 31 * 24 * 3600;
    /// Most entities in one app.
    pub const ENTITIES_MAX: usize = 64;
    /// Most fields in one entity.
    pub const FIELDS_PER_ENTITY_MAX: usize = 64;
    /// Most tools in one app.
    pub const TOOLS_MAX: usize = 128;
    /// Most `.cedar` files under `policies/`.
    pub const POLICY_FILES_MAX: usize = 32;
    /// Most findings reported for one app (the rest are summarised in one last finding).
    pub const FINDINGS_MAX: usize = 200;
}

/// One problem in an app directory: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The file the problem is in (the app directory joined with the relative path).
    pub file: PathBuf,
    /// 1-based line in that file; 1 when the problem concerns the whole file.
    pub line: usize,
    /// Lowercase message; names from the manifest are in backticks.
    pub message: String,
}

impl Finding {
    /// A finding at `line` of `file`.
    #[must_use]
    pub fn new(file: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: line.max(1),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// 1-based line of byte `offset` in `text` (offsets past the end give the last line).
#[must_use]
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let prefix = text.get(..end).unwrap_or(text);
    prefix.bytes().filter(|b| *b == b'\n').count() + 1
}

/// Errors of this crate outside manifest loading (which reports [`Finding`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A JSON Schema did not compile (only possible for a spec not built by [`AppSpec::load`]).
    #[error("invalid json schema: {0}")]
    Schema(String),
}
