//! `cargo bench -p bastion-bench --bench agent`: the pipeline overhead of a masked agent tool
//! call against the same tool call over REST.
//!
//! One `get_quote` of a quote holding a `pii` field and an e-mail address in its note, as the
//! same buyer, on the real stack over a SQLite file, in-process through the router (no
//! socket):
//!
//! 1. `Pipeline::call` alone (the floor both doors share);
//! 2. REST: `POST /v1/tools/get_quote`;
//! 3. `Agent::chat` with the pipeline executor, no HTTP: masking of the prompt, the tool
//!    result's pii fields withheld, the rest masked and spotlighted, two model turns of an
//!    in-process scripted model (no model time), restore, URL neutralization, DLP;
//! 4. the whole door: `POST /v1/agent/chat` (adds rate limits, the token budget read and
//!    write, the tenant's region, the `agent.chat` audit record).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Body;
use bastion_agent::{
    Agent, BoxFuture, ChatInput, ChatMessage, ChatRequest, ChatResponse, Limits, ModelProvider,
    ProviderError, Role, ToolCall, Usage,
};
use bastion_guard::{MaskMode, Masker, UrlAllowlist};
use bastion_server::agent::{AgentService, AgentSettings, PipelineExecutor, restore_allowed};
use bastion_server::limits::AgentQuotas;
use bastion_tools::CallContext;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::setup::Fixture;
use crate::stats::{Samples, fmt_ns, now};
use crate::{BenchError, Ctx};

/// A model that calls `get_quote` on the id it is given, then answers: no model time, so
/// what is measured is Bastion's own work.
struct OneCall {
    id: String,
}

impl ModelProvider for OneCall {
    fn name(&self) -> String {
        "bench-scripted".to_owned()
    }
    fn region(&self) -> &str {
        bastion_agent::LOCAL_REGION
    }
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let last_is_tool = request
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Tool);
        let message = if last_is_tool {
            ChatMessage::assistant("Here is the quote.")
        } else {
            ChatMessage::assistant_calls(vec![ToolCall {
                id: "call_1".to_owned(),
                name: "get_quote".to_owned(),
                arguments: json!({"id": self.id}),
            }])
        };
        Box::pin(async move {
            Ok(ChatResponse {
                message,
                usage: Usage {
                    prompt_tokens: 100,
                    completion_tokens: 10,
                },
            })
        })
    }
}

async fn oneshot(
    router: &axum::Router,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<Value, BenchError> {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .ctx("request")?;
    let res = router.clone().oneshot(req).await.ctx("router")?;
    let status = res.status();
    let bytes = res.into_body().collect().await.ctx("body")?.to_bytes();
    if status != StatusCode::OK {
        return Err(BenchError(format!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).ctx("json")
}

/// Runs the four variants `n` times each and renders Markdown.
///
/// # Errors
/// The first failing step.
pub async fn run(n: usize) -> Result<String, BenchError> {
    let fx = Fixture::new().await?;
    let buyer = fx.add_user("acme", "buyer", "buyer").await?;
    let seller = fx.add_user("acme", "seller", "seller").await?;
    let (pair, principal) = fx.principal(&buyer).await?;
    let ctx = CallContext {
        request_id: "bench".to_owned(),
        channel: "rest",
        idempotency_key: None,
    };
    let quote = fx
        .pipeline
        .call(
            &principal,
            "create_quote",
            json!({"title": "Office chairs", "seller": seller.user_id.to_string(),
                   "line_items": [{"description": "chair", "quantity": 12, "unit_price_minor": 18_900}],
                   "amount_minor": 226_800, "currency": "EUR",
                   "contact_email": "procurement@example.com",
                   "note": "Questions to facilities@example.com, +33 4 72 00 00 00."}),
            &ctx,
        )
        .await
        .ctx("create quote")?;
    let id = quote.result["id"].as_str().ctx("quote id")?.to_owned();
    let provider: Arc<dyn ModelProvider> = Arc::new(OneCall { id: id.clone() });
    let quotas = AgentQuotas {
        chats_per_minute_tenant: 1_000_000,
        chats_per_minute_user: 1_000_000,
        tool_calls_per_minute_tenant: 1_000_000,
        tool_calls_per_minute_user: 1_000_000,
        tenant_daily_tokens: u64::MAX / 4,
        spike_factor: 1_000_000,
        spike_min_per_minute: 1_000_000,
    };
    let mut state = fx.state.clone();
    state.agent = Some(Arc::new(AgentService::new(
        AgentSettings {
            provider: Arc::clone(&provider),
            offline: false,
            limits: Limits::default(),
            url_allowlist: UrlAllowlist::none(),
            quotas,
            default_region: "eu".to_owned(),
        },
        Arc::clone(&fx.clock),
    )));
    let router = bastion_server::router(state);
    let token = pair.access_token.clone();
    let args = json!({"id": id});
    let chat_body = json!({"messages": [{"role": "user",
        "content": "Show me the quote, my card is 4111 1111 1111 1111"}]});
    let agent = Agent::new(provider, Limits::default(), UrlAllowlist::none());
    let tools = bastion_server::agent::tool_defs(&fx.pipeline, &principal);

    // Warm-up and a check that the agent really ran the call.
    let v = oneshot(&router, "/v1/agent/chat", &token, &chat_body).await?;
    if v["tool_calls"][0]["outcome"] != "executed" {
        return Err(BenchError(format!("agent call not executed: {v}")));
    }
    for _ in 0..(n / 20).max(5) {
        oneshot(&router, "/v1/tools/get_quote", &token, &args).await?;
    }

    let mut pipe = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        fx.pipeline
            .call(&principal, "get_quote", args.clone(), &ctx)
            .await
            .ctx("pipeline get_quote")?;
        pipe.push(t.elapsed());
    }
    pipe.wall = start.elapsed();

    let mut rest = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        oneshot(&router, "/v1/tools/get_quote", &token, &args).await?;
        rest.push(t.elapsed());
    }
    rest.wall = start.elapsed();

    let mut inproc = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        let executor = PipelineExecutor {
            pipeline: &fx.pipeline,
            principal: &principal,
            ctx: CallContext {
                request_id: "bench".to_owned(),
                channel: "agent",
                idempotency_key: None,
            },
            governor: None,
        };
        let mut masker = Masker::new(MaskMode::Counter).ctx("masker")?;
        let out = agent
            .chat(ChatInput {
                messages: vec![ChatMessage::user(
                    "Show me the quote, my card is 4111 1111 1111 1111",
                )],
                tools: tools.clone(),
                executor: &executor,
                masker: &mut masker,
                restore_allowed: &restore_allowed,
                tenant_region: "eu",
            })
            .await
            .ctx("agent chat")?;
        if !matches!(
            out.tool_calls.first().map(|c| &c.outcome),
            Some(bastion_agent::ToolOutcome::Executed { .. })
        ) {
            return Err(BenchError(format!(
                "agent call not executed: {:?}",
                out.tool_calls
            )));
        }
        inproc.push(t.elapsed());
    }
    inproc.wall = start.elapsed();

    let mut door = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        oneshot(&router, "/v1/agent/chat", &token, &chat_body).await?;
        door.push(t.elapsed());
    }
    door.wall = start.elapsed();

    let rest_mean = rest.summary().mean_ns;
    let mut md = String::from(
        "## Agent tool call vs REST tool call (`get_quote`, SQLite, in-process)\n\n| path | n | per s | mean | p50 | p99 | mean − REST |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, s) in [
        ("`Pipeline::call` alone", &pipe),
        ("REST `POST /v1/tools/get_quote` (router)", &rest),
        (
            "`Agent::chat` + pipeline executor (mask, withhold, spotlight, 2 scripted turns, restore, DLP)",
            &inproc,
        ),
        (
            "`POST /v1/agent/chat` (router: + limits, token budget, region, `agent.chat` audit)",
            &door,
        ),
    ] {
        let x = s.summary();
        md.push_str(&format!(
            "| {label} | {} | {:.0} | {} | {} | {} | {} |\n",
            x.n,
            x.ops_per_sec,
            fmt_ns(x.mean_ns),
            fmt_ns(crate::p(x.p50_ns)),
            fmt_ns(crate::p(x.p99_ns)),
            if x.mean_ns >= rest_mean {
                format!("+{}", fmt_ns(x.mean_ns - rest_mean))
            } else {
                format!("−{}", fmt_ns(rest_mean - x.mean_ns))
            },
        ));
    }
    fx.store.close().await;
    Ok(md)
}

/// Entry point of the `agent` bench target.
#[must_use]
pub fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("bastion-bench agent: run with `cargo bench -p bastion-bench --bench agent`");
        return ExitCode::SUCCESS;
    }
    let n = if crate::Sizes::from_env().quick {
        100
    } else {
        1_000
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-bench agent: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(n)) {
        Ok(md) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bastion-bench agent: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
