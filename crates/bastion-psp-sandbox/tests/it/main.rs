//! Integration tests for bastion-psp-sandbox, over real HTTP on loopback: bastion-payments'
//! `StripePsp` against the sandbox (payments, declines, 3DS, refunds, idempotency, balance
//! transactions), signed webhooks checked by bastion-payments' `WebhookVerifier` with
//! retries, the daily report in major units, and the configuration rules.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure aborts the test"
)]
#![expect(missing_docs, reason = "test helpers")]

mod adapter;
mod config;
mod report;
mod webhooks;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bastion_payments::psp::{
    ApiKey, CreatePaymentIntent, IdempotencyKey, PaymentMethodToken, StripeConfig, StripePsp,
};
use bastion_psp_sandbox::{RetryPolicy, Sandbox, SandboxConfig};
use bastion_types::{Currency, FixedClock, Money, SharedClock, TenantId};
use tokio::net::TcpListener;

pub const KEY: &str = "sk_test_sandbox_it_0123456789";
pub const WHSEC: &str = "whsec_sandbox_it_secret_0123456789abcdef";
/// 2026-11-29T12:00:00Z.
pub const T0: i64 = 1_795_953_600;

/// A running sandbox.
pub struct Running {
    pub url: String,
    pub sandbox: Sandbox,
    pub clock: FixedClock,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// The Stripe adapter pointed at this sandbox.
    pub fn psp(&self) -> StripePsp {
        StripePsp::new(StripeConfig::new(&self.url, ApiKey::parse(KEY).unwrap())).unwrap()
    }

    /// Waits (up to 5 s) until the delivery log holds `n` attempts, and returns it.
    pub async fn wait_log(&self, n: usize) -> Vec<bastion_psp_sandbox::DeliveryAttempt> {
        for _ in 0..500 {
            let log = self.sandbox.deliveries();
            if log.len() >= n {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} delivery attempts, got {}",
            self.sandbox.deliveries().len()
        );
    }

    /// A raw HTTP client call with the sandbox key: (status, JSON).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, &str)],
        idem: Option<&str>,
    ) -> (u16, serde_json::Value, HeaderMap) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {KEY}"));
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        if !form.is_empty() {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(form).unwrap());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let json = resp.json().await.unwrap();
        (status, json, headers)
    }
}

/// Starts a sandbox at [`T0`] with `webhook_urls` (signed with [`WHSEC`]) and a fast retry
/// policy (3 attempts, 20 ms then 40 ms).
pub async fn start(webhook_urls: &[String]) -> Running {
    let clock = FixedClock::new(T0);
    let shared: SharedClock = Arc::new(clock.clone());
    let mut config = SandboxConfig::new(KEY, shared).unwrap();
    for url in webhook_urls {
        config = config.with_webhook(url, WHSEC).unwrap();
    }
    config.retry = RetryPolicy {
        attempts_max: 3,
        backoff_initial_ms: 20,
        backoff_max_ms: 40,
    };
    let sandbox = Sandbox::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = sandbox.clone();
    let task = tokio::spawn(async move {
        s.serve(listener).await.unwrap();
    });
    Running {
        url,
        sandbox,
        clock,
        task,
    }
}

/// A create request for `amount` EUR cents with `token`.
pub fn create(amount: i64, token: &str, payment_id: &str) -> CreatePaymentIntent {
    CreatePaymentIntent {
        amount: Money {
            minor: amount,
            currency: Currency::parse("EUR").unwrap(),
        },
        payment_method: PaymentMethodToken::parse(token).unwrap(),
        tenant: TenantId::parse("0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f").unwrap(),
        payment_id: payment_id.to_owned(),
        customer: None,
    }
}

pub fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

/// A webhook receiver: records every delivery; answers 500 to the first `fail_first`.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> (Self, String) {
        let r = Self {
            received: Arc::default(),
            fail_first: Arc::new(Mutex::new(fail_first)),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    pub fn snapshot(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `n` deliveries arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Bytes)> {
        for _ in 0..500 {
            let got = self.snapshot();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} webhook deliveries, got {}",
            self.snapshot().len()
        );
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.received.lock().unwrap().push((headers, body));
    let mut fail = r.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}
