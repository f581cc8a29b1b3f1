//! `list_quotes` through the whole stack (HTTP on a socket, the router in-process, the
//! pipeline alone) against the bare store call it ends in.

use std::net::SocketAddr;

use axum::body::Body;
use bastion_store::records::{self, ListFilter, Page};
use bastion_store::{Store, TenantScope};
use bastion_tools::{CallContext, Pipeline};
use bastion_types::Principal;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::stats::{Samples, now};
use crate::{BenchError, Ctx};

/// Page size of every list call.
pub const PAGE_LIMIT: u32 = 20;

fn list_args() -> Value {
    json!({ "limit": PAGE_LIMIT })
}

/// Checks one `list_quotes` result body: a page of `PAGE_LIMIT` items and the expected total.
fn check_page(body: &[u8], total: usize) -> Result<(), BenchError> {
    let v: Value = serde_json::from_slice(body).ctx("list response is not JSON")?;
    let result = v.get("result").unwrap_or(&v);
    let items = result
        .get("items")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let got_total = result.get("total").and_then(Value::as_u64).unwrap_or(0);
    if items != PAGE_LIMIT as usize || got_total != total as u64 {
        return Err(BenchError(format!(
            "list_quotes returned {items} items of {got_total}; expected {PAGE_LIMIT} of {total}"
        )));
    }
    Ok(())
}

/// `n` sequential `POST /v1/tools/list_quotes` over one keep-alive connection, plus
/// `concurrency` clients doing `n / concurrency` each (same pool).
///
/// # Errors
/// A non-200 answer or a wrong page.
pub async fn http(
    addr: SocketAddr,
    token: &str,
    n: usize,
    concurrency: usize,
    total: usize,
) -> Result<(Samples, Samples), BenchError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .build()
        .ctx("cannot build the HTTP client")?;
    let url = format!("http://{addr}/v1/tools/list_quotes");
    let body = serde_json::to_vec(&list_args()).ctx("args")?;
    // Warm-up, and one full check of the answer.
    let first = http_once(&client, &url, token, &body).await?;
    check_page(&first, total)?;
    for _ in 0..(n / 20).max(5) {
        http_once(&client, &url, token, &body).await?;
    }

    let mut seq = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        http_once(&client, &url, token, &body).await?;
        seq.push(t.elapsed());
    }
    seq.wall = start.elapsed();

    let per = n / concurrency.max(1);
    let mut tasks = Vec::new();
    let start = now();
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let url = url.clone();
        let token = token.to_owned();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::with_capacity(per);
            for _ in 0..per {
                let t = now();
                http_once(&client, &url, &token, &body).await?;
                s.push(t.elapsed());
            }
            Ok::<_, BenchError>(s)
        }));
    }
    let mut par = Samples::with_capacity(per * concurrency);
    for task in tasks {
        let s = task.await.ctx("client task panicked")??;
        par.extend(&s);
    }
    par.wall = start.elapsed();
    Ok((seq, par))
}

async fn http_once(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &[u8],
) -> Result<Vec<u8>, BenchError> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .ctx("HTTP request failed")?;
    let status = resp.status();
    let bytes = resp.bytes().await.ctx("HTTP body")?;
    if status != StatusCode::OK {
        return Err(BenchError(format!(
            "list_quotes over HTTP answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    Ok(bytes.to_vec())
}

/// `n` sequential requests to the router in-process (`tower::ServiceExt::oneshot`): every
/// layer and extractor, no socket and no HTTP parsing.
///
/// # Errors
/// A non-200 answer or a wrong page.
pub async fn oneshot(
    router: axum::Router,
    token: &str,
    n: usize,
    total: usize,
) -> Result<Samples, BenchError> {
    let body = serde_json::to_vec(&list_args()).ctx("args")?;
    let bearer = format!("Bearer {token}");
    let call = |router: axum::Router| {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/tools/list_quotes")
            .header(header::AUTHORIZATION, bearer.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()));
        async move {
            let req = req.ctx("request")?;
            let resp = router.oneshot(req).await.ctx("router")?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .ctx("response body")?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(BenchError(format!("oneshot list_quotes answered {status}")));
            }
            Ok::<_, BenchError>(bytes)
        }
    };
    let first = call(router.clone()).await?;
    check_page(&first, total)?;
    for _ in 0..(n / 20).max(5) {
        call(router.clone()).await?;
    }
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        call(router.clone()).await?;
        s.push(t.elapsed());
    }
    s.wall = start.elapsed();
    Ok(s)
}

/// `n` sequential `Pipeline::call`s with an already verified principal: no HTTP and no
/// token verification; Cedar, schemas, the tenant transaction, audit and commit.
///
/// # Errors
/// A failing call or a wrong page.
pub async fn pipeline(
    pipeline: &Pipeline,
    principal: &Principal,
    n: usize,
    total: usize,
) -> Result<Samples, BenchError> {
    let ctx = CallContext {
        request_id: "bench".to_owned(),
        channel: "rest",
        idempotency_key: None,
    };
    let first = pipeline
        .call(principal, "list_quotes", list_args(), &ctx)
        .await
        .ctx("pipeline list_quotes")?;
    check_page(&serde_json::to_vec(&first.result).ctx("result")?, total)?;
    for _ in 0..(n / 20).max(5) {
        pipeline
            .call(principal, "list_quotes", list_args(), &ctx)
            .await
            .ctx("pipeline list_quotes")?;
    }
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        let out = pipeline
            .call(principal, "list_quotes", list_args(), &ctx)
            .await
            .ctx("pipeline list_quotes")?;
        std::hint::black_box(out);
        s.push(t.elapsed());
    }
    s.wall = start.elapsed();
    Ok(s)
}

/// `n` sequential bare store calls: open the principal's tenant transaction,
/// `records::list_records` with the same filter and page the pipeline uses, roll back
/// (nothing was written).
///
/// # Errors
/// A failing call or a wrong page.
pub async fn store(
    store: &Store,
    principal: &Principal,
    filter: &ListFilter,
    n: usize,
    total: usize,
) -> Result<Samples, BenchError> {
    let once = || async {
        let mut tx = store.begin(TenantScope::of(principal)).await.ctx("begin")?;
        let (rows, count) =
            records::list_records(&mut tx, "quote", filter, Page::first(PAGE_LIMIT))
                .await
                .ctx("list_records")?;
        tx.rollback().await.ctx("rollback")?;
        Ok::<_, BenchError>((rows, count))
    };
    let (rows, count) = once().await?;
    if rows.len() != PAGE_LIMIT as usize || count != total as u64 {
        return Err(BenchError(format!(
            "list_records returned {} of {count}; expected {PAGE_LIMIT} of {total}",
            rows.len()
        )));
    }
    for _ in 0..(n / 20).max(5) {
        once().await?;
    }
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        std::hint::black_box(once().await?);
        s.push(t.elapsed());
    }
    s.wall = start.elapsed();
    Ok(s)
}
