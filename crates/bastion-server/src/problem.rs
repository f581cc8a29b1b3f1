//! RFC 9457 problem details: every error Bastion answers is `application/problem+json` with a
//! stable `type`, the right status and no internals.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// The media type of RFC 9457 §3 problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document (RFC 9457 §3.1) plus Bastion's extension members.
///
/// Serialized as `{type, title, status, detail?, errors?}` where `type` is the stable URN
/// `urn:bastion:problem:<code>`; clients switch on it, never on `detail`, which is for people.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The stable code, giving `type`, `title` and `status`.
    pub code: Code,
    /// Human-readable explanation of this occurrence; never holds secrets or internals.
    pub detail: Option<String>,
    /// For validation problems: `[{pointer, message}]` (JSON Pointer, RFC 6901).
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying (sent as `Retry-After`, RFC 9110 §10.2.3).
    pub retry_after_secs: Option<u64>,
    /// A `WWW-Authenticate` challenge (RFC 6750 §3).
    pub www_authenticate: Option<&'static str>,
}

/// One invalid input location.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) into the request body.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// The stable problem codes. Adding one is an API change; renaming one breaks clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400: the body is not what the route takes.
    BadRequest,
    /// 401: no valid credentials.
    Unauthorized,
    /// 401: the credentials were refused (same answer for every cause, no enumeration).
    InvalidCredentials,
    /// 401: an MFA or enrollment code was wrong, used or expired.
    InvalidCode,
    /// 403: authenticated, but policy denies.
    Forbidden,
    /// 404: no such route, tool or record (or not visible to the caller).
    NotFound,
    /// 405: method not allowed.
    MethodNotAllowed,
    /// 409: version conflict.
    Conflict,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 415: not JSON.
    UnsupportedMediaType,
    /// 422: schema validation failed.
    ValidationFailed,
    /// 429: throttled.
    TooManyRequests,
    /// 500: something failed inside; details only in the server log.
    Internal,
    /// 503: a dependency (the store, the audit sink) is unavailable; the call had no effect.
    Unavailable,
    /// 408: the request took too long.
    Timeout,
    /// 401: a webhook whose signature, signature header or timestamp did not verify.
    WebhookSignature,
    /// 503: a kill switch covering the tool is engaged (case A6); nothing was executed.
    ///
    /// 503 rather than 423 Locked: 423 (RFC 4918 §11.3) means a WebDAV lock on the target
    /// resource, which a client can discover and release itself; a kill switch is the
    /// service deliberately declining to run a tool, "temporarily unable to handle the
    /// request" in RFC 9110 §15.6.4's words, until an operator releases it. The distinct
    /// `type` (`urn:bastion:problem:tool-disabled`) tells clients it is not an outage, and no
    /// `Retry-After` is sent because nobody knows when the switch will be released.
    ToolDisabled,
    /// 401: the caller's last second factor is older than the action allows (approving a
    /// held call): sign in again with the second factor, then retry. Sent with
    /// `WWW-Authenticate: Bearer error="insufficient_user_authentication"` (RFC 9470 §3).
    MfaStale,
    /// 403: the caller tried to decide an approval they requested themselves.
    SelfApproval,
    /// 409: the approval expired before it was decided; it can no longer be approved.
    ApprovalExpired,
    /// 409: the approval was already decided (approved, rejected, executed or failed).
    ApprovalDecided,
    /// 400: a money-moving tool was called without an `Idempotency-Key` header
    /// (draft-ietf-httpapi-idempotency-key-header §2.7).
    IdempotencyKeyMissing,
    /// 422: the `Idempotency-Key` was used before with another request (§2.7).
    IdempotencyKeyMismatch,
    /// 409: the first request with this `Idempotency-Key` is still running (§2.7); retry.
    IdempotencyKeyInFlight,
    /// 402: the PSP declined the payment; nothing was charged.
    PaymentDeclined,
    /// 429: a payment velocity limit of the app refused the charge; nothing was charged.
    PaymentVelocity,
    /// 422: the refund would exceed what was captured; nothing changed (case P5).
    RefundExceedsCapture,
    /// 422: the PSP refused the request (not a decline); nothing was charged or refunded.
    PaymentRejected,
    /// 403: the configured model provider processes data outside the tenant's region (geo
    /// pinning); nothing was sent to it.
    RegionMismatch,
    /// 502: the model provider failed or answered something unusable; no reply.
    ModelUnavailable,
}

impl Code {
    /// The `(status, slug, title)` triple of the code.
    #[must_use]
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            Self::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            ),
            Self::InvalidCode => (
                StatusCode::UNAUTHORIZED,
                "invalid-code",
                "Invalid or expired code",
            ),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::Conflict => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::ValidationFailed => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Validation failed",
            ),
            Self::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout", "Request timeout"),
            Self::WebhookSignature => (
                StatusCode::UNAUTHORIZED,
                "webhook-signature",
                "Webhook signature not verified",
            ),
            Self::ToolDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tool-disabled",
                "Tool disabled",
            ),
            Self::MfaStale => (
                StatusCode::UNAUTHORIZED,
                "mfa-stale",
                "Recent second factor required",
            ),
            Self::SelfApproval => (
                StatusCode::FORBIDDEN,
                "self-approval",
                "Cannot decide your own request",
            ),
            Self::ApprovalExpired => (StatusCode::CONFLICT, "approval-expired", "Approval expired"),
            Self::ApprovalDecided => (
                StatusCode::CONFLICT,
                "approval-decided",
                "Approval already decided",
            ),
            Self::IdempotencyKeyMissing => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key required",
            ),
            Self::IdempotencyKeyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-mismatch",
                "Idempotency-Key reused with another request",
            ),
            Self::IdempotencyKeyInFlight => (
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "Request with this Idempotency-Key in progress",
            ),
            Self::PaymentDeclined => (
                StatusCode::PAYMENT_REQUIRED,
                "payment-declined",
                "Payment declined",
            ),
            Self::PaymentVelocity => (
                StatusCode::TOO_MANY_REQUESTS,
                "payment-velocity",
                "Payment velocity limit reached",
            ),
            Self::RefundExceedsCapture => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund-exceeds-capture",
                "Refund exceeds the captured amount",
            ),
            Self::PaymentRejected => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "payment-rejected",
                "Payment provider refused the request",
            ),
            Self::RegionMismatch => (
                StatusCode::FORBIDDEN,
                "region-mismatch",
                "Model provider outside the tenant's region",
            ),
            Self::ModelUnavailable => (
                StatusCode::BAD_GATEWAY,
                "model-unavailable",
                "Model provider unavailable",
            ),
        }
    }
}

impl Problem {
    /// A problem of `code` with an optional detail.
    #[must_use]
    pub fn new(code: Code, detail: impl Into<Option<String>>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
            www_authenticate: None,
        }
    }

    /// The problem `type` URI.
    #[must_use]
    pub fn type_uri(&self) -> String {
        format!("urn:bastion:problem:{}", self.code.parts().1)
    }

    /// The JSON document.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let (status, _, title) = self.code.parts();
        let mut v =
            serde_json::json!({"type": self.type_uri(), "title": title, "status": status.as_u16()});
        if let Some(d) = &self.detail {
            v["detail"] = serde_json::Value::String(d.clone());
        }
        if !self.errors.is_empty() {
            v["errors"] = serde_json::to_value(&self.errors).unwrap_or_default();
        }
        v
    }

    /// Shorthand without a detail.
    #[must_use]
    pub fn of(code: Code) -> Self {
        Self::new(code, None)
    }

    /// Adds the `WWW-Authenticate: Bearer` challenge (RFC 6750 §3).
    #[must_use]
    pub fn bearer_challenge(mut self, value: &'static str) -> Self {
        self.www_authenticate = Some(value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.code.parts().0;
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self
            .retry_after_secs
            .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if let Some(v) = self.www_authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        res
    }
}
