//! Integration tests for bastion-payments: the webhook module (the published vectors, cases
//! P1–P3 of the payments cases, strict parsing, rotation, limits, property tests — a flipped
//! byte fails — and interop with independent implementations run as real processes:
//! stripe-node, standardwebhooks), the PSP module's unit rules, and `StripePsp` against the
//! real localstripe peer. (`StripePsp` against Bastion's own sandbox is tested in
//! bastion-psp-sandbox.)
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure aborts the test"
)]

mod events;
mod localstripe;
mod peers;
mod props;
mod psp;
mod standard;
mod stripe;
mod vectors;
mod verifier;

use std::path::PathBuf;
use std::sync::Arc;

use bastion_types::{FixedClock, SharedClock};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A clock pinned at `t` and the same clock as a [`SharedClock`].
pub fn clock_at(t: i64) -> (FixedClock, SharedClock) {
    let c = FixedClock::new(t);
    (c.clone(), Arc::new(c))
}

/// Header pairs as `WebhookVerifier::verify` takes them.
pub fn pairs<'a>(headers: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a [u8])> {
    headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
}

/// A Stripe event body with the given id, type, created time and payment intent status.
pub fn stripe_event(id: &str, event_type: &str, created: i64, status: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","api_version":"2017-08-15","created":{created},"livemode":false,"type":"{event_type}","data":{{"object":{{"id":"pi_123","object":"payment_intent","status":"{status}","created":1700000000,"amount":1000,"currency":"usd"}}}}}}"#
    )
}

/// A Standard Webhooks payload with the given type and RFC 3339 timestamp.
pub fn standard_event(event_type: &str, timestamp: &str) -> String {
    format!(
        r#"{{"type":"{event_type}","timestamp":"{timestamp}","data":{{"invoice_id":"inv_1","status":"paid"}}}}"#
    )
}
