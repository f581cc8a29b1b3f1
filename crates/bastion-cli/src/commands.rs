//! Operator commands: `check`, `tenants`, `users`, `audit verify`, `killswitch`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bastion_app::AppSpec;
use bastion_types::Slug;
use clap::{Args, Subcommand};

use crate::runtime;

/// Where the database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Data directory of a `bastion demo` or `bastion serve` instance (uses DIR/bastion.db).
    #[arg(long, global = true, default_value = "./bastion-data")]
    pub data: PathBuf,
    /// Database URL (`sqlite://PATH`, or `postgres://APP_ROLE@HOST/DB`); overrides --data.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// The instance's secret key file, which encrypts TOTP secrets at rest: the
    /// `identity.secret_key_file` of a `bastion serve` config. Default: DIR/secret.key (made
    /// by `bastion demo`) when it exists.
    #[arg(long, global = true)]
    pub secret_key_file: Option<PathBuf>,
}

impl DbArgs {
    fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data.join("bastion.db").display()))
    }
}

/// `bastion tenants ...`
#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Create a tenant.
    Add {
        /// Tenant slug (a-z, 0-9, -).
        slug: String,
        /// Data region of the tenant.
        #[arg(long, default_value = "eu")]
        region: String,
    },
    /// List tenants.
    List,
}

/// `bastion users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Add a user; the password is read from standard input (one line).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        /// Comma-separated roles from the app manifest.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// List a tenant's users.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Replace a user's roles.
    Roles {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Disable a user: every session and access token dies at once.
    Disable {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
    },
    /// Remove a user's second factor; the next login enrolls again.
    ResetMfa {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
    },
}

/// `bastion killswitch ...`: stop tool calls globally, for one tool everywhere, for one
/// tenant, or for one tool of one tenant. Takes effect on every instance sharing the database
/// at the next call; each change is audited (system chain without `--tenant`, else the
/// tenant's chain) with `via: operator` and the reason.
#[derive(Debug, Subcommand)]
pub enum KillSwitchCmd {
    /// Engage a switch: without --tenant and --tool, every tool of every tenant.
    Engage {
        #[command(flatten)]
        target: SwitchTarget,
        /// Why (recorded with the switch and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Release a switch (the same target as the engage).
    Release {
        #[command(flatten)]
        target: SwitchTarget,
        /// Why (recorded with the switch and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// List every switch, engaged or released.
    List,
}

/// What a switch covers.
#[derive(Debug, Args)]
pub struct SwitchTarget {
    /// Only this tenant (slug); default: every tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this tool; default: every tool.
    #[arg(long)]
    tool: Option<String>,
}

/// `bastion audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify every audit chain; exit 1 naming the first bad position.
    Verify {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `bastion check [APP_DIR] [--database-url URL]`: manifest, schemas and Cedar strict
/// validation of the app; and, with a PostgreSQL URL, the same isolation self-check
/// `bastion serve` runs at start (connect with the application role's URL). Exit 1 when
/// anything is found.
pub async fn check(dir: Option<&Path>, database_url: Option<&str>) -> anyhow::Result<ExitCode> {
    if dir.is_none() && database_url.is_none() {
        bail!("nothing to check: give an app folder, --database-url, or both");
    }
    let mut out = std::io::stdout().lock();
    let mut bad = 0usize;
    if let Some(dir) = dir {
        let mut findings = match AppSpec::load(dir) {
            Ok(app) => bastion_authz::check(&app),
            Err(f) => f,
        };
        findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        for f in &findings {
            writeln!(out, "{f}")?;
        }
        if findings.is_empty() {
            writeln!(out, "ok: {} is valid", dir.display())?;
        } else {
            writeln!(out, "{} finding(s)", findings.len())?;
        }
        bad += findings.len();
    }
    if let Some(url) = database_url {
        if !bastion_server::config::is_postgres_url(url) {
            bail!(
                "--database-url: the isolation check is for PostgreSQL (postgres://APP_ROLE@HOST/DB)"
            );
        }
        match bastion_store::Store::open_postgres(url, runtime::clock()).await {
            Ok(store) => {
                store.close().await;
                writeln!(
                    out,
                    "ok: the database enforces tenant isolation for this role (row-level security on every tenant table)"
                )?;
            }
            Err(bastion_store::StoreError::Unsafe { findings }) => {
                for f in &findings {
                    writeln!(out, "isolation: {f}")?;
                }
                writeln!(out, "{} isolation finding(s)", findings.len())?;
                bad += findings.len();
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot reach the database")),
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `bastion migrate --database-url OWNER_URL --app-role ROLE` (PostgreSQL).
pub async fn migrate(owner_url: &str, app_role: &str) -> anyhow::Result<ExitCode> {
    if !bastion_server::config::is_postgres_url(owner_url) {
        bail!("bastion migrate is for PostgreSQL; SQLite databases migrate when opened");
    }
    let clock = runtime::clock();
    runtime::migrate_postgres(owner_url, app_role, &clock).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ok: schema migrated; role {app_role} granted row privileges only"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The identity service over the database, for operator commands. Tokens are never issued
/// here, so an ephemeral key ring is enough.
///
/// Commands that read or write a TOTP secret need the instance's field-encryption secret:
/// `--secret-key-file`, else `DIR/secret.key` when it exists. Without either the service
/// gets an ephemeral key, which is enough for every command today: `users list` reads only
/// whether a factor is confirmed and `users reset-mfa` deletes the secret unread.
async fn identity_for(db: &DbArgs) -> anyhow::Result<bastion_identity::IdentityService> {
    let secret_file = db.secret_key_file.clone().or_else(|| {
        let default = db.data.join("secret.key");
        default.exists().then_some(default)
    });
    let mut config = bastion_identity::IdentityConfig::new("urn:bastion:operator", "bastion");
    if let Some(path) = secret_file {
        config = config
            .with_field_secret(&runtime::read_secret_file(&path)?)
            .with_context(|| format!("{} must hold 32 to 1024 bytes", path.display()))?;
    }
    let store = runtime::open_store(&db.url(), runtime::clock()).await?;
    let keys = std::sync::Arc::new(bastion_crypto::KeyRing::ephemeral()?);
    Ok(bastion_identity::IdentityService::new(store, keys, runtime::clock(), config).await?)
}

fn slug(s: &str) -> anyhow::Result<Slug> {
    Slug::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn slugs(v: &[String]) -> anyhow::Result<Vec<Slug>> {
    v.iter().map(|s| slug(s)).collect()
}

/// `bastion tenants ...`
pub async fn tenants(db: &DbArgs, cmd: TenantsCmd) -> anyhow::Result<ExitCode> {
    let admin = identity_for(db).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        TenantsCmd::Add { slug: s, region } => {
            let id = admin.create_tenant(&slug(&s)?, &region).await?;
            writeln!(out, "{id} {s}")?;
        }
        TenantsCmd::List => {
            for t in admin.list_tenants().await? {
                writeln!(out, "{} {} {}", t.id, t.slug, t.region)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bastion users ...`
pub async fn users(db: &DbArgs, cmd: UsersCmd) -> anyhow::Result<ExitCode> {
    let admin = identity_for(db).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        UsersCmd::Add {
            tenant,
            username,
            roles,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("give the password on standard input");
            }
            let account = bastion_identity::NewAccount {
                username: slug(&username)?,
                password: password.to_owned(),
                roles: slugs(&roles)?,
                is_demo: false,
            };
            let id = admin.add_user(&slug(&tenant)?, account).await?;
            writeln!(out, "{id} {username}")?;
        }
        UsersCmd::List { tenant } => {
            for u in admin.list_users(&slug(&tenant)?).await? {
                let roles: Vec<&str> = u.roles.iter().map(Slug::as_str).collect();
                writeln!(
                    out,
                    "{} {} roles={} disabled={} mfa={}",
                    u.id,
                    u.username,
                    roles.join(","),
                    u.disabled,
                    u.mfa_enrolled
                )?;
            }
        }
        UsersCmd::Roles {
            tenant,
            username,
            roles,
        } => {
            admin
                .set_roles(&slug(&tenant)?, &slug(&username)?, slugs(&roles)?)
                .await?;
            writeln!(out, "ok")?;
        }
        UsersCmd::Disable { tenant, username } => {
            admin
                .disable_user(&slug(&tenant)?, &slug(&username)?)
                .await?;
            writeln!(out, "ok: {username} disabled; its sessions are revoked")?;
        }
        UsersCmd::ResetMfa { tenant, username } => {
            admin.reset_mfa(&slug(&tenant)?, &slug(&username)?).await?;
            writeln!(
                out,
                "ok: {username} will enroll a second factor at next login"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bastion jobs ...`: the dead-letter queue of background jobs.
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List dead-lettered jobs (out of attempts), newest first.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put a dead-lettered job back in the queue with fresh attempts.
    Replay {
        /// The job id (from `bastion jobs dead`).
        id: String,
    },
}

/// `bastion jobs`.
pub async fn jobs(db: &DbArgs, cmd: JobsCmd) -> anyhow::Result<ExitCode> {
    let store = runtime::open_store(&db.url(), runtime::clock()).await?;
    let mut sys = store.system().await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        JobsCmd::Dead { limit } => {
            let dead = bastion_store::jobs::list_dead(&mut sys, limit).await?;
            for j in &dead {
                writeln!(
                    out,
                    "{}\t{}\tattempts={}\tlast_error={}",
                    j.id,
                    j.kind,
                    j.attempts,
                    j.last_error.as_deref().unwrap_or("-")
                )?;
            }
            writeln!(out, "{} dead job(s)", dead.len())?;
        }
        JobsCmd::Replay { id } => {
            let id: bastion_store::jobs::JobId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("`{id}` is not a job id"))?;
            bastion_store::jobs::replay_dead(&mut sys, id).await?;
            writeln!(out, "ok: job {id} queued again")?;
        }
    }
    sys.commit().await?;
    Ok(ExitCode::SUCCESS)
}

/// `bastion psp-sandbox`: serves the test-mode PSP until Ctrl-C.
pub async fn psp_sandbox(
    listen: &str,
    api_key_file: &Path,
    webhook_url: Option<&str>,
    webhook_secret_file: Option<&Path>,
    create_delay_ms: u64,
) -> anyhow::Result<ExitCode> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address"))?;
    if !addr.ip().is_loopback() {
        bail!("the PSP sandbox listens on loopback only");
    }
    let key = String::from_utf8(runtime::read_secret_file(api_key_file)?)
        .context("the API key file is not text")?;
    let mut config = bastion_psp_sandbox::SandboxConfig::new(&key, runtime::clock())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    config.create_delay_ms = create_delay_ms;
    match (webhook_url, webhook_secret_file) {
        (Some(url), Some(file)) => {
            let secret = String::from_utf8(runtime::read_secret_file(file)?)
                .context("the webhook secret file is not text")?;
            config.webhooks.push(bastion_psp_sandbox::WebhookEndpoint {
                url: url.to_owned(),
                secret: bastion_payments::webhook::StripeSecret::parse(&secret)
                    .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?,
            });
        }
        (None, None) => {}
        _ => bail!("--webhook-url and --webhook-secret-file go together"),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "bastion psp-sandbox: test mode, listening on http://{bound}"
        )?;
        out.flush()?;
    }
    bastion_psp_sandbox::serve(listener, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `bastion audit verify`.
pub async fn audit(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let AuditCmd::Verify { db } = cmd;
    let url = db.url();
    let store = if bastion_server::config::is_postgres_url(&url) {
        runtime::open_store(&url, runtime::clock()).await?
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(&url);
        bastion_store::Store::open_sqlite_read_only(Path::new(path), runtime::clock())
            .await
            .context("cannot open the database read-only")?
    };
    let mut chains = Vec::new();
    {
        let mut sys = store.system().await?;
        let tenants = bastion_store::tenants::list_tenants(&mut sys).await?;
        chains.push(bastion_store::audit::system_read_chain(&mut sys).await?);
        sys.rollback().await?;
        for t in tenants {
            let mut tx = store
                .begin(bastion_store::TenantScope::pre_auth(t.id))
                .await?;
            chains.push(bastion_store::audit::read_chain(&mut tx).await?);
            tx.rollback().await?;
        }
    }
    let mut out = std::io::stdout().lock();
    let mut bad = 0usize;
    for chain in chains {
        match bastion_audit::verify(&chain.records, chain.head) {
            Ok(r) => writeln!(
                out,
                "ok: chain {} verifies ({} records)",
                chain.tenant_id, r.count
            )?,
            Err(e) => {
                bad += 1;
                writeln!(out, "FAIL: chain {}: {e}", chain.tenant_id)?;
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `bastion killswitch engage|release|list`.
pub async fn killswitch(db: &DbArgs, cmd: KillSwitchCmd) -> anyhow::Result<ExitCode> {
    use bastion_tools::killswitch::{self as ks, Actor, SwitchChange};
    let store = runtime::open_store(&db.url(), runtime::clock()).await?;
    let mut out = std::io::stdout().lock();
    let (engage, target, reason) = match cmd {
        KillSwitchCmd::List => {
            let mut sys = store.system().await?;
            let tenants = bastion_store::tenants::list_tenants(&mut sys).await?;
            sys.rollback().await?;
            for k in ks::list_all(&store).await? {
                let tenant = k.tenant_id.map_or_else(
                    || "*".to_owned(),
                    |id| {
                        tenants
                            .iter()
                            .find(|t| t.id == id)
                            .map_or_else(|| id.to_string(), |t| t.slug.to_string())
                    },
                );
                writeln!(
                    out,
                    "{} tenant={} tool={} {} changed_at={} by={} reason={:?}",
                    k.scope,
                    tenant,
                    k.tool.as_deref().unwrap_or("*"),
                    if k.engaged { "ENGAGED" } else { "released" },
                    k.changed_at,
                    k.changed_by,
                    k.reason
                )?;
            }
            store.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        KillSwitchCmd::Engage { target, reason } => (true, target, reason),
        KillSwitchCmd::Release { target, reason } => (false, target, reason),
    };
    let tenant = match &target.tenant {
        None => None,
        Some(t) => {
            let mut sys = store.system().await?;
            let found = bastion_store::tenants::tenant_by_slug(&mut sys, &slug(t)?).await?;
            sys.rollback().await?;
            Some(found.with_context(|| format!("no tenant `{t}`"))?.id)
        }
    };
    let req = SwitchChange {
        engage,
        tenant,
        tool: target.tool.as_deref(),
        reason: &reason,
    };
    let change = ks::change(&store, Actor::Operator, &req).await?;
    store.close().await;
    let what = if engage { "engaged" } else { "released" };
    let before = if change.was_engaged {
        "engaged"
    } else {
        "released"
    };
    writeln!(
        out,
        "ok: {} switch tenant={} tool={} {what} (was {before})",
        req.scope(),
        target.tenant.as_deref().unwrap_or("*"),
        target.tool.as_deref().unwrap_or("*"),
    )?;
    Ok(ExitCode::SUCCESS)
}
