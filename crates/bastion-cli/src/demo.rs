//! `bastion demo`: the vendor-quote app, two seeded tenants, one command.
//!
//! The data directory holds `bastion.db`, `keys/`, `demo-credentials.json` and `secret.key`:
//! 32 random bytes (base64url, mode 0600) created on the first run and reused, the master
//! secret that encrypts TOTP secrets at rest. Operator commands pointed at the same
//! `--data DIR` read it from there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bastion_identity::{IdentityService, NewAccount};
use bastion_server::ServerOptions;
use bastion_server::listen::{self, ConnLimits};
use bastion_types::Slug;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::runtime::{self, BuildArgs};

/// The demo tenants.
pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// The demo users of each tenant: username and roles. Two Finance users so that a refund can
/// be approved by someone other than its requester.
pub const USERS: [(&str, &str); 4] = [
    ("buyer", "buyer"),
    ("seller", "seller"),
    ("finance", "finance"),
    ("finance2", "finance"),
];

/// `demo-credentials.json` (DESIGN.md): enough for a script to log in.
#[derive(Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL of the running demo.
    pub url: String,
    /// Tenant slug → its users.
    pub tenants: BTreeMap<String, TenantCredentials>,
    /// The test-mode PSP the demo started (its webhooks go to this demo).
    #[serde(default)]
    pub psp: Option<PspCredentials>,
}

/// The demo's test-mode payment provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PspCredentials {
    /// Base URL of `bastion psp-sandbox`'s Stripe-compatible API.
    pub url: String,
    /// Its API key (`sk_test_…`; test mode only).
    pub api_key: String,
}

/// One tenant's demo users.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantCredentials {
    /// Users with their secrets.
    pub users: Vec<UserCredentials>,
}

/// One demo user.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserCredentials {
    /// Username within the tenant.
    pub username: String,
    /// Password (random per data dir).
    pub password: String,
    /// Roles from the manifest.
    pub roles: Vec<String>,
    /// TOTP secret, RFC 4648 base32, already enrolled.
    pub totp_secret: String,
}

fn app_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let local = Path::new("examples/vendor-quote");
    if local.join("app.toml").is_file() {
        return Ok(local.to_path_buf());
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vendor-quote");
    if manifest_dir.join("app.toml").is_file() {
        return Ok(manifest_dir);
    }
    anyhow::bail!(
        "cannot find examples/vendor-quote: run from the repository root or pass --app DIR"
    )
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    restrict(path, 0o600)
}

/// `bastion demo --database-url URL`: PostgreSQL instead of the data dir's SQLite file.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// A role that may create the schema and roles (the owner / migrator).
    pub url: String,
    /// The application role the demo serves as.
    pub app_role: String,
}

impl Postgres {
    /// Migrates as the owner, ensures the application role, and returns the URL the demo
    /// serves with: the same server, database and options, as the application role.
    async fn prepare(&self, clock: &bastion_types::SharedClock) -> anyhow::Result<String> {
        bastion_store::Store::create_login_role_if_missing(&self.url, &self.app_role)
            .await
            .context("cannot create the application role")?;
        runtime::migrate_postgres(&self.url, &self.app_role, clock).await?;
        let mut app = url::Url::parse(&self.url).context("--database-url is not a valid URL")?;
        app.set_username(&self.app_role)
            .and_then(|()| app.set_password(None))
            .map_err(|()| anyhow::anyhow!("--database-url cannot carry a user name"))?;
        Ok(app.to_string())
    }
}

/// What [`start_psp_sandbox`] started.
struct DemoPsp {
    endpoint: bastion_server::webhooks::WebhookEndpoint,
    credentials: PspCredentials,
}

/// Starts `bastion psp-sandbox` in-process on 127.0.0.1 (a free port) with an API key and a
/// webhook secret kept in `DIR/psp.key` and `DIR/psp-webhook.secret` (0600, made once), its
/// webhooks going to `{demo_url}/v1/webhooks/stripe`.
async fn start_psp_sandbox(
    data: &Path,
    demo_url: &str,
    clock: &bastion_types::SharedClock,
) -> anyhow::Result<DemoPsp> {
    let key_path = data.join("psp.key");
    let whsec_path = data.join("psp-webhook.secret");
    if !key_path.exists() {
        write_private(
            &key_path,
            format!("sk_test_{}", bastion_crypto::random_token(24)?).as_bytes(),
        )?;
    }
    if !whsec_path.exists() {
        write_private(
            &whsec_path,
            format!("whsec_{}", bastion_crypto::random_token(24)?).as_bytes(),
        )?;
    }
    let api_key = String::from_utf8(runtime::read_secret_file(&key_path)?)?;
    let whsec = String::from_utf8(runtime::read_secret_file(&whsec_path)?)?;
    let mut config = bastion_psp_sandbox::SandboxConfig::new(&api_key, Arc::clone(clock))
        .map_err(|e| anyhow::anyhow!("psp sandbox: {e}"))?;
    config.webhooks.push(bastion_psp_sandbox::WebhookEndpoint {
        url: format!("{demo_url}/v1/webhooks/stripe"),
        secret: bastion_payments::webhook::StripeSecret::parse(&whsec)
            .map_err(|e| anyhow::anyhow!("psp sandbox: {e}"))?,
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the psp sandbox")?;
    let psp_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = bastion_psp_sandbox::serve(listener, config).await {
            tracing::error!(error = %e, "psp sandbox stopped");
        }
    });
    let verifier = bastion_payments::webhook::WebhookVerifier::new(
        bastion_payments::webhook::ProviderKind::Stripe,
        &[whsec.as_str()],
        300,
        Arc::clone(clock),
    )
    .map_err(|e| anyhow::anyhow!("webhook verifier: {e}"))?;
    Ok(DemoPsp {
        endpoint: bastion_server::webhooks::WebhookEndpoint {
            provider: "stripe".to_owned(),
            verifier,
        },
        credentials: PspCredentials {
            url: psp_url,
            api_key,
        },
    })
}

/// The demo's `[agent]`: the offline provider, or `--model-url` (OpenAI-compatible) with
/// `--model`, an optional key file and a region (`local` for a loopback URL by default).
pub fn agent_section(
    model_url: Option<String>,
    model: String,
    key_file: Option<PathBuf>,
    region: Option<String>,
) -> anyhow::Result<bastion_server::config::AgentSection> {
    use bastion_server::config::{AgentSection, ProviderKind};
    let Some(url) = model_url else {
        return Ok(AgentSection::default());
    };
    let parsed = url::Url::parse(&url).context("--model-url is not a URL")?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let region = match (region, loopback) {
        (Some(r), _) => r,
        (None, true) => bastion_agent::LOCAL_REGION.to_owned(),
        (None, false) => anyhow::bail!(
            "--model-region is required for a model that is not on loopback (the demo tenants are `eu`)"
        ),
    };
    Ok(AgentSection {
        provider: ProviderKind::Openai,
        base_url: Some(url),
        model: Some(model),
        api_key_file: key_file,
        region: Some(region),
        ..AgentSection::default()
    })
}

/// Where the demo's money tools charge.
#[derive(Debug, Default)]
pub struct PaymentOptions {
    /// An external Stripe-compatible PSP instead of the demo's sandbox.
    pub psp_url: Option<String>,
    /// Its API key file.
    pub psp_api_key_file: Option<std::path::PathBuf>,
    /// The payment lease override, seconds.
    pub lease_secs: Option<i64>,
}

/// A demo instance serving in this process ([`start`]).
pub struct Started {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// What `demo-credentials.json` holds.
    pub creds: Credentials,
    /// Where the credentials were written.
    pub creds_path: PathBuf,
    /// The store the instance serves from.
    pub store: bastion_store::Store,
    /// The app directory served.
    pub app_dir: PathBuf,
    /// The database URL it serves from (`sqlite://…`, or PostgreSQL as the app role).
    pub db_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Stops the server and the worker and waits for the server to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}

/// Starts the demo (store, PSP sandbox, seed, server, worker) in this process and returns
/// once it is listening.
///
/// # Errors
/// Unusable data dir, address, app or database.
pub async fn start(
    data: &Path,
    listen_addr: &str,
    app: Option<&Path>,
    pg: Option<Postgres>,
    payments: PaymentOptions,
    agent: bastion_server::config::AgentSection,
) -> anyhow::Result<Started> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    restrict(data, 0o700)?;
    let app_dir = app_dir(app)?;
    let addr: SocketAddr = listen_addr
        .parse()
        .with_context(|| format!("`{listen_addr}` is not an address"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}");

    let (field_secret, secret_created) =
        runtime::load_or_create_secret_file(&data.join("secret.key"))?;
    let clock = runtime::clock();
    let db_url = match &pg {
        Some(pg) => pg.prepare(&clock).await?,
        None => format!("sqlite://{}", data.join("bastion.db").display()),
    };
    let store = runtime::open_store(&db_url, Arc::clone(&clock)).await?;
    // The test-mode PSP, on loopback, signing its webhooks to this demo's receiver.
    let psp = start_psp_sandbox(data, &url, &clock).await?;
    let options = ServerOptions {
        tls: false,
        cors_allowed_origins: Vec::new(),
        max_body_bytes: bastion_server::config::MAX_BODY_BYTES_DEFAULT,
        request_timeout_secs: bastion_server::config::REQUEST_TIMEOUT_SECS_DEFAULT,
        issuer: url.clone(),
        webhooks: vec![psp.endpoint],
        trusted_proxy: false,
        webhook_refusals: Default::default(),
    };
    // The money tools charge through the sandbox the demo just started.
    let psp_client = match (&payments.psp_url, &payments.psp_api_key_file) {
        (Some(url), Some(file)) => {
            let key = String::from_utf8(runtime::read_secret_file(file)?)
                .context("the PSP api key file is not text")?;
            runtime::psp_from(url, key.trim())?
        }
        (None, None) => runtime::psp_from(&psp.credentials.url, &psp.credentials.api_key)?,
        _ => anyhow::bail!("--psp-url and --psp-api-key-file go together"),
    };
    let services = runtime::build(BuildArgs {
        psp: Some(psp_client),
        payment_lease_secs: payments.lease_secs,
        app_dir: &app_dir,
        store,
        key_dir: data.join("keys"),
        issuer: url.clone(),
        audience: "bastion".to_owned(),
        options,
        clock: Arc::clone(&clock),
        field_secret,
        agent,
    })
    .await?;

    let creds_path = data.join("demo-credentials.json");
    let creds = match std::fs::read(&creds_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Credentials>(&b).ok())
    {
        Some(mut c) if tenant_exists(&services.identity, "acme").await? => {
            c.url.clone_from(&url);
            if secret_created {
                // A data dir from before secret.key existed: its stored TOTP secrets cannot
                // be read under the new key, so the demo users get fresh ones.
                reprovision_totp(&services.identity, &mut c).await?;
            }
            c
        }
        _ => seed(&services, &url).await?,
    };
    let mut creds = creds;
    creds.psp = Some(psp.credentials);
    write_private(&creds_path, &serde_json::to_vec_pretty(&creds)?)?;

    let (tx, rx) = tokio::sync::watch::channel(false);
    let store = services.state.store.clone();
    runtime::spawn_worker(
        store.clone(),
        services.state.pipeline.app_arc(),
        rx.clone(),
        None,
    );
    let router = bastion_server::router(services.state);
    let server = tokio::spawn(async move {
        listen::serve(listener, router, None, ConnLimits::default(), rx).await;
    });
    Ok(Started {
        url,
        creds,
        creds_path,
        store,
        app_dir,
        db_url,
        stop: tx,
        server,
    })
}

/// Runs the demo until Ctrl-C.
pub async fn run(
    data: &Path,
    listen_addr: &str,
    app: Option<&Path>,
    pg: Option<Postgres>,
    payments: PaymentOptions,
    agent: bastion_server::config::AgentSection,
) -> anyhow::Result<ExitCode> {
    let model = match (&agent.base_url, &agent.model) {
        (Some(u), Some(m)) => format!("{m} at {u}"),
        _ => "offline (no model configured; pass --model-url)".to_owned(),
    };
    let started = start(data, listen_addr, app, pg, payments, agent).await?;
    println_out(&format!(
        "bastion demo: serving {} at {}\n  credentials: {}\n  test-mode PSP (psp-sandbox): {}\n  agent model: {model}\n  stop with Ctrl-C",
        started.app_dir.display(),
        started.url,
        started.creds_path.display(),
        started.creds.psp.as_ref().map_or("", |p| p.url.as_str())
    ));
    let _ = tokio::signal::ctrl_c().await;
    started.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn tenant_exists(identity: &IdentityService, slug_text: &str) -> anyhow::Result<bool> {
    Ok(identity
        .list_tenants()
        .await?
        .iter()
        .any(|t| t.slug.as_str() == slug_text))
}

fn slug(s: &str) -> anyhow::Result<Slug> {
    Slug::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn println_out(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// Gives every demo user in `creds` a fresh TOTP secret (sealed under the current key).
async fn reprovision_totp(
    identity: &IdentityService,
    creds: &mut Credentials,
) -> anyhow::Result<()> {
    for (tenant, t) in &mut creds.tenants {
        for u in &mut t.users {
            u.totp_secret = identity
                .provision_totp(&slug(tenant)?, &slug(&u.username)?)
                .await?
                .secret_base32;
        }
    }
    Ok(())
}

/// Creates the two tenants and their users, each with a random password and an enrolled TOTP.
async fn seed(services: &runtime::Services, url: &str) -> anyhow::Result<Credentials> {
    let admin = &services.identity;
    let mut tenants = BTreeMap::new();
    for t in TENANTS {
        let tenant = slug(t)?;
        if !tenant_exists(admin, t).await? {
            admin.create_tenant(&tenant, "eu").await?;
        }
        let mut users = Vec::new();
        for (username, role) in USERS {
            let password = bastion_crypto::random_token(18)?;
            let roles = vec![slug(role)?];
            let account = NewAccount {
                username: slug(username)?,
                password: password.clone(),
                roles,
                is_demo: true,
            };
            admin.add_user(&tenant, account).await?;
            let totp_secret = admin
                .provision_totp(&tenant, &slug(username)?)
                .await?
                .secret_base32;
            users.push(UserCredentials {
                username: username.to_owned(),
                password,
                roles: vec![role.to_owned()],
                totp_secret,
            });
        }
        tenants.insert(t.to_owned(), TenantCredentials { users });
    }
    Ok(Credentials {
        url: url.to_owned(),
        tenants,
        psp: None,
    })
}
