//! Refresh-token rotation through `IdentityService::refresh` (SQLite): one sequential chain,
//! independent families in parallel, and a chain over HTTP (`POST /oauth/token`).

use std::net::SocketAddr;
use std::sync::Arc;

use bastion_identity::IdentityService;
use http::{StatusCode, header};
use serde_json::Value;

use crate::stats::{Samples, now};
use crate::{BenchError, Ctx};

/// Rotates `token` `n` times in a chain (each new token is the next input).
///
/// # Errors
/// A failed rotation.
pub async fn chain(
    identity: &IdentityService,
    mut token: String,
    n: usize,
) -> Result<(Samples, String), BenchError> {
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        let pair = identity.refresh(&token).await.ctx("refresh")?;
        s.push(t.elapsed());
        token = pair.refresh_token;
    }
    s.wall = start.elapsed();
    Ok((s, token))
}

/// One chain of `per_family` rotations per token in `tokens`, all families at once.
///
/// # Errors
/// A failed rotation.
pub async fn parallel(
    identity: &Arc<IdentityService>,
    tokens: Vec<String>,
    per_family: usize,
) -> Result<Samples, BenchError> {
    let families = tokens.len();
    let start = now();
    let mut tasks = Vec::new();
    for token in tokens {
        let identity = Arc::clone(identity);
        tasks.push(tokio::spawn(async move {
            chain(&identity, token, per_family).await
        }));
    }
    let mut all = Samples::with_capacity(families * per_family);
    for task in tasks {
        let (s, _) = task.await.ctx("refresh task panicked")??;
        all.extend(&s);
    }
    all.wall = start.elapsed();
    Ok(all)
}

/// Rotates over HTTP: `n` sequential `POST /oauth/token` (`grant_type=refresh_token`) on a
/// keep-alive connection, each with the token the previous answer returned.
///
/// # Errors
/// A non-200 answer.
pub async fn http_chain(
    addr: SocketAddr,
    mut token: String,
    n: usize,
) -> Result<Samples, BenchError> {
    let client = reqwest::Client::builder()
        .build()
        .ctx("cannot build the HTTP client")?;
    let url = format!("http://{addr}/oauth/token");
    let mut s = Samples::with_capacity(n);
    let start = now();
    for _ in 0..n {
        let t = now();
        // Opaque tokens are `<uuid>.<base64url>`: nothing to percent-encode.
        let resp = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={token}"))
            .send()
            .await
            .ctx("HTTP request failed")?;
        let status = resp.status();
        let bytes = resp.bytes().await.ctx("HTTP body")?;
        if status != StatusCode::OK {
            return Err(BenchError(format!(
                "/oauth/token answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        let v: Value = serde_json::from_slice(&bytes).ctx("token response is not JSON")?;
        token = v
            .get("refresh_token")
            .and_then(Value::as_str)
            .ctx("no refresh_token in the answer")?
            .to_owned();
        s.push(t.elapsed());
    }
    s.wall = start.elapsed();
    Ok(s)
}
