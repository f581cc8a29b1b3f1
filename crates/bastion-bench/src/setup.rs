//! The stack under test, built the way `bastion-cli`'s runtime builds it: a SQLite file in a
//! temporary directory, the vendor-quote app, an Ed25519 key ring, the identity service, the
//! pipeline and the router state. Users get a provisioned TOTP and log in with password + code.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bastion_app::AppSpec;
use bastion_authz::Authorizer;
use bastion_crypto::KeyRing;
use bastion_identity::{
    IdentityConfig, IdentityService, LoginOutcome, NewAccount, PasswordParams, TOTP_DIGITS,
    TokenPair, totp_code,
};
use bastion_server::{AppState, ServerOptions};
use bastion_store::Store;
use bastion_tools::{CallContext, Pipeline};
use bastion_types::{Principal, SharedClock, Slug, SystemClock, TenantId, UserId};
use serde_json::{Value, json};

use crate::{BenchError, Ctx};

/// Password of every benchmark user (argon2id with cheap test parameters, see below).
const PASSWORD: &str = "benchmark password 0123456789";
/// The issuer and audience of the benchmark's access tokens.
const ISSUER: &str = "http://bastion.bench";
const AUDIENCE: &str = "bastion";

/// A user who can log in.
#[derive(Debug, Clone)]
pub struct Account {
    /// Tenant slug.
    pub tenant: String,
    /// Username.
    pub username: String,
    /// The user's id.
    pub user_id: UserId,
    /// Raw TOTP secret.
    secret: Vec<u8>,
}

/// The stack.
pub struct Fixture {
    /// Keeps the database and keys alive.
    pub dir: tempfile::TempDir,
    /// The database file.
    pub db_path: PathBuf,
    /// The clock everything shares (the wall clock).
    pub clock: SharedClock,
    /// The store.
    pub store: Store,
    /// The Cedar authorizer of the app.
    pub authz: Arc<Authorizer>,
    /// Identity.
    pub identity: Arc<IdentityService>,
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Router state.
    pub state: AppState,
    /// Tenant ids by slug: `acme`, `globex`.
    pub acme: TenantId,
    /// The second tenant.
    pub globex: TenantId,
}

/// One instance's services over `store`, keys from `dir/keys`.
async fn instance(
    dir: &Path,
    store: Store,
    clock: SharedClock,
) -> Result<(AppState, Arc<Authorizer>), BenchError> {
    let app = AppSpec::load(&app_dir())
        .map_err(|f| BenchError(format!("examples/vendor-quote has {} finding(s)", f.len())))?;
    let app = Arc::new(app);
    let authz = Arc::new(Authorizer::new(&app).ctx("the vendor-quote policies refused")?);
    let keys = KeyRing::load_or_generate(&dir.join("keys")).ctx("cannot make keys")?;
    let mut config = IdentityConfig::new(ISSUER, AUDIENCE);
    // Logins are set-up here, not measured: cheap argon2id so seeding is quick.
    config.password = PasswordParams::TEST_ONLY;
    let identity = Arc::new(
        IdentityService::new(store.clone(), Arc::new(keys), Arc::clone(&clock), config)
            .await
            .ctx("cannot build the identity service")?,
    );
    let pipeline = Pipeline::new(
        Arc::clone(&app),
        Arc::clone(&authz),
        store.clone(),
        Arc::clone(&clock),
    )
    .map_err(BenchError)?;
    let state = AppState {
        identity,
        pipeline,
        store,
        options: Arc::new(ServerOptions {
            tls: false,
            cors_allowed_origins: Vec::new(),
            max_body_bytes: bastion_server::config::MAX_BODY_BYTES_DEFAULT,
            request_timeout_secs: bastion_server::config::REQUEST_TIMEOUT_SECS_DEFAULT,
            issuer: ISSUER.to_owned(),
            webhooks: Vec::new(),
            trusted_proxy: false,
            webhook_refusals: Default::default(),
        }),
        agent: None,
    };
    Ok((state, authz))
}

/// Where `examples/vendor-quote` is.
#[must_use]
pub fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vendor-quote")
}

fn slug(s: &str) -> Result<Slug, BenchError> {
    Slug::parse(s).ctx(&format!("bad slug `{s}`"))
}

impl Fixture {
    /// Builds the stack over a fresh SQLite file and creates the tenants `acme` and `globex`.
    ///
    /// # Errors
    /// Whatever fails to build.
    pub async fn new() -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("bastion-bench-")
            .tempdir()
            .ctx("cannot create a temporary directory")?;
        let db_path = dir.path().join("bastion.db");
        let clock: SharedClock = Arc::new(SystemClock);
        let store = Store::open_sqlite(&db_path, Arc::clone(&clock))
            .await
            .ctx("cannot open the SQLite store")?;
        Self::on(dir, db_path, store, clock).await
    }

    /// Builds the stack over `store` (e.g. PostgreSQL), keys in `dir`, and creates the
    /// tenants `acme` and `globex`.
    ///
    /// # Errors
    /// Whatever fails to build.
    pub async fn on(
        dir: tempfile::TempDir,
        db_path: PathBuf,
        store: Store,
        clock: SharedClock,
    ) -> Result<Self, BenchError> {
        let (state, authz) = instance(dir.path(), store.clone(), Arc::clone(&clock)).await?;
        let identity = Arc::clone(&state.identity);
        let pipeline = state.pipeline.clone();
        let acme = identity
            .create_tenant(&slug("acme")?, "eu")
            .await
            .ctx("create tenant acme")?;
        let globex = identity
            .create_tenant(&slug("globex")?, "eu")
            .await
            .ctx("create tenant globex")?;
        Ok(Self {
            dir,
            db_path,
            clock,
            store,
            authz,
            identity,
            pipeline,
            state,
            acme,
            globex,
        })
    }

    /// Another stateless instance over `store` (another pool on the same database), with
    /// the same signing keys: what a second `bastion serve` process would hold.
    ///
    /// # Errors
    /// Whatever fails to build.
    pub async fn second_instance(&self, store: Store) -> Result<AppState, BenchError> {
        Ok(instance(self.dir.path(), store, Arc::clone(&self.clock))
            .await?
            .0)
    }

    /// Adds a user with `role` and a provisioned (confirmed) TOTP factor.
    ///
    /// # Errors
    /// Whatever fails.
    pub async fn add_user(
        &self,
        tenant: &str,
        username: &str,
        role: &str,
    ) -> Result<Account, BenchError> {
        let t = slug(tenant)?;
        let u = slug(username)?;
        let user_id = self
            .identity
            .add_user(
                &t,
                NewAccount {
                    username: u.clone(),
                    password: PASSWORD.to_owned(),
                    roles: vec![slug(role)?],
                    is_demo: false,
                },
            )
            .await
            .ctx(&format!("add user {username}@{tenant}"))?;
        let totp = self
            .identity
            .provision_totp(&t, &u)
            .await
            .ctx("provision TOTP")?;
        let secret = data_encoding::BASE32_NOPAD
            .decode(totp.secret_base32.as_bytes())
            .or_else(|_| data_encoding::BASE32.decode(totp.secret_base32.as_bytes()))
            .ctx("TOTP secret is not base32")?;
        Ok(Account {
            tenant: tenant.to_owned(),
            username: username.to_owned(),
            user_id,
            secret,
        })
    }

    /// Password, then TOTP: a fresh token pair. Each account logs in at most once per
    /// 30-second TOTP step (a step is usable once).
    ///
    /// # Errors
    /// Whatever fails.
    pub async fn login(&self, a: &Account) -> Result<TokenPair, BenchError> {
        let outcome = self
            .identity
            .login(
                &a.tenant,
                &a.username,
                PASSWORD,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            )
            .await
            .ctx("login")?;
        let LoginOutcome::MfaRequired { mfa_token, .. } = outcome else {
            return Err(BenchError("expected an MFA challenge".to_owned()));
        };
        let now = u64::try_from(self.clock.now()).unwrap_or(0);
        let code = totp_code(&a.secret, now, TOTP_DIGITS);
        self.identity
            .verify_totp(&mfa_token, &code)
            .await
            .ctx("TOTP verification")
    }

    /// Logs in and verifies the access token: the principal the server would see.
    ///
    /// # Errors
    /// Whatever fails.
    pub async fn principal(&self, a: &Account) -> Result<(TokenPair, Principal), BenchError> {
        let pair = self.login(a).await?;
        let p = self
            .identity
            .verify_access_token(&pair.access_token)
            .await
            .ctx("verify access token")?;
        Ok((pair, p))
    }

    /// Creates `n` quotes through the pipeline as `buyer`, assigned to `seller`.
    ///
    /// # Errors
    /// The first failing call.
    pub async fn seed_quotes(
        &self,
        buyer: &Principal,
        seller: UserId,
        n: usize,
        samples: &mut crate::stats::Samples,
    ) -> Result<Vec<Value>, BenchError> {
        let ctx = CallContext {
            request_id: "seed".to_owned(),
            channel: "rest",
            idempotency_key: None,
        };
        let mut out = Vec::with_capacity(n);
        let start = crate::stats::now();
        for i in 0..n {
            let args = json!({
                "title": format!("Quote {i}: office chairs"),
                "seller": seller.to_string(),
                "line_items": [
                    {"description": "Ergonomic chair", "quantity": 12, "unit_price_minor": 18_900},
                    {"description": "Delivery", "quantity": 1, "unit_price_minor": 4_500}
                ],
                "amount_minor": 231_300,
                "currency": "EUR",
                "contact_email": "procurement@example.com",
                "note": "Delivery to the Lyon office."
            });
            let t = crate::stats::now();
            let r = self
                .pipeline
                .call(buyer, "create_quote", args, &ctx)
                .await
                .ctx("create_quote")?;
            samples.push(t.elapsed());
            out.push(r.result);
        }
        samples.wall = start.elapsed();
        Ok(out)
    }
}
