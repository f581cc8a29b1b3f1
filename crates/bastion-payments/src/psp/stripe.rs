//! [`StripePsp`]: the [`Psp`] over Stripe's HTTP API (and Stripe-compatible servers).
//!
//! Requests are `application/x-www-form-urlencoded` with Stripe's bracket syntax for nested
//! keys (`metadata[tenant]=…`), authenticated with `Authorization: Bearer <key>`; responses
//! are JSON, read up to [`RESPONSE_BYTES_MAX`] bytes. Only parameters every supported
//! server accepts are sent: localstripe answers 400 to any parameter it does not know.
//!
//! Status mapping: 2xx → parsed object; 402 or error type `card_error` →
//! [`PspError::Declined`] (localstripe declines with 402 `invalid_request_error`);
//! 400/404 → [`PspError::InvalidRequest`]; 409, 429, 5xx, timeouts and connection failures →
//! [`PspError::Unavailable`]; 401/403 and everything else → [`PspError::Unexpected`].
//! Redirects are not followed (the `Authorization` header must not travel elsewhere).

use std::time::Duration;

use bastion_types::Currency;
use reqwest::{Method, Url};
use serde_json::Value;

use super::types::{
    AMOUNT_MINOR_MAX, BalanceTransaction, BalanceTransactionKind, ClientSecret,
    CreatePaymentIntent, CreateRefund, ERROR_CODE_BYTES_MAX, IdempotencyKey, METADATA_PAYMENT_ID,
    METADATA_REFUND_ID, METADATA_TENANT, PaymentIntent, PaymentIntentStatus, PspError, Refund,
    TimeRange, check_object_id, check_reference,
};
use super::{Psp, PspFuture};

/// Default whole-request timeout, seconds (connect, send, and read the response).
pub const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default connect timeout, seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Default response body limit, bytes (1 MiB; a page of 100 balance transactions is ~50 KiB).
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Longest accepted API key, bytes.
pub const API_KEY_BYTES_MAX: usize = 256;
/// Balance transactions asked for per page (Stripe's maximum `limit`).
pub const BALANCE_PAGE_SIZE: usize = 100;
/// Most balance transactions one [`Psp::list_balance_transactions`] call reads.
pub const BALANCE_TRANSACTIONS_MAX: usize = 10_000;
/// The Stripe API version Bastion's parsing is written against, sent as `Stripe-Version`
/// (`latest_charge` exists since 2022-11-15). Servers that ignore the header (localstripe,
/// the sandbox) are parsed leniently.
pub const STRIPE_API_VERSION: &str = "2024-06-20";

/// A PSP secret API key (`sk_…` or restricted `rk_…`). `Debug` is redacted; there is no
/// `Display`, and no error ever contains it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Parses a key: `sk_` or `rk_` then visible ASCII, 8 to [`API_KEY_BYTES_MAX`] bytes.
    ///
    /// # Errors
    /// [`PspError::InvalidRequest`] (status 0, code `invalid_api_key`) without echoing the
    /// key.
    pub fn parse(key: &str) -> Result<Self, PspError> {
        let prefixed = key.starts_with("sk_") || key.starts_with("rk_");
        if !prefixed
            || key.len() < 8
            || key.len() > API_KEY_BYTES_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PspError::refused("invalid_api_key"));
        }
        Ok(Self(key.to_owned()))
    }

    /// Whether this is a test-mode key (`sk_test_…`, `rk_test_…`).
    #[must_use]
    pub fn is_test_mode(&self) -> bool {
        self.0.starts_with("sk_test_") || self.0.starts_with("rk_test_")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Configuration of a [`StripePsp`].
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// The API base, e.g. `https://api.stripe.com` (paths `/v1/…` are appended). Must be
    /// `https`, except for a loopback host (`127.0.0.1`, `[::1]`, `localhost`), where `http`
    /// is allowed for test peers.
    pub base_url: String,
    /// The secret key.
    pub api_key: ApiKey,
    /// Whole-request timeout, seconds (1 to 300; default [`REQUEST_TIMEOUT_SECS`]).
    pub request_timeout_secs: u64,
    /// Connect timeout, seconds (1 to 60; default [`CONNECT_TIMEOUT_SECS`]).
    pub connect_timeout_secs: u64,
    /// Response body limit, bytes (1 KiB to 16 MiB; default [`RESPONSE_BYTES_MAX`]).
    pub response_bytes_max: usize,
    /// Whether the server filters balance transactions by `created[gte]`/`created[lt]`
    /// (Stripe and the sandbox do; localstripe answers 400, so set `false` for it). The
    /// range is always also applied to the results.
    pub server_filters_created: bool,
}

impl StripeConfig {
    /// A configuration with the default limits for `base_url` and `api_key`.
    #[must_use]
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            connect_timeout_secs: CONNECT_TIMEOUT_SECS,
            response_bytes_max: RESPONSE_BYTES_MAX,
            server_filters_created: true,
        }
    }
}

/// The Stripe adapter. Cheap to clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct StripePsp {
    base: Url,
    api_key: ApiKey,
    client: reqwest::Client,
    response_bytes_max: usize,
    server_filters_created: bool,
}

fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl StripePsp {
    /// Builds the adapter.
    ///
    /// # Errors
    /// [`PspError::InvalidRequest`] (status 0) for a base URL that does not parse, is not
    /// `https` (or loopback `http`), carries credentials, a query or a fragment, or limits
    /// out of range; [`PspError::Unexpected`] if the HTTP client cannot be built.
    pub fn new(config: StripeConfig) -> Result<Self, PspError> {
        let mut base =
            Url::parse(&config.base_url).map_err(|_| PspError::refused("invalid_base_url"))?;
        let scheme_ok =
            base.scheme() == "https" || (base.scheme() == "http" && is_loopback_host(&base));
        if !scheme_ok
            || base.cannot_be_a_base()
            || !base.username().is_empty()
            || base.password().is_some()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(PspError::refused("invalid_base_url"));
        }
        if !(1..=300).contains(&config.request_timeout_secs)
            || !(1..=60).contains(&config.connect_timeout_secs)
            || !(1024..=16 * 1024 * 1024).contains(&config.response_bytes_max)
        {
            return Err(PspError::refused("invalid_limits"));
        }
        // `join` treats the last segment as a file unless the path ends in `/`.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| PspError::Unexpected {
                reason: "http client could not be built",
            })?;
        Ok(Self {
            base,
            api_key: config.api_key,
            client,
            response_bytes_max: config.response_bytes_max,
            server_filters_created: config.server_filters_created,
        })
    }

    /// Sends one request and returns the parsed JSON of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        form: Option<&[(&str, String)]>,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Value, PspError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|_| PspError::refused("invalid_path"))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self
            .client
            .request(method, url)
            .header("authorization", format!("Bearer {}", self.api_key.0))
            .header("stripe-version", STRIPE_API_VERSION)
            .header("accept", "application/json");
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key.as_str());
        }
        if let Some(form) = form {
            let body = serde_urlencoded::to_string(form)
                .map_err(|_| PspError::refused("unencodable_form"))?;
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let mut resp = req.send().await.map_err(transport_error)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > self.response_bytes_max {
                return Err(PspError::Unexpected {
                    reason: "response body too large",
                });
            }
            body.extend_from_slice(&chunk);
        }
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if (200..300).contains(&status) {
            return json.ok_or(PspError::Unexpected {
                reason: "response is not json",
            });
        }
        Err(status_error(status, json.as_ref()))
    }
}

/// A transport failure, without the error's text (it can name the URL).
fn transport_error(e: reqwest::Error) -> PspError {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    PspError::Unavailable { reason }
}

/// Keeps `[a-z0-9_]` of a PSP code, at most [`ERROR_CODE_BYTES_MAX`] bytes.
fn clean_code(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .take(ERROR_CODE_BYTES_MAX)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Maps a non-2xx answer to a [`PspError`]; the PSP's free-text message is dropped.
fn status_error(status: u16, json: Option<&Value>) -> PspError {
    let err = json.and_then(|j| j.get("error"));
    let error_type = clean_code(err.and_then(|e| e.get("type")));
    let code = clean_code(err.and_then(|e| e.get("code")));
    let decline_code = clean_code(err.and_then(|e| e.get("decline_code")));
    if status == 402 || error_type.as_deref() == Some("card_error") {
        return PspError::Declined {
            code: decline_code
                .or(code)
                .unwrap_or_else(|| "card_declined".to_owned()),
        };
    }
    match status {
        400 | 404 => PspError::InvalidRequest {
            status,
            error_type: error_type.unwrap_or_else(|| "invalid_request_error".to_owned()),
            code,
        },
        409 => PspError::Unavailable {
            reason: "conflicting concurrent request",
        },
        429 => PspError::Unavailable {
            reason: "rate limited",
        },
        500..=599 => PspError::Unavailable {
            reason: "psp server error",
        },
        401 | 403 => PspError::Unexpected {
            reason: "psp refused the api key",
        },
        _ => PspError::Unexpected {
            reason: "unexpected http status",
        },
    }
}

fn bad_shape() -> PspError {
    PspError::Unexpected {
        reason: "response does not have the documented shape",
    }
}

fn str_field(v: &Value, name: &str) -> Result<String, PspError> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(bad_shape)
}

fn i64_field(v: &Value, name: &str) -> Result<i64, PspError> {
    v.get(name).and_then(Value::as_i64).ok_or_else(bad_shape)
}

fn currency_field(v: &Value) -> Result<Currency, PspError> {
    let c = v
        .get("currency")
        .and_then(Value::as_str)
        .ok_or_else(bad_shape)?;
    Currency::parse(&c.to_ascii_uppercase()).map_err(|_| bad_shape())
}

/// An id field that is either an id string or an expanded object with an `id`.
fn id_or_object(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn parse_payment_intent(v: &Value) -> Result<PaymentIntent, PspError> {
    let id = str_field(v, "id")?;
    check_object_id(&id).map_err(|_| bad_shape())?;
    let next_action = match v.get("next_action") {
        None | Some(Value::Null) => None,
        Some(other) => Some(other.clone()),
    };
    Ok(PaymentIntent {
        id,
        status: PaymentIntentStatus::parse(&str_field(v, "status")?),
        amount_minor: i64_field(v, "amount")?,
        currency: currency_field(v)?,
        next_action,
        latest_charge: id_or_object(v, "latest_charge"),
        client_secret: v
            .get("client_secret")
            .and_then(Value::as_str)
            .map(|s| ClientSecret::new(s.to_owned())),
    })
}

fn parse_refund(v: &Value) -> Result<Refund, PspError> {
    Ok(Refund {
        id: str_field(v, "id")?,
        amount_minor: i64_field(v, "amount")?,
        currency: currency_field(v)?,
        charge: id_or_object(v, "charge"),
        payment_intent: id_or_object(v, "payment_intent"),
        status: str_field(v, "status")?,
    })
}

fn parse_balance_transaction(v: &Value) -> Result<BalanceTransaction, PspError> {
    Ok(BalanceTransaction {
        id: str_field(v, "id")?,
        amount_minor: i64_field(v, "amount")?,
        fee_minor: i64_field(v, "fee")?,
        currency: currency_field(v)?,
        kind: BalanceTransactionKind::parse(&str_field(v, "type")?),
        source: id_or_object(v, "source"),
        created: i64_field(v, "created")?,
    })
}

fn check_amount(amount_minor: i64) -> Result<(), PspError> {
    if !(1..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
        return Err(PspError::refused("amount_out_of_range"));
    }
    Ok(())
}

fn metadata_key(key: &str) -> String {
    format!("metadata[{key}]")
}

impl StripePsp {
    async fn create_payment_intent_impl(
        &self,
        req: &CreatePaymentIntent,
        key: &IdempotencyKey,
    ) -> Result<PaymentIntent, PspError> {
        check_amount(req.amount.minor)?;
        check_reference(&req.payment_id)?;
        let mut form: Vec<(&str, String)> = vec![
            ("amount", req.amount.minor.to_string()),
            (
                "currency",
                req.amount.currency.as_str().to_ascii_lowercase(),
            ),
            ("payment_method", req.payment_method.as_str().to_owned()),
            ("confirm", "true".to_owned()),
        ];
        let tenant_key = metadata_key(METADATA_TENANT);
        let payment_key = metadata_key(METADATA_PAYMENT_ID);
        form.push((&tenant_key, req.tenant.to_string()));
        form.push((&payment_key, req.payment_id.clone()));
        if let Some(customer) = &req.customer {
            check_object_id(customer)?;
            form.push(("customer", customer.clone()));
        }
        let v = self
            .call(
                Method::POST,
                "v1/payment_intents",
                &[],
                Some(&form),
                Some(key),
            )
            .await?;
        parse_payment_intent(&v)
    }

    async fn retrieve_payment_intent_impl(&self, id: &str) -> Result<PaymentIntent, PspError> {
        check_object_id(id)?;
        let v = self
            .call(
                Method::GET,
                &format!("v1/payment_intents/{id}"),
                &[],
                None,
                None,
            )
            .await?;
        parse_payment_intent(&v)
    }

    async fn confirm_payment_intent_impl(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<PaymentIntent, PspError> {
        check_object_id(id)?;
        let v = self
            .call(
                Method::POST,
                &format!("v1/payment_intents/{id}/confirm"),
                &[],
                Some(&[]),
                Some(key),
            )
            .await?;
        parse_payment_intent(&v)
    }

    async fn create_refund_impl(
        &self,
        req: &CreateRefund,
        key: &IdempotencyKey,
    ) -> Result<Refund, PspError> {
        check_amount(req.amount_minor)?;
        check_object_id(&req.payment_intent)?;
        check_reference(&req.refund_id)?;
        let tenant_key = metadata_key(METADATA_TENANT);
        let refund_key = metadata_key(METADATA_REFUND_ID);
        let form: Vec<(&str, String)> = vec![
            ("payment_intent", req.payment_intent.clone()),
            ("amount", req.amount_minor.to_string()),
            (&tenant_key, req.tenant.to_string()),
            (&refund_key, req.refund_id.clone()),
        ];
        let v = self
            .call(Method::POST, "v1/refunds", &[], Some(&form), Some(key))
            .await?;
        parse_refund(&v)
    }

    /// The daily balance report of `date` (`YYYY-MM-DD`, a UTC day) as the built-in sandbox
    /// serves it: `GET /v1/reporting/daily_balance?date=…`, JSON whose amounts are
    /// **major-unit** decimal strings (`"12.34"`), parsed by the reconciler
    /// (`bastion_ledger::reconcile`). Real Stripe serves this data through its asynchronous
    /// Reporting API (report runs, CSV), which this adapter does not fetch.
    ///
    /// # Errors
    /// [`PspError::InvalidRequest`] (status 0) for a `date` that is not ten characters of
    /// digits and `-`; otherwise as [`Psp::list_balance_transactions`].
    pub async fn daily_balance_report(&self, date: &str) -> Result<Value, PspError> {
        let shape_ok = date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if !shape_ok {
            return Err(PspError::refused("invalid_date"));
        }
        self.call(
            Method::GET,
            "v1/reporting/daily_balance",
            &[("date", date.to_owned())],
            None,
            None,
        )
        .await
    }

    /// Pages newest first; stops at the first transaction older than `range.from`.
    async fn list_balance_transactions_impl(
        &self,
        range: TimeRange,
    ) -> Result<Vec<BalanceTransaction>, PspError> {
        if range.to < range.from {
            return Err(PspError::refused("invalid_time_range"));
        }
        let mut out = Vec::new();
        let mut starting_after: Option<String> = None;
        let mut read = 0_usize;
        loop {
            let mut query: Vec<(&str, String)> = vec![("limit", BALANCE_PAGE_SIZE.to_string())];
            if self.server_filters_created {
                query.push(("created[gte]", range.from.to_string()));
                query.push(("created[lt]", range.to.to_string()));
            }
            if let Some(after) = &starting_after {
                query.push(("starting_after", after.clone()));
            }
            let page = self
                .call(Method::GET, "v1/balance_transactions", &query, None, None)
                .await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(bad_shape)?;
            let mut older_than_range = false;
            for item in data {
                read += 1;
                if read > BALANCE_TRANSACTIONS_MAX {
                    return Err(PspError::Unexpected {
                        reason: "more balance transactions than the limit",
                    });
                }
                let txn = parse_balance_transaction(item)?;
                if txn.created < range.from {
                    older_than_range = true;
                } else if txn.created < range.to {
                    out.push(txn);
                }
            }
            let has_more = page
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let last = data
                .last()
                .and_then(|l| l.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            match last {
                Some(last) if has_more && !older_than_range => {
                    check_object_id(&last).map_err(|_| bad_shape())?;
                    starting_after = Some(last);
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

impl Psp for StripePsp {
    fn create_payment_intent<'a>(
        &'a self,
        req: &'a CreatePaymentIntent,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent> {
        Box::pin(self.create_payment_intent_impl(req, idempotency_key))
    }

    fn retrieve_payment_intent<'a>(&'a self, id: &'a str) -> PspFuture<'a, PaymentIntent> {
        Box::pin(self.retrieve_payment_intent_impl(id))
    }

    fn confirm_payment_intent<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, PaymentIntent> {
        Box::pin(self.confirm_payment_intent_impl(id, idempotency_key))
    }

    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        idempotency_key: &'a IdempotencyKey,
    ) -> PspFuture<'a, Refund> {
        Box::pin(self.create_refund_impl(req, idempotency_key))
    }

    fn list_balance_transactions(
        &self,
        range: TimeRange,
    ) -> PspFuture<'_, Vec<BalanceTransaction>> {
        Box::pin(self.list_balance_transactions_impl(range))
    }
}
