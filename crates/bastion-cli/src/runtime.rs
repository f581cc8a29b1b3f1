//! Wiring: open the store, load the app and keys, build the services, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use bastion_app::AppSpec;
use bastion_authz::Authorizer;
use bastion_crypto::KeyRing;
use bastion_identity::{IdentityConfig, IdentityService};
use bastion_server::config::{Config, Profile, is_postgres_url};
use bastion_server::listen::{self, ConnLimits};
use bastion_server::{AppState, ServerOptions};
use bastion_store::Store;
use bastion_tools::Pipeline;
use bastion_types::{SharedClock, SystemClock};
use tokio::net::TcpListener;

/// JSON logs to stderr; `RUST_LOG` filters (default `default_level`). Secrets never reach a log line:
/// the libraries never format them.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The wall clock, shared.
pub fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// Opens the store at `url`: `sqlite://PATH` (or a plain path), or `postgres://…` as the
/// application role — which refuses to start, listing every finding, unless the database
/// enforces tenant isolation (see `Store::open_postgres`).
pub async fn open_store(url: &str, clock: SharedClock) -> anyhow::Result<Store> {
    if is_postgres_url(url) {
        return Store::open_postgres(url, clock)
            .await
            .map_err(explain_store_error)
            .context("cannot open the PostgreSQL database");
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    Store::open_sqlite(Path::new(path), clock)
        .await
        .context("cannot open the database")
}

/// Prints isolation findings one per line (they are the operator's to-do list) and keeps
/// the error for the exit message.
pub fn explain_store_error(e: bastion_store::StoreError) -> anyhow::Error {
    if let bastion_store::StoreError::Unsafe { findings } = &e {
        for f in findings {
            eprintln!("isolation: {f}");
        }
    }
    anyhow::Error::new(e)
}

/// The role name of a PostgreSQL URL (its user part).
pub fn role_of(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).context("the database URL is not a valid URL")?;
    let user = parsed.username();
    if user.is_empty() {
        bail!("the database URL names no role (postgres://ROLE@HOST/DB)");
    }
    Ok(user.to_owned())
}

/// Applies the PostgreSQL migrations as the owner role at `owner_url` and grants the
/// application role `app_role`.
pub async fn migrate_postgres(
    owner_url: &str,
    app_role: &str,
    clock: &SharedClock,
) -> anyhow::Result<()> {
    Store::migrate_postgres(owner_url, app_role, clock)
        .await
        .map_err(explain_store_error)
        .context("cannot migrate the PostgreSQL database")
}

/// Largest secret key file read, in bytes (the field secret itself is at most 1024).
const SECRET_FILE_BYTES_MAX: u64 = 4096;
/// Random bytes in a secret key file created by [`load_or_create_secret_file`]: 256 bits.
const SECRET_FILE_RANDOM_BYTES: usize = 32;

/// Reads a server secret key file (`identity.secret_key_file`, `DIR/secret.key`): its bytes
/// with surrounding ASCII whitespace trimmed — the same bytes `Config::check_safe` measures.
/// They are the master secret of field encryption (TOTP secrets at rest), so the file must
/// stay the same across restarts. At least 32 bytes (checked by
/// `IdentityConfig::with_field_secret`).
pub fn read_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let cannot = || format!("cannot read the secret key file {}", path.display());
    let len = std::fs::metadata(path).with_context(cannot)?.len();
    if len > SECRET_FILE_BYTES_MAX {
        bail!(
            "the secret key file {} is larger than {SECRET_FILE_BYTES_MAX} bytes",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(cannot)?;
    Ok(bytes.trim_ascii().to_vec())
}

/// Reads `path`, or creates it first: 32 CSPRNG bytes as base64url, mode 0600, created
/// exclusively (never overwritten). Returns the secret and whether it was just created.
pub fn load_or_create_secret_file(path: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let created = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let token = bastion_crypto::random_token(SECRET_FILE_RANDOM_BYTES)?;
            f.write_all(token.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", path.display()));
        }
    };
    Ok((read_secret_file(path)?, created))
}

/// Everything needed to serve one app.
pub struct Services {
    /// Router state.
    pub state: AppState,
    /// The identity service, for seeding.
    pub identity: Arc<IdentityService>,
}

/// Inputs of [`build`].
pub struct BuildArgs<'a> {
    /// The PSP for the money tools, if configured.
    pub psp: Option<Arc<dyn bastion_payments::psp::Psp>>,
    /// The payment lease override (`[payments.psp] lease_secs`).
    pub payment_lease_secs: Option<i64>,
    pub app_dir: &'a Path,
    pub store: Store,
    pub key_dir: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub options: ServerOptions,
    pub clock: SharedClock,
    /// The field-encryption master secret (see [`read_secret_file`]).
    pub field_secret: Vec<u8>,
    /// `[agent]`: the model provider, limits and budgets.
    pub agent: bastion_server::config::AgentSection,
}

/// Largest model API key file read, in bytes.
const API_KEY_FILE_BYTES_MAX: u64 = 4096;

/// The model provider of `[agent]` and whether it is the offline stand-in. The API key comes
/// from `api_key_file` only; a local server without one gets the placeholder `no-key`.
pub fn agent_provider(
    a: &bastion_server::config::AgentSection,
) -> anyhow::Result<(Arc<dyn bastion_agent::ModelProvider>, bool)> {
    use bastion_server::config::ProviderKind;
    match a.provider {
        ProviderKind::Offline => Ok((Arc::new(bastion_agent::Offline), true)),
        ProviderKind::Openai => {
            let (Some(base), Some(model), Some(region)) = (&a.base_url, &a.model, &a.region) else {
                bail!("agent: provider = \"openai\" needs base_url, model and region");
            };
            let key = match &a.api_key_file {
                Some(f) => {
                    let len = std::fs::metadata(f)
                        .with_context(|| format!("cannot read {}", f.display()))?
                        .len();
                    if len > API_KEY_FILE_BYTES_MAX {
                        bail!("agent.api_key_file {} is too large", f.display());
                    }
                    String::from_utf8(read_secret_file(f)?)
                        .context("agent.api_key_file is not text")?
                }
                None => "no-key".to_owned(),
            };
            let key = bastion_agent::ApiKey::new(key).map_err(|e| anyhow::anyhow!("agent: {e}"))?;
            let p = bastion_agent::OpenAiCompatible::new(base, model.clone(), key, region.clone())
                .map_err(|e| anyhow::anyhow!("agent: {e}"))?;
            Ok((Arc::new(p), false))
        }
    }
}

/// Loads and strictly validates the app (refusing to start on any finding), loads or creates
/// the signing keys, and builds the identity service and the pipeline.
pub async fn build(a: BuildArgs<'_>) -> anyhow::Result<Services> {
    let app = AppSpec::load(a.app_dir).map_err(|findings| {
        for f in &findings {
            eprintln!("{f}");
        }
        anyhow::anyhow!(
            "the app at `{}` has {} finding(s); run `bastion check`",
            a.app_dir.display(),
            findings.len()
        )
    })?;
    let app = Arc::new(app);
    let authz = match Authorizer::new(&app) {
        Ok(a) => Arc::new(a),
        Err(bastion_authz::AuthzError::Refused(findings)) => {
            for f in &findings {
                eprintln!("{f}");
            }
            anyhow::bail!(
                "the policy set has {} finding(s); run `bastion check`",
                findings.len()
            );
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the policy set does not validate")),
    };
    let keys =
        KeyRing::load_or_generate(&a.key_dir).context("cannot load or create signing keys")?;
    let config = IdentityConfig::new(a.issuer, a.audience)
        .with_field_secret(&a.field_secret)
        .context(
            "the secret key file cannot key field encryption: it must hold 32 to 1024 bytes",
        )?;
    let identity = Arc::new(
        IdentityService::new(
            a.store.clone(),
            Arc::new(keys),
            Arc::clone(&a.clock),
            config,
        )
        .await?,
    );
    let default_region = app.region.clone();
    let (provider, offline) = agent_provider(&a.agent)?;
    let url_allowlist = bastion_guard::UrlAllowlist::new(a.agent.url_allowlist.iter())
        .map_err(|e| anyhow::anyhow!("agent.url_allowlist: {e}"))?;
    let agent = bastion_server::agent::AgentService::new(
        bastion_server::agent::AgentSettings {
            provider,
            offline,
            limits: bastion_agent::Limits::default(),
            url_allowlist,
            quotas: a.agent.quotas(),
            default_region,
        },
        Arc::clone(&a.clock),
    );
    let mut pipeline =
        Pipeline::new(app, authz, a.store.clone(), a.clock).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(psp) = a.psp {
        pipeline = pipeline.with_psp(psp);
    }
    if let Some(secs) = a.payment_lease_secs {
        pipeline = pipeline.with_payment_lease_secs(secs);
    }
    let state = AppState {
        agent: Some(Arc::new(agent)),
        identity: Arc::clone(&identity),
        pipeline,
        store: a.store.clone(),
        options: Arc::new(a.options),
    };
    Ok(Services { state, identity })
}

/// The PSP client of `[payments.psp]` (Stripe's API; the key read from its 0600 file).
pub fn psp_client(
    section: &bastion_server::config::PspSection,
) -> anyhow::Result<Arc<dyn bastion_payments::psp::Psp>> {
    let bytes = read_secret_file(&section.api_key_file)?;
    let text = String::from_utf8(bytes).context("the PSP api key file is not text")?;
    psp_from(&section.base_url, text.trim())
}

/// A Stripe-compatible PSP client for `url` with `api_key`.
pub fn psp_from(url: &str, api_key: &str) -> anyhow::Result<Arc<dyn bastion_payments::psp::Psp>> {
    use bastion_payments::psp::{ApiKey, StripeConfig, StripePsp};
    let key = ApiKey::parse(api_key).map_err(|e| anyhow::anyhow!("payments.psp: {e}"))?;
    let psp = StripePsp::new(StripeConfig::new(url, key))
        .map_err(|e| anyhow::anyhow!("payments.psp: {e}"))?;
    Ok(Arc::new(psp))
}

/// The webhook endpoints of `[[payments.webhooks]]`, secrets read from their files.
pub fn webhook_endpoints(
    payments: &bastion_server::config::PaymentsSection,
    clock: &SharedClock,
) -> anyhow::Result<Vec<bastion_server::webhooks::WebhookEndpoint>> {
    use bastion_server::config::WebhookScheme;
    let mut out = Vec::new();
    for w in &payments.webhooks {
        let ok = !w.provider.is_empty()
            && w.provider.len() <= 32
            && w.provider
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            bail!(
                "payments.webhooks: provider `{}` must be 1..=32 of [a-z0-9_-]",
                w.provider
            );
        }
        let mut secrets = Vec::new();
        for f in &w.secret_files {
            let bytes = read_secret_file(f)?;
            secrets.push(
                String::from_utf8(bytes).with_context(|| {
                    format!("the webhook secret file {} is not text", f.display())
                })?,
            );
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let scheme = match w.scheme {
            WebhookScheme::Stripe => bastion_payments::webhook::ProviderKind::Stripe,
            WebhookScheme::Standard => bastion_payments::webhook::ProviderKind::StandardWebhooks,
        };
        let verifier = bastion_payments::webhook::WebhookVerifier::new(
            scheme,
            &refs,
            w.tolerance_secs,
            Arc::clone(clock),
        )
        .map_err(|e| anyhow::anyhow!("payments.webhooks `{}`: {e}", w.provider))?;
        out.push(bastion_server::webhooks::WebhookEndpoint {
            provider: w.provider.clone(),
            verifier,
        });
    }
    Ok(out)
}

/// Starts the job worker (webhook handlers, retries, dead letters) until `stop`; with
/// `reconcile`, also the `reconcile` job handler and its daily scheduler (yesterday's day,
/// enqueued once per day).
pub fn spawn_worker(
    store: Store,
    app: Arc<bastion_app::AppSpec>,
    stop: tokio::sync::watch::Receiver<bool>,
    reconcile: Option<crate::payments::ReconcileJob>,
) {
    let name = format!("bastion-{}", std::process::id());
    let mut worker = bastion_tools::worker::Worker::new(
        store.clone(),
        bastion_tools::worker::WorkerConfig::named(&name),
    )
    .with_app_handlers(app);
    if let Some(job) = reconcile {
        worker = worker.with_handler(crate::payments::RECONCILE_JOB, Arc::new(job));
        crate::payments::spawn_scheduler(store, clock(), stop.clone());
    }
    tokio::spawn(worker.run(stop));
}

/// Binds and serves until Ctrl-C.
pub async fn run_server(
    state: AppState,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    reconcile: Option<crate::payments::ReconcileJob>,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    on_bound(bound);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    spawn_worker(
        state.store.clone(),
        state.pipeline.app_arc(),
        rx.clone(),
        reconcile,
    );
    // Behind a trusted proxy every connection comes from the proxy: no per-address share.
    let mut limits = ConnLimits::default();
    if state.options.trusted_proxy {
        limits.connections_per_address_max = limits.connections_max;
    }
    listen::serve(listener, bastion_server::router(state), tls, limits, rx).await;
    Ok(())
}

/// `bastion serve --config FILE`.
///
/// `identity.secret_key_file` is required in every profile, `dev` included: it keys the
/// encryption of TOTP secrets at rest, and a server without it could only use an ephemeral
/// key — every second factor enrolled would stop working at the next restart. (`bastion
/// demo` is the zero-configuration path; it creates `DIR/secret.key` itself.) The file is
/// read before anything is opened or created.
pub async fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config_path)?;
    cfg.check_safe()?;
    let Some(secret_path) = &cfg.identity.secret_key_file else {
        bail!(
            "refusing to start: identity.secret_key_file is not set (it keys the encryption of TOTP secrets at rest; create one with 32 random bytes, mode 0600)"
        );
    };
    let field_secret = read_secret_file(secret_path)?;
    if field_secret.len() < bastion_crypto::FIELD_MASTER_SECRET_BYTES_MIN {
        bail!(
            "refusing to start: identity.secret_key_file is shorter than {} bytes",
            bastion_crypto::FIELD_MASTER_SECRET_BYTES_MIN
        );
    }
    let reconcile = crate::payments::reconcile_job(&cfg)?;
    let clock = clock();
    if let Some(owner) = &cfg.database.migrate_url {
        migrate_postgres(owner, &role_of(&cfg.database.url)?, &clock).await?;
    }
    let store = open_store(&cfg.database.url, Arc::clone(&clock)).await?;
    if cfg.profile != Profile::Dev {
        let demo = bastion_store::users::demo_user_count(&store)
            .await
            .context("cannot read accounts")?;
        if demo > 0 {
            bail!(
                "refusing to start: {demo} demo or test account(s) present in the {:?} profile",
                cfg.profile
            );
        }
    }
    let tls = match (&cfg.server.tls_cert, &cfg.server.tls_key) {
        (Some(c), Some(k)) => Some(listen::tls13_config(c, k)?),
        _ => None,
    };
    let options = ServerOptions {
        tls: tls.is_some(),
        cors_allowed_origins: cfg.server.cors_allowed_origins.clone(),
        max_body_bytes: cfg.server.max_body_bytes,
        request_timeout_secs: cfg.server.request_timeout_secs,
        issuer: cfg.identity.issuer.trim_end_matches('/').to_owned(),
        webhooks: webhook_endpoints(&cfg.payments, &clock)?,
        trusted_proxy: cfg.server.trusted_proxy,
        webhook_refusals: Default::default(),
    };
    let psp = cfg.payments.psp.as_ref().map(psp_client).transpose()?;
    let services = build(BuildArgs {
        psp,
        payment_lease_secs: cfg.payments.psp.as_ref().and_then(|p| p.lease_secs),
        app_dir: &cfg.app.dir,
        store,
        key_dir: cfg.identity.key_dir.clone(),
        issuer: options.issuer.clone(),
        audience: cfg.identity.audience.clone(),
        options,
        clock,
        field_secret,
        agent: cfg.agent.clone(),
    })
    .await?;
    run_server(services.state, cfg.server.listen, tls, reconcile, |a| {
        tracing::info!(addr = %a, profile = ?cfg.profile, "bastion listening");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
