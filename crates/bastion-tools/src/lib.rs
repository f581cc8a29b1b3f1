//! The one pipeline every tool call goes through, whatever the door (REST today; MCP and
//! the agent loop later):
//!
//! ```text
//! tool lookup → action-level authorization → input JSON Schema → open TenantTx →
//! load resource → Cedar decision on the resource → kill switch → execute →
//! output JSON Schema → audit record in the same transaction → commit
//! ```
//!
//! The kill switch ([`killswitch`]) is checked inside the call's transaction, as the last
//! step before the effect: once an engage has committed, no call it covers commits an
//! effect, on any instance (`bastion_store::killswitch` states the guarantee per backend).
//!
//! A call that needs a human approval stops at the same point, after every check and before
//! any write, and is filed instead ([`approvals`]).
//!
//! A denial is audited too (allows and denies alike, case U3). If the audit append fails the
//! transaction rolls back and the caller gets [`ToolError::Unavailable`]: no effect without
//! its record (case U4). The tenant is the principal's; nothing in the arguments can change
//! it (case Z7).

pub mod approvals;
mod error;
pub mod killswitch;
pub mod payments;
mod pipeline;
mod redact;
pub mod worker;

pub use approvals::ApprovalExecution;
pub use bastion_store::approvals::{Approval, Status as ApprovalStatus};
pub use error::ToolError;
pub use pipeline::{CallContext, Pipeline, ToolInfo, ToolOutput};
pub use redact::{redact_args, redact_fields};
