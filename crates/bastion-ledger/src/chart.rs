//! The chart of accounts: the account codes of a PSP business, and references.

use bastion_store::TenantTx;
use bastion_store::ledger::{self, Account};
use bastion_types::Currency;

use crate::LedgerError;

/// Source of outside money: what cardholders paid in. May go negative.
pub const CUSTOMERS: &str = "customers";
/// Money the PSP holds for the tenant (a Stripe balance). May go negative: PSPs debit the
/// bank account when refunds and disputes exceed the balance.
pub const PSP_CLEARING: &str = "psp_clearing";
/// PSP fees paid. Never negative.
pub const FEES: &str = "fees";
/// Money refunded to cardholders. Never negative.
pub const REFUNDS: &str = "refunds";
/// Money taken back by disputes (chargebacks). Never negative.
pub const DISPUTES: &str = "disputes";
/// Money paid out to the tenant's bank account. Never negative.
pub const PAYOUTS: &str = "payouts";
/// Memo account balancing every `refundable:<payment>` posting. May go negative.
pub const REFUNDABLE_CONTROL: &str = "refundable_control";
/// Prefix of the per-payment memo account: what may still be refunded. Never negative.
pub const REFUNDABLE_PREFIX: &str = "refundable:";

/// Every fixed account of the chart, with whether it may go negative.
pub const FIXED_ACCOUNTS: &[(&str, bool)] = &[
    (CUSTOMERS, true),
    (PSP_CLEARING, true),
    (FEES, false),
    (REFUNDS, false),
    (DISPUTES, false),
    (PAYOUTS, false),
    (REFUNDABLE_CONTROL, true),
];

/// Longest [`Reference`], in bytes (so `refundable:<reference>` fits an account code).
pub const REFERENCE_LEN_MAX: usize = 100;

/// What an entry is about: a PSP payment id (`pi_3N…`), a payout id (`po_…`), a fee or an
/// internal id. `1..=`[`REFERENCE_LEN_MAX`] bytes of ASCII letters, digits, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference(String);

impl Reference {
    /// Parses a reference.
    ///
    /// # Errors
    /// [`LedgerError::Reference`] when `s` is empty, too long, or has another character.
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        let ok = !s.is_empty()
            && s.len() <= REFERENCE_LEN_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(LedgerError::Reference)
        }
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The code of payment `payment`'s memo account `refundable:<payment>`.
#[must_use]
pub fn refundable_code(payment: &Reference) -> String {
    format!("{REFUNDABLE_PREFIX}{payment}")
}

/// The account `code` in `currency`, created if absent (read first: the common case writes
/// nothing).
pub(crate) async fn ensure(
    tx: &mut TenantTx,
    code: &str,
    currency: Currency,
    allow_negative: bool,
) -> Result<Account, LedgerError> {
    if let Some(a) = ledger::account_by_code(tx, code, currency).await? {
        if a.allow_negative != allow_negative {
            return Err(LedgerError::ChartMismatch);
        }
        return Ok(a);
    }
    Ok(ledger::account(tx, code, currency, allow_negative).await?)
}

/// A fixed account of the chart (one of [`FIXED_ACCOUNTS`]) in `currency`, created if absent.
pub(crate) async fn fixed(
    tx: &mut TenantTx,
    code: &'static str,
    currency: Currency,
) -> Result<Account, LedgerError> {
    let allow_negative = FIXED_ACCOUNTS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .ok_or(LedgerError::ChartMismatch)?;
    ensure(tx, code, currency, allow_negative).await
}
