//! Bastion's payments core: [`webhook`] verifies that a webhook really comes from the payment
//! service provider (PSP) before anything acts on it, and [`psp`] talks to the PSP.
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
//! - [`psp::Psp`] — the PSP operations Bastion uses (create and confirm a PaymentIntent with
//!   a tokenized payment method and Bastion's idempotency key, retrieve, refund, list balance
//!   transactions), with 3DS `next_action` handed back unchanged; [`psp::StripePsp`] speaks
//!   Stripe's HTTP API over reqwest (real Stripe, localstripe, `bastion-psp-sandbox`).
//!
//! Verification always runs on the raw body bytes as received, never on re-serialized JSON
//! (case P3). The webhook module does no I/O; the only I/O in this crate is `StripePsp`'s
//! outgoing HTTPS calls to the configured PSP. Nothing reads the wall clock; no error, log or
//! `Debug` output contains an API key, a secret or an expected signature.

pub mod psp;
pub mod webhook;
