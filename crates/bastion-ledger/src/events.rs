//! One balanced entry per money event, and the read side (positions, totals, checks).

use std::collections::BTreeMap;

use bastion_store::TenantTx;
use bastion_store::ledger::{self, Account, AccountId, EntryId, LedgerCheck, NewEntry, Refusal};
use bastion_types::{Currency, Money};
use serde_json::{Value, json};

use crate::LedgerError;
use crate::chart::{
    self, CUSTOMERS, DISPUTES, FEES, PAYOUTS, PSP_CLEARING, REFUNDABLE_CONTROL, REFUNDS, Reference,
    refundable_code,
};

/// Largest amount of one event, minor units (10¹²: ten billion in a two-decimal currency).
/// Far below `i64::MAX`, so sums of many events cannot overflow in practice, and an amount
/// that large is a unit mistake (major units sent as minor ones…) more often than a payment.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

/// Entry kinds, as stored in `journal_entries.kind`.
const KIND_CAPTURE: &str = "capture";
const KIND_REFUND: &str = "refund";
const KIND_DISPUTE: &str = "dispute";
const KIND_FEE: &str = "fee";
const KIND_PAYOUT: &str = "payout";
const KIND_REVERSAL: &str = "reversal";

fn amount(m: Money) -> Result<i64, LedgerError> {
    if m.minor <= 0 || m.minor > AMOUNT_MINOR_MAX {
        return Err(LedgerError::Amount);
    }
    Ok(m.minor)
}

fn refusal(r: Refusal) -> LedgerError {
    match r {
        Refusal::Unbalanced { currency } => LedgerError::Unbalanced { currency },
        Refusal::Overdraft { account, .. } => LedgerError::Overdraft { account },
        Refusal::UnknownAccount => LedgerError::UnknownAccount,
        Refusal::UnknownEntry => LedgerError::UnknownEntry,
        Refusal::AlreadyReversed => LedgerError::AlreadyReversed,
        // `Refusal` is non-exhaustive: Overflow and anything added later.
        _ => LedgerError::Overflow,
    }
}

async fn post(
    tx: &mut TenantTx,
    kind: &str,
    reference: &Reference,
    detail: Value,
    postings: Vec<(AccountId, i64)>,
) -> Result<Result<EntryId, Refusal>, LedgerError> {
    Ok(ledger::post_entry(
        tx,
        NewEntry {
            kind: kind.to_owned(),
            reference: reference.as_str().to_owned(),
            reverses: None,
            detail,
            postings,
        },
    )
    .await?)
}

/// The payment's `refundable:<payment>` account in `currency`; the payment must have been
/// captured in that currency.
async fn payment_account(
    tx: &mut TenantTx,
    payment: &Reference,
    currency: Currency,
) -> Result<Account, LedgerError> {
    let code = refundable_code(payment);
    if let Some(a) = ledger::account_by_code(tx, &code, currency).await? {
        return Ok(a);
    }
    match ledger::accounts_with_code(tx, &code).await?.first() {
        Some(other) => Err(LedgerError::CurrencyMismatch {
            expected: other.currency,
            got: currency,
        }),
        None => Err(LedgerError::UnknownPayment),
    }
}

/// Records that `amount` of payment `payment` was captured (money now at the PSP):
///
/// | account | amount |
/// |---|---|
/// | `customers` | −amount |
/// | `psp_clearing` | +amount |
/// | `refundable_control` | −amount |
/// | `refundable:<payment>` | +amount |
///
/// Several (partial) captures of one payment add up. A payment keeps the currency of its
/// first capture.
///
/// # Errors
/// [`LedgerError::Amount`], [`LedgerError::CurrencyMismatch`] (captured before in another
/// currency), [`LedgerError::Store`].
pub async fn capture(
    tx: &mut TenantTx,
    payment: &Reference,
    amount_: Money,
    detail: Value,
) -> Result<EntryId, LedgerError> {
    let c = amount(amount_)?;
    let cur = amount_.currency;
    let code = refundable_code(payment);
    if let Some(other) = ledger::accounts_with_code(tx, &code)
        .await?
        .into_iter()
        .find(|a| a.currency != cur)
    {
        return Err(LedgerError::CurrencyMismatch {
            expected: other.currency,
            got: cur,
        });
    }
    let customers = chart::fixed(tx, CUSTOMERS, cur).await?;
    let clearing = chart::fixed(tx, PSP_CLEARING, cur).await?;
    let control = chart::fixed(tx, REFUNDABLE_CONTROL, cur).await?;
    let refundable = chart::ensure(tx, &code, cur, false).await?;
    post(
        tx,
        KIND_CAPTURE,
        payment,
        detail,
        vec![
            (customers.id, -c),
            (clearing.id, c),
            (control.id, -c),
            (refundable.id, c),
        ],
    )
    .await?
    .map_err(refusal)
}

/// Records a refund of `amount` of payment `payment`:
///
/// | account | amount |
/// |---|---|
/// | `psp_clearing` | −amount |
/// | `refunds` | +amount |
/// | `refundable:<payment>` | −amount |
/// | `refundable_control` | +amount |
///
/// `refundable:<payment>` may not go negative and is locked while the entry is checked, so
/// the refunds of a payment never exceed its captures, also when they race (case P5).
///
/// # Errors
/// [`LedgerError::RefundExceedsCapture`], [`LedgerError::UnknownPayment`],
/// [`LedgerError::CurrencyMismatch`], [`LedgerError::Amount`], [`LedgerError::Store`].
pub async fn refund(
    tx: &mut TenantTx,
    payment: &Reference,
    amount_: Money,
    detail: Value,
) -> Result<EntryId, LedgerError> {
    take_back(tx, payment, amount_, detail, KIND_REFUND, REFUNDS).await
}

/// Records a dispute (chargeback) of `amount` of payment `payment`: as [`refund`], into
/// `disputes` instead of `refunds`. A dispute larger than what is left of the payment
/// (captured − refunded − disputed) is refused; a won dispute is recorded by reversing its
/// entry ([`reverse`]).
///
/// # Errors
/// [`LedgerError::DisputeExceedsCapture`], [`LedgerError::UnknownPayment`],
/// [`LedgerError::CurrencyMismatch`], [`LedgerError::Amount`], [`LedgerError::Store`].
pub async fn dispute(
    tx: &mut TenantTx,
    payment: &Reference,
    amount_: Money,
    detail: Value,
) -> Result<EntryId, LedgerError> {
    take_back(tx, payment, amount_, detail, KIND_DISPUTE, DISPUTES).await
}

async fn take_back(
    tx: &mut TenantTx,
    payment: &Reference,
    amount_: Money,
    detail: Value,
    kind: &'static str,
    sink: &'static str,
) -> Result<EntryId, LedgerError> {
    let r = amount(amount_)?;
    let cur = amount_.currency;
    let refundable = payment_account(tx, payment, cur).await?;
    let clearing = chart::fixed(tx, PSP_CLEARING, cur).await?;
    let sink_acc = chart::fixed(tx, sink, cur).await?;
    let control = chart::fixed(tx, REFUNDABLE_CONTROL, cur).await?;
    let posted = post(
        tx,
        kind,
        payment,
        detail,
        vec![
            (clearing.id, -r),
            (sink_acc.id, r),
            (refundable.id, -r),
            (control.id, r),
        ],
    )
    .await?;
    match posted {
        Ok(id) => Ok(id),
        Err(Refusal::Overdraft {
            account,
            balance_minor,
            ..
        }) if account == refundable.id => Err(if kind == KIND_REFUND {
            LedgerError::RefundExceedsCapture {
                refundable_minor: balance_minor,
            }
        } else {
            LedgerError::DisputeExceedsCapture {
                refundable_minor: balance_minor,
            }
        }),
        Err(other) => Err(refusal(other)),
    }
}

/// Records a PSP fee of `amount` (about `reference`, e.g. the payment it was charged on):
/// `psp_clearing` −amount, `fees` +amount.
///
/// # Errors
/// [`LedgerError::Amount`], [`LedgerError::Store`].
pub async fn fee(
    tx: &mut TenantTx,
    reference: &Reference,
    amount_: Money,
    detail: Value,
) -> Result<EntryId, LedgerError> {
    out_of_clearing(tx, reference, amount_, detail, KIND_FEE, FEES).await
}

/// Records a payout of `amount` from the PSP to the tenant's bank (`reference`: the payout
/// id): `psp_clearing` −amount, `payouts` +amount.
///
/// # Errors
/// [`LedgerError::Amount`], [`LedgerError::Store`].
pub async fn payout(
    tx: &mut TenantTx,
    reference: &Reference,
    amount_: Money,
    detail: Value,
) -> Result<EntryId, LedgerError> {
    out_of_clearing(tx, reference, amount_, detail, KIND_PAYOUT, PAYOUTS).await
}

async fn out_of_clearing(
    tx: &mut TenantTx,
    reference: &Reference,
    amount_: Money,
    detail: Value,
    kind: &'static str,
    sink: &'static str,
) -> Result<EntryId, LedgerError> {
    let a = amount(amount_)?;
    let clearing = chart::fixed(tx, PSP_CLEARING, amount_.currency).await?;
    let sink_acc = chart::fixed(tx, sink, amount_.currency).await?;
    post(
        tx,
        kind,
        reference,
        detail,
        vec![(clearing.id, -a), (sink_acc.id, a)],
    )
    .await?
    .map_err(refusal)
}

/// Corrects entry `entry` by posting its reversal: the same postings negated, kind
/// `reversal`, the original's reference, `{"reason": reason}` as detail. An entry is
/// reversed at most once; a reversal that would overdraw an account (e.g. reversing a
/// capture that was partly refunded) is refused.
///
/// # Errors
/// [`LedgerError::UnknownEntry`], [`LedgerError::AlreadyReversed`],
/// [`LedgerError::Overdraft`], [`LedgerError::Store`] (a reason over the detail limit is
/// [`bastion_store::StoreError::Invalid`]).
pub async fn reverse(
    tx: &mut TenantTx,
    entry: EntryId,
    reason: &str,
) -> Result<EntryId, LedgerError> {
    let original = ledger::entry(tx, entry)
        .await?
        .ok_or(LedgerError::UnknownEntry)?;
    ledger::reverse_entry(
        tx,
        entry,
        KIND_REVERSAL,
        &original.reference,
        json!({ "reason": reason }),
    )
    .await?
    .map_err(refusal)
}

/// Where one payment stands, minor units of `currency`, from its entries (reversals
/// included). `refundable = captured − refunded − disputed`, read from the memo account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentPosition {
    /// The payment's currency.
    pub currency: Currency,
    /// Captured, net of reversed captures.
    pub captured_minor: i64,
    /// Refunded, net of reversed refunds.
    pub refunded_minor: i64,
    /// Disputed, net of reversed (won) disputes.
    pub disputed_minor: i64,
    /// What may still be refunded (the `refundable:<payment>` balance).
    pub refundable_minor: i64,
}

/// The position of payment `payment` in `currency`.
///
/// # Errors
/// [`LedgerError::UnknownPayment`], [`LedgerError::CurrencyMismatch`],
/// [`LedgerError::Overflow`], [`LedgerError::Store`].
pub async fn position(
    tx: &mut TenantTx,
    payment: &Reference,
    currency: Currency,
) -> Result<PaymentPosition, LedgerError> {
    let acc = payment_account(tx, payment, currency).await?;
    let entries = ledger::entries_for_reference(tx, payment.as_str()).await?;
    let kinds: BTreeMap<EntryId, String> = entries.iter().map(|e| (e.id, e.kind.clone())).collect();
    let (mut captured, mut refunded, mut disputed) = (0_i64, 0_i64, 0_i64);
    for e in &entries {
        // A reversal counts against the kind of the entry it reverses.
        let kind = match e.reverses {
            Some(r) => kinds.get(&r).map_or("", String::as_str),
            None => e.kind.as_str(),
        };
        for p in e.postings.iter().filter(|p| p.account_id == acc.id) {
            let slot = match kind {
                KIND_CAPTURE => &mut captured,
                KIND_REFUND => &mut refunded,
                KIND_DISPUTE => &mut disputed,
                _ => continue,
            };
            // Captures add to the memo account, refunds and disputes take from it.
            let signed = if kind == KIND_CAPTURE {
                p.amount_minor
            } else {
                p.amount_minor.checked_neg().ok_or(LedgerError::Overflow)?
            };
            *slot = slot.checked_add(signed).ok_or(LedgerError::Overflow)?;
        }
    }
    Ok(PaymentPosition {
        currency,
        captured_minor: captured,
        refunded_minor: refunded,
        disputed_minor: disputed,
        refundable_minor: acc.balance_minor,
    })
}

/// The balances of the fixed accounts in one currency, minor units (0 for an account not
/// created yet). They sum to zero with `refundable_control` and the `refundable:*` accounts
/// left out, since those memo postings balance among themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// The currency.
    pub currency: Currency,
    /// `customers` (negative: net money paid in).
    pub customers_minor: i64,
    /// `psp_clearing`.
    pub psp_clearing_minor: i64,
    /// `fees`.
    pub fees_minor: i64,
    /// `refunds`.
    pub refunds_minor: i64,
    /// `disputes`.
    pub disputes_minor: i64,
    /// `payouts`.
    pub payouts_minor: i64,
}

/// The [`Totals`] of `currency`.
///
/// # Errors
/// [`LedgerError::Store`].
pub async fn totals(tx: &mut TenantTx, currency: Currency) -> Result<Totals, LedgerError> {
    let accs = ledger::balances(
        tx,
        currency,
        &[CUSTOMERS, PSP_CLEARING, FEES, REFUNDS, DISPUTES, PAYOUTS],
    )
    .await?;
    let get = |code: &str| {
        accs.iter()
            .find(|a| a.code == code)
            .map_or(0, |a| a.balance_minor)
    };
    Ok(Totals {
        currency,
        customers_minor: get(CUSTOMERS),
        psp_clearing_minor: get(PSP_CLEARING),
        fees_minor: get(FEES),
        refunds_minor: get(REFUNDS),
        disputes_minor: get(DISPUTES),
        payouts_minor: get(PAYOUTS),
    })
}

/// Checks this tenant's whole ledger in the database ([`ledger::check`]): all postings sum to
/// zero per currency, every balance is the sum of its postings, every entry balances.
///
/// # Errors
/// [`LedgerError::Store`].
pub async fn check(tx: &mut TenantTx) -> Result<LedgerCheck, LedgerError> {
    Ok(ledger::check(tx).await?)
}
