//! Server configuration, per profile, and the start-up refusals of unsafe configurations.
//!
//! A config is TOML:
//!
//! ```toml
//! profile = "prod"                   # dev | stage | prod
//! [server]
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/bastion/cert.pem" # PEM chain; TLS 1.3 only
//! tls_key = "/etc/bastion/key.pem"
//! trusted_proxy = false              # true: TLS ends at a proxy you run (then no cert here)
//! cors_allowed_origins = ["https://app.example.com"]
//! max_body_bytes = 1048576
//! request_timeout_secs = 30
//! [app]
//! dir = "/srv/apps/vendor-quote"
//! [database]
//! url = "sqlite:///var/lib/bastion/bastion.db"
//! # or PostgreSQL, as the application role (several instances may share it):
//! # url = "postgres://bastion_app@db.internal/bastion?sslmode=verify-full"
//! # migrate_url = "postgres://bastion_owner@db.internal/bastion?sslmode=verify-full"
//! [identity]
//! issuer = "https://bastion.example.com"
//! audience = "bastion"
//! key_dir = "/var/lib/bastion/keys"
//! secret_key_file = "/etc/bastion/secret.key"   # ≥ 32 random bytes
//! [agent]                            # optional; default: the offline provider
//! provider = "openai"                # offline | openai
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-mini"
//! api_key_file = "/etc/bastion/model.key"       # 0600; never from a request
//! region = "eu"                      # must match each tenant's region (geo pinning)
//! tenant_daily_tokens = 2000000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Deployment profile. `prod` refuses anything unsafe; `dev` allows plain HTTP on loopback
/// and demo accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Local development and `bastion demo`.
    Dev,
    /// Pre-production: prod rules, test data allowed.
    Stage,
    /// Production.
    Prod,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Profile, default `prod` so a forgotten line fails safe.
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// HTTP listener.
    pub server: ServerSection,
    /// The app manifest.
    pub app: AppSection,
    /// The database.
    pub database: DatabaseSection,
    /// Token issuance.
    pub identity: IdentitySection,
    /// Payments: webhook providers (optional).
    #[serde(default)]
    pub payments: PaymentsSection,
    /// The agent and MCP: model provider, limits, budgets (optional; default: the offline
    /// provider).
    #[serde(default)]
    pub agent: AgentSection,
}

/// Which model provider `[agent]` uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The deterministic offline stand-in, labelled in every reply.
    #[default]
    Offline,
    /// An OpenAI-compatible chat-completions endpoint.
    Openai,
}

/// `[agent]`. The API key is read from `api_key_file` only (never from a request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// `offline` (default) or `openai`.
    #[serde(default)]
    pub provider: ProviderKind,
    /// The API root, e.g. `https://api.openai.com/v1` (https, or http to loopback).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The model name.
    #[serde(default)]
    pub model: Option<String>,
    /// File holding the API key (mode 0600 outside dev). Optional for a local server.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Where the provider processes data (`eu`, `us`, …): a tenant of another region is
    /// refused (geo pinning). Required for `openai`.
    #[serde(default)]
    pub region: Option<String>,
    /// Hosts whose links and images may stay in replies.
    #[serde(default)]
    pub url_allowlist: Vec<String>,
    /// Model tokens per tenant per UTC day.
    #[serde(default = "default_daily_tokens")]
    pub tenant_daily_tokens: u64,
    /// Chats per minute per tenant.
    #[serde(default = "default_chats_tenant")]
    pub chats_per_minute_tenant: u32,
    /// Chats per minute per user.
    #[serde(default = "default_chats_user")]
    pub chats_per_minute_user: u32,
    /// Agent and MCP tool calls per minute per tenant.
    #[serde(default = "default_tools_tenant")]
    pub tool_calls_per_minute_tenant: u32,
    /// Agent and MCP tool calls per minute per user.
    #[serde(default = "default_tools_user")]
    pub tool_calls_per_minute_user: u32,
    /// A minute with more chats than this factor × the tenant's trailing average alerts.
    #[serde(default = "default_spike_factor")]
    pub spike_factor: u32,
    /// Chats per minute at or below which no spike alert is raised.
    #[serde(default = "default_spike_min")]
    pub spike_min_per_minute: u32,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            provider: ProviderKind::Offline,
            base_url: None,
            model: None,
            api_key_file: None,
            region: None,
            url_allowlist: Vec::new(),
            tenant_daily_tokens: default_daily_tokens(),
            chats_per_minute_tenant: default_chats_tenant(),
            chats_per_minute_user: default_chats_user(),
            tool_calls_per_minute_tenant: default_tools_tenant(),
            tool_calls_per_minute_user: default_tools_user(),
            spike_factor: default_spike_factor(),
            spike_min_per_minute: default_spike_min(),
        }
    }
}

impl AgentSection {
    /// The quotas of this section.
    #[must_use]
    pub fn quotas(&self) -> crate::limits::AgentQuotas {
        crate::limits::AgentQuotas {
            chats_per_minute_tenant: self.chats_per_minute_tenant,
            chats_per_minute_user: self.chats_per_minute_user,
            tool_calls_per_minute_tenant: self.tool_calls_per_minute_tenant,
            tool_calls_per_minute_user: self.tool_calls_per_minute_user,
            tenant_daily_tokens: self.tenant_daily_tokens,
            spike_factor: self.spike_factor,
            spike_min_per_minute: self.spike_min_per_minute,
        }
    }

    /// Checks the section: `openai` needs `base_url`, `model` and `region`; every rate is at
    /// least 1; outside dev an `api_key_file` must not be readable by group or others.
    ///
    /// # Errors
    /// [`ConfigError::Unsafe`] naming the first problem.
    pub fn check(&self, dev: bool) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Unsafe(format!("agent: {m}")));
        if self.provider == ProviderKind::Openai
            && (self.base_url.is_none() || self.model.is_none() || self.region.is_none())
        {
            return bad("provider = \"openai\" needs base_url, model and region");
        }
        if [
            self.chats_per_minute_tenant,
            self.chats_per_minute_user,
            self.tool_calls_per_minute_tenant,
            self.tool_calls_per_minute_user,
            self.spike_factor,
        ]
        .contains(&0)
        {
            return bad("rates and the spike factor must be at least 1");
        }
        if let (false, Some(f)) = (dev, &self.api_key_file) {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(f)
                    .map(|m| m.permissions().mode())
                    .map_err(|_| {
                        ConfigError::Unsafe(format!(
                            "agent.api_key_file `{}` cannot be read",
                            f.display()
                        ))
                    })?;
                if mode & 0o077 != 0 {
                    return Err(ConfigError::Unsafe(format!(
                        "agent.api_key_file `{}` is readable by group or others; chmod 600 it",
                        f.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

fn default_daily_tokens() -> u64 {
    crate::limits::TENANT_DAILY_TOKENS_DEFAULT
}
fn default_chats_tenant() -> u32 {
    crate::limits::CHATS_PER_MINUTE_TENANT_DEFAULT
}
fn default_chats_user() -> u32 {
    crate::limits::CHATS_PER_MINUTE_USER_DEFAULT
}
fn default_tools_tenant() -> u32 {
    crate::limits::TOOL_CALLS_PER_MINUTE_TENANT_DEFAULT
}
fn default_tools_user() -> u32 {
    crate::limits::TOOL_CALLS_PER_MINUTE_USER_DEFAULT
}
fn default_spike_factor() -> u32 {
    crate::limits::SPIKE_FACTOR_DEFAULT
}
fn default_spike_min() -> u32 {
    crate::limits::SPIKE_MIN_PER_MINUTE_DEFAULT
}

/// `[payments]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    /// `[[payments.webhooks]]`: one per provider served at `/v1/webhooks/{provider}`.
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
    /// `[payments.psp]`: the PSP Bastion calls (Stripe-compatible API): the money tools
    /// (`payment.charge`, `payment.refund`) and reconciliation. Without it those tools answer 503.
    #[serde(default)]
    pub psp: Option<PspSection>,
}

/// `[payments.psp]`: where the Stripe-compatible PSP is and its secret key.
///
/// Outside the `dev` profile the built-in test-mode PSP (`bastion psp-sandbox`, which
/// listens on loopback over plain HTTP) is refused: `base_url` must be `https` on a
/// non-loopback host. In `prod` a test-mode key (`sk_test_…`, `rk_test_…`) is refused too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PspSection {
    /// The API base, e.g. `https://api.stripe.com`.
    pub base_url: String,
    /// File holding the secret API key (`sk_…`/`rk_…`), mode 0600.
    pub api_key_file: PathBuf,
    /// Also compare the PSP's daily balance report (major units) during reconciliation: the
    /// `GET /v1/reporting/daily_balance` of the built-in sandbox. Default `false`.
    #[serde(default)]
    pub daily_report: bool,
    /// How long a payment call holds its idempotency key before a retry may resume it,
    /// seconds (default 60, above the PSP request timeout; `1..=3600`). Lower it only in
    /// tests of crash recovery.
    #[serde(default)]
    pub lease_secs: Option<i64>,
}

/// Whether `url`'s host is loopback (`localhost`, `127.0.0.0/8`, `::1`), as the built-in
/// PSP sandbox's always is.
#[must_use]
pub fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The first line of a key file, trimmed (for prefix checks only; never logged).
fn key_file_prefix_is_test(path: &Path) -> Result<bool, ConfigError> {
    let bytes = std::fs::read(path).map_err(|_| {
        ConfigError::Unsafe(format!(
            "payments.psp.api_key_file `{}` cannot be read",
            path.display()
        ))
    })?;
    let key = trim_ascii(&bytes);
    Ok(key.starts_with(b"sk_test_") || key.starts_with(b"rk_test_"))
}

/// Webhook signature scheme of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// `Stripe-Signature` (HMAC-SHA256 keyed by the whole `whsec_…` string).
    Stripe,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
}

/// `[[payments.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Path segment, `[a-z0-9_-]`, e.g. `stripe`.
    pub provider: String,
    /// Signature scheme.
    pub scheme: WebhookScheme,
    /// Files each holding one signing secret (`whsec_…`), mode 0600. Several while a secret
    /// is being rotated: add the new file, switch the sender, then remove the old one.
    pub secret_files: Vec<PathBuf>,
    /// Accepted clock difference in both directions, seconds (default 300).
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
}

fn default_tolerance() -> u64 {
    300
}

fn default_profile() -> Profile {
    Profile::Prod
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS 1.3.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS 1.3.
    pub tls_key: Option<PathBuf>,
    /// TLS is terminated by a proxy the operator runs; plain HTTP is then allowed.
    #[serde(default)]
    pub trusted_proxy: bool,
    /// Exact origins allowed by CORS (`scheme://host[:port]`); never `*`.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body, bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Whole-request time limit, seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

/// Default body limit: 1 MiB.
pub const MAX_BODY_BYTES_DEFAULT: usize = 1024 * 1024;
/// Default request time limit.
pub const REQUEST_TIMEOUT_SECS_DEFAULT: u64 = 30;

fn default_max_body_bytes() -> usize {
    MAX_BODY_BYTES_DEFAULT
}
fn default_request_timeout_secs() -> u64 {
    REQUEST_TIMEOUT_SECS_DEFAULT
}

/// `[app]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Folder holding `app.toml`, `policies/` and schemas.
    pub dir: PathBuf,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://PATH`, or `postgres://APP_ROLE@HOST/DB?sslmode=verify-full` — the
    /// application role: not the owner, not a superuser, no `BYPASSRLS` (checked at start).
    pub url: String,
    /// PostgreSQL only: the owner (migrator) role's URL. When set, `bastion serve` applies
    /// the migrations as that role and grants the application role of `url` before opening
    /// `url`; when unset, run `bastion migrate` separately.
    #[serde(default)]
    pub migrate_url: Option<String>,
}

/// Whether `url` names a PostgreSQL database.
#[must_use]
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Checks a database URL: a known scheme, and outside the dev profile TLS to any
/// PostgreSQL server that is not on loopback (`sslmode=require`, `verify-ca` or
/// `verify-full`; libpq's default `prefer` falls back to plain text).
fn check_database_url(what: &str, url: &str, dev: bool) -> Result<(), ConfigError> {
    if url.starts_with("sqlite://") {
        return Ok(());
    }
    if !is_postgres_url(url) {
        return Err(ConfigError::Unsafe(format!(
            "{what} must start with sqlite:// or postgres://"
        )));
    }
    let parsed = url::Url::parse(url)
        .map_err(|_| ConfigError::Unsafe(format!("{what} is not a valid URL")))?;
    // Only keys whose meaning is checked here; each at most once, so the value checked is
    // the value the driver uses (`host=`/`hostaddr=` would silently replace the host, and a
    // second `sslmode` would win over the first).
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in parsed.query_pairs() {
        if !matches!(
            k.as_ref(),
            "sslmode" | "sslrootcert" | "options" | "application_name" | "statement-cache-capacity"
        ) {
            return Err(ConfigError::Unsafe(format!(
                "{what}: query parameter `{k}` is not accepted (allowed: sslmode, sslrootcert, options, application_name, statement-cache-capacity)"
            )));
        }
        if !seen.insert(k.into_owned()) {
            return Err(ConfigError::Unsafe(format!(
                "{what}: a query parameter is given twice"
            )));
        }
    }
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // For `postgres://` the url crate keeps IP literals as domain text.
        Some(url::Host::Domain(d)) => {
            d == "localhost"
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        // No host: a local Unix socket is not accepted without a host here.
        None => false,
    };
    let tls = parsed.query_pairs().any(|(k, v)| {
        k == "sslmode" && matches!(v.as_ref(), "require" | "verify-ca" | "verify-full")
    });
    if !dev && !loopback && !tls {
        return Err(ConfigError::Unsafe(format!(
            "{what} reaches a remote PostgreSQL without TLS: add sslmode=verify-full"
        )));
    }
    Ok(())
}

/// `[identity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// `iss` of issued tokens, an https URL in prod.
    pub issuer: String,
    /// `aud` of issued access tokens.
    pub audience: String,
    /// Folder of Ed25519 signing keys (PKCS#8).
    pub key_dir: PathBuf,
    /// File holding the server master secret (≥ 32 bytes): per-tenant keys that encrypt TOTP
    /// secrets at rest are derived from it. Keep it stable and backed up: losing or changing
    /// it disables every enrolled TOTP factor.
    pub secret_key_file: Option<PathBuf>,
}

/// Smallest and largest accepted `server.max_body_bytes`.
pub const MAX_BODY_BYTES_MIN: usize = 1024;
/// Largest accepted `server.max_body_bytes` (16 MiB).
pub const MAX_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest accepted `server.request_timeout_secs`.
pub const REQUEST_TIMEOUT_SECS_MAX: u64 = 300;
/// Fewest distinct byte values a secret may have (a random 32-byte base64 string has ~25).
pub const SECRET_DISTINCT_BYTES_MIN: usize = 12;

/// Minimum length of the server secret, bytes.
pub const SECRET_KEY_LEN_MIN: usize = 32;

/// Values shipped in docs or the demo that must never be a production secret.
pub const KNOWN_DEFAULT_SECRETS: &[&str] = &[
    "changeme",
    "change-me",
    "secret",
    "bastion",
    "bastion-demo-secret-not-for-production",
];

/// A configuration that must not start, with a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{0}`")]
    Read(String),
    /// The file is not valid TOML for this schema.
    #[error("invalid config: {0}")]
    Parse(String),
    /// The config is unsafe for its profile.
    #[error("refusing to start: {0}")]
    Unsafe(String),
}

impl Config {
    /// Reads and parses a config file (no safety checks yet: see [`Config::check_safe`]).
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| ConfigError::Read(path.display().to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(e.message().to_owned()))
    }

    /// Refuses configurations that are unsafe for the profile (platform cases L1–L3).
    ///
    /// In `stage` and `prod`: TLS certificate and key, or a declared trusted proxy; no
    /// wildcard or non-exact CORS origin; a secret key file that exists, is at least
    /// [`SECRET_KEY_LEN_MIN`] bytes and is not a known default. Demo accounts are checked
    /// against the database separately ([`crate::startup`]).
    ///
    /// # Errors
    /// [`ConfigError::Unsafe`] naming the first problem.
    pub fn check_safe(&self) -> Result<(), ConfigError> {
        let unsafe_ = |m: &str| Err(ConfigError::Unsafe(m.to_owned()));
        for o in &self.server.cors_allowed_origins {
            check_origin(o)?;
        }
        if !(MAX_BODY_BYTES_MIN..=MAX_BODY_BYTES_MAX).contains(&self.server.max_body_bytes) {
            return Err(ConfigError::Unsafe(format!(
                "server.max_body_bytes must be between {MAX_BODY_BYTES_MIN} and {MAX_BODY_BYTES_MAX}"
            )));
        }
        if !(1..=REQUEST_TIMEOUT_SECS_MAX).contains(&self.server.request_timeout_secs) {
            return Err(ConfigError::Unsafe(format!(
                "server.request_timeout_secs must be between 1 and {REQUEST_TIMEOUT_SECS_MAX}"
            )));
        }
        let dev = self.profile == Profile::Dev;
        self.agent.check(dev)?;
        check_database_url("database.url", &self.database.url, dev)?;
        if let Some(m) = &self.database.migrate_url {
            if !is_postgres_url(m) || !is_postgres_url(&self.database.url) {
                return unsafe_(
                    "database.migrate_url is for PostgreSQL: both URLs must be postgres://",
                );
            }
            check_database_url("database.migrate_url", m, dev)?;
        }
        if self.profile == Profile::Dev {
            if !self.server.listen.ip().is_loopback() {
                return unsafe_(
                    "the dev profile serves plain HTTP on loopback only; use stage or prod",
                );
            }
            return Ok(());
        }
        if self
            .server
            .cors_allowed_origins
            .iter()
            .any(|o| !o.starts_with("https://"))
        {
            return unsafe_("CORS origins must be https:// outside the dev profile");
        }
        match (
            &self.server.tls_cert,
            &self.server.tls_key,
            self.server.trusted_proxy,
        ) {
            (Some(_), Some(_), _) => {}
            (None, None, true) => {}
            (None, None, false) => {
                return unsafe_(
                    "plain HTTP without a trusted proxy: set server.tls_cert and server.tls_key, or server.trusted_proxy = true",
                );
            }
            _ => return unsafe_("server.tls_cert and server.tls_key must be set together"),
        }
        let Some(path) = &self.identity.secret_key_file else {
            return unsafe_("identity.secret_key_file is not set");
        };
        let secret = std::fs::read(path).map_err(|_| {
            ConfigError::Unsafe(format!(
                "identity.secret_key_file `{}` cannot be read",
                path.display()
            ))
        })?;
        let trimmed = trim_ascii(&secret);
        if KNOWN_DEFAULT_SECRETS
            .iter()
            .any(|d| d.as_bytes() == trimmed)
        {
            return unsafe_("identity.secret_key_file holds a known default secret");
        }
        if trimmed.len() < SECRET_KEY_LEN_MIN {
            return Err(ConfigError::Unsafe(format!(
                "identity.secret_key_file is shorter than {SECRET_KEY_LEN_MIN} bytes"
            )));
        }
        let distinct = trimmed
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < SECRET_DISTINCT_BYTES_MIN {
            return unsafe_(
                "identity.secret_key_file does not look random (too few distinct bytes)",
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o777);
            if mode & 0o077 != 0 {
                return unsafe_(
                    "identity.secret_key_file is readable by group or others; chmod 600 it",
                );
            }
        }
        if let Some(psp) = &self.payments.psp {
            self.check_psp(psp)?;
        }
        // Webhook signing secrets are secrets too: readable, and private to their owner.
        for w in &self.payments.webhooks {
            if w.secret_files.is_empty() {
                return Err(ConfigError::Unsafe(format!(
                    "payments.webhooks `{}` has no secret_files",
                    w.provider
                )));
            }
            for f in &w.secret_files {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(f)
                        .map(|m| m.permissions().mode())
                        .map_err(|_| {
                            ConfigError::Unsafe(format!(
                                "payments.webhooks `{}`: secret file `{}` cannot be read",
                                w.provider,
                                f.display()
                            ))
                        })?;
                    if mode & 0o077 != 0 {
                        return Err(ConfigError::Unsafe(format!(
                            "payments.webhooks `{}`: secret file `{}` is readable by group or others; chmod 600 it",
                            w.provider,
                            f.display()
                        )));
                    }
                }
            }
        }
        let host = self
            .identity
            .issuer
            .strip_prefix("https://")
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || host.contains(['@', '?', '#']) {
            return unsafe_("identity.issuer must be an https URL with a host");
        }
        Ok(())
    }
}

impl Config {
    /// `[payments.psp]` outside `dev`: no built-in sandbox (https, not loopback), a private
    /// key file, and in `prod` no test-mode key (issue 5: "the prod profile refuses it").
    fn check_psp(&self, psp: &PspSection) -> Result<(), ConfigError> {
        let unsafe_ = |m: String| Err(ConfigError::Unsafe(m));
        if !psp.base_url.starts_with("https://") || is_loopback_url(&psp.base_url) {
            return unsafe_(format!(
                "payments.psp.base_url must be an https URL of a real PSP in the {:?} profile (the built-in psp-sandbox is for dev only)",
                self.profile
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&psp.api_key_file)
                .map(|m| m.permissions().mode())
                .map_err(|_| {
                    ConfigError::Unsafe(format!(
                        "payments.psp.api_key_file `{}` cannot be read",
                        psp.api_key_file.display()
                    ))
                })?;
            if mode & 0o077 != 0 {
                return unsafe_(
                    "payments.psp.api_key_file is readable by group or others; chmod 600 it"
                        .to_owned(),
                );
            }
        }
        if self.profile == Profile::Prod && key_file_prefix_is_test(&psp.api_key_file)? {
            return unsafe_(
                "payments.psp.api_key_file holds a test-mode key (sk_test_/rk_test_) in the prod profile"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or_default()
}

/// An allowed CORS origin must be an exact `http(s)://host[:port]` with no path or wildcard.
///
/// # Errors
/// [`ConfigError::Unsafe`] for `*`, `null`, wildcards, paths.
pub fn check_origin(o: &str) -> Result<(), ConfigError> {
    let bad = o.contains(['*', '?', '#', '@', ' '])
        || o == "null"
        || !(o.starts_with("https://") || o.starts_with("http://"))
        || o.split("://")
            .nth(1)
            .is_none_or(|rest| rest.is_empty() || rest.contains('/'));
    if bad {
        return Err(ConfigError::Unsafe(format!(
            "CORS origin `{}` is not an exact scheme://host[:port]",
            o.chars().take(100).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(profile: &str, extra_server: &str, secret_file: Option<&Path>) -> Config {
        let secret = secret_file.map_or(String::new(), |p| {
            format!("secret_key_file = {:?}", p.display().to_string())
        });
        let text = format!(
            "profile = \"{profile}\"\n[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n[app]\ndir = \"x\"\n[database]\nurl = \"sqlite://x.db\"\n[identity]\nissuer = \"https://b.example\"\naudience = \"bastion\"\nkey_dir = \"k\"\n{secret}\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn prod_refuses_missing_default_and_short_secrets() {
        let dir = std::env::temp_dir().join(format!("bastion-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let err = base("prod", tls, None).check_safe().unwrap_err();
        assert!(
            err.to_string().contains("secret_key_file is not set"),
            "{err}"
        );
        let f = dir.join("s");
        std::fs::write(&f, "changeme\n").unwrap();
        assert!(
            base("prod", tls, Some(&f))
                .check_safe()
                .unwrap_err()
                .to_string()
                .contains("known default")
        );
        std::fs::write(&f, "short-secret").unwrap();
        assert!(
            base("prod", tls, Some(&f))
                .check_safe()
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        std::fs::write(&f, "x".repeat(40)).unwrap();
        assert!(
            base("prod", tls, Some(&f))
                .check_safe()
                .unwrap_err()
                .to_string()
                .contains("random")
        );
        std::fs::write(&f, "q8Zr2LxV-9mTgW4pKc7bNf1sYhJ3dEaU6oRiQ0vX").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                base("prod", tls, Some(&f))
                    .check_safe()
                    .unwrap_err()
                    .to_string()
                    .contains("chmod")
            );
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        base("prod", tls, Some(&f)).check_safe().unwrap();
        let plain = base("prod", "", Some(&f)).check_safe().unwrap_err();
        assert!(plain.to_string().contains("plain HTTP"), "{plain}");
        base("prod", "trusted_proxy = true", Some(&f))
            .check_safe()
            .unwrap();
        let wild = base(
            "prod",
            "trusted_proxy = true\ncors_allowed_origins = [\"*\"]",
            Some(&f),
        );
        assert!(
            wild.check_safe()
                .unwrap_err()
                .to_string()
                .contains("CORS origin")
        );
        base("dev", "", None).check_safe().unwrap();
    }

    #[test]
    fn origins_must_be_exact() {
        for ok in ["https://app.example.com", "http://localhost:3000"] {
            check_origin(ok).unwrap();
        }
        for bad in [
            "*",
            "null",
            "https://*.example.com",
            "https://a.example/path",
            "https://a.example?x",
            "https://u@a.example",
            "https://a.example#f",
            "app.example.com",
            "https://",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_urls_are_checked_as_the_driver_reads_them() {
        let ok = |u: &str| check_database_url("database.url", u, false).is_ok();
        // Loopback, including IP literals (kept as domain text for postgres:// URLs).
        assert!(ok("postgres://app@127.0.0.1:5432/db"));
        assert!(ok("postgres://app@localhost/db"));
        assert!(ok("postgres://app@[::1]/db"));
        // Remote needs TLS; the TLS modes that verify or at least encrypt pass.
        assert!(!ok("postgres://app@192.0.2.2/db"));
        assert!(ok("postgres://app@192.0.2.2/db?sslmode=verify-full"));
        // What the review found: keys that replace the host or a second sslmode.
        for u in [
            "postgres://app@localhost:5432/db?host=192.0.2.2",
            "postgres://app@localhost:5432/db?hostaddr=192.0.2.2",
            "postgres://app@192.0.2.2/db?sslmode=require&sslmode=disable",
            "postgres://app@192.0.2.2/db?sslmode=require&ssl-mode=disable",
            "postgres://app@localhost/db?sslmode=require&sslmode=disable",
        ] {
            assert!(!ok(u), "{u} accepted");
        }
        // The dev profile is loopback-only anyway, but the parameter rules still apply.
        assert!(
            check_database_url("database.url", "postgres://app@localhost/db?host=x", true).is_err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn prod_refuses_a_webhook_secret_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bastion-cfg-wh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secret.key");
        std::fs::write(&key, "k9Qz2xLm4Rt7Vb1Nc8Hd3Jf6Gs0Pw5Ya").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let whsec = dir.join("whsec");
        std::fs::write(&whsec, "whsec_test_secret").unwrap();
        std::fs::set_permissions(&whsec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let mut cfg = base("prod", tls, Some(&key));
        cfg.check_safe().unwrap();
        cfg.payments.webhooks.push(WebhookSection {
            provider: "stripe".into(),
            scheme: WebhookScheme::Stripe,
            secret_files: vec![whsec.clone()],
            tolerance_secs: 300,
        });
        let err = cfg.check_safe().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&whsec, std::fs::Permissions::from_mode(0o600)).unwrap();
        cfg.check_safe().unwrap();
        cfg.payments.webhooks[0].secret_files.clear();
        assert!(cfg.check_safe().is_err(), "no secret at all is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn stage_and_prod_refuse_the_psp_sandbox_and_prod_refuses_test_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bastion-cfg-psp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secret.key");
        std::fs::write(&key, "k9Qz2xLm4Rt7Vb1Nc8Hd3Jf6Gs0Pw5Ya").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let live = dir.join("sk_live");
        std::fs::write(&live, "sk_live_51Habcdefghijklmnop\n").unwrap();
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o600)).unwrap();
        let test = dir.join("sk_test");
        std::fs::write(&test, " sk_test_51Habcdefghijklmnop").unwrap();
        std::fs::set_permissions(&test, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let with = |profile: &str, url: &str, file: &Path| {
            let mut cfg = base(profile, tls, Some(&key));
            cfg.payments.psp = Some(PspSection {
                base_url: url.to_owned(),
                api_key_file: file.to_path_buf(),
                daily_report: false,
                lease_secs: None,
            });
            cfg.check_safe()
        };
        with("prod", "https://api.stripe.com", &live).unwrap();
        for sandbox in [
            "http://127.0.0.1:8420",
            "https://127.0.0.1:8420",
            "http://localhost:8420",
            "https://[::1]:8420",
            "http://psp.internal",
        ] {
            for profile in ["prod", "stage"] {
                let err = with(profile, sandbox, &live).unwrap_err();
                assert!(err.to_string().contains("psp-sandbox"), "{sandbox}: {err}");
            }
            // The dev profile is where the sandbox belongs.
            with("dev", sandbox, &test).unwrap();
        }
        let err = with("prod", "https://api.stripe.com", &test).unwrap_err();
        assert!(err.to_string().contains("test-mode key"), "{err}");
        // Stage takes test data: a test-mode key against Stripe's test mode is fine there.
        with("stage", "https://api.stripe.com", &test).unwrap();
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = with("prod", "https://api.stripe.com", &live).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let err = with("prod", "https://api.stripe.com", &dir.join("absent")).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn the_agent_section_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bastion-cfg-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secret.key");
        std::fs::write(&key, "k9Qz2xLm4Rt7Vb1Nc8Hd3Jf6Gs0Pw5Ya").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let mut cfg = base("prod", tls, Some(&key));
        assert_eq!(cfg.agent.provider, ProviderKind::Offline);
        cfg.check_safe().unwrap();
        cfg.agent.provider = ProviderKind::Openai;
        let err = cfg.check_safe().unwrap_err();
        assert!(err.to_string().contains("needs base_url"), "{err}");
        cfg.agent.base_url = Some("https://api.example/v1".into());
        cfg.agent.model = Some("m".into());
        cfg.agent.region = Some("eu".into());
        cfg.check_safe().unwrap();
        let model_key = dir.join("model.key");
        std::fs::write(&model_key, "sk-abc").unwrap();
        std::fs::set_permissions(&model_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        cfg.agent.api_key_file = Some(model_key.clone());
        let err = cfg.check_safe().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&model_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        cfg.check_safe().unwrap();
        cfg.agent.chats_per_minute_user = 0;
        assert!(cfg.check_safe().is_err());
        // A full [agent] table parses; unknown keys are refused.
        let text = "profile = \"dev\"\n[server]\nlisten = \"127.0.0.1:0\"\n[app]\ndir = \"x\"\n[database]\nurl = \"sqlite://x.db\"\n[identity]\nissuer = \"https://b.example\"\naudience = \"bastion\"\nkey_dir = \"k\"\n[agent]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodel = \"llama\"\nregion = \"local\"\ntenant_daily_tokens = 5000\n";
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!(c.agent.quotas().tenant_daily_tokens, 5000);
        assert!(toml::from_str::<Config>(&format!("{text}api_key = \"sk-x\"\n")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
