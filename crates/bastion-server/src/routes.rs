//! Routes: health, auth (DESIGN.md's contract), OAuth metadata, JWKS, tools.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bastion_identity::{AuthError, IdentityService, LoginOutcome, TokenPair};
use bastion_tools::{CallContext, Pipeline, ToolError};
use bastion_types::{AuthMethod, Principal};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::http_layers::{JsonBody, cors, problem_for_layer_errors, security_headers};
use crate::problem::{Code, FieldError, Problem};

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Accounts, MFA and tokens.
    pub identity: Arc<IdentityService>,
    /// The tool pipeline of the served app.
    pub pipeline: Pipeline,
    /// The store, for readiness.
    pub store: bastion_store::Store,
    /// HTTP options.
    pub options: Arc<ServerOptions>,
    /// The agent (`/v1/agent/chat`, `/mcp`): provider, limits, budgets. `None`: both answer
    /// 404.
    pub agent: Option<Arc<crate::agent::AgentService>>,
}

/// HTTP-level options.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Served over TLS (adds HSTS).
    pub tls: bool,
    /// Exact CORS origins.
    pub cors_allowed_origins: Vec<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Whole-request time limit, seconds.
    pub request_timeout_secs: u64,
    /// Public base URL (`iss` and metadata), no trailing slash.
    pub issuer: String,
    /// Webhook providers served at `/v1/webhooks/{provider}` (none: every provider is 404).
    pub webhooks: Vec<crate::webhooks::WebhookEndpoint>,
    /// TLS ends at one proxy you run, which appends the client's address to
    /// `X-Forwarded-For`: login throttles key on that address instead of the proxy's.
    pub trusted_proxy: bool,
    /// How many webhook refusals are logged and audited (shared by clones of the options).
    pub webhook_refusals: crate::webhooks::RefusalAudit,
}

/// Builds the router with every transport control applied.
pub fn router(state: AppState) -> Router {
    let opts = Arc::clone(&state.options);
    let tls = opts.tls;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/mfa/totp/enroll", post(totp_enroll))
        .route("/v1/auth/mfa/totp/confirm", post(totp_confirm))
        .route("/v1/auth/mfa/totp", post(totp_verify))
        .route("/v1/auth/mfa/recovery", post(recovery_verify))
        .route("/v1/auth/logout", post(logout))
        .route("/oauth/token", post(oauth_token))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(as_metadata))
        .route("/.well-known/oauth-protected-resource", get(pr_metadata))
        .route("/v1/tools", get(list_tools))
        .route("/v1/tools/{name}", post(call_tool))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
        .route("/v1/webhooks/{provider}", post(crate::webhooks::receive))
        .route("/v1/agent/chat", post(crate::agent::chat))
        .route(
            "/v1/agent/draft_proposal",
            post(crate::draft::draft_proposal),
        )
        .route(
            "/mcp",
            post(crate::mcp::post)
                .get(crate::mcp::get)
                .delete(crate::mcp::get),
        )
        .route(
            "/v1/admin/killswitch",
            get(list_killswitches).post(change_killswitch),
        )
        .fallback(|| async { Problem::of(Code::NotFound) })
        .with_state(state)
        // Layers wrap what is above them: the limits answer first, their bare 413/408 are
        // turned into problem+json, CORS and the security headers apply to everything.
        .layer(RequestBodyLimitLayer::new(opts.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(opts.request_timeout_secs),
        ))
        .layer(middleware::from_fn(problem_for_layer_errors))
        .layer(cors(&opts.cors_allowed_origins))
        .layer(middleware::from_fn(move |req, next| {
            security_headers(tls, req, next)
        }))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.system().await {
        Ok(tx) => {
            let _ = tx.rollback().await;
            Json(json!({"status": "ready"})).into_response()
        }
        Err(_) => Problem::of(Code::Unavailable).into_response(),
    }
}

/// The caller's address. Without a trusted proxy: the TCP peer (any `X-Forwarded-For` is the
/// client's own claim and ignored). With `trusted_proxy` (TLS ends at one proxy you run, which
/// must append the address it saw to `X-Forwarded-For`): the last address of the last
/// `X-Forwarded-For` field, the one that proxy appended (RFC 7239 §5.2 explains why only the
/// hops you trust count); a missing or unparsable header falls back to the peer. Requests that
/// did not come over a socket (in-process tests) count as the unspecified address.
fn client_addr(parts: &Parts, trusted_proxy: bool) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if !trusted_proxy {
        return peer;
    }
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// Client address extractor (see [`client_addr`]).
struct ClientAddr(IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Problem> {
        Ok(Self(client_addr(parts, s.options.trusted_proxy)))
    }
}

/// An authenticated principal from `Authorization: Bearer <access token>` (RFC 6750 §2.1).
pub(crate) struct Authenticated(pub(crate) Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Problem> {
        let unauthorized =
            || Problem::of(Code::Unauthorized).bearer_challenge("Bearer error=\"invalid_token\"");
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = value
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Problem::of(Code::Unauthorized).bearer_challenge("Bearer"))?;
        match s.identity.verify_access_token(token).await {
            // Defence in depth: a token without a second factor in `amr` is never accepted,
            // even one signed by our own key (MFA is mandatory).
            Ok(p)
                if p.amr
                    .iter()
                    .any(|m| matches!(m, AuthMethod::Otp | AuthMethod::Rec)) =>
            {
                Ok(Self(p))
            }
            Ok(_) => Err(unauthorized()),
            Err(AuthError::Unavailable) => Err(Problem::of(Code::Unavailable)),
            Err(_) => Err(unauthorized()),
        }
    }
}

fn auth_problem(e: AuthError) -> Problem {
    match e {
        AuthError::InvalidCredentials => Problem::of(Code::InvalidCredentials),
        AuthError::Throttled { retry_after_secs } => {
            let mut p = Problem::new(
                Code::TooManyRequests,
                "too many attempts; try again later".to_owned(),
            );
            p.retry_after_secs = Some(retry_after_secs);
            p
        }
        AuthError::InvalidCode | AuthError::Expired => Problem::of(Code::InvalidCode),
        AuthError::InvalidToken | AuthError::MfaRequired => {
            Problem::of(Code::Unauthorized).bearer_challenge("Bearer error=\"invalid_token\"")
        }
        AuthError::BadRequest(reason) => Problem::new(Code::BadRequest, reason),
        AuthError::Unavailable => Problem::of(Code::Unavailable),
        _ => Problem::of(Code::Internal),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    tenant: String,
    username: String,
    password: String,
}

async fn login(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    JsonBody(b): JsonBody<LoginBody>,
) -> Response {
    match s
        .identity
        .login(&b.tenant, &b.username, &b.password, addr)
        .await
    {
        Ok(LoginOutcome::MfaRequired { mfa_token, methods }) => {
            Json(json!({"mfa_token": mfa_token, "methods": methods})).into_response()
        }
        Ok(LoginOutcome::EnrollmentRequired { enrollment_token }) => {
            Json(json!({"enrollment_token": enrollment_token, "methods": ["totp"]})).into_response()
        }
        Err(e) => auth_problem(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    enrollment_token: String,
}

async fn totp_enroll(State(s): State<AppState>, JsonBody(b): JsonBody<EnrollBody>) -> Response {
    match s.identity.totp_enroll(&b.enrollment_token).await {
        Ok(e) => {
            Json(json!({"secret": e.secret_base32, "otpauth_uri": e.otpauth_uri})).into_response()
        }
        Err(e) => auth_problem(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    enrollment_token: String,
    code: String,
}

async fn totp_confirm(State(s): State<AppState>, JsonBody(b): JsonBody<ConfirmBody>) -> Response {
    match s.identity.totp_confirm(&b.enrollment_token, &b.code).await {
        Ok(c) => {
            let mut v = token_json(&c.tokens);
            v["recovery_codes"] = json!(c.recovery_codes);
            Json(v).into_response()
        }
        Err(e) => auth_problem(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaBody {
    mfa_token: String,
    code: String,
}

async fn totp_verify(State(s): State<AppState>, JsonBody(b): JsonBody<MfaBody>) -> Response {
    match s.identity.verify_totp(&b.mfa_token, &b.code).await {
        Ok(t) => Json(token_json(&t)).into_response(),
        Err(e) => auth_problem(e).into_response(),
    }
}

async fn recovery_verify(State(s): State<AppState>, JsonBody(b): JsonBody<MfaBody>) -> Response {
    match s.identity.verify_recovery_code(&b.mfa_token, &b.code).await {
        Ok(t) => Json(token_json(&t)).into_response(),
        Err(e) => auth_problem(e).into_response(),
    }
}

/// RFC 6749 §5.1 token response.
fn token_json(t: &TokenPair) -> Value {
    json!({
        "access_token": t.access_token,
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "refresh_token": t.refresh_token,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn logout(
    State(s): State<AppState>,
    Authenticated(p): Authenticated,
    body: axum::body::Bytes,
) -> Response {
    let b: LogoutBody = if body.is_empty() {
        LogoutBody::default()
    } else {
        match crate::http_layers::parse_json(&body) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        }
    };
    // The access token names its refresh family (`sid`): logging out revokes that family,
    // which kills the access token at once too. A refresh token in the body is revoked as well.
    let mut result = s.identity.logout_principal(&p).await;
    if let (Ok(()), Some(rt)) = (&result, b.refresh_token.as_deref()) {
        result = match s.identity.logout(rt).await {
            Err(AuthError::InvalidToken) => Ok(()),
            other => other,
        };
    }
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => auth_problem(e).into_response(),
    }
}

/// RFC 6749 §5.2 error response (the token endpoint keeps OAuth's own error format).
fn oauth_error(status: StatusCode, error: &'static str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    refresh_token: Option<String>,
}

async fn oauth_token(
    State(s): State<AppState>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form_ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_ok {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let Ok(form) = serde_urlencoded_from(&body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    match (form.grant_type.as_str(), form.refresh_token) {
        ("refresh_token", Some(rt)) => match s.identity.refresh(&rt).await {
            Ok(t) => (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(token_json(&t)),
            )
                .into_response(),
            Err(AuthError::Unavailable) => Problem::of(Code::Unavailable).into_response(),
            Err(_) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
        },
        ("refresh_token", None) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

fn serde_urlencoded_from(body: &[u8]) -> Result<TokenForm, ()> {
    serde_urlencoded::from_bytes(body).map_err(|_| ())
}

async fn jwks(State(s): State<AppState>) -> Response {
    match s.identity.jwks() {
        Ok(set) => (
            [
                (header::CACHE_CONTROL, "public, max-age=300"),
                (header::CONTENT_TYPE, "application/jwk-set+json"),
            ],
            Json(set),
        )
            .into_response(),
        Err(_) => Problem::of(Code::Unavailable).into_response(),
    }
}

/// RFC 8414 authorization server metadata.
async fn as_metadata(State(s): State<AppState>) -> Json<Value> {
    let iss = &s.options.issuer;
    Json(json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth/token"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "grant_types_supported": ["refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
    }))
}

/// RFC 9728 protected resource metadata.
async fn pr_metadata(State(s): State<AppState>) -> Json<Value> {
    let iss = &s.options.issuer;
    Json(json!({
        "resource": iss,
        "authorization_servers": [iss],
        "bearer_methods_supported": ["header"],
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
    }))
}

async fn list_tools(State(s): State<AppState>, Authenticated(p): Authenticated) -> Response {
    Json(json!({"tools": s.pipeline.tools_for(&p)})).into_response()
}

/// The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header §2).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header marking a replayed response (`Idempotent-Replayed: true`, as Stripe
/// and the draft's examples do).
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// Reads the `Idempotency-Key` header. The draft defines it as a Structured Field String
/// (RFC 8941 §3.3.3): `"8e03978e-40d5-43e8-bc93-6894a57f9324"`, with `\"` and `\\` escapes
/// inside the quotes. Bastion accepts that form and, leniently, a bare key without quotes
/// (what Stripe's clients send); both give the same key, so `"abc"` and `abc` are one key.
/// `Ok(None)` when absent.
///
/// # Errors
/// A message when the header appears more than once, is not visible ASCII, is an
/// unterminated or badly escaped string, or is empty or longer than 255 characters.
pub fn parse_idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("Idempotency-Key must be sent once");
    }
    let raw = v
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII")?
        .trim_matches(' ');
    let key = if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => out.push(e),
                    _ => return Err("Idempotency-Key: bad escape in the string"),
                },
                '"' => {
                    closed = true;
                    break;
                }
                c => out.push(c),
            }
        }
        if !closed || chars.next().is_some() {
            return Err("Idempotency-Key: unterminated string or trailing characters");
        }
        out
    } else {
        raw.to_owned()
    };
    let ok = !key.is_empty()
        && key.len() <= bastion_store::idempotency::KEY_LEN_MAX
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(Some(key))
    } else {
        Err("Idempotency-Key must be 1 to 255 visible ASCII characters")
    }
}

fn rest_ctx(headers: &http::HeaderMap) -> Result<CallContext, Problem> {
    let key = parse_idempotency_key(headers)
        .map_err(|why| Problem::new(Code::BadRequest, why.to_owned()))?;
    Ok(CallContext {
        request_id: bastion_types::RecordId::new_random().to_string(),
        channel: "rest",
        idempotency_key: key,
    })
}

/// `POST /v1/tools/{name}`: 200 `{result}`; 202 with the approval (and `Location`) when the
/// call is held for a human approval; problems per [`tool_problem`].
async fn call_tool(
    State(s): State<AppState>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: http::HeaderMap,
    Authenticated(p): Authenticated,
    JsonBody(args): JsonBody<Value>,
) -> Response {
    let Ok(Path(name)) = name else {
        return Problem::of(Code::NotFound).into_response();
    };
    let ctx = match rest_ctx(&headers) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    match s.pipeline.call(&p, &name, args, &ctx).await {
        Ok(out) => {
            let mut res = Json(json!({"result": out.result})).into_response();
            if out.replayed {
                res.headers_mut().insert(
                    IDEMPOTENT_REPLAYED_HEADER,
                    http::HeaderValue::from_static("true"),
                );
            }
            res
        }
        Err(ToolError::PendingApproval { approval }) => {
            let location = format!("/v1/approvals/{}", approval.id);
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(s.pipeline.approval_json(&approval)),
            )
                .into_response()
        }
        Err(e) => {
            let replayed = matches!(e, ToolError::PaymentDeclined { replayed: true, .. });
            let mut res = tool_problem(e).into_response();
            if replayed {
                res.headers_mut().insert(
                    IDEMPOTENT_REPLAYED_HEADER,
                    http::HeaderValue::from_static("true"),
                );
            }
            res
        }
    }
}

/// `?limit=&offset=` of `GET /v1/approvals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Page size of `GET /v1/approvals` when none is asked.
pub const APPROVALS_PAGE_DEFAULT: u32 = 20;

/// `GET /v1/approvals`: the caller's own requests and the pending ones it may decide,
/// pending first; `{items: [approval…]}`, at most 100.
async fn list_approvals(
    State(s): State<AppState>,
    Authenticated(p): Authenticated,
    q: Result<axum::extract::Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = q else {
        return Problem::new(
            Code::BadRequest,
            "limit and offset must be integers".to_owned(),
        )
        .into_response();
    };
    let limit = q.limit.unwrap_or(APPROVALS_PAGE_DEFAULT);
    match s.pipeline.approvals(&p, limit, q.offset.unwrap_or(0)).await {
        Ok(list) => {
            let items: Vec<Value> = list.iter().map(|a| s.pipeline.approval_json(a)).collect();
            Json(json!({"items": items})).into_response()
        }
        Err(e) => tool_problem(e).into_response(),
    }
}

fn approval_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Option<uuid::Uuid> {
    id.ok().and_then(|Path(s)| uuid::Uuid::parse_str(&s).ok())
}

/// `GET /v1/approvals/{id}`: 404 unless the caller requested it or may decide it.
async fn get_approval(
    State(s): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Authenticated(p): Authenticated,
) -> Response {
    let Some(id) = approval_id(id) else {
        return Problem::of(Code::NotFound).into_response();
    };
    match s.pipeline.approval(&p, id).await {
        Ok(a) => Json(s.pipeline.approval_json(&a)).into_response(),
        Err(e) => tool_problem(e).into_response(),
    }
}

/// `POST /v1/approvals/{id}/approve`: runs the held call as its requester; 200
/// `{approval, result}`. 401 `mfa-stale`, 403 `self-approval` / `forbidden`, 404, 409
/// `approval-expired` / `approval-decided`, or the execution's own problem.
async fn approve(
    State(s): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Authenticated(p): Authenticated,
) -> Response {
    let Some(id) = approval_id(id) else {
        return Problem::of(Code::NotFound).into_response();
    };
    let ctx = CallContext {
        request_id: bastion_types::RecordId::new_random().to_string(),
        channel: "rest",
        idempotency_key: None,
    };
    match s.pipeline.execute_approval(&p, id, &ctx).await {
        Ok(done) => Json(json!({
            "approval": s.pipeline.approval_json(&done.approval),
            "result": done.output.result,
        }))
        .into_response(),
        Err(e) => tool_problem(e).into_response(),
    }
}

/// `POST /v1/approvals/{id}/reject`: 200 with the rejected approval; problems as approve.
async fn reject(
    State(s): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Authenticated(p): Authenticated,
) -> Response {
    let Some(id) = approval_id(id) else {
        return Problem::of(Code::NotFound).into_response();
    };
    let ctx = CallContext {
        request_id: bastion_types::RecordId::new_random().to_string(),
        channel: "rest",
        idempotency_key: None,
    };
    match s.pipeline.reject_approval(&p, id, &ctx).await {
        Ok(a) => Json(s.pipeline.approval_json(&a)).into_response(),
        Err(e) => tool_problem(e).into_response(),
    }
}

pub(crate) fn tool_problem(e: ToolError) -> Problem {
    let detail = e.to_string();
    match e {
        ToolError::SelfApproval => Problem::new(Code::SelfApproval, detail),
        ToolError::ApprovalForbidden => Problem::new(Code::Forbidden, detail),
        ToolError::MfaStale { .. } => Problem::new(Code::MfaStale, detail)
            .bearer_challenge("Bearer error=\"insufficient_user_authentication\""),
        ToolError::ApprovalExpired => Problem::new(Code::ApprovalExpired, detail),
        ToolError::ApprovalDecided(_) => Problem::new(Code::ApprovalDecided, detail),
        ToolError::UnknownTool(_) | ToolError::NotFound => Problem::new(Code::NotFound, detail),
        ToolError::Forbidden(_) => Problem::new(Code::Forbidden, detail),
        ToolError::InvalidInput(errs) => {
            let mut p = Problem::new(Code::ValidationFailed, detail);
            p.errors = errs
                .into_iter()
                .map(|(pointer, message)| FieldError { pointer, message })
                .collect();
            p
        }
        ToolError::Conflict { .. } => Problem::new(Code::Conflict, detail),
        ToolError::Disabled(_) => Problem::new(Code::ToolDisabled, detail),
        ToolError::Unavailable => Problem::new(Code::Unavailable, detail),
        ToolError::IdempotencyKeyMissing => Problem::new(Code::IdempotencyKeyMissing, detail),
        ToolError::IdempotencyKeyMismatch => Problem::new(Code::IdempotencyKeyMismatch, detail),
        ToolError::IdempotencyKeyInFlight => {
            let mut p = Problem::new(Code::IdempotencyKeyInFlight, detail);
            p.retry_after_secs = Some(1);
            p
        }
        ToolError::PaymentDeclined { .. } => Problem::new(Code::PaymentDeclined, detail),
        ToolError::VelocityExceeded { .. } => Problem::new(Code::PaymentVelocity, detail),
        ToolError::RefundExceedsCapture { .. } => Problem::new(Code::RefundExceedsCapture, detail),
        ToolError::PaymentRejected => Problem::new(Code::PaymentRejected, detail),
        _ => Problem::of(Code::Internal),
    }
}

/// `POST /v1/admin/killswitch` body. The tenant is the caller's (from its token): a `tenant`
/// member is an unknown field (400), so no body can name another tenant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchBody {
    /// `engage` or `release`.
    action: String,
    /// `tenant` (default: the caller's tenant), or `global` — which HTTP refuses (403):
    /// switches over every tenant are for the operator's CLI only.
    #[serde(default)]
    scope: Option<String>,
    /// One tool, or every tool of the tenant when absent.
    #[serde(default)]
    tool: Option<String>,
    /// Why; recorded with the switch and in the audit record.
    reason: String,
}

/// Changes a kill switch of the caller's tenant; the caller must hold the `admin` role.
/// 200 `{scope, tool, engaged, was_engaged}`; 400 bad body; 403 no admin role or a scope
/// beyond the tenant (audited); 404 unknown tool; 422 bad reason; 503 store.
async fn change_killswitch(
    State(s): State<AppState>,
    Authenticated(p): Authenticated,
    JsonBody(b): JsonBody<KillSwitchBody>,
) -> Response {
    use bastion_tools::killswitch::{self as ks, Actor, KillSwitchError, SwitchChange};
    let engage = match b.action.as_str() {
        "engage" => true,
        "release" => false,
        _ => {
            return Problem::new(
                Code::BadRequest,
                "action must be `engage` or `release`".to_owned(),
            )
            .into_response();
        }
    };
    let tenant = match b.scope.as_deref() {
        None | Some("tenant") => Some(p.tenant_id),
        // Every tenant at once: only the operator may; refused (and audited) below.
        Some("global") => None,
        Some(_) => {
            return Problem::new(
                Code::BadRequest,
                "scope must be `tenant` or `global`".to_owned(),
            )
            .into_response();
        }
    };
    if let Some(t) = b.tool.as_deref()
        && !s.pipeline.app().tools.keys().any(|k| k.as_str() == t)
    {
        let shown: String = t.chars().take(64).collect();
        return Problem::new(Code::NotFound, format!("no tool named `{shown}`")).into_response();
    }
    let req = SwitchChange {
        engage,
        tenant,
        tool: b.tool.as_deref(),
        reason: &b.reason,
    };
    match ks::change(&s.store, Actor::User(&p), &req).await {
        Ok(c) => Json(json!({
            "scope": req.scope().as_str(),
            "tool": req.tool,
            "engaged": engage,
            "was_engaged": c.was_engaged,
        }))
        .into_response(),
        Err(KillSwitchError::Forbidden) => Problem::new(
            Code::Forbidden,
            "kill switches need the admin role and cover only your own tenant".to_owned(),
        )
        .into_response(),
        Err(KillSwitchError::Invalid(reason)) => {
            Problem::new(Code::ValidationFailed, reason.to_owned()).into_response()
        }
        Err(_) => Problem::of(Code::Unavailable).into_response(),
    }
}

/// Lists the switches that can affect the caller's tenant (admin role only). Global and
/// tool-wide switches are shown without their reason and author (operator notes).
async fn list_killswitches(State(s): State<AppState>, Authenticated(p): Authenticated) -> Response {
    use bastion_tools::killswitch::{self as ks, KillSwitchError};
    match ks::list_for(&s.store, &p).await {
        Ok(list) => {
            let items: Vec<Value> = list
                .iter()
                .map(|k| {
                    let own = k.tenant_id.is_some();
                    json!({
                        "scope": k.scope.as_str(),
                        "tool": k.tool,
                        "engaged": k.engaged,
                        "changed_at": k.changed_at,
                        "reason": own.then_some(&k.reason),
                        "changed_by": own.then_some(&k.changed_by),
                    })
                })
                .collect();
            Json(json!({"items": items})).into_response()
        }
        Err(KillSwitchError::Forbidden) => Problem::of(Code::Forbidden).into_response(),
        Err(_) => Problem::of(Code::Unavailable).into_response(),
    }
}
