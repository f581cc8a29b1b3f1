//! Bastion's built-in test-mode PSP: an in-memory HTTP server that speaks the subset of
//! Stripe's API Bastion uses, so the demo and the tests take real HTTP payments without a
//! network or an account. It is a **test double of an external system**: it holds no real
//! money, and the production profile must refuse to start it.
//!
//! Start it with [`serve`] (or [`Sandbox::new`] + [`Sandbox::serve`] to keep a handle for
//! the webhook delivery log). It refuses a listener that is not on a loopback address unless
//! [`SandboxConfig::allow_non_loopback`] is set.
//!
//! # API (Stripe-compatible subset)
//!
//! Every `/v1` call needs `Authorization: Bearer <the configured sk_test_… key>` (compared
//! in constant time; 401 otherwise). POST bodies are `application/x-www-form-urlencoded`
//! with Stripe's bracket keys (`metadata[tenant]=…`), at most [`BODY_BYTES_MAX`] bytes;
//! unknown parameters are refused with 400 `parameter_unknown`, as Stripe does. Errors are
//! Stripe's shape: `{"error": {"type", "code", "message", …}}`.
//!
//! | request | result |
//! |---|---|
//! | `POST /v1/payment_intents` `amount, currency, payment_method, confirm, customer, metadata[…]` | a PaymentIntent |
//! | `GET /v1/payment_intents/{id}` | the PaymentIntent |
//! | `POST /v1/payment_intents/{id}/confirm` `[payment_method]` | the PaymentIntent, confirmed |
//! | `POST /v1/payment_intents/{id}/_authenticate` `client_secret, success` | completes 3DS (as localstripe) |
//! | `POST /v1/refunds` `payment_intent` or `charge`, `[amount], metadata[…]` | a Refund |
//! | `GET /v1/balance_transactions` `limit, starting_after, created[gte/gt/lt/lte]` | a list, newest first |
//! | `GET /v1/reporting/daily_balance?date=YYYY-MM-DD` | the day's report in **major** units |
//!
//! Test payment methods ([`TEST_PAYMENT_METHODS`]): `pm_card_visa`, `pm_card_mastercard`
//! succeed; `pm_card_chargeDeclined` declines with 402 `card_error` / `card_declined`;
//! `pm_card_chargeDeclinedInsufficientFunds` with `insufficient_funds`;
//! `pm_card_threeDSecure2Required` (and `pm_card_authenticationRequired`) answer
//! `requires_action` with `next_action.type = "use_stripe_sdk"` until `_authenticate`.
//!
//! `Idempotency-Key` on a POST: the same key with the same method, path and parameters
//! replays the first response (status and body, header `Idempotent-Replayed: true`), a
//! different request under the same key is 400 `idempotency_error` (Stripe's behaviour).
//! Keys live [`IDEMPOTENCY_TTL_SECS`] seconds by the sandbox's clock.
//!
//! Refunds are refused (400 `amount_too_large`) above the charge's unrefunded amount.
//! Balance transactions: a charge carries the fee of [`FeeSchedule`] (default 2.9 % + 30
//! minor units, see [`FeeSchedule::fee_minor`] for the rounding rule); a refund carries
//! none. Amounts are minor units as in Stripe's API, except in the daily report.
//!
//! Webhooks: events `payment_intent.succeeded`, `payment_intent.payment_failed`,
//! `payment_intent.requires_action` and `charge.refunded` are POSTed as JSON to every
//! configured endpoint, signed with `Stripe-Signature` by
//! [`bastion_payments::webhook::stripe::sign`] at each attempt's time, asynchronously, with
//! exponential backoff and a bounded number of attempts ([`RetryPolicy`]).
//!
//! Time comes from the configured [`Clock`](bastion_types::Clock); the state lives in memory
//! and is bounded ([`OBJECTS_MAX`], [`IDEMPOTENCY_KEYS_MAX`]).

mod http;
mod money;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bastion_payments::webhook::StripeSecret;
use bastion_types::SharedClock;
use tokio::net::TcpListener;

pub use money::{DecimalError, format_major, minor_unit_exponent, parse_date_utc};
pub use webhooks::DeliveryAttempt;

/// Largest request body, bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Most form parameters in one request.
pub const PARAMS_MAX: usize = 100;
/// Most objects (PaymentIntents, charges, refunds, balance transactions, together) the
/// sandbox holds; beyond it, creating answers 503 `sandbox_full`.
pub const OBJECTS_MAX: usize = 200_000;
/// Most idempotency keys remembered at once; expired ones are dropped first, then 503.
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;
/// How long an idempotency key is remembered, seconds (Stripe: 24 hours).
pub const IDEMPOTENCY_TTL_SECS: i64 = 86_400;
/// Longest idempotency key, bytes (Stripe: 255).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Largest amount, minor units (Stripe's limit for two-decimal currencies).
pub const AMOUNT_MINOR_MAX: i64 = 99_999_999;
/// Most metadata keys on one object (Stripe: 50).
pub const METADATA_KEYS_MAX: usize = 50;
/// Longest metadata key, bytes (Stripe: 40).
pub const METADATA_KEY_BYTES_MAX: usize = 40;
/// Longest metadata value, bytes (Stripe: 500).
pub const METADATA_VALUE_BYTES_MAX: usize = 500;
/// Largest `limit` of a list call (Stripe: 100); default 10.
pub const LIST_LIMIT_MAX: usize = 100;
/// Most lines in one daily report; a busier day answers 400 `report_too_large`.
pub const REPORT_LINES_MAX: usize = 10_000;
/// Most webhook endpoints.
pub const WEBHOOK_ENDPOINTS_MAX: usize = 16;
/// Most webhook deliveries (event × endpoint) pending at once; beyond it new ones are
/// dropped and counted in the delivery log as never attempted.
pub const PENDING_DELIVERIES_MAX: usize = 1024;
/// Most entries kept in the delivery log (oldest dropped first).
pub const DELIVERY_LOG_MAX: usize = 1000;
/// Largest configurable number of attempts per delivery.
pub const WEBHOOK_ATTEMPTS_LIMIT: u32 = 10;
/// Timeout of one webhook POST, seconds.
pub const WEBHOOK_TIMEOUT_SECS: u64 = 10;
/// The test payment-method tokens the sandbox knows.
pub const TEST_PAYMENT_METHODS: [&str; 6] = [
    "pm_card_visa",
    "pm_card_mastercard",
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_threeDSecure2Required",
    "pm_card_authenticationRequired",
];
/// The `api_version` written into events.
pub const EVENT_API_VERSION: &str = "2024-06-20";

/// Why the sandbox cannot be configured or served. Never holds a key or secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A configuration value is refused; a fixed phrase says which rule.
    #[error("invalid sandbox config: {0}")]
    InvalidConfig(&'static str),
    /// The listener is not on a loopback address and non-loopback was not allowed.
    #[error("the psp sandbox listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    /// Serving failed.
    #[error("psp sandbox i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The fee on a charge: `basis_points` of the amount plus `fixed_minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSchedule {
    /// Proportional part, 1/100 of a percent (290 = 2.9 %), 0 to 10 000.
    pub basis_points: u32,
    /// Fixed part, minor units, 0 to 10 000.
    pub fixed_minor: i64,
}

impl Default for FeeSchedule {
    /// 2.9 % + 30 minor units (Stripe's US card price).
    fn default() -> Self {
        Self {
            basis_points: 290,
            fixed_minor: 30,
        }
    }
}

impl FeeSchedule {
    /// The fee on a charge of `amount_minor` (≥ 0) minor units, in integer arithmetic:
    /// `round_half_up(amount_minor × basis_points / 10 000) + fixed_minor`, where
    /// `round_half_up` rounds a fraction of exactly one half up (1 234 at 2.9 % is 35.786 →
    /// 36; 50 at 2.9 % is 1.45 → 1; 1 500 at 2.9 % is 43.5 → 44). Computed in `i128`; the
    /// result never exceeds the amount plus the fixed part.
    #[must_use]
    pub fn fee_minor(&self, amount_minor: i64) -> i64 {
        let amount = i128::from(amount_minor.max(0));
        let proportional = (amount * i128::from(self.basis_points) + 5_000) / 10_000;
        let total = proportional + i128::from(self.fixed_minor);
        i64::try_from(total).unwrap_or(i64::MAX)
    }
}

/// Webhook retry policy: attempt `n` (1-based) that fails waits
/// `min(backoff_initial_ms × 2^(n-1), backoff_max_ms)` before attempt `n+1`; at most
/// `attempts_max` attempts. A 2xx answer is a success; anything else, a timeout or a
/// connection failure is a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per delivery, 1 to [`WEBHOOK_ATTEMPTS_LIMIT`] (default 5).
    pub attempts_max: u32,
    /// First wait, milliseconds, 1 to 60 000 (default 1 000).
    pub backoff_initial_ms: u64,
    /// Longest wait, milliseconds, at least the first wait, at most 3 600 000 (default
    /// 60 000).
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 5,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), milliseconds.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(32);
        self.backoff_initial_ms
            .saturating_mul(1_u64 << shift)
            .min(self.backoff_max_ms)
    }
}

/// One webhook endpoint: where events are POSTed and the secret they are signed with.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// `http` or `https` URL.
    pub url: String,
    /// The Stripe signing secret (`whsec_…`; `Debug` redacted).
    pub secret: StripeSecret,
}

/// The sandbox's configuration. `Debug` never shows the API key or a secret.
#[derive(Clone)]
pub struct SandboxConfig {
    api_key: String,
    /// Webhook endpoints (at most [`WEBHOOK_ENDPOINTS_MAX`]).
    pub webhooks: Vec<WebhookEndpoint>,
    /// Webhook retry policy.
    pub retry: RetryPolicy,
    /// Fees on charges.
    pub fees: FeeSchedule,
    /// Where time comes from (object `created`, event `created`, signatures, key expiry).
    pub clock: SharedClock,
    /// Serve on a non-loopback address too. Off by default; only for a sandbox inside a
    /// private test network.
    pub allow_non_loopback: bool,
    /// Test knob: wait this long (milliseconds, at most [`CREATE_DELAY_MS_MAX`]) before
    /// answering a PaymentIntent creation that has already been recorded, to simulate a
    /// response lost in flight (crash-recovery tests, case P4). 0 by default.
    pub create_delay_ms: u64,
}

/// Largest [`SandboxConfig::create_delay_ms`], milliseconds.
pub const CREATE_DELAY_MS_MAX: u64 = 120_000;

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("api_key", &"<redacted>")
            .field("webhooks", &self.webhooks)
            .field("retry", &self.retry)
            .field("fees", &self.fees)
            .field("allow_non_loopback", &self.allow_non_loopback)
            .finish_non_exhaustive()
    }
}

impl SandboxConfig {
    /// A configuration accepting `api_key` (`sk_test_` followed by 1 to 200 visible ASCII
    /// characters), with no webhook endpoints and the default fees and retry policy.
    ///
    /// # Errors
    /// [`SandboxError::InvalidConfig`] for any other key (a live `sk_live_` key included).
    pub fn new(api_key: &str, clock: SharedClock) -> Result<Self, SandboxError> {
        let rest = api_key
            .strip_prefix("sk_test_")
            .ok_or(SandboxError::InvalidConfig(
                "api key must start with `sk_test_`",
            ))?;
        if rest.is_empty() || rest.len() > 200 || !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SandboxError::InvalidConfig(
                "api key must be `sk_test_` and 1 to 200 visible ascii characters",
            ));
        }
        Ok(Self {
            api_key: api_key.to_owned(),
            webhooks: Vec::new(),
            retry: RetryPolicy::default(),
            fees: FeeSchedule::default(),
            clock,
            allow_non_loopback: false,
            create_delay_ms: 0,
        })
    }

    /// Adds a webhook endpoint.
    ///
    /// # Errors
    /// [`SandboxError::InvalidConfig`] for a URL that is not `http(s)`, a secret that is not
    /// a Stripe `whsec_…` secret, or more than [`WEBHOOK_ENDPOINTS_MAX`] endpoints.
    pub fn with_webhook(mut self, url: &str, secret: &str) -> Result<Self, SandboxError> {
        if self.webhooks.len() >= WEBHOOK_ENDPOINTS_MAX {
            return Err(SandboxError::InvalidConfig("too many webhook endpoints"));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| SandboxError::InvalidConfig("webhook url does not parse"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SandboxError::InvalidConfig(
                "webhook url must be http or https",
            ));
        }
        let secret = StripeSecret::parse(secret)
            .map_err(|_| SandboxError::InvalidConfig("webhook secret must be `whsec_…`"))?;
        self.webhooks.push(WebhookEndpoint {
            url: url.to_owned(),
            secret,
        });
        Ok(self)
    }

    fn validate(&self) -> Result<(), SandboxError> {
        let r = self.retry;
        if !(1..=WEBHOOK_ATTEMPTS_LIMIT).contains(&r.attempts_max)
            || !(1..=60_000).contains(&r.backoff_initial_ms)
            || r.backoff_max_ms < r.backoff_initial_ms
            || r.backoff_max_ms > 3_600_000
        {
            return Err(SandboxError::InvalidConfig("retry policy out of range"));
        }
        if self.fees.basis_points > 10_000 || !(0..=10_000).contains(&self.fees.fixed_minor) {
            return Err(SandboxError::InvalidConfig("fee schedule out of range"));
        }
        if self.webhooks.len() > WEBHOOK_ENDPOINTS_MAX {
            return Err(SandboxError::InvalidConfig("too many webhook endpoints"));
        }
        if self.create_delay_ms > CREATE_DELAY_MS_MAX {
            return Err(SandboxError::InvalidConfig("create delay above 120 s"));
        }
        Ok(())
    }
}

/// Shared by the handlers and the webhook tasks.
struct Shared {
    config: SandboxConfig,
    state: Mutex<state::State>,
    deliveries: webhooks::Deliveries,
}

/// A configured sandbox. Clone it to keep a handle (for [`Sandbox::deliveries`]) while
/// [`Sandbox::serve`] runs.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox with empty state.
    ///
    /// # Errors
    /// [`SandboxError::InvalidConfig`] when the retry policy or fee schedule is out of range.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        config.validate()?;
        let deliveries = webhooks::Deliveries::new()?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state::State::default()),
                deliveries,
            }),
        })
    }

    /// The axum router (for `tower::ServiceExt::oneshot` in tests, or a custom server).
    /// It must run inside a tokio runtime: webhook deliveries are spawned tasks.
    pub fn router(&self) -> axum::Router {
        http::router(self.shared.clone())
    }

    /// Every webhook delivery attempt so far, oldest first (at most [`DELIVERY_LOG_MAX`]).
    #[must_use]
    pub fn deliveries(&self) -> Vec<DeliveryAttempt> {
        self.shared.deliveries.log()
    }

    /// Serves on `listener` until the task is dropped or an I/O error occurs.
    ///
    /// # Errors
    /// [`SandboxError::NotLoopback`] when the listener's address is not loopback and
    /// [`SandboxConfig::allow_non_loopback`] is off; [`SandboxError::Io`] otherwise.
    pub async fn serve(self, listener: TcpListener) -> Result<(), SandboxError> {
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && !self.shared.config.allow_non_loopback {
            return Err(SandboxError::NotLoopback(addr));
        }
        tracing::info!(%addr, "psp sandbox (test mode) listening");
        axum::serve(listener, self.router()).await?;
        Ok(())
    }
}

/// Serves a fresh sandbox configured by `config` on `listener` (see [`Sandbox::serve`]).
///
/// # Errors
/// As [`Sandbox::new`] and [`Sandbox::serve`].
pub async fn serve(listener: TcpListener, config: SandboxConfig) -> Result<(), SandboxError> {
    Sandbox::new(config)?.serve(listener).await
}
