//! Bastion's payments core. It starts with [`webhook`]: verifying that a webhook really comes
//! from the payment service provider (PSP) before anything acts on it.
//!
//! - [`webhook::stripe`] — Stripe's `Stripe-Signature` scheme (Stripe docs, "Verify webhook
//!   signatures manually"): HMAC-SHA256 keyed by the whole `whsec_…` string over
//!   `t + "." + raw body`.
//! - [`webhook::standard`] — the Standard Webhooks scheme (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`; spec v1): HMAC-SHA256 keyed by the base64
//!   key after `whsec_` over `id + "." + timestamp + "." + raw body`.
//! - [`webhook::WebhookVerifier`] — one configured verifier per provider (secrets for
//!   rotation, a two-sided timestamp window, a body limit, a [`Clock`](bastion_types::Clock))
//!   that turns raw headers and raw body bytes into a [`webhook::VerifiedEvent`] or a typed
//!   [`webhook::WebhookError`].
//! - [`webhook::StripeEvent`] — the fields of a Stripe event a later layer needs to
//!   deduplicate by event id and order state changes by time.
//!
//! Verification always runs on the raw body bytes as received, never on re-serialized JSON
//! (case P3). No function here does I/O or reads the wall clock; no error, log or `Debug`
//! output contains a secret or an expected signature.

pub mod psp;
pub mod webhook;
