//! A provider for any server speaking OpenAI's chat-completions API
//! (`POST {base_url}/chat/completions`, bearer authentication), over reqwest with rustls.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value, json};
use url::{Host, Url};

use crate::error::ProviderError;
use crate::model::{ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, Usage};
use crate::provider::{BoxFuture, ModelProvider};

/// Whole-request timeout (connect, send, model time, receive), in seconds.
pub const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Connect timeout, in seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Largest answer body read, in bytes; a larger one is [`ProviderError::TooLarge`].
pub const RESPONSE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Longest API key accepted, in bytes.
pub const API_KEY_LEN_MAX: usize = 512;
/// Longest model name accepted, in bytes.
const MODEL_LEN_MAX: usize = 128;

/// A provider API key. Deliberately neither `Debug` nor `Display` nor `Clone`-able into
/// text: it leaves this crate only as the value of the `Authorization` header, marked
/// sensitive.
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps `key`: 1 to [`API_KEY_LEN_MAX`] visible ASCII bytes (a valid header token).
    ///
    /// # Errors
    /// [`ProviderError::Config`] otherwise (the message does not hold the key).
    pub fn new(key: impl Into<String>) -> Result<Self, ProviderError> {
        let key = key.into();
        if key.is_empty()
            || key.len() > API_KEY_LEN_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ProviderError::Config {
                reason: "api key must be 1 to 512 visible ascii characters",
            });
        }
        Ok(ApiKey(key))
    }

    fn header(&self) -> Result<HeaderValue, ProviderError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
            ProviderError::Config {
                reason: "api key is not a valid header value",
            }
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// An OpenAI-compatible chat-completions endpoint.
///
/// `base_url` is the API root (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`):
/// `https`, or `http` to a loopback host only (`localhost`, 127.0.0.0/8, `::1`); no
/// userinfo, query or fragment. Redirects are not followed (the key would follow them).
pub struct OpenAiCompatible {
    endpoint: Url,
    model: String,
    api_key: ApiKey,
    region: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.model)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatible {
    /// A provider for `model` at `base_url`, processing data in `region`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] for a URL that is not `https` (or loopback `http`), a
    /// model name that is empty or longer than 128 bytes, an empty region, or an HTTP client
    /// that cannot be built.
    pub fn new(
        base_url: &str,
        model: impl Into<String>,
        api_key: ApiKey,
        region: impl Into<String>,
    ) -> Result<Self, ProviderError> {
        let config = |reason| ProviderError::Config { reason };
        let mut base = Url::parse(base_url).map_err(|_| config("base url does not parse"))?;
        let loopback = match base.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        };
        let scheme_ok = base.scheme() == "https" || (base.scheme() == "http" && loopback);
        if !scheme_ok {
            return Err(config(
                "base url must be https (or http to a loopback host)",
            ));
        }
        if base.cannot_be_a_base()
            || !base.username().is_empty()
            || base.password().is_some()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(config("base url must have no userinfo, query or fragment"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let endpoint = base
            .join("chat/completions")
            .map_err(|_| config("base url does not parse"))?;
        let model = model.into();
        if model.is_empty() || model.len() > MODEL_LEN_MAX {
            return Err(config("model name must be 1 to 128 bytes"));
        }
        let region = region.into();
        if region.trim().is_empty() {
            return Err(config("region must not be empty"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
            .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| config("http client could not be built"))?;
        Ok(OpenAiCompatible {
            endpoint,
            model,
            api_key,
            region,
            client,
        })
    }

    /// The full URL requests go to (`{base_url}/chat/completions`).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    async fn send(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = serde_json::to_vec(&wire_request(&self.model, request)).map_err(|_| {
            ProviderError::Malformed {
                reason: "request could not be encoded",
            }
        })?;
        let mut resp = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.api_key.header()?)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ProviderError::Status {
                status: status.as_u16(),
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > RESPONSE_BYTES_MAX as u64)
        {
            return Err(ProviderError::TooLarge {
                limit: RESPONSE_BYTES_MAX,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(ProviderError::TooLarge {
                    limit: RESPONSE_BYTES_MAX,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| ProviderError::Malformed {
            reason: "answer is not json",
        })?;
        parse_response(&v)
    }
}

impl ModelProvider for OpenAiCompatible {
    fn name(&self) -> String {
        format!("openai-compatible:{}", self.model)
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(self.send(request))
    }
}

/// Maps a reqwest error to a fixed phrase (its text may hold the URL; never the key, but the
/// phrase is all a caller needs).
fn transport_error(e: reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    ProviderError::Transport { kind }
}

/// The chat-completions request body.
fn wire_request(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(wire_message).collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_tokens".into(), json!(request.max_tokens));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

fn wire_message(m: &ChatMessage) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), json!(m.role.as_str()));
    o.insert(
        "content".into(),
        m.content.as_ref().map_or(Value::Null, |c| json!(c)),
    );
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect();
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(o)
}

/// Reads `choices[0].message` and `usage` of a chat completion.
fn parse_response(v: &Value) -> Result<ChatResponse, ProviderError> {
    let malformed = |reason| ProviderError::Malformed { reason };
    let msg = v
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .ok_or(malformed("no choices[0].message"))?;
    let content = match msg.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed("message content is not a string")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls
            .as_array()
            .ok_or(malformed("tool_calls is not an array"))?;
        for c in calls {
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .ok_or(malformed("tool call without id"))?;
            let f = c
                .get("function")
                .ok_or(malformed("tool call without function"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or(malformed("tool call without name"))?;
            // `arguments` is a JSON text; one that does not parse stays a string (and the
            // agent refuses it as not an object).
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                }
                Some(other) => other.clone(),
                None => Value::Object(Map::new()),
            };
            tool_calls.push(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            });
        }
    }
    let usage = v.get("usage").map_or(Usage::default(), |u| Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    });
    Ok(ChatResponse {
        message: ChatMessage {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        usage,
    })
}
