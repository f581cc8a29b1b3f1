//! The tabletop's HTTP client: logs the demo users in (password + TOTP), keeps one session
//! per user, and calls the public routes. Everything it does, a script could do with curl.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use bastion_types::{Clock, SystemClock};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::demo::Credentials;

/// Longest the tabletop waits for one HTTP answer, seconds.
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// One RFC 6238 time step, seconds: a refused code is retried once in the next step.
const TOTP_STEP_SECS: u64 = 30;

/// One logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Bearer access token.
    pub access_token: String,
    /// Refresh token of the session's family.
    pub refresh_token: String,
}

/// An HTTP answer: status, headers of interest, JSON body (`Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The body as JSON.
    pub body: Value,
}

impl Answer {
    /// The problem `type` of an RFC 9457 body, or `""`.
    pub fn problem_type(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// `status` and problem type, for a report line.
    pub fn summary(&self) -> String {
        let t = self.problem_type();
        if t.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {} {t}", self.status)
        }
    }
}

/// The client of one target instance.
pub struct Client {
    /// Base URL.
    pub url: String,
    /// Demo credentials.
    pub creds: Credentials,
    http: reqwest::Client,
    sessions: Mutex<BTreeMap<(String, String), Session>>,
}

impl Client {
    /// A client of `url` logging in with `creds`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(url: &str, creds: Credentials) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            creds,
            http,
            sessions: Mutex::new(BTreeMap::new()),
        })
    }

    fn user(&self, tenant: &str, username: &str) -> anyhow::Result<(String, String)> {
        let u = self
            .creds
            .tenants
            .get(tenant)
            .and_then(|t| t.users.iter().find(|u| u.username == username))
            .with_context(|| format!("no demo user {tenant}/{username} in the credentials"))?;
        Ok((u.password.clone(), u.totp_secret.clone()))
    }

    /// POST `path` with a JSON body and optional bearer token and extra headers.
    ///
    /// # Errors
    /// Transport failures (not HTTP error statuses).
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.with_context(|| format!("POST {path}"))?).await
    }

    /// POST raw bytes (webhooks: the signature covers the exact bytes).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        answer(req.send().await.with_context(|| format!("POST {path}"))?).await
    }

    /// POST a form (the OAuth token endpoint).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let body = serde_urlencoded::to_string(form).context("form encoding")?;
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        answer(req.send().await.with_context(|| format!("POST {path}"))?).await
    }

    /// GET `path` with a bearer token.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Answer> {
        let req = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token);
        answer(req.send().await.with_context(|| format!("GET {path}"))?).await
    }

    /// Calls tool `name` as `token`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn tool(&self, token: &str, name: &str, args: &Value) -> anyhow::Result<Answer> {
        self.post(&format!("/v1/tools/{name}"), Some(token), &[], args)
            .await
    }

    /// The session of `tenant/username`, logging in (password, then TOTP) on first use.
    ///
    /// # Errors
    /// When login fails.
    pub async fn session(&self, tenant: &str, username: &str) -> anyhow::Result<Session> {
        let key = (tenant.to_owned(), username.to_owned());
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&key) {
            return Ok(s.clone());
        }
        let s = self.login(tenant, username).await?;
        sessions.insert(key, s.clone());
        Ok(s)
    }

    /// The session of `tenant/username`, removed from the cache (the caller ends it).
    ///
    /// # Errors
    /// When login fails.
    pub async fn take_session(&self, tenant: &str, username: &str) -> anyhow::Result<Session> {
        let cached = self
            .sessions
            .lock()
            .await
            .remove(&(tenant.to_owned(), username.to_owned()));
        match cached {
            Some(s) => Ok(s),
            None => self.login(tenant, username).await,
        }
    }

    /// A fresh login of `tenant/username`, not cached (for scenarios that end sessions).
    ///
    /// # Errors
    /// When login fails twice (the second time in the next TOTP step).
    pub async fn login(&self, tenant: &str, username: &str) -> anyhow::Result<Session> {
        match self.try_login(tenant, username).await {
            Ok(s) => Ok(s),
            Err(_) => {
                // A TOTP code is accepted once per step (RFC 6238 §5.2): a user who logged in
                // during this step gets in with the next one.
                tokio::time::sleep(Duration::from_secs(TOTP_STEP_SECS + 1)).await;
                self.try_login(tenant, username).await
            }
        }
    }

    async fn try_login(&self, tenant: &str, username: &str) -> anyhow::Result<Session> {
        let (password, totp_secret) = self.user(tenant, username)?;
        let a = self
            .post(
                "/v1/auth/login",
                None,
                &[],
                &json!({"tenant": tenant, "username": username, "password": password}),
            )
            .await?;
        let mfa = a
            .body
            .get("mfa_token")
            .and_then(Value::as_str)
            .with_context(|| format!("login of {tenant}/{username}: {}", a.summary()))?
            .to_owned();
        let secret = data_encoding::BASE32_NOPAD
            .decode(totp_secret.as_bytes())
            .context("bad TOTP secret in the credentials")?;
        let now = u64::try_from(SystemClock.now()).unwrap_or(0);
        let code = bastion_identity::totp_code(&secret, now, 6);
        let a = self
            .post(
                "/v1/auth/mfa/totp",
                None,
                &[],
                &json!({"mfa_token": mfa, "code": code}),
            )
            .await?;
        let field = |k: &str| {
            a.body
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("MFA of {tenant}/{username}: {}", a.summary()))
        };
        Ok(Session {
            access_token: field("access_token")?,
            refresh_token: field("refresh_token")?,
        })
    }
}

async fn answer(res: reqwest::Response) -> anyhow::Result<Answer> {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let bytes = res.bytes().await.context("reading the response body")?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}
