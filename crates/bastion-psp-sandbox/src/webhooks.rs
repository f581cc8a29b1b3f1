//! Asynchronous, signed webhook delivery with exponential backoff and bounded attempts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bastion_payments::webhook::stripe;

use crate::{DELIVERY_LOG_MAX, PENDING_DELIVERIES_MAX, SandboxError, Shared, WEBHOOK_TIMEOUT_SECS};

/// One delivery attempt of one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// The event id, `evt_…`.
    pub event_id: String,
    /// The event type, e.g. `payment_intent.succeeded`.
    pub event_type: String,
    /// The endpoint URL.
    pub url: String,
    /// 1-based attempt number; 0 when the delivery was dropped because
    /// [`PENDING_DELIVERIES_MAX`] deliveries were already pending.
    pub attempt: u32,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Whether this attempt succeeded (2xx).
    pub delivered: bool,
}

/// The delivery machinery: one HTTP client, a pending counter, the log.
pub(crate) struct Deliveries {
    client: reqwest::Client,
    pending: AtomicUsize,
    log: Mutex<VecDeque<DeliveryAttempt>>,
}

impl Deliveries {
    pub(crate) fn new() -> Result<Self, SandboxError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(WEBHOOK_TIMEOUT_SECS))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| SandboxError::InvalidConfig("webhook http client could not be built"))?;
        Ok(Self {
            client,
            pending: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
        })
    }

    pub(crate) fn log(&self) -> Vec<DeliveryAttempt> {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    fn record(&self, attempt: DeliveryAttempt) {
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() >= DELIVERY_LOG_MAX {
            log.pop_front();
        }
        log.push_back(attempt);
    }
}

/// An event ready to send: id, type and the exact body bytes.
pub(crate) struct OutgoingEvent {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) body: Vec<u8>,
}

/// Spawns one delivery task per (event, endpoint). Events are sent in the order given per
/// endpoint only as far as their tasks run in order; receivers must not rely on order
/// (case P6).
pub(crate) fn dispatch(shared: &Arc<Shared>, events: Vec<OutgoingEvent>) {
    for event in events {
        let event = Arc::new(event);
        for index in 0..shared.config.webhooks.len() {
            let d = &shared.deliveries;
            let previous = d.pending.fetch_add(1, Ordering::SeqCst);
            if previous >= PENDING_DELIVERIES_MAX {
                d.pending.fetch_sub(1, Ordering::SeqCst);
                let url = shared
                    .config
                    .webhooks
                    .get(index)
                    .map(|w| w.url.clone())
                    .unwrap_or_default();
                tracing::warn!(event = %event.id, "psp sandbox: webhook dropped, too many pending");
                d.record(DeliveryAttempt {
                    event_id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    url,
                    attempt: 0,
                    status: None,
                    delivered: false,
                });
                continue;
            }
            let shared = shared.clone();
            let event = event.clone();
            tokio::spawn(async move {
                deliver(&shared, index, &event).await;
                shared.deliveries.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

/// Delivers one event to endpoint `index`, re-signing at every attempt.
async fn deliver(shared: &Shared, index: usize, event: &OutgoingEvent) {
    let Some(endpoint) = shared.config.webhooks.get(index) else {
        return;
    };
    let retry = shared.config.retry;
    for attempt in 1..=retry.attempts_max {
        let signature = stripe::sign(&endpoint.secret, shared.config.clock.now(), &event.body);
        let result = shared
            .deliveries
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .body(event.body.clone())
            .send()
            .await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        shared.deliveries.record(DeliveryAttempt {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            url: endpoint.url.clone(),
            attempt,
            status,
            delivered,
        });
        if delivered {
            return;
        }
        if attempt < retry.attempts_max {
            tokio::time::sleep(Duration::from_millis(retry.backoff_ms(attempt))).await;
        }
    }
    tracing::warn!(event = %event.id, "psp sandbox: webhook not delivered after every attempt");
}
