//! The sandbox's HTTP surface: authentication, form parsing, idempotency, routing.
#![expect(
    clippy::result_large_err,
    reason = "errors are rare, local and answered at once; boxing buys nothing here"
)]

use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::state::{ApiError, Ctx, IdemLookup, Params, State as Sandbox};
use crate::{
    BODY_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX, IDEMPOTENCY_TTL_SECS, PARAMS_MAX, Shared, webhooks,
};

type S = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/payment_intents/{id}/confirm", post(confirm_intent))
        .route("/v1/payment_intents/{id}/_authenticate", post(authenticate))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/balance_transactions", get(list_txns))
        .route("/v1/reporting/daily_balance", get(daily_report))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(shared)
}

fn reply(status: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body.clone())).into_response()
}

fn error(e: &ApiError) -> Response {
    reply(e.status, &e.body())
}

async fn not_found() -> Response {
    error(&ApiError::invalid("resource_missing", None, "unrecognized request url").status(404))
}

/// `Authorization: Bearer <key>`, compared in constant time with the configured key.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bastion_crypto::ct_eq(presented.as_bytes(), shared.config.api_key.as_bytes()) {
        return Ok(());
    }
    let mut e = ApiError::invalid("api_key_invalid", None, "invalid api key provided").status(401);
    e.code = None;
    Err(error(&e))
}

fn parse_pairs(
    pairs: Result<Vec<(String, String)>, serde_urlencoded::de::Error>,
) -> Result<Params, Response> {
    let pairs = pairs.map_err(|_| {
        error(&ApiError::invalid(
            "parameter_invalid",
            None,
            "body must be application/x-www-form-urlencoded",
        ))
    })?;
    if pairs.len() > PARAMS_MAX {
        return Err(error(&ApiError::invalid(
            "parameter_invalid",
            None,
            "too many parameters",
        )));
    }
    Params::new(pairs).map_err(|e| error(&e))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_owned()))
        }
        _ => Err(error(&ApiError::invalid(
            "idempotency_key_invalid",
            None,
            "idempotency keys are 1 to 255 visible ascii characters",
        ))),
    }
}

/// Runs one POST operation under the state lock, with Stripe's idempotency semantics.
fn post_op(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    op: impl FnOnce(&mut Sandbox, &Ctx, Params) -> Result<Value, ApiError>,
) -> Response {
    if let Err(r) = authorize(shared, headers) {
        return r;
    }
    let params = match parse_pairs(serde_urlencoded::from_bytes(body)) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let key = match idempotency_key(headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let now = shared.config.clock.now();
    let fingerprint = format!("POST {route}?{}", params.canonical());
    let ctx = Ctx {
        now,
        fees: shared.config.fees,
        idempotency_key: key.clone(),
    };
    let (status, value, events, replayed) = {
        let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = match &key {
            None => None,
            Some(k) => match st.idem_lookup(k, &fingerprint, now) {
                IdemLookup::Replay(status, body) => Some((status, body)),
                IdemLookup::Mismatch => {
                    let mut e = ApiError::invalid(
                        "idempotency_key_in_use",
                        None,
                        "keys for idempotent requests can only be used with the same parameters they were first used with",
                    );
                    e.error_type = "idempotency_error";
                    return error(&e);
                }
                IdemLookup::New => {
                    if !st.idem_has_room(k, now) {
                        return error(
                            &ApiError::invalid("sandbox_full", None, "too many idempotency keys")
                                .status(503),
                        );
                    }
                    None
                }
            },
        };
        if let Some((status, body)) = cached {
            (status, body, Vec::new(), true)
        } else {
            let (status, value) = match op(&mut st, &ctx, params) {
                Ok(v) => (200, v),
                Err(e) => (e.status, e.body()),
            };
            // A full sandbox is a passing condition: a retry must be able to succeed.
            if let Some(k) = key.filter(|_| status != 503) {
                st.idem_store(
                    k,
                    fingerprint,
                    status,
                    value.clone(),
                    now + IDEMPOTENCY_TTL_SECS,
                    now,
                );
            }
            (status, value, std::mem::take(&mut st.events), false)
        }
    };
    webhooks::dispatch(shared, events);
    let mut resp = reply(status, &value);
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Runs one read-only GET operation.
fn get_op(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<String>,
    op: impl FnOnce(&Sandbox, Params) -> Result<Value, ApiError>,
) -> Response {
    if let Err(r) = authorize(shared, headers) {
        return r;
    }
    let params = match parse_pairs(serde_urlencoded::from_str(query.as_deref().unwrap_or(""))) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    match op(&st, params) {
        Ok(v) => reply(200, &v),
        Err(e) => error(&e),
    }
}

async fn create_intent(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let res = post_op(&s, &headers, "/v1/payment_intents", &body, |st, ctx, p| {
        st.create_intent(ctx, p)
    });
    // Test knob: the intent is recorded, the answer is late (case P4).
    if s.config.create_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(s.config.create_delay_ms)).await;
    }
    res
}

async fn get_intent(
    State(s): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    get_op(&s, &headers, q, |st, p| st.get_intent(&id, p))
}

async fn confirm_intent(
    State(s): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = format!("/v1/payment_intents/{id}/confirm");
    post_op(&s, &headers, &route, &body, |st, ctx, p| {
        st.confirm_intent(ctx, &id, p)
    })
}

async fn authenticate(
    State(s): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = format!("/v1/payment_intents/{id}/_authenticate");
    post_op(&s, &headers, &route, &body, |st, ctx, p| {
        st.authenticate(ctx, &id, p)
    })
}

async fn create_refund(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    post_op(&s, &headers, "/v1/refunds", &body, |st, ctx, p| {
        st.create_refund(ctx, p)
    })
}

async fn list_txns(State(s): S, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    get_op(&s, &headers, q, |st, p| st.list_txns(p))
}

async fn daily_report(State(s): S, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    get_op(&s, &headers, q, |st, p| st.daily_report(p))
}
