//! Errors of a tool call. Each maps to one HTTP problem type in `bastion-server`.

/// Why a tool call did not produce a result. Messages are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool of that name in the manifest.
    #[error("no tool named `{0}`")]
    UnknownTool(String),
    /// Policy denies the action for this principal (at the action level).
    #[error("not allowed to call `{0}`")]
    Forbidden(String),
    /// The arguments fail the tool's input schema: `(json pointer, message)` pairs.
    #[error("the arguments do not match the tool's input schema")]
    InvalidInput(Vec<(String, String)>),
    /// The record does not exist in the caller's tenant, or policy hides it.
    #[error("record not found")]
    NotFound,
    /// The record changed since the caller read it.
    #[error("the record was changed by someone else (current version {current_version})")]
    Conflict {
        /// The version now stored.
        current_version: i64,
    },
    /// A kill switch covering this tool (global, the tool everywhere, the caller's tenant,
    /// or the tool in the caller's tenant) is engaged; nothing was executed. The operator's
    /// reason is not shown to the caller.
    #[error("the tool `{0}` is disabled by a kill switch")]
    Disabled(String),
    /// The store or the audit sink is unavailable; nothing was executed.
    #[error("service unavailable; nothing was changed")]
    Unavailable,
    /// The call was not run: it was filed as a pending approval (the tool needs a human
    /// approval, or approval was requested). Nothing else changed.
    #[error("the call needs a human approval; it was filed and not executed")]
    PendingApproval {
        /// The filed approval.
        approval: Box<bastion_store::approvals::Approval>,
    },
    /// The approver is the requester: a request is decided by someone else.
    #[error("you cannot decide your own request")]
    SelfApproval,
    /// The approver does not hold the approver role (or the requester is no longer active).
    #[error("you may not decide this approval")]
    ApprovalForbidden,
    /// The approver's last second factor is older than the tool allows: authenticate again.
    #[error("your second factor is older than {max_age_secs} seconds; sign in again to approve")]
    MfaStale {
        /// The allowed age, seconds.
        max_age_secs: i64,
    },
    /// The approval expired before it was decided.
    #[error("the approval expired")]
    ApprovalExpired,
    /// The approval was already decided (its status now).
    #[error("the approval was already decided ({0})")]
    ApprovalDecided(String),
    /// A money-moving tool was called without an `Idempotency-Key`; nothing was done.
    #[error("this tool requires an Idempotency-Key")]
    IdempotencyKeyMissing,
    /// The idempotency key was used before with a different request; nothing was done.
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyMismatch,
    /// The first request with this idempotency key is still being processed; retry later.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInFlight,
    /// The PSP declined the payment (`code` is its decline code, e.g. `card_declined`).
    #[error("the payment was declined (`{code}`)")]
    PaymentDeclined {
        /// The PSP's decline code.
        code: String,
        /// The answer is the stored answer of an earlier call with the same key.
        replayed: bool,
    },
    /// A velocity limit of the app's `[payments]` refused the charge; nothing was charged.
    #[error("payment velocity limit reached")]
    VelocityExceeded {
        /// The subject kind of the rule (`customer`, `card`, `address`).
        subject: &'static str,
    },
    /// The refund would take the refunded total above the captured amount; nothing changed.
    #[error("refund exceeds the captured amount (refundable: {refundable_minor} minor units)")]
    RefundExceedsCapture {
        /// What can still be refunded, minor units.
        refundable_minor: i64,
    },
    /// The PSP refused the request (not a decline); nothing was charged or refunded.
    #[error("the payment provider refused the request")]
    PaymentRejected,
    /// A bug or an inconsistent manifest; details are in the server log only.
    #[error("internal error")]
    Internal,
}
