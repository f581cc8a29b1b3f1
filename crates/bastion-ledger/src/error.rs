//! The ledger's one error type.

use bastion_store::StoreError;
use bastion_store::ledger::AccountId;
use bastion_types::Currency;

/// Why a ledger operation did nothing. Every variant but [`LedgerError::Store`] is a refusal
/// decided before any write: the caller's transaction is still usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An amount is zero, negative, or above [`crate::AMOUNT_MINOR_MAX`] minor units.
    #[error("amount must be 1..={max} minor units", max = crate::AMOUNT_MINOR_MAX)]
    Amount,
    /// A reference is empty, too long, or holds a character outside `[A-Za-z0-9_.-]`.
    #[error("reference must be 1..=100 characters of letters, digits, `_`, `-` or `.`")]
    Reference,
    /// The postings of an entry do not sum to zero in `currency` (a bug in the caller of the
    /// store; the database would refuse the entry too).
    #[error("the entry does not balance in {currency}")]
    Unbalanced {
        /// The currency that does not balance.
        currency: Currency,
    },
    /// The entry would take an account that may not go negative below zero.
    #[error("the entry would overdraw a ledger account")]
    Overdraft {
        /// The account.
        account: AccountId,
    },
    /// A refund larger than what is left to refund of the payment (captured − refunded −
    /// disputed): case P5.
    #[error("refund exceeds what is left of the capture ({refundable_minor} minor units)")]
    RefundExceedsCapture {
        /// What may still be refunded, minor units.
        refundable_minor: i64,
    },
    /// A dispute larger than what is left of the payment (captured − refunded − disputed).
    #[error("dispute exceeds what is left of the capture ({refundable_minor} minor units)")]
    DisputeExceedsCapture {
        /// What is left of the payment, minor units.
        refundable_minor: i64,
    },
    /// The payment was captured in `expected`, not in `got`.
    #[error("currency mismatch: the payment is in {expected}, not {got}")]
    CurrencyMismatch {
        /// The capture's currency.
        expected: Currency,
        /// The currency asked for.
        got: Currency,
    },
    /// No capture of this payment in this tenant.
    #[error("unknown payment")]
    UnknownPayment,
    /// No such journal entry in this tenant.
    #[error("unknown journal entry")]
    UnknownEntry,
    /// The entry was reversed already (an entry is reversed at most once).
    #[error("the entry was reversed already")]
    AlreadyReversed,
    /// An account of an entry does not exist in this tenant.
    #[error("unknown ledger account")]
    UnknownAccount,
    /// An account exists with another overdraft rule than the chart gives it.
    #[error("ledger account does not match the chart of accounts")]
    ChartMismatch,
    /// A sum or balance would not fit in an `i64`.
    #[error("amount overflow")]
    Overflow,
    /// The store failed; [`StoreError::Unavailable`] means answer 503 and do nothing.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LedgerError {
    /// Whether the store is unavailable (answer 503).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_unavailable())
    }
}
