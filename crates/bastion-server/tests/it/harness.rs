//! The in-process harness: the real stack (SQLite file in a tempdir, the vendor-quote
//! manifest, Cedar, identity with a fixed clock, the pipeline, the router) driven with
//! `tower::ServiceExt::oneshot`, no port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use bastion_app::AppSpec;
use bastion_authz::Authorizer;
use bastion_crypto::KeyRing;
use bastion_identity::{IdentityConfig, IdentityService, NewAccount, PasswordParams, totp_code};
use bastion_server::{AppState, ServerOptions, router};
use bastion_store::records::{ListFilter, Page};
use bastion_store::{Store, TenantScope};
use bastion_tools::Pipeline;
use bastion_types::{Clock, FixedClock, RecordId, SharedClock, Slug, TenantId, UserId};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// On a TOTP step boundary.
pub const T0: i64 = 1_800_000_000;
pub const ISSUER: &str = "https://bastion.test";
pub const AUDIENCE: &str = "bastion";
pub const PASSWORD: &str = "correct horse battery staple";
/// The body limit of the harness' router.
pub const MAX_BODY: usize = 64 * 1024;

pub const TENANTS: [&str; 2] = ["acme", "globex"];
/// Seeded users of every tenant: (username, roles). `nobody` holds no role at all.
pub const USERS: [(&str, &[&str]); 7] = [
    ("buyer", &["buyer"]),
    ("buyer2", &["buyer"]),
    ("seller", &["seller"]),
    ("seller2", &["seller"]),
    ("finance", &["finance"]),
    ("finance2", &["finance"]),
    ("nobody", &[]),
];

pub fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

pub fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vendor-quote")
}

pub fn options(tls: bool, origins: &[&str]) -> ServerOptions {
    ServerOptions {
        tls,
        cors_allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
        max_body_bytes: MAX_BODY,
        request_timeout_secs: 30,
        issuer: ISSUER.to_owned(),
        webhooks: Vec::new(),
        trusted_proxy: false,
        webhook_refusals: Default::default(),
    }
}

#[derive(Debug, Clone)]
pub struct SeededUser {
    pub id: UserId,
    pub secret: Vec<u8>,
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL schema when the run is on PostgreSQL (`BASTION_TEST_DATABASE`).
    pub pg: Option<bastion_store::testing::PgTestDb>,
    pub clock: FixedClock,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub identity: Arc<IdentityService>,
    pub spec: Arc<AppSpec>,
    pub authz: Arc<Authorizer>,
    pub router: Router,
    /// The pipeline behind the router (same store, manifest and policies).
    pub pipeline: Pipeline,
    pub tenants: BTreeMap<String, TenantId>,
    pub users: BTreeMap<(String, String), SeededUser>,
    /// Last TOTP step used per (tenant, user), to avoid replay refusals.
    last_step: Mutex<BTreeMap<(String, String), i64>>,
}

pub fn identity_config() -> IdentityConfig {
    let mut c = IdentityConfig::new(ISSUER, AUDIENCE);
    c.password = PasswordParams::TEST_ONLY;
    c.access_ttl_secs = 3_600;
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(options(false, &[])).await
}

pub async fn spawn_app_with(opts: ServerOptions) -> TestApp {
    spawn_app_on(bastion_store::testing::backend_from_env(), opts).await
}

/// On a given backend, whatever `BASTION_TEST_DATABASE` says (tests that open the SQLite
/// file themselves).
pub async fn spawn_app_on(kind: bastion_store::BackendKind, opts: ServerOptions) -> TestApp {
    spawn_app_full(kind, opts, None, None, &app_dir()).await
}

/// As [`spawn_app_on`], serving the app in `app: Path` (a test manifest).
pub async fn spawn_app_in(
    kind: bastion_store::BackendKind,
    opts: ServerOptions,
    app: &Path,
) -> TestApp {
    spawn_app_full(kind, opts, None, None, app).await
}

/// With an agent (`/v1/agent/chat`, `/mcp` limits) built on the harness clock.
pub async fn spawn_app_with_agent(agent: bastion_server::agent::AgentSettings) -> TestApp {
    spawn_app_full(
        bastion_store::testing::backend_from_env(),
        options(false, &[]),
        None,
        Some(agent),
        &app_dir(),
    )
    .await
}

/// With a PSP for the payment tools and/or an agent, serving the app in `app`.
pub async fn spawn_app_full(
    kind: bastion_store::BackendKind,
    opts: ServerOptions,
    psp: Option<Arc<dyn bastion_payments::psp::Psp>>,
    agent: Option<bastion_server::agent::AgentSettings>,
    app: &Path,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(T0);
    let shared: SharedClock = Arc::new(clock.clone());
    let (store, pg) = match kind {
        bastion_store::BackendKind::Sqlite => (
            Store::open_sqlite(&dir.path().join("bastion.db"), Arc::clone(&shared))
                .await
                .unwrap(),
            None,
        ),
        bastion_store::BackendKind::Postgres => {
            let db = bastion_store::testing::PgTestDb::create(&shared)
                .await
                .unwrap_or_else(|e| unreachable!("PostgreSQL is required: {e}"));
            (db.open(Arc::clone(&shared)).await.unwrap(), Some(db))
        }
    };
    let spec = Arc::new(AppSpec::load(app).unwrap());
    let authz = Arc::new(Authorizer::new(&spec).unwrap());
    let keys = Arc::new(KeyRing::ephemeral().unwrap());
    let identity = Arc::new(
        IdentityService::new(
            store.clone(),
            Arc::clone(&keys),
            Arc::clone(&shared),
            identity_config(),
        )
        .await
        .unwrap(),
    );
    let pipeline = Pipeline::new(
        Arc::clone(&spec),
        Arc::clone(&authz),
        store.clone(),
        Arc::clone(&shared),
    )
    .unwrap();
    let pipeline = match psp {
        Some(p) => pipeline.with_psp(p),
        None => pipeline,
    };
    let state = AppState {
        identity: Arc::clone(&identity),
        pipeline: pipeline.clone(),
        store: store.clone(),
        options: Arc::new(opts),
        agent: agent.map(|a| {
            Arc::new(bastion_server::agent::AgentService::new(
                a,
                Arc::clone(&shared),
            ))
        }),
    };
    let router = router(state);

    let mut tenants = BTreeMap::new();
    let mut users = BTreeMap::new();
    for t in TENANTS {
        let tid = identity.create_tenant(&slug(t), "eu").await.unwrap();
        tenants.insert(t.to_owned(), tid);
        for (name, roles) in USERS {
            let id = identity
                .add_user(
                    &slug(t),
                    NewAccount {
                        username: slug(name),
                        password: PASSWORD.to_owned(),
                        roles: roles.iter().map(|r| slug(r)).collect(),
                        is_demo: false,
                    },
                )
                .await
                .unwrap();
            let p = identity
                .provision_totp(&slug(t), &slug(name))
                .await
                .unwrap();
            let secret = data_encoding::BASE32_NOPAD
                .decode(p.secret_base32.as_bytes())
                .unwrap();
            users.insert((t.to_owned(), name.to_owned()), SeededUser { id, secret });
        }
    }
    TestApp {
        dir,
        pg,
        clock,
        store,
        keys,
        identity,
        spec,
        authz,
        router,
        pipeline,
        tenants,
        users,
        last_step: Mutex::new(BTreeMap::new()),
    }
}

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Every error answer is RFC 9457 problem+json with a Bastion problem type.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_problem_shape(self);
    }
}

pub fn assert_problem_shape(r: &Resp) {
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "status {} body {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let ty = v["type"].as_str().unwrap_or_default();
    assert!(ty.starts_with("urn:bastion:problem:"), "type {ty:?} in {v}");
    assert_eq!(
        v["status"].as_u64(),
        Some(u64::from(r.status.as_u16())),
        "{v}"
    );
}

pub async fn send_to(router: &Router, req: Request<Body>) -> Resp {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

impl TestApp {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn user(&self, tenant: &str, name: &str) -> &SeededUser {
        self.users
            .get(&(tenant.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no seeded user {tenant}/{name}"))
    }

    pub fn tenant_id(&self, tenant: &str) -> TenantId {
        self.tenants[tenant]
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        send_to(&self.router, req).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut b = Request::builder().method(Method::GET).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    pub async fn post_form(&self, path: &str, form: &str) -> Resp {
        self.send(
            Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// The current TOTP code of a user; moves the clock one step on when this user already
    /// used the current step (RFC 6238 §5.2 replay protection).
    pub fn fresh_code(&self, tenant: &str, name: &str) -> String {
        let key = (tenant.to_owned(), name.to_owned());
        let mut last = self.last_step.lock().unwrap();
        let mut step = self.now() / 30;
        if last.get(&key).is_some_and(|s| *s >= step) {
            self.clock.advance(30);
            step = self.now() / 30;
        }
        last.insert(key, step);
        totp_code(
            &self.user(tenant, name).secret,
            u64::try_from(self.now()).unwrap(),
            6,
        )
    }

    /// Password step only: the `mfa_token`.
    pub async fn mfa_token(&self, tenant: &str, name: &str) -> String {
        let r = self
            .post_json(
                "/v1/auth/login",
                None,
                &json!({"tenant": tenant, "username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "login {tenant}/{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["mfa_token"].as_str().unwrap().to_owned()
    }

    /// Password + TOTP: the whole token response.
    pub async fn login_pair(&self, tenant: &str, name: &str) -> Value {
        let mfa = self.mfa_token(tenant, name).await;
        let code = self.fresh_code(tenant, name);
        let r = self
            .post_json(
                "/v1/auth/mfa/totp",
                None,
                &json!({"mfa_token": mfa, "code": code}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "mfa {tenant}/{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// An access token for a seeded user.
    pub async fn login(&self, tenant: &str, name: &str) -> String {
        self.login_pair(tenant, name).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST /v1/tools/{tool}` with `args`.
    pub async fn call(&self, token: &str, tool: &str, args: &Value) -> (StatusCode, Value) {
        let r = self
            .post_json(&format!("/v1/tools/{tool}"), Some(token), args)
            .await;
        if !r.status.is_success() {
            assert_problem_shape(&r);
        }
        (r.status, r.json())
    }

    /// `POST /v1/tools/{tool}` with `args` and an optional raw `Idempotency-Key` value.
    pub async fn call_with_key(
        &self,
        token: &str,
        tool: &str,
        args: &Value,
        key: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/tools/{tool}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        let r = self
            .send(b.body(Body::from(args.to_string())).unwrap())
            .await;
        if !r.status.is_success() {
            assert_problem_shape(&r);
        }
        r
    }

    /// The names `GET /v1/tools` advertises to this token.
    pub async fn advertised(&self, token: &str) -> Vec<String> {
        let r = self.get("/v1/tools", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every stored record of every entity of a tenant: (entity, id) → (version, data).
    pub async fn snapshot(&self, tenant: &str) -> BTreeMap<(String, RecordId), (i64, Value)> {
        let mut out = BTreeMap::new();
        let mut tx = self
            .store
            .begin(TenantScope::pre_auth(self.tenant_id(tenant)))
            .await
            .unwrap();
        for entity in self.spec.entities.keys() {
            let (rows, total) = bastion_store::records::list_records(
                &mut tx,
                entity,
                &ListFilter::All,
                Page {
                    offset: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
            assert!(total <= 100, "snapshot assumes small tenants");
            for r in rows {
                out.insert((entity.clone(), r.id), (r.version, r.data));
            }
        }
        tx.rollback().await.unwrap();
        out
    }

    /// The tenant's audit chain, verified.
    pub async fn audit_chain(&self, tenant: &str) -> bastion_store::audit::AuditChain {
        let mut tx = self
            .store
            .begin(TenantScope::pre_auth(self.tenant_id(tenant)))
            .await
            .unwrap();
        let chain = bastion_store::audit::read_chain(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        chain
    }

    /// Every audit body of every chain (system + tenants).
    pub async fn all_audit_bodies(&self) -> Vec<String> {
        let mut sys = self.store.system().await.unwrap();
        let mut out: Vec<String> = bastion_store::audit::system_read_chain(&mut sys)
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.body)
            .collect();
        sys.rollback().await.unwrap();
        for t in TENANTS {
            out.extend(
                self.audit_chain(t)
                    .await
                    .records
                    .into_iter()
                    .map(|r| r.body),
            );
        }
        out
    }

    /// Every byte of the database files (main file, WAL, shared memory).
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
        out
    }
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// Installs (once per test binary) a global TRACE subscriber writing to memory.
pub fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

/// Copies the app directory `from` to `to` (test manifests are variants of vendor-quote).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
