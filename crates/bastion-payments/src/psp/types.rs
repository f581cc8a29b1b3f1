//! The PSP module's requests, results and its one error type.

use bastion_types::{Currency, Money, TenantId, UnixTime};

/// Longest accepted PSP object id (`pi_…`, `ch_…`, `re_…`, `txn_…`, `cus_…`, `pm_…`), bytes.
/// Stripe ids are under 100 characters.
pub const OBJECT_ID_BYTES_MAX: usize = 255;
/// Longest idempotency key, bytes (Stripe's limit: 255 characters).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Largest amount of one PaymentIntent or refund, minor units (Stripe's limit for
/// two-decimal currencies: 99,999,999, i.e. 999,999.99).
pub const AMOUNT_MINOR_MAX: i64 = 99_999_999;
/// Longest PSP error code kept in a [`PspError`], bytes; longer codes are cut.
pub const ERROR_CODE_BYTES_MAX: usize = 64;
/// The metadata key carrying the tenant id on every PaymentIntent and refund.
pub const METADATA_TENANT: &str = "tenant";
/// The metadata key carrying Bastion's payment id on a PaymentIntent.
pub const METADATA_PAYMENT_ID: &str = "bastion_payment_id";
/// The metadata key carrying Bastion's refund id on a refund.
pub const METADATA_REFUND_ID: &str = "bastion_refund_id";

/// Why a PSP call failed.
///
/// No variant holds the API key, a client secret, a card number or the PSP's free-text
/// message (Stripe's messages can quote a masked key); codes are the PSP's machine codes,
/// cut to [`ERROR_CODE_BYTES_MAX`] bytes of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PspError {
    /// The card was declined (HTTP 402, or error type `card_error`). `code` is the PSP's
    /// `decline_code` or `code` (e.g. `card_declined`, `insufficient_funds`).
    #[error("payment declined (`{code}`)")]
    Declined {
        /// The decline code.
        code: String,
    },
    /// The PSP refused the request (HTTP 400, 404; also a request Bastion refused to send,
    /// with status 0). Retrying the same request will fail the same way.
    #[error("psp refused the request (status {status}, type `{error_type}`)")]
    InvalidRequest {
        /// The HTTP status, or 0 when Bastion refused before sending.
        status: u16,
        /// The PSP's error type (`invalid_request_error`, `idempotency_error`), or
        /// `bastion` when refused before sending.
        error_type: String,
        /// The PSP's error code, if any (`resource_missing`, `amount_too_large`, …), or a
        /// fixed phrase naming the rule when refused before sending.
        code: Option<String>,
    },
    /// The PSP could not be reached or asked to come back later (timeout, connection
    /// failure, HTTP 409, 429 or 5xx). Retry with the same idempotency key.
    #[error("psp unavailable: {reason}")]
    Unavailable {
        /// A fixed phrase.
        reason: &'static str,
    },
    /// Anything else: an authentication failure (401/403: check the API key), a response
    /// that is too large or not the documented shape.
    #[error("unexpected psp response: {reason}")]
    Unexpected {
        /// A fixed phrase.
        reason: &'static str,
    },
}

impl PspError {
    /// A request Bastion refuses before sending, for the rule `code`.
    pub(crate) fn refused(code: &'static str) -> Self {
        Self::InvalidRequest {
            status: 0,
            error_type: "bastion".to_owned(),
            code: Some(code.to_owned()),
        }
    }
}

/// Longest Bastion reference (payment id, refund id) sent as a metadata value, bytes.
pub const REFERENCE_BYTES_MAX: usize = 255;

/// Checks a Bastion reference (a payment or refund id, e.g. a UUID) before it is sent as a
/// metadata value: 1 to [`REFERENCE_BYTES_MAX`] bytes of visible ASCII (0x21–0x7E).
///
/// # Errors
/// [`PspError::InvalidRequest`] (status 0) for anything else.
pub fn check_reference(reference: &str) -> Result<(), PspError> {
    if reference.is_empty()
        || reference.len() > REFERENCE_BYTES_MAX
        || !reference.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(PspError::refused("invalid_reference"));
    }
    Ok(())
}

/// Checks a PSP object id before it goes into a URL path or a form: 1 to
/// [`OBJECT_ID_BYTES_MAX`] bytes of ASCII letters, digits and `_`.
///
/// # Errors
/// [`PspError::InvalidRequest`] (status 0) for anything else, e.g. `../` or `pi_1?x=y`.
pub fn check_object_id(id: &str) -> Result<(), PspError> {
    if id.is_empty()
        || id.len() > OBJECT_ID_BYTES_MAX
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(PspError::refused("invalid_object_id"));
    }
    Ok(())
}

/// An idempotency key, forwarded to the PSP as the `Idempotency-Key` header: 1 to
/// [`IDEMPOTENCY_KEY_BYTES_MAX`] bytes of visible ASCII (0x21–0x7E). Bastion derives it
/// from the caller's own `Idempotency-Key` so a retried tool call reaches the PSP with the
/// same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a key.
    ///
    /// # Errors
    /// [`PspError::InvalidRequest`] (status 0) for an empty, over-long or non-visible-ASCII
    /// key.
    pub fn parse(key: &str) -> Result<Self, PspError> {
        if key.is_empty()
            || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PspError::refused("invalid_idempotency_key"));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as sent.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tokenized payment method: a PSP payment-method id such as `pm_card_visa` (Stripe test
/// token) or `pm_1Q…` created by Stripe.js in the customer's browser. Never a card number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentMethodToken(String);

impl PaymentMethodToken {
    /// Parses a token: `pm_`, `card_` or `src_` followed by id characters (see
    /// [`check_object_id`]). A bare card number is refused.
    ///
    /// # Errors
    /// [`PspError::InvalidRequest`] (status 0).
    pub fn parse(token: &str) -> Result<Self, PspError> {
        check_object_id(token)?;
        let prefixed = ["pm_", "card_", "src_"]
            .iter()
            .any(|p| token.len() > p.len() && token.starts_with(p));
        if !prefixed {
            return Err(PspError::refused("invalid_payment_method"));
        }
        Ok(Self(token.to_owned()))
    }

    /// The token.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PaymentIntent's client secret: lets the customer's browser complete 3DS (Stripe.js).
/// `Debug` is redacted; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret read from the PSP.
    #[must_use]
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret, for handing to the customer's browser only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// A request to create and confirm a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePaymentIntent {
    /// The amount, 1 to [`AMOUNT_MINOR_MAX`] minor units, and its currency (sent in lower
    /// case, as Stripe expects).
    pub amount: Money,
    /// The tokenized payment method.
    pub payment_method: PaymentMethodToken,
    /// The tenant, sent as `metadata[tenant]`.
    pub tenant: TenantId,
    /// Bastion's payment id (e.g. a UUID), sent as `metadata[bastion_payment_id]` (checked by
    /// [`check_reference`]).
    pub payment_id: String,
    /// The PSP's customer id (`cus_…`), if the payment belongs to a stored customer.
    pub customer: Option<String>,
}

/// A request to refund part or all of a PaymentIntent's charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRefund {
    /// The PaymentIntent (`pi_…`).
    pub payment_intent: String,
    /// The amount to refund, 1 to [`AMOUNT_MINOR_MAX`] minor units of the charge's currency.
    pub amount_minor: i64,
    /// The tenant, sent as `metadata[tenant]`.
    pub tenant: TenantId,
    /// Bastion's refund id (e.g. a UUID), sent as `metadata[bastion_refund_id]` (checked by
    /// [`check_reference`]).
    pub refund_id: String,
}

/// A half-open time range `[from, to)`, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First second included.
    pub from: UnixTime,
    /// First second excluded.
    pub to: UnixTime,
}

/// A PaymentIntent's status (Stripe API reference, "The PaymentIntent object", `status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PaymentIntentStatus {
    /// No usable payment method (also after a decline or a failed 3DS).
    RequiresPaymentMethod,
    /// Created, not yet confirmed.
    RequiresConfirmation,
    /// The customer must act (3DS/SCA): see [`PaymentIntent::next_action`].
    RequiresAction,
    /// The PSP is still processing.
    Processing,
    /// Paid.
    Succeeded,
    /// Canceled.
    Canceled,
    /// Any other status, verbatim (e.g. `requires_capture`). Never treat as paid.
    Other(String),
}

impl PaymentIntentStatus {
    /// Parses Stripe's status string.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "requires_payment_method" => Self::RequiresPaymentMethod,
            "requires_confirmation" => Self::RequiresConfirmation,
            "requires_action" => Self::RequiresAction,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "canceled" => Self::Canceled,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Stripe's status string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::RequiresAction => "requires_action",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
            Self::Other(s) => s,
        }
    }
}

/// A PaymentIntent as the PSP reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentIntent {
    /// The PSP's id, `pi_…`.
    pub id: String,
    /// Its status.
    pub status: PaymentIntentStatus,
    /// The amount, minor units.
    pub amount_minor: i64,
    /// The currency (upper case).
    pub currency: Currency,
    /// The PSP's `next_action` object, unchanged, when the status is `RequiresAction`
    /// (for 3DS: `{"type": "use_stripe_sdk", …}` or `{"type": "redirect_to_url", …}`).
    pub next_action: Option<serde_json::Value>,
    /// The id of the latest charge (`ch_…`), once one exists. Stripe sends an id;
    /// localstripe sends the charge object, whose `id` is taken.
    pub latest_charge: Option<String>,
    /// The client secret, for the customer's browser to complete `next_action`.
    pub client_secret: Option<ClientSecret>,
}

/// A refund as the PSP reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The PSP's id, `re_…`.
    pub id: String,
    /// The refunded amount, minor units.
    pub amount_minor: i64,
    /// The currency (upper case).
    pub currency: Currency,
    /// The refunded charge, `ch_…`, if reported.
    pub charge: Option<String>,
    /// The refunded PaymentIntent, `pi_…`, if reported.
    pub payment_intent: Option<String>,
    /// The PSP's refund status (`succeeded`, `pending`, `failed`, …), verbatim.
    pub status: String,
}

/// What moved money in a balance transaction (Stripe's `type`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BalanceTransactionKind {
    /// A captured charge (positive amount).
    Charge,
    /// A refund (negative amount).
    Refund,
    /// Anything else, verbatim (`payout`, `adjustment`, …).
    Other(String),
}

impl BalanceTransactionKind {
    /// Parses Stripe's `type` string.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "charge" | "payment" => Self::Charge,
            "refund" | "payment_refund" => Self::Refund,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One balance transaction (Stripe API reference, "The Balance Transaction object").
/// Amounts are in minor units, as Stripe's API gives them (a daily report in major units,
/// like the sandbox's, must be converted by the reconciler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceTransaction {
    /// The PSP's id, `txn_…`.
    pub id: String,
    /// Gross amount, minor units; negative for refunds.
    pub amount_minor: i64,
    /// The PSP's fee, minor units (0 on localstripe).
    pub fee_minor: i64,
    /// The currency (upper case).
    pub currency: Currency,
    /// What it is.
    pub kind: BalanceTransactionKind,
    /// The object that caused it (`ch_…`, `re_…`), if reported.
    pub source: Option<String>,
    /// When it was created, Unix seconds.
    pub created: UnixTime,
}
