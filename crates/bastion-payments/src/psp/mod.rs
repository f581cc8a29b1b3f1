//! Payment service provider (PSP) adapters: the subset of a card PSP Bastion needs.
//!
//! [`Psp`] is the interface: create a PaymentIntent (confirmed at once, with a tokenized
//! payment method such as `pm_card_visa` — card numbers never reach Bastion, PCI-DSS SAQ A),
//! retrieve and confirm one, refund part or all of one, and list balance transactions for a
//! time range (reconciliation). Every call that moves money forwards Bastion's own
//! [`IdempotencyKey`] as the PSP's `Idempotency-Key` header, so a retried call after a lost
//! response charges once (case P4) — on a PSP that honours the header.
//!
//! 3DS/SCA is never bypassed: when the PSP answers `requires_action`, the
//! [`PaymentIntent::next_action`] object is handed back unchanged for the customer's
//! browser to complete (Stripe.js `handleNextAction` with the
//! [`PaymentIntent::client_secret`]); Bastion never marks such a payment paid.
//!
//! [`StripePsp`] implements [`Psp`] over Stripe's HTTP API (form-encoded requests, JSON
//! responses; Stripe API reference, "PaymentIntents", "Refunds", "Balance transactions").
//! The same adapter talks to real Stripe, to `localstripe` (a test peer) and to Bastion's
//! own test-mode PSP (`bastion-psp-sandbox`).
//!
//! The trait returns boxed futures ([`PspFuture`]) rather than `async fn`, so it stays
//! dyn-compatible: callers hold an `Arc<dyn Psp>` chosen by configuration. The box costs one
//! allocation per call, next to a network round trip.

mod stripe;
mod types;

use std::future::Future;
use std::pin::Pin;

pub use stripe::{
    API_KEY_BYTES_MAX, ApiKey, BALANCE_PAGE_SIZE, BALANCE_TRANSACTIONS_MAX, CONNECT_TIMEOUT_SECS,
    REQUEST_TIMEOUT_SECS, RESPONSE_BYTES_MAX, STRIPE_API_VERSION, StripeConfig, StripePsp,
};
pub use types::{
    AMOUNT_MINOR_MAX, BalanceTransaction, BalanceTransactionKind, ClientSecret,
    CreatePaymentIntent, CreateRefund, ERROR_CODE_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX,
    IdempotencyKey, METADATA_PAYMENT_ID, METADATA_REFUND_ID, METADATA_TENANT, OBJECT_ID_BYTES_MAX,
    PaymentIntent, PaymentIntentStatus, PaymentMethodToken, PspError, REFERENCE_BYTES_MAX, Refund,
    TimeRange, check_object_id, check_reference,
};

/// The future every [`Psp`] method returns: `Send`, borrowing the adapter and the request
/// for `'a`.
pub type PspFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PspError>> + Send + 'a>>;

/// The PSP operations Bastion uses. See the [module docs](self).
///
/// Implementations must not put the API key, a client secret or a card number into an
/// error, a log line or `Debug` output.
pub trait Psp: Send + Sync + std::fmt::Debug {
    /// Creates a PaymentIntent for `req` and confirms it at once (`confirm=true`), sending
    /// `idempotency_key` as the `Idempotency-Key` header. The result is `Succeeded`,
    /// `RequiresAction` (3DS: hand [`PaymentIntent::next_action`] to the customer),
    /// `Processing`, or another status the caller must treat as not paid.
    ///
    /// # Errors
    /// [`PspError::Declined`] when the card is declined, [`PspError::InvalidRequest`] for a
    /// request the PSP refuses (also a reused idempotency key with other parameters),
    /// [`PspError::Unavailable`] for timeouts, connection failures, 429 and 5xx (safe to
    /// retry with the **same** key), [`PspError::Unexpected`] for anything else.
    fn create_payment_intent<'a>(
        &'a self,
        req: &'a CreatePaymentIntent,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent>;

    /// Retrieves the PaymentIntent `id` (`pi_…`, checked by [`check_object_id`]).
    ///
    /// # Errors
    /// As [`Psp::create_payment_intent`]; an unknown id is [`PspError::InvalidRequest`]
    /// with status 404.
    fn retrieve_payment_intent<'a>(&'a self, id: &'a str) -> PspFuture<'a, PaymentIntent>;

    /// Confirms the PaymentIntent `id` that is in `requires_confirmation`, with
    /// `idempotency_key` as the `Idempotency-Key` header.
    ///
    /// # Errors
    /// As [`Psp::create_payment_intent`].
    fn confirm_payment_intent<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent>;

    /// Refunds `req.amount_minor` of `req.payment_intent`'s charge, with `idempotency_key`
    /// as the `Idempotency-Key` header. Bastion checks refunded ≤ captured itself (case P5);
    /// not every PSP does (localstripe does not).
    ///
    /// # Errors
    /// As [`Psp::create_payment_intent`]; a refund above the unrefunded amount is
    /// [`PspError::InvalidRequest`] on a PSP that checks it.
    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, Refund>;

    /// Every balance transaction created in `range` (`from` inclusive, `to` exclusive, Unix
    /// seconds), newest first, amounts in minor units. At most
    /// [`BALANCE_TRANSACTIONS_MAX`] are read.
    ///
    /// # Errors
    /// As [`Psp::create_payment_intent`]; more than [`BALANCE_TRANSACTIONS_MAX`]
    /// transactions in the range is [`PspError::Unexpected`] (split the range).
    fn list_balance_transactions(&self, range: TimeRange)
    -> PspFuture<'_, Vec<BalanceTransaction>>;
}
