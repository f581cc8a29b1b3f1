//! `/mcp`: the Model Context Protocol over Streamable HTTP (MCP specification 2025-06-18,
//! "Transports"; 2025-03-26 accepted), JSON-RPC 2.0 messages in `POST` bodies, answered with
//! `application/json` (no SSE stream, no session: every request stands alone and carries
//! its bearer token).
//!
//! Methods: `initialize`, `ping`, `tools/list` (the tools the principal may call, with
//! `inputSchema`), `tools/call` (through the same pipeline as REST, as the principal,
//! channel `mcp`; refusals are `isError` results, an unknown tool is JSON-RPC error
//! -32602). Notifications and responses sent by the client get 202 with no body. `GET` and
//! `DELETE` answer 405 (no server-initiated stream, no sessions).
//!
//! Like the agent, an MCP client is a model host: results have every `pii`, `pci` and
//! `secret` field withheld ([`crate::agent::WITHHELD`]). Batches (removed from MCP in
//! 2025-06-18) are refused; the body is capped at [`MCP_BODY_BYTES_MAX`]; an `Origin`
//! header must be one of the configured CORS origins (the specification's DNS-rebinding
//! rule); a `MCP-Protocol-Version` header must name a supported version (400 otherwise;
//! absent means 2025-03-26).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bastion_tools::CallContext;
use bastion_types::RecordId;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::agent::{exec_error, withhold_sensitive};
use crate::problem::{Code, Problem};
use crate::routes::{AppState, Authenticated};

/// Largest `/mcp` request body, bytes.
pub const MCP_BODY_BYTES_MAX: usize = 256 * 1024;
/// Protocol versions served, newest first.
pub const PROTOCOL_VERSIONS: [&str; 2] = ["2025-06-18", "2025-03-26"];
/// The version assumed when a request carries no `MCP-Protocol-Version` header.
pub const PROTOCOL_VERSION_DEFAULT: &str = "2025-03-26";
/// Longest JSON-RPC `method` accepted, bytes.
const METHOD_LEN_MAX: usize = 128;
/// Longest string `id` accepted, bytes.
const ID_LEN_MAX: usize = 256;

/// JSON-RPC 2.0 error codes (§5.1).
const PARSE_ERROR: i64 = -32_700;
const INVALID_REQUEST: i64 = -32_600;
const METHOD_NOT_FOUND: i64 = -32_601;
const INVALID_PARAMS: i64 = -32_602;

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn json_response(status: StatusCode, v: &Value, version: &str) -> Response {
    let mut r = (status, axum::Json(v)).into_response();
    if let Ok(h) = http::HeaderValue::from_str(version) {
        r.headers_mut().insert("mcp-protocol-version", h);
    }
    r
}

/// `GET`/`DELETE /mcp`: 405 (no SSE stream is offered, no session exists).
pub(crate) async fn get() -> Response {
    let mut r = Problem::of(Code::MethodNotAllowed).into_response();
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
    r
}

/// `POST /mcp`: one JSON-RPC request, notification or response.
pub(crate) async fn post(
    State(s): State<AppState>,
    headers: HeaderMap,
    Authenticated(p): Authenticated,
    body: Bytes,
) -> Response {
    // Transport checks first: origin, version header, media type, size.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| s.options.cors_allowed_origins.iter().any(|a| a == o));
        if !ok {
            return Problem::new(Code::Forbidden, "origin not allowed".to_owned()).into_response();
        }
    }
    let version = match headers.get("mcp-protocol-version").map(|v| v.to_str()) {
        None => PROTOCOL_VERSION_DEFAULT,
        Some(Ok(v)) => match PROTOCOL_VERSIONS.iter().find(|s| **s == v) {
            Some(v) => v,
            None => {
                return Problem::new(
                    Code::BadRequest,
                    "unsupported MCP-Protocol-Version".to_owned(),
                )
                .into_response();
            }
        },
        Some(Err(_)) => {
            return Problem::new(Code::BadRequest, "bad MCP-Protocol-Version".to_owned())
                .into_response();
        }
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Problem::of(Code::UnsupportedMediaType).into_response();
    }
    if body.len() > MCP_BODY_BYTES_MAX {
        return Problem::of(Code::PayloadTooLarge).into_response();
    }
    if crate::http_layers::json_depth_exceeds(&body, crate::http_layers::JSON_DEPTH_MAX) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, PARSE_ERROR, "json nested too deeply"),
            version,
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, PARSE_ERROR, "parse error"),
            version,
        );
    };
    if msg.is_array() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, INVALID_REQUEST, "batches are not supported"),
            version,
        );
    }
    let Some(obj) = msg.as_object() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, INVALID_REQUEST, "not a json-rpc message"),
            version,
        );
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, INVALID_REQUEST, "jsonrpc must be \"2.0\""),
            version,
        );
    }
    let id = obj.get("id").cloned();
    let method = obj.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        // A notification (method, no id) or a response (no method): accepted, no body.
        if obj.get("method").is_some_and(|m| !m.is_string()) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(&Value::Null, INVALID_REQUEST, "method must be a string"),
                version,
            );
        }
        return StatusCode::ACCEPTED.into_response();
    };
    let id_ok = match &id {
        Value::String(s) => s.len() <= ID_LEN_MAX,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !id_ok || method.len() > METHOD_LEN_MAX {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, INVALID_REQUEST, "invalid id or method"),
            version,
        );
    }
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let reply = match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let chosen = asked
                .and_then(|a| PROTOCOL_VERSIONS.iter().find(|v| **v == a))
                .copied()
                .unwrap_or(PROTOCOL_VERSIONS[0]);
            rpc_result(
                &id,
                json!({
                    "protocolVersion": chosen,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "bastion", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Tools run as the signed-in user through Bastion's pipeline; \
                        every call is authorized and audited. Fields tagged pii, pci or secret are withheld.",
                }),
            )
        }
        "ping" => rpc_result(&id, json!({})),
        "tools/list" => {
            let tools: Vec<Value> = s
                .pipeline
                .tools_for(&p)
                .into_iter()
                .map(|t| {
                    let mut v = json!({
                        "name": t.name,
                        "description": t.description,
                        "inputSchema": t.input_schema,
                        "annotations": {
                            "readOnlyHint": t.name.starts_with("get_") || t.name.starts_with("list_"),
                            "destructiveHint": t.risk == "high",
                        },
                    });
                    if version == PROTOCOL_VERSIONS[0] {
                        v["outputSchema"] = t.output_schema;
                    }
                    v
                })
                .collect();
            rpc_result(&id, json!({"tools": tools}))
        }
        "tools/call" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return json_response(
                    StatusCode::OK,
                    &rpc_error(&id, INVALID_PARAMS, "params.name must be a string"),
                    version,
                );
            };
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            if !s.pipeline.app().tools.keys().any(|k| k.as_str() == name) {
                return json_response(
                    StatusCode::OK,
                    &rpc_error(&id, INVALID_PARAMS, "unknown tool"),
                    version,
                );
            }
            if let Some(svc) = &s.agent
                && let Err(r) = svc.governor().check_tool_call(p.tenant_id, p.user_id)
            {
                let mut prob = Problem::new(
                    Code::TooManyRequests,
                    "too many tool calls; try again later".to_owned(),
                );
                prob.retry_after_secs = Some(r.0);
                return prob.into_response();
            }
            // Money-moving tools need the request's Idempotency-Key, as over REST.
            let idempotency_key = match crate::routes::parse_idempotency_key(&headers) {
                Ok(k) => k,
                Err(why) => return Problem::new(Code::BadRequest, why.to_owned()).into_response(),
            };
            let ctx = CallContext {
                request_id: RecordId::new_random().to_string(),
                channel: "mcp",
                idempotency_key,
            };
            match s.pipeline.call(&p, name, args, &ctx).await {
                Ok(out) => {
                    let result = withhold_sensitive(&s.pipeline, name, out.result);
                    rpc_result(
                        &id,
                        json!({
                            "content": [{"type": "text", "text": result.to_string()}],
                            "structuredContent": result,
                            "isError": false,
                        }),
                    )
                }
                Err(e) => {
                    let text = exec_error(e).to_string();
                    rpc_result(
                        &id,
                        json!({"content": [{"type": "text", "text": text}], "isError": true}),
                    )
                }
            }
        }
        _ => rpc_error(&id, METHOD_NOT_FOUND, "method not found"),
    };
    json_response(StatusCode::OK, &reply, version)
}
