//! Bastion's double-entry ledger for the money events of a business that takes payments
//! through a PSP: captures, refunds, PSP fees, disputes and payouts.
//!
//! **Double entry.** Every event is one journal entry whose postings sum to exactly zero per
//! currency — Pacioli's rule that debits equal credits (*Summa de arithmetica*, 1494, "De
//! computis et scripturis"), as Modern Treasury's "Accounting for Developers" and the
//! Formance Ledger docs restate it for software: money moves between accounts, it is never
//! created or destroyed; entries are immutable and a mistake is corrected by a reversing
//! entry ([`reverse`]); an account's balance is the sum of its postings. Amounts are `i64`
//! minor units of an ISO 4217 currency ([`Money`]), never floats (case P9).
//!
//! **Signs.** As in Formance, a posting's amount is money *into* its account when positive and
//! *out of* it when negative, and a balance is what the account holds. Source accounts of
//! outside money may go negative (Formance's `@world`); every other account may not, which the
//! database enforces (a `CHECK` on the balance, TigerBeetle's `debits_must_not_exceed_credits`
//! idea) and [`bastion_store::ledger::post_entry`] refuses first, under a row lock.
//!
//! **The chart of accounts** ([`chart`]), per tenant and currency:
//!
//! | code | holds | negative? |
//! |---|---|---|
//! | `customers` | source: money paid in by cardholders (minus what went back) | yes |
//! | `psp_clearing` | money the PSP holds for the tenant | yes (a PSP balance can go negative) |
//! | `fees` | PSP fees paid | no |
//! | `refunds` | money refunded to cardholders | no |
//! | `disputes` | money taken back by chargebacks | no |
//! | `payouts` | money paid out to the tenant's bank | no |
//! | `refundable:<payment>` | memo: what may still be refunded of one payment | no |
//! | `refundable_control` | memo: the other side of every `refundable:*` posting | yes |
//!
//! **Refunds never exceed captures (case P5).** A capture puts its amount on the payment's
//! `refundable:<payment>` memo account; a refund or dispute takes it off. That account may not
//! go negative, and the entry locks it (`SELECT … FOR UPDATE` on PostgreSQL; the write lock
//! on SQLite) before reading it, so of two concurrent refunds of 60.00 against a 100.00
//! capture exactly one is posted and the other gets [`LedgerError::RefundExceedsCapture`] —
//! on both backends.
//!
//! Every function works inside the caller's [`TenantTx`], so the entry commits or rolls back
//! with the rest of the request (its audit record, its idempotency key). A refused entry
//! ([`LedgerError`] other than [`LedgerError::Store`]) wrote nothing and leaves the
//! transaction usable.
//!
//! **Daily reconciliation** ([`reconcile`]): one UTC day of every tenant's entries against the
//! PSP's balance transactions and daily report, drift classified, alerted and audited. Entries
//! name the PSP object that moved the money in their detail (`{"psp_object": "ch_…"}`).

pub mod chart;
mod error;
mod events;
pub mod reconcile;

pub use bastion_store::ledger::{Account, AccountId, Entry, EntryId, LedgerCheck, Posting};
pub use bastion_types::{Currency, Money};
pub use chart::Reference;
pub use error::LedgerError;
pub use events::{
    AMOUNT_MINOR_MAX, PaymentPosition, Totals, capture, check, dispute, fee, payout, position,
    refund, reverse, totals,
};

#[doc(no_inline)]
pub use bastion_store::TenantTx;
