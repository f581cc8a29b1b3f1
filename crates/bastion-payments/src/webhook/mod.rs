//! Webhook verification and signing for Stripe and Standard Webhooks.
//!
//! A [`WebhookVerifier`] is configured once per provider endpoint with a [`ProviderKind`],
//! one or more secrets (several while a secret is being rotated), a tolerance in seconds
//! (default [`DEFAULT_TOLERANCE_SECS`] = 300, checked in both directions) and a
//! [`Clock`](bastion_types::Clock). [`WebhookVerifier::verify`] takes the request's headers
//! and its raw body bytes and returns a [`VerifiedEvent`] or a [`WebhookError`]:
//!
//! 1. the body is at most the verifier's limit ([`DEFAULT_BODY_BYTES_MAX`] = 256 KiB),
//! 2. the signature headers are present once each and in their exact syntax,
//! 3. some presented `v1` signature equals the expected one under some secret (constant-time
//!    comparison of full-length values),
//! 4. the signed timestamp is within the tolerance of the clock, early or late,
//! 5. the body is an event of the provider's shape ([`StripeEvent`], [`StandardEvent`]).
//!
//! The lower-level [`stripe`] and [`standard`] modules verify and sign single header values.
//! This module knows no HTTP: headers arrive as `(name, value bytes)` pairs.

mod error;
mod event;
mod secret;
pub mod standard;
pub mod stripe;
mod window;

use bastion_types::{SharedClock, UnixTime};

pub use error::WebhookError;
pub use event::{EVENT_FIELD_BYTES_MAX, StandardEvent, StripeEvent, parse_rfc3339};
pub use secret::{
    SECRET_PREFIX, STANDARD_KEY_BYTES_MAX, STANDARD_KEY_BYTES_MIN, STRIPE_SECRET_BYTES_MAX,
    StandardSecret, StripeSecret,
};

/// Default half-width of the timestamp window, seconds (Stripe's and the Standard Webhooks
/// libraries' default, 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Largest configurable tolerance, seconds (1 hour): a wider window is a replay window.
pub const TOLERANCE_SECS_MAX: u64 = 3600;
/// Default body limit, bytes (256 KiB; Stripe events are typically a few KiB).
pub const DEFAULT_BODY_BYTES_MAX: usize = 256 * 1024;
/// Largest configurable body limit, bytes (4 MiB).
pub const BODY_BYTES_MAX_LIMIT: usize = 4 * 1024 * 1024;
/// Most secrets one verifier holds (the current one plus those being rotated out).
pub const SECRETS_MAX: usize = 8;
/// Most header pairs [`WebhookVerifier::verify`] looks through.
pub const HEADERS_MAX: usize = 128;

/// Which signature scheme and event shape a verifier expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Stripe: `Stripe-Signature`, secret used as a string, Stripe event JSON.
    Stripe,
    /// Standard Webhooks (Svix and others): `webhook-id`/`-timestamp`/`-signature`,
    /// base64 secret, `{type, timestamp, data}` payload.
    StandardWebhooks,
}

/// A delivery whose signature, timestamp and event shape were all checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedEvent {
    /// The scheme it was verified under.
    pub provider: ProviderKind,
    /// The deduplication key, identical across redeliveries: the Stripe event id (`evt_…`)
    /// or the Standard Webhooks `webhook-id`.
    pub id: String,
    /// The provider's event type, e.g. `payment_intent.succeeded`.
    pub provider_event_type: String,
    /// The ordering key, Unix seconds: Stripe's event `created`, or the Standard Webhooks
    /// payload `timestamp`. Not the delivery time (retries are re-signed later).
    pub created: UnixTime,
    /// The timestamp the sender signed this delivery with, Unix seconds.
    pub signed_at: UnixTime,
    /// The id of the object the event is about (Stripe `data.object.id`), when it has one.
    pub object_id: Option<String>,
    /// The raw body exactly as received and verified.
    pub body: Vec<u8>,
}

#[derive(Clone)]
enum Secrets {
    Stripe(Vec<StripeSecret>),
    Standard(Vec<StandardSecret>),
}

/// Verifies incoming webhooks for one provider endpoint. See the [module docs](self).
///
/// `Debug` shows the provider, the number of secrets and the limits, never a secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Secrets,
    tolerance_secs: u64,
    body_bytes_max: usize,
    clock: SharedClock,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("provider", &self.provider())
            .field("secrets", &self.secret_count())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("body_bytes_max", &self.body_bytes_max)
            .finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    /// A verifier for `provider` accepting a signature under any of `secrets` (1 to
    /// [`SECRETS_MAX`] `whsec_…` strings, parsed by [`StripeSecret::parse`] or
    /// [`StandardSecret::parse`]), with a window of `tolerance_secs` seconds either side of
    /// `clock` (at most [`TOLERANCE_SECS_MAX`]; use [`DEFAULT_TOLERANCE_SECS`]) and a body
    /// limit of [`DEFAULT_BODY_BYTES_MAX`].
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] for no secret, too many, or one that does not parse;
    /// [`WebhookError::InvalidConfig`] for a tolerance above the maximum.
    pub fn new(
        provider: ProviderKind,
        secrets: &[&str],
        tolerance_secs: u64,
        clock: SharedClock,
    ) -> Result<Self, WebhookError> {
        if secrets.is_empty() {
            return Err(WebhookError::InvalidSecret(
                "at least one secret is required",
            ));
        }
        if secrets.len() > SECRETS_MAX {
            return Err(WebhookError::InvalidSecret("more than 8 secrets"));
        }
        if tolerance_secs > TOLERANCE_SECS_MAX {
            return Err(WebhookError::InvalidConfig(
                "tolerance must be at most 3600 seconds",
            ));
        }
        let secrets = match provider {
            ProviderKind::Stripe => Secrets::Stripe(
                secrets
                    .iter()
                    .map(|s| StripeSecret::parse(s))
                    .collect::<Result<_, _>>()?,
            ),
            ProviderKind::StandardWebhooks => Secrets::Standard(
                secrets
                    .iter()
                    .map(|s| StandardSecret::parse(s))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            secrets,
            tolerance_secs,
            body_bytes_max: DEFAULT_BODY_BYTES_MAX,
            clock,
        })
    }

    /// The same verifier with a body limit of `bytes` (1 to [`BODY_BYTES_MAX_LIMIT`]).
    ///
    /// # Errors
    /// [`WebhookError::InvalidConfig`] when `bytes` is 0 or above the limit.
    pub fn with_body_bytes_max(mut self, bytes: usize) -> Result<Self, WebhookError> {
        if bytes == 0 || bytes > BODY_BYTES_MAX_LIMIT {
            return Err(WebhookError::InvalidConfig(
                "body limit must be 1 byte to 4 MiB",
            ));
        }
        self.body_bytes_max = bytes;
        Ok(self)
    }

    /// The scheme this verifier expects.
    #[must_use]
    pub fn provider(&self) -> ProviderKind {
        match self.secrets {
            Secrets::Stripe(_) => ProviderKind::Stripe,
            Secrets::Standard(_) => ProviderKind::StandardWebhooks,
        }
    }

    /// How many secrets are accepted.
    #[must_use]
    pub fn secret_count(&self) -> usize {
        match &self.secrets {
            Secrets::Stripe(s) => s.len(),
            Secrets::Standard(s) => s.len(),
        }
    }

    /// The window half-width, seconds.
    #[must_use]
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// The body limit, bytes.
    #[must_use]
    pub fn body_bytes_max(&self) -> usize {
        self.body_bytes_max
    }

    /// Verifies one delivery: `headers` are the request's `(name, value)` pairs (names
    /// compared ASCII case-insensitively; at most [`HEADERS_MAX`] pairs are looked at),
    /// `body` the raw bytes exactly as received. See the [module docs](self) for the order
    /// of checks.
    ///
    /// # Errors
    /// [`WebhookError::BodyTooLarge`], [`WebhookError::MissingHeader`],
    /// [`WebhookError::Malformed`] (also for a signature header sent twice, or a value that
    /// is not UTF-8), [`WebhookError::NoMatchingSignature`],
    /// [`WebhookError::TimestampOutsideTolerance`], [`WebhookError::InvalidEvent`].
    pub fn verify(
        &self,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<VerifiedEvent, WebhookError> {
        if body.len() > self.body_bytes_max {
            return Err(WebhookError::BodyTooLarge {
                len: body.len(),
                max: self.body_bytes_max,
            });
        }
        let now = self.clock.now();
        match &self.secrets {
            Secrets::Stripe(secrets) => {
                let value = header(headers, stripe::SIGNATURE_HEADER)?;
                let signed_at = stripe::verify(value, body, secrets, self.tolerance_secs, now)?;
                let event = StripeEvent::parse(body)?;
                Ok(VerifiedEvent {
                    provider: ProviderKind::Stripe,
                    id: event.id,
                    provider_event_type: event.event_type,
                    created: event.created,
                    signed_at,
                    object_id: event.object_id,
                    body: body.to_vec(),
                })
            }
            Secrets::Standard(secrets) => {
                let id = header(headers, standard::ID_HEADER)?;
                let timestamp = header(headers, standard::TIMESTAMP_HEADER)?;
                let signature = header(headers, standard::SIGNATURE_HEADER)?;
                let signed_at = standard::verify(
                    id,
                    timestamp,
                    signature,
                    body,
                    secrets,
                    self.tolerance_secs,
                    now,
                )?;
                let event = StandardEvent::parse(body)?;
                Ok(VerifiedEvent {
                    provider: ProviderKind::StandardWebhooks,
                    id: id.to_owned(),
                    provider_event_type: event.event_type,
                    created: event.occurred_at,
                    signed_at,
                    object_id: None,
                    body: body.to_vec(),
                })
            }
        }
    }
}

/// The single value of header `name` (lower case) as UTF-8.
fn header<'a>(headers: &[(&str, &'a [u8])], name: &'static str) -> Result<&'a str, WebhookError> {
    let mut found = None;
    for (n, v) in headers.iter().take(HEADERS_MAX) {
        if n.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(WebhookError::Malformed("a signature header appears twice"));
            }
            found = Some(*v);
        }
    }
    let value = found.ok_or(WebhookError::MissingHeader(name))?;
    std::str::from_utf8(value).map_err(|_| WebhookError::Malformed("a header is not utf-8"))
}
