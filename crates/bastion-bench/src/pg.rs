//! PostgreSQL: what row-level security costs, and one instance against two.
//!
//! 1. `list_quotes`'s query over 100 tenants × 10,000 quotes (bulk-loaded by the owner role):
//!    - through the store as the application role (row-level security **and** the store's
//!      own `WHERE tenant_id = …`);
//!    - the same page and count as the application role with **no** tenant filter in the SQL
//!      (row-level security alone);
//!    - the same page and count as the owner (a superuser: no row-level security) with an
//!      explicit `WHERE tenant_id = …`.
//!
//!    Every variant runs in a transaction per operation (`BEGIN`; the row-level-security
//!    variants also `set_config('app.tenant_id', …, true)`; page; count; `COMMIT`), one
//!    connection, tenants taken in turn.
//! 2. The pipeline's throughput with one instance against two instances on one database:
//!    concurrent HTTP clients calling `list_quotes` and `create_quote`, all on instance one,
//!    then spread over both.

use std::net::SocketAddr;
use std::sync::Arc;

use bastion_server::listen::{self, ConnLimits};
use bastion_store::TenantScope;
use bastion_store::records::{self, ListFilter, Page};
use bastion_store::testing::PgTestDb;
use bastion_types::{SharedClock, SystemClock};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::setup::Fixture;
use crate::stats::{Samples, now};
use crate::{BenchError, Ctx};

/// Page size of every list.
const PAGE: i64 = 20;

/// Sizes of the PostgreSQL run.
#[derive(Debug, Clone, Copy)]
pub struct PgSizes {
    /// Tenants bulk-loaded.
    pub tenants: usize,
    /// Quotes per tenant.
    pub quotes: usize,
    /// Timed list operations per variant.
    pub lists: usize,
    /// Quotes seeded through the pipeline for the instance comparison.
    pub pipeline_quotes: usize,
    /// Requests per instance-comparison phase.
    pub requests: usize,
    /// Concurrent HTTP clients.
    pub clients: usize,
}

impl PgSizes {
    /// The sizes: 100 tenants × 10,000 quotes.
    pub const FULL: Self = Self {
        tenants: 100,
        quotes: 10_000,
        lists: 2_000,
        pipeline_quotes: 200,
        requests: 2_000,
        clients: 8,
    };
    /// `BENCH_QUICK=1`.
    pub const QUICK: Self = Self {
        tenants: 10,
        quotes: 1_000,
        lists: 200,
        pipeline_quotes: 50,
        requests: 200,
        clients: 8,
    };
}

/// Results of [`rls`].
pub struct RlsResult {
    /// Through `records::list_records` as the application role.
    pub store: Samples,
    /// Raw SQL as the application role, no tenant filter in the SQL.
    pub rls_only: Samples,
    /// Raw SQL as the owner, explicit tenant filter, no row-level security.
    pub owner: Samples,
    /// Rows per tenant seen by each variant's count (all must equal `quotes`).
    pub counted: i64,
    /// `EXPLAIN` of the row-level-security page query, first line.
    pub plan_rls: String,
    /// `EXPLAIN` of the owner's page query, first line.
    pub plan_owner: String,
}

const PAGE_SQL_RLS: &str =
    "SELECT r.id, r.entity, r.owner_id, r.data, r.version, r.created_at, r.updated_at
     FROM records r WHERE r.entity = 'quote' ORDER BY r.created_at, r.id LIMIT 20";
const COUNT_SQL_RLS: &str = "SELECT COUNT(*) FROM records r WHERE r.entity = 'quote'";
const PAGE_SQL_OWNER: &str = "SELECT r.id, r.entity, r.owner_id, r.data, r.version, r.created_at, r.updated_at
     FROM records r WHERE r.tenant_id = $1 AND r.entity = 'quote' ORDER BY r.created_at, r.id LIMIT 20";
const COUNT_SQL_OWNER: &str =
    "SELECT COUNT(*) FROM records r WHERE r.tenant_id = $1 AND r.entity = 'quote'";

/// Bulk-loads `tenants × quotes` as the owner and times the three variants.
///
/// # Errors
/// The first failing step.
pub async fn rls(sz: PgSizes, progress: &dyn Fn(&str)) -> Result<RlsResult, BenchError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let db = PgTestDb::create(&clock)
        .await
        .ctx("PostgreSQL on 127.0.0.1:5432")?;
    let mut owner = PgConnection::connect(&db.owner_url)
        .await
        .ctx("owner connection")?;
    progress(&format!(
        "postgres: bulk-loading {} tenants × {} quotes as the owner",
        sz.tenants, sz.quotes
    ));
    let load = format!(
        "INSERT INTO tenants (id, slug, region, created_at)
           SELECT gen_random_uuid()::text, 'bench-' || g, 'eu', 1700000000 FROM generate_series(1, {t}) g;
         INSERT INTO users (tenant_id, id, username, password_hash, roles, created_at, updated_at)
           SELECT id, gen_random_uuid()::text, 'owner', 'x', '[\"buyer\"]', 1700000000, 1700000000 FROM tenants;
         INSERT INTO records (tenant_id, id, entity, owner_id, data, version, created_at, updated_at)
           SELECT u.tenant_id, gen_random_uuid()::text, 'quote', u.id,
                  '{{\"title\":\"Quote ' || g || '\",\"amount_minor\":231300,\"currency\":\"EUR\"}}',
                  1, 1700000000 + g, 1700000000 + g
           FROM users u CROSS JOIN generate_series(1, {q}) g;
         ANALYZE tenants; ANALYZE users; ANALYZE records;",
        t = sz.tenants,
        q = sz.quotes
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(load))
        .execute(&mut owner)
        .await
        .ctx("bulk load")?;
    let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY slug")
        .fetch_all(&mut owner)
        .await
        .ctx("tenant ids")?;

    let explain = |rows: Vec<String>| rows.into_iter().next().unwrap_or_default();
    let plan_owner: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        PAGE_SQL_OWNER.replace("$1", &format!("'{}'", tenants[0]))
    )))
    .fetch_all(&mut owner)
    .await
    .ctx("explain owner")?;

    let store = db.open(Arc::clone(&clock)).await.ctx("open as app role")?;
    let mut app = PgConnection::connect(&db.app_url)
        .await
        .ctx("app connection")?;
    let plan_rls: Vec<String> = {
        let mut tx = app.begin().await.ctx("begin")?;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&tenants[0])
            .execute(&mut *tx)
            .await
            .ctx("set tenant")?;
        let p = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {PAGE_SQL_RLS}")))
            .fetch_all(&mut *tx)
            .await
            .ctx("explain rls")?;
        tx.rollback().await.ctx("rollback")?;
        p
    };

    let mut counted = i64::MAX;
    // Warm-up of every variant over every tenant once.
    for t in &tenants {
        counted = counted.min(owner_once(&mut owner, t).await?);
        counted = counted.min(rls_once(&mut app, t).await?);
    }

    progress(&format!(
        "postgres: {} lists per variant, the three variants interleaved",
        sz.lists
    ));
    // Interleaved (store, RLS only, owner; the order rotating each round) so that load from
    // elsewhere on the machine falls on all three alike. Throughput is operations over the
    // summed time of that variant's operations.
    let mut by_store = Samples::with_capacity(sz.lists);
    let mut rls_only = Samples::with_capacity(sz.lists);
    let mut by_owner = Samples::with_capacity(sz.lists);
    let expected = u64::try_from(sz.quotes).unwrap_or(0);
    for i in 0..sz.lists {
        let tenant_text = &tenants[i % tenants.len()];
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    let tenant: bastion_types::TenantId = tenant_text.parse().ctx("tenant id")?;
                    let t = now();
                    let mut tx = store
                        .begin(TenantScope::pre_auth(tenant))
                        .await
                        .ctx("begin")?;
                    let (rows, total) = records::list_records(
                        &mut tx,
                        "quote",
                        &ListFilter::All,
                        Page::first(u32::try_from(PAGE).unwrap_or(20)),
                    )
                    .await
                    .ctx("list_records")?;
                    tx.commit().await.ctx("commit")?;
                    by_store.push(t.elapsed());
                    if rows.len() != 20 || total != expected {
                        return Err(BenchError(format!(
                            "store saw {} rows of {total}",
                            rows.len()
                        )));
                    }
                }
                1 => {
                    let t = now();
                    counted = counted.min(rls_once(&mut app, tenant_text).await?);
                    rls_only.push(t.elapsed());
                }
                _ => {
                    let t = now();
                    counted = counted.min(owner_once(&mut owner, tenant_text).await?);
                    by_owner.push(t.elapsed());
                }
            }
        }
    }
    for s in [&mut by_store, &mut rls_only, &mut by_owner] {
        s.wall = std::time::Duration::from_nanos(s.nanos.iter().sum());
    }

    store.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {} CASCADE; DROP ROLE IF EXISTS {};",
        db.schema, db.app_role
    )))
    .execute(&mut owner)
    .await
    .ctx("drop schema")?;
    Ok(RlsResult {
        store: by_store,
        rls_only,
        owner: by_owner,
        counted,
        plan_rls: explain(plan_rls),
        plan_owner: explain(plan_owner),
    })
}

async fn rls_once(conn: &mut PgConnection, tenant: &str) -> Result<i64, BenchError> {
    let mut tx = conn.begin().await.ctx("begin")?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .ctx("set tenant")?;
    let rows = sqlx::query(PAGE_SQL_RLS)
        .fetch_all(&mut *tx)
        .await
        .ctx("page (rls)")?;
    let n: i64 = sqlx::query_scalar(COUNT_SQL_RLS)
        .fetch_one(&mut *tx)
        .await
        .ctx("count (rls)")?;
    tx.commit().await.ctx("commit")?;
    if rows.len() != 20 {
        return Err(BenchError(format!("rls page had {} rows", rows.len())));
    }
    Ok(n)
}

async fn owner_once(conn: &mut PgConnection, tenant: &str) -> Result<i64, BenchError> {
    let mut tx = conn.begin().await.ctx("begin")?;
    let rows = sqlx::query(PAGE_SQL_OWNER)
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .ctx("page (owner)")?;
    let n: i64 = sqlx::query_scalar(COUNT_SQL_OWNER)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .ctx("count (owner)")?;
    tx.commit().await.ctx("commit")?;
    if rows.len() != 20 {
        return Err(BenchError(format!("owner page had {} rows", rows.len())));
    }
    Ok(n)
}

/// Results of [`instances`].
pub struct InstancesResult {
    /// `list_quotes`, every client on instance one.
    pub list_one: Samples,
    /// `list_quotes`, clients spread over two instances.
    pub list_two: Samples,
    /// `create_quote`, every client on instance one.
    pub create_one: Samples,
    /// `create_quote`, clients spread over two instances.
    pub create_two: Samples,
}

async fn serve(
    state: bastion_server::AppState,
) -> Result<(SocketAddr, tokio::sync::watch::Sender<bool>), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .ctx("bind")?;
    let addr = listener.local_addr().ctx("addr")?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(listen::serve(
        listener,
        bastion_server::router(state),
        None,
        ConnLimits::default(),
        rx,
    ));
    Ok((addr, stop))
}

/// One and two instances (two pools, two routers, shared keys) on one PostgreSQL schema.
///
/// # Errors
/// The first failing step.
pub async fn instances(
    sz: PgSizes,
    progress: &dyn Fn(&str),
) -> Result<InstancesResult, BenchError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let db = PgTestDb::create(&clock)
        .await
        .ctx("PostgreSQL on 127.0.0.1:5432")?;
    let dir = tempfile::Builder::new()
        .prefix("bastion-bench-pg-")
        .tempdir()
        .ctx("temp dir")?;
    let store = db.open(Arc::clone(&clock)).await.ctx("open instance one")?;
    let fx = Fixture::on(dir, std::path::PathBuf::new(), store, Arc::clone(&clock)).await?;
    let second = fx
        .second_instance(db.open(Arc::clone(&clock)).await.ctx("open instance two")?)
        .await?;
    let buyer = fx.add_user("acme", "buyer", "buyer").await?;
    let seller = fx.add_user("acme", "seller", "seller").await?;
    let finance = fx.add_user("acme", "finance", "finance").await?;
    let (buy_pair, p_buyer) = fx.principal(&buyer).await?;
    progress(&format!(
        "postgres instances: seeding {} quotes",
        sz.pipeline_quotes
    ));
    let mut seed = Samples::with_capacity(sz.pipeline_quotes);
    fx.seed_quotes(&p_buyer, seller.user_id, sz.pipeline_quotes, &mut seed)
        .await?;
    let fin = fx.login(&finance).await?.access_token;
    let buy = buy_pair.access_token;
    let (a, stop_a) = serve(fx.state.clone()).await?;
    let (b, stop_b) = serve(second).await?;
    let create = serde_json::to_vec(&json!({
        "title": "Chairs",
        "seller": seller.user_id.to_string(),
        "line_items": [{"description": "chair", "quantity": 2, "unit_price_minor": 9000}],
        "amount_minor": 18000,
        "currency": "EUR",
    }))
    .ctx("args")?;
    let list = serde_json::to_vec(&json!({"limit": 20})).ctx("args")?;

    progress("postgres instances: list_quotes on one, then two");
    let list_one = load(&[a], &fin, "list_quotes", &list, sz).await?;
    let list_two = load(&[a, b], &fin, "list_quotes", &list, sz).await?;
    progress("postgres instances: create_quote on one, then two");
    let create_one = load(&[a], &buy, "create_quote", &create, sz).await?;
    let create_two = load(&[a, b], &buy, "create_quote", &create, sz).await?;
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
    fx.store.close().await;
    Ok(InstancesResult {
        list_one,
        list_two,
        create_one,
        create_two,
    })
}

/// `sz.requests` calls of `tool` by `sz.clients` concurrent clients, client `i` talking to
/// `addrs[i % addrs.len()]`.
async fn load(
    addrs: &[SocketAddr],
    token: &str,
    tool: &str,
    body: &[u8],
    sz: PgSizes,
) -> Result<Samples, BenchError> {
    let per = sz.requests / sz.clients.max(1);
    let mut tasks = Vec::new();
    let start = now();
    for i in 0..sz.clients.max(1) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/v1/tools/{tool}", addrs[i % addrs.len()]);
        let token = token.to_owned();
        let body = body.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::with_capacity(per);
            for _ in 0..per {
                let t = now();
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .ctx("request")?;
                let status = res.status();
                let _ = res.bytes().await.ctx("body")?;
                if !status.is_success() {
                    return Err(BenchError(format!("{url}: {status}")));
                }
                s.push(t.elapsed());
            }
            Ok::<_, BenchError>(s)
        }));
    }
    let mut all = Samples::with_capacity(per * sz.clients);
    for t in tasks {
        all.extend(&t.await.ctx("client task")??);
    }
    all.wall = start.elapsed();
    Ok(all)
}
