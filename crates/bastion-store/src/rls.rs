//! PostgreSQL: migrations by the owner role, the application role's grants, and the
//! isolation self-check run at every start and by `bastion check --database-url`.
//!
//! The model (PostgreSQL manual §5.9 "Row Security Policies"; §5.8 privileges):
//! - the **owner** role creates and alters the schema; the application never connects as it;
//! - the **application** role owns nothing, is neither superuser nor `BYPASSRLS`, has no
//!   `CREATE` on any schema and no `TRUNCATE` (which row security does not filter);
//! - every table with a `tenant_id` column has `ENABLE` and `FORCE ROW LEVEL SECURITY` and a
//!   policy; every view is `security_invoker` so it filters as the querying role, not as its
//!   owner (PostgREST#2124); materialized and foreign tables are refused (no row security).

use std::str::FromStr;

use bastion_types::UnixTime;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::db::{
    CREATE_SCHEMA_MIGRATIONS, MIGRATIONS_POSTGRES, POSTGRES_VERSION_MIN, apply_migration,
    latest_version,
};
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, DbTx, col};

/// Tables without `tenant_id` that the application may use. Any other table without
/// `tenant_id` is a finding: a new table is a tenant table until proven otherwise.
pub const SYSTEM_TABLES: &[&str] = &[
    "schema_migrations",
    "tenants",
    "throttles",
    "webhook_inbox",
    "jobs",
];

/// Privileges the application role receives on each table; everything else is refused.
const GRANTS: &[(&str, &str)] = &[
    ("schema_migrations", "SELECT"),
    ("tenants", "SELECT, INSERT"),
    ("throttles", "SELECT, INSERT, UPDATE, DELETE"),
    ("users", "SELECT, INSERT, UPDATE, DELETE"),
    ("mfa_totp", "SELECT, INSERT, UPDATE, DELETE"),
    ("mfa_recovery_codes", "SELECT, INSERT, UPDATE, DELETE"),
    ("mfa_challenges", "SELECT, INSERT, UPDATE, DELETE"),
    ("refresh_families", "SELECT, INSERT, UPDATE, DELETE"),
    ("refresh_tokens", "SELECT, INSERT, UPDATE, DELETE"),
    ("records", "SELECT, INSERT, UPDATE, DELETE"),
    ("record_refs", "SELECT, INSERT, UPDATE, DELETE"),
    ("record_parents", "SELECT, INSERT, UPDATE, DELETE"),
    ("audit_log", "SELECT, INSERT"),
    ("audit_heads", "SELECT, INSERT, UPDATE"),
    ("ledger_accounts", "SELECT, INSERT, UPDATE"),
    ("journal_entries", "SELECT, INSERT"),
    ("postings", "SELECT, INSERT"),
    ("idempotency_keys", "SELECT, INSERT, UPDATE, DELETE"),
    ("webhook_inbox", "SELECT, INSERT, UPDATE, DELETE"),
    ("jobs", "SELECT, INSERT, UPDATE, DELETE"),
    // Payments are money history: never deleted by the application.
    ("payments", "SELECT, INSERT, UPDATE"),
    // A route never changes once written (a PSP object belongs to one tenant for good).
    ("payment_routes", "SELECT, INSERT"),
    ("velocity_events", "SELECT, INSERT, DELETE"),
    // Switches are released by an UPDATE (engaged = FALSE), never deleted: the last change
    // and its author stay visible.
    ("kill_switches", "SELECT, INSERT, UPDATE"),
    // Approvals move forward by UPDATE and are kept as the record of who decided what.
    ("approvals", "SELECT, INSERT, UPDATE"),
];

/// Key of the session advisory lock that serialises migrations across instances.
const MIGRATION_LOCK_KEY: i64 = 0x6261_7374_696f_6e01;

/// One way tenant isolation does not hold in the database. `object` names the table, view,
/// schema or role; `problem` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationFinding {
    /// `table users`, `view quotes_v`, `role bastion_app`, `schema public`, `server`.
    pub object: String,
    /// What breaks isolation, e.g. `row level security is not forced`.
    pub problem: String,
}

impl std::fmt::Display for IsolationFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.problem)
    }
}

fn finding(object: impl Into<String>, problem: impl Into<String>) -> IsolationFinding {
    IsolationFinding {
        object: object.into(),
        problem: problem.into(),
    }
}

/// A role name Bastion will splice into `GRANT` (quoted as well): lower-case ASCII letters,
/// digits and `_`, starting with a letter or `_`, at most 63 bytes.
fn check_role(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "role name must be a lower-case identifier",
        })
    }
}

async fn server_version(tx: &mut DbTx) -> StoreResult<i64> {
    let v: String = sql::query("SELECT current_setting('server_version_num')")
        .scalar(tx)
        .await?;
    v.trim()
        .parse()
        .map_err(|_| StoreError::internal("unreadable server_version_num"))
}

pub(crate) async fn migrate(owner_url: &str, app_role: &str, now: UnixTime) -> StoreResult<()> {
    check_role(app_role)?;
    let opts = PgConnectOptions::from_str(owner_url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(crate::ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await?;
    let result = migrate_on(&pool, app_role, now).await;
    pool.close().await;
    result
}

async fn migrate_on(pool: &PgPool, app_role: &str, now: UnixTime) -> StoreResult<()> {
    // Session-level lock on the one pooled connection, held across the per-migration
    // transactions and released before the pool closes.
    let mut conn = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
    let version = server_version(&mut conn).await?;
    conn.rollback().await?;
    if version < POSTGRES_VERSION_MIN {
        return Err(StoreError::Unsafe {
            findings: vec![finding(
                "server",
                format!(
                    "PostgreSQL {version} is older than the minimum {POSTGRES_VERSION_MIN} (15: security_invoker views)"
                ),
            )],
        });
    }
    let mut lock = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
    sql::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut lock)
        .await?;
    sql::query(CREATE_SCHEMA_MIGRATIONS)
        .execute(&mut lock)
        .await?;
    for m in MIGRATIONS_POSTGRES {
        apply_migration(&mut lock, m, now).await?;
    }
    let grants = grant_script(app_role);
    sql::raw(&mut lock, grants).await?;
    lock.commit().await?;
    Ok(())
}

/// The grants of the application role, and the revocations that keep it from creating
/// objects. Identifiers are checked by [`check_role`] and quoted.
fn grant_script(app_role: &str) -> String {
    let role = format!("\"{app_role}\"");
    let mut s = String::new();
    s.push_str(&format!(
        "DO $g$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema()); \
         EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema()); \
         EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM {role}', current_schema()); END $g$;\n"
    ));
    for (table, privileges) in GRANTS {
        s.push_str(&format!("REVOKE ALL ON TABLE {table} FROM {role};\n"));
        s.push_str(&format!("GRANT {privileges} ON TABLE {table} TO {role};\n"));
    }
    s.push_str(&format!(
        "REVOKE ALL ON FUNCTION audit_refuse(), audit_head_checked() FROM PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION app_tenant_id() TO {role};\n\
         REVOKE ALL ON FUNCTION ledger_posting_checked(), ledger_entry_balanced(), \
         ledger_refuse(), ledger_account_checked(), ledger_lock_entry(text, text) FROM PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION ledger_lock_entry(text, text) TO {role};\n\
         DO $p$ DECLARE f regprocedure; BEGIN \
           FOR f IN SELECT p.oid::regprocedure FROM pg_proc p \
                    WHERE p.pronamespace = current_schema()::regnamespace LOOP \
             EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema()); \
           END LOOP; END $p$;\n"
    ));
    s
}

/// The one policy every tenant table carries (`pg_get_expr` text, schema prefix removed).
const ISOLATION_EXPR: &str = "(tenant_id = ( SELECT app_tenant_id() AS app_tenant_id))";
/// `app_tenant_id() = nil tenant`: the system transaction's reads of shared rows.
const SYSTEM_EXPR: &str =
    "(( SELECT app_tenant_id() AS app_tenant_id) = '00000000-0000-0000-0000-000000000000'::text)";

/// Permissive policies other than `tenant_isolation` that the migrations write: table,
/// policy, command, `USING`, `WITH CHECK` (empty: none). Any other permissive policy widens
/// what a tenant sees (a `USING (true)` is CVE-2025-48757's class) and is a finding.
const EXTRA_POLICIES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "kill_switches",
        "shared_read",
        "r",
        "(tenant_id = ''::text)",
        "",
    ),
    ("kill_switches", "system_read", "r", SYSTEM_EXPR, ""),
    (
        "kill_switches",
        "system_shared",
        "*",
        "((( SELECT app_tenant_id() AS app_tenant_id) = '00000000-0000-0000-0000-000000000000'::text) AND (tenant_id = ''::text))",
        "((( SELECT app_tenant_id() AS app_tenant_id) = '00000000-0000-0000-0000-000000000000'::text) AND (tenant_id = ''::text))",
    ),
    ("payment_routes", "system_lookup", "r", SYSTEM_EXPR, ""),
];

/// Every permissive policy of the schema must be one the migrations wrote, word for word,
/// for every role; every table with `tenant_id` must carry `tenant_isolation`. Restrictive
/// policies can only narrow access and are accepted.
async fn policy_findings(tx: &mut DbTx) -> StoreResult<Vec<IsolationFinding>> {
    let schema: String = sql::query("SELECT current_schema()::text")
        .scalar(tx)
        .await?;
    let prefix = format!("{schema}.");
    let rows = sql::query(
        "SELECT c.relname, p.polname, p.polpermissive, p.polcmd::text AS cmd,
                COALESCE(pg_get_expr(p.polqual, p.polrelid), '') AS qual,
                COALESCE(pg_get_expr(p.polwithcheck, p.polrelid), '') AS wcheck,
                (p.polroles = '{0}'::oid[]) AS for_public
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema()
         ORDER BY c.relname, p.polname",
    )
    .fetch_all(tx)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let table: String = col(r, "relname")?;
        let name: String = col(r, "polname")?;
        if !col::<bool>(r, "polpermissive")? {
            continue;
        }
        let cmd: String = col(r, "cmd")?;
        let qual = col::<String>(r, "qual")?.replace(&prefix, "");
        let wcheck = col::<String>(r, "wcheck")?.replace(&prefix, "");
        let public: bool = col(r, "for_public")?;
        let expected = if name == "tenant_isolation" {
            cmd == "*" && qual == ISOLATION_EXPR && wcheck == ISOLATION_EXPR
        } else {
            EXTRA_POLICIES.iter().any(|(t, n, c, q, w)| {
                *t == table && *n == name && *c == cmd && *q == qual && *w == wcheck
            })
        };
        if !expected || !public {
            out.push(finding(
                format!("table {table}"),
                format!("policy {name} is not one Bastion's migrations wrote (it may widen what a tenant sees)"),
            ));
        }
    }
    Ok(out)
}

/// What the role can reach outside the migrated schema: tables and views in other schemas
/// (no tenant check covers them) and `SECURITY DEFINER` functions (they run as their owner,
/// past row-level security).
async fn reach_findings(tx: &mut DbTx) -> StoreResult<Vec<IsolationFinding>> {
    let mut out = Vec::new();
    // Reachable relations in other schemas must protect themselves: a table with tenant rows
    // needs forced row-level security and a policy, a view must be security_invoker;
    // materialized views and foreign tables cannot be protected at all.
    let rels = sql::query(
        "SELECT n.nspname || '.' || c.relname AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND n.nspname <> current_schema()
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
           AND has_schema_privilege(current_user, n.oid, 'USAGE')
           AND (has_table_privilege(current_user, c.oid, 'SELECT')
                OR has_table_privilege(current_user, c.oid, 'INSERT')
                OR has_table_privilege(current_user, c.oid, 'UPDATE')
                OR has_table_privilege(current_user, c.oid, 'DELETE'))
           AND CASE c.relkind
                 WHEN 'v' THEN NOT COALESCE(c.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false)
                 WHEN 'm' THEN true
                 WHEN 'f' THEN true
                 ELSE EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                              AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped)
                      AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                               AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
               END
         ORDER BY 1 LIMIT 100",
    )
    .fetch_all(tx)
    .await?;
    for r in &rels {
        let name: String = col(r, "name")?;
        out.push(finding(
            format!("relation {name}"),
            "is reachable by the application role outside Bastion's schema and not protected by row level security",
        ));
    }
    let funcs = sql::query(
        "SELECT p.oid::regprocedure::text AS name
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.prosecdef
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
           AND has_schema_privilege(current_user, n.oid, 'USAGE')
           AND has_function_privilege(current_user, p.oid, 'EXECUTE')
         ORDER BY 1 LIMIT 100",
    )
    .fetch_all(tx)
    .await?;
    for r in &funcs {
        let name: String = col(r, "name")?;
        out.push(finding(
            format!("function {name}"),
            "is SECURITY DEFINER and executable by the application role (it runs past row level security)",
        ));
    }
    Ok(out)
}

/// Every reason isolation does not hold for the role connected through `pool`.
pub(crate) async fn findings(pool: &PgPool) -> StoreResult<Vec<IsolationFinding>> {
    let mut tx = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
    let mut out = Vec::new();

    // A tenant that is already set before any transaction sets one (a role or database
    // default, `options=-c app.tenant_id=…` in the URL) would turn a forgotten tenant into
    // that tenant's rows instead of an error (Z8).
    let preset: Option<String> = sql::query("SELECT current_setting('app.tenant_id', true)")
        .scalar(&mut tx)
        .await?;
    if preset.is_some_and(|v| !v.is_empty()) {
        out.push(finding(
            "setting app.tenant_id",
            "has a default for this role, database or connection (it must only be set per transaction)",
        ));
    }
    let version = server_version(&mut tx).await?;
    if version < POSTGRES_VERSION_MIN {
        out.push(finding(
            "server",
            format!("PostgreSQL {version} is older than the minimum {POSTGRES_VERSION_MIN}"),
        ));
    }

    // The role itself, and every role it can act as (SET ROLE / inheritance).
    let roles = sql::query(
        "SELECT r.rolname, r.rolsuper, r.rolbypassrls, (r.rolname = current_user) AS is_self
         FROM pg_roles r
         WHERE pg_has_role(current_user, r.oid, 'MEMBER')
         ORDER BY r.rolname",
    )
    .fetch_all(&mut tx)
    .await?;
    let mut superuser = false;
    for r in &roles {
        let name: String = col(r, "rolname")?;
        let is_self: bool = col(r, "is_self")?;
        let who = if is_self {
            format!("role {name}")
        } else {
            format!("role {name} (granted to the connected role)")
        };
        if col::<bool>(r, "rolsuper")? {
            superuser = true;
            out.push(finding(
                &who,
                "is a superuser (superusers bypass row level security)",
            ));
        }
        if col::<bool>(r, "rolbypassrls")? {
            out.push(finding(&who, "has BYPASSRLS"));
        }
    }

    // CREATE on any schema lets the role make objects that escape these checks.
    let schemas = sql::query(
        "SELECT nspname FROM pg_namespace
         WHERE has_schema_privilege(current_user, oid, 'CREATE')
           AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
         ORDER BY nspname",
    )
    .fetch_all(&mut tx)
    .await?;
    // A superuser holds every privilege everywhere: listing each schema and table again
    // says nothing new (and runs to thousands of lines on a shared server).
    for s in schemas.iter().filter(|_| !superuser) {
        let name: String = col(s, "nspname")?;
        out.push(finding(
            format!("schema {name}"),
            "the application role has CREATE on it",
        ));
    }

    // Every relation in the schema the application uses.
    let rels = sql::query(
        "SELECT c.relname, c.relkind::text AS kind, c.relrowsecurity, c.relforcerowsecurity,
                pg_has_role(current_user, c.relowner, 'MEMBER') AS owned,
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                        AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped)
                    AS has_tenant,
                EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) AS has_policy,
                COALESCE(array_to_string(c.reloptions, ','), '') AS options,
                has_table_privilege(current_user, c.oid, 'TRUNCATE') AS can_truncate,
                has_table_privilege(current_user, c.oid, 'TRIGGER') AS can_trigger,
                has_table_privilege(current_user, c.oid, 'REFERENCES') AS can_reference
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY c.relname",
    )
    .fetch_all(&mut tx)
    .await?;
    if rels.is_empty() {
        out.push(finding(
            "schema",
            "no tables in the current schema: migrate it as the owner role first (bastion migrate) and connect with the same search_path",
        ));
    }
    let mut seen_migrations = false;
    for r in &rels {
        let name: String = col(r, "relname")?;
        let kind: String = col(r, "kind")?;
        let has_tenant: bool = col(r, "has_tenant")?;
        let what = match kind.as_str() {
            "v" => format!("view {name}"),
            "m" => format!("materialized view {name}"),
            "f" => format!("foreign table {name}"),
            _ => format!("table {name}"),
        };
        seen_migrations |= name == "schema_migrations";
        if !superuser && col::<bool>(r, "owned")? {
            out.push(finding(
                &what,
                "is owned by the application role (owners can disable row level security)",
            ));
        }
        if !superuser && col::<bool>(r, "can_truncate")? {
            out.push(finding(
                &what,
                "the application role may TRUNCATE it (TRUNCATE ignores row level security)",
            ));
        }
        if !superuser && (col::<bool>(r, "can_trigger")? || col::<bool>(r, "can_reference")?) {
            out.push(finding(
                &what,
                "the application role holds TRIGGER or REFERENCES on it",
            ));
        }
        match kind.as_str() {
            "r" | "p" => {
                if has_tenant {
                    if !col::<bool>(r, "relrowsecurity")? {
                        out.push(finding(&what, "row level security is not enabled"));
                    }
                    if !col::<bool>(r, "relforcerowsecurity")? {
                        out.push(finding(&what, "row level security is not forced"));
                    }
                    if !col::<bool>(r, "has_policy")? {
                        out.push(finding(&what, "has no row level security policy"));
                    }
                } else if !SYSTEM_TABLES.contains(&name.as_str()) {
                    out.push(finding(
                        &what,
                        "has no tenant_id column and is not a known system table",
                    ));
                }
            }
            "v" => {
                let options: String = col(r, "options")?;
                let invoker = options.split(',').any(|o| {
                    matches!(
                        o.trim().to_ascii_lowercase().as_str(),
                        "security_invoker=true" | "security_invoker=on" | "security_invoker=1"
                    )
                });
                if !invoker {
                    out.push(finding(
                        &what,
                        "is not security_invoker (it would read as its owner, past row level security)",
                    ));
                }
            }
            _ => out.push(finding(&what, "cannot carry row level security")),
        }
    }

    out.extend(policy_findings(&mut tx).await?);
    out.extend(reach_findings(&mut tx).await?);

    if seen_migrations {
        let applied: Option<i64> = sql::query("SELECT MAX(version) FROM schema_migrations")
            .scalar(&mut tx)
            .await?;
        let want = latest_version(MIGRATIONS_POSTGRES);
        if applied.unwrap_or(0) != want {
            out.push(finding(
                "schema",
                format!(
                    "migrated to version {} but this build needs {want}: run the migrations as the owner role",
                    applied.unwrap_or(0)
                ),
            ));
        }
    }
    tx.rollback().await?;
    Ok(out)
}

/// Creates `role` as a login role without superuser, `BYPASSRLS`, `CREATEDB` or
/// `CREATEROLE` unless it exists (for `bastion demo` and tests; production operators create
/// roles themselves). Returns whether it was created.
pub(crate) async fn create_login_role_if_missing(owner_url: &str, role: &str) -> StoreResult<bool> {
    check_role(role)?;
    let opts = PgConnectOptions::from_str(owner_url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(crate::ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await?;
    let mut tx = DbTx::Postgres(sql::PgTx::new(pool.begin().await?));
    sql::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut tx)
        .await?;
    let exists: Option<i32> = sql::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .scalar_optional(&mut tx)
        .await?;
    if exists.is_none() {
        sql::raw(
            &mut tx,
            format!("CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
        )
        .await?;
    }
    tx.commit().await?;
    pool.close().await;
    Ok(exists.is_none())
}
