//! Transport controls applied to every route: security headers, exact-allowlist CORS, body
//! size and time limits, and a JSON body extractor with a nesting limit.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method, header};
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::problem::{Code, Problem};

/// Deepest JSON nesting accepted in a request body (objects and arrays).
pub const JSON_DEPTH_MAX: usize = 32;

/// Adds the security headers of every response (OWASP secure headers): CSP, nosniff,
/// no referrer, no framing, and HSTS (RFC 6797) when served over TLS. Removes `Server`.
pub async fn security_headers(tls: bool, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    h.remove(header::SERVER);
    res
}

/// CORS from an exact allowlist (Fetch standard §3.2). Origins not on the list get no
/// `Access-Control-Allow-Origin` at all; credentials (cookies) are never allowed since
/// Bastion authenticates with bearer tokens.
pub fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            http::HeaderName::from_static("idempotency-key"),
        ])
        .allow_credentials(false)
        .max_age(Duration::from_secs(600))
}

/// Maps a `408`/`413` produced by tower layers into problem+json.
pub async fn problem_for_layer_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return res;
    }
    use axum::response::IntoResponse;
    match res.status() {
        http::StatusCode::PAYLOAD_TOO_LARGE => Problem::of(Code::PayloadTooLarge).into_response(),
        http::StatusCode::REQUEST_TIMEOUT => Problem::of(Code::Timeout).into_response(),
        http::StatusCode::METHOD_NOT_ALLOWED => Problem::of(Code::MethodNotAllowed).into_response(),
        http::StatusCode::NOT_FOUND if res.headers().get(header::CONTENT_TYPE).is_none() => {
            Problem::of(Code::NotFound).into_response()
        }
        _ => res,
    }
}

/// Nesting depth of a JSON text, counting `{` and `[` outside strings. Stops early once
/// `max` is exceeded, so a hostile body costs at most one pass.
#[must_use]
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A JSON request body: `Content-Type: application/json`, within the body limit, at most
/// [`JSON_DEPTH_MAX`] deep. Rejections are problem+json (400, 413, 415).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Problem::new(
                Code::UnsupportedMediaType,
                "send Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::of(Code::PayloadTooLarge)
            } else {
                Problem::new(
                    Code::BadRequest,
                    "the request body could not be read".to_owned(),
                )
            }
        })?;
        Ok(Self(parse_json(&bytes)?))
    }
}

/// Parses a JSON body with the depth limit; errors name the line and column, never echo input.
///
/// # Errors
/// A 400 problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if json_depth_exceeds(bytes, JSON_DEPTH_MAX) {
        return Err(Problem::new(
            Code::BadRequest,
            format!("JSON nested deeper than {JSON_DEPTH_MAX} levels"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "does not have the expected fields or types",
            _ => "is not valid JSON",
        };
        Problem::new(
            Code::BadRequest,
            format!(
                "the request body {what} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counter_ignores_brackets_in_strings() {
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[[[["}"#, 2));
        assert!(json_depth_exceeds(&b"[".repeat(33), 32));
        assert!(!json_depth_exceeds(br#"{"a":{"b":[1,2,{"c":"\"{"}]}}"#, 4));
        assert!(json_depth_exceeds(br#"{"a":{"b":[1,2,{"c":"\"{"}]}}"#, 3));
    }
}
