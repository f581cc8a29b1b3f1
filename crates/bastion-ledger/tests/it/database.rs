//! The database itself refuses what breaks the ledger, whoever writes: raw SQL on a raw
//! SQLite connection, and raw SQL as the PostgreSQL application role (the tenant set with
//! `set_config('app.tenant_id', …, true)` like the store does). Refused: an unbalanced entry,
//! an entry with fewer than two postings, a posting added after its entry, postings without an
//! entry (deferred foreign key, at commit), UPDATE/DELETE (and TRUNCATE) of postings and
//! entries, an overdraft, a posting into another tenant's account, a second reversal.

use bastion_ledger::chart;
use bastion_store::ledger::{self, AccountId, EntryId, NewEntry};
use bastion_types::TenantId;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};

use crate::{Env, eur, eur_minor, r};

/// Ids made through the store: accounts in tenant A (`src` may go negative, `dst` may not),
/// one posted entry of A, and B's clearing account.
struct Fixture {
    a: TenantId,
    b: TenantId,
    src: AccountId,
    dst: AccountId,
    entry: EntryId,
    b_clearing: AccountId,
}

async fn fixture(env: &Env) -> Fixture {
    let mut tx = env.tx_a().await;
    let src = ledger::account(&mut tx, "src", eur(), true).await.unwrap();
    let dst = ledger::account(&mut tx, "dst", eur(), false).await.unwrap();
    let entry = ledger::post_entry(
        &mut tx,
        NewEntry {
            kind: "transfer".into(),
            reference: "fx".into(),
            reverses: None,
            detail: json!({}),
            postings: vec![(src.id, -100), (dst.id, 100)],
        },
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    bastion_ledger::capture(&mut tx, &r("pi_b"), eur_minor(500), json!({}))
        .await
        .unwrap();
    let b_clearing = ledger::account_by_code(&mut tx, chart::PSP_CLEARING, eur())
        .await
        .unwrap()
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    Fixture {
        a: env.a,
        b: env.b,
        src: src.id,
        dst: dst.id,
        entry,
        b_clearing,
    }
}

fn posting(tenant: TenantId, entry: &str, seq: i64, account: AccountId, amount: i64) -> String {
    format!(
        "INSERT INTO postings (tenant_id, entry_id, seq, account_id, amount_minor, currency)
         VALUES ('{tenant}', '{entry}', {seq}, '{account}', {amount}, 'EUR');"
    )
}

fn entry_row(tenant: TenantId, entry: &str, reverses: Option<EntryId>) -> String {
    let rev = reverses.map_or_else(|| "NULL".to_owned(), |e| format!("'{e}'"));
    format!(
        "INSERT INTO journal_entries
            (tenant_id, id, kind, reference, reverses_entry_id, created_at, detail)
         VALUES ('{tenant}', '{entry}', 'raw', 'raw', {rev}, 1, '{{}}');"
    )
}

/// Scripts that must each fail, with what they try.
fn refused_scripts(f: &Fixture) -> Vec<(&'static str, String)> {
    let x = EntryId::new_random().to_string();
    vec![
        (
            "an unbalanced entry (+5 / -4)",
            format!(
                "{}{}{}",
                posting(f.a, &x, 0, f.dst, 5),
                posting(f.a, &x, 1, f.src, -4),
                entry_row(f.a, &x, None)
            ),
        ),
        (
            "an entry with one posting",
            format!(
                "{}{}",
                posting(f.a, &x, 0, f.src, 5),
                entry_row(f.a, &x, None)
            ),
        ),
        ("an entry with no posting", entry_row(f.a, &x, None)),
        (
            "a posting added to an entry already written",
            posting(f.a, &f.entry.to_string(), 9, f.src, 1),
        ),
        ("a zero posting", posting(f.a, &x, 0, f.src, 0)),
        (
            "changing a posting",
            format!(
                "UPDATE postings SET amount_minor = amount_minor * 2 WHERE tenant_id = '{}';",
                f.a
            ),
        ),
        (
            "deleting postings",
            format!("DELETE FROM postings WHERE tenant_id = '{}';", f.a),
        ),
        (
            "changing an entry",
            format!(
                "UPDATE journal_entries SET kind = 'x' WHERE tenant_id = '{}';",
                f.a
            ),
        ),
        (
            "deleting an entry",
            format!("DELETE FROM journal_entries WHERE tenant_id = '{}';", f.a),
        ),
        (
            "an overdraft of an account that may not go negative",
            format!(
                "UPDATE ledger_accounts SET balance_minor = -1, version = version + 1
                 WHERE tenant_id = '{}' AND id = '{}';",
                f.a, f.dst
            ),
        ),
        (
            "a posting of tenant A into tenant B's account (composite foreign key)",
            format!(
                "{}{}{}",
                posting(f.a, &x, 0, f.src, -5),
                posting(f.a, &x, 1, f.b_clearing, 5),
                entry_row(f.a, &x, None)
            ),
        ),
        (
            "a posting in another currency than its account's",
            format!(
                "INSERT INTO postings (tenant_id, entry_id, seq, account_id, amount_minor, currency)
                 VALUES ('{}', '{x}', 0, '{}', 5, 'USD');",
                f.a, f.src
            ),
        ),
        (
            "postings whose entry never comes (deferred foreign key, at commit)",
            format!(
                "{}{}",
                posting(f.a, &x, 0, f.src, -5),
                posting(f.a, &x, 1, f.dst, 5)
            ),
        ),
        ("a second reversal of one entry", {
            let y = EntryId::new_random().to_string();
            let z = EntryId::new_random().to_string();
            format!(
                "{}{}{}{}{}{}",
                posting(f.a, &y, 0, f.src, 100),
                posting(f.a, &y, 1, f.dst, -100),
                entry_row(f.a, &y, Some(f.entry)),
                posting(f.a, &z, 0, f.src, 100),
                posting(f.a, &z, 1, f.dst, -100),
                entry_row(f.a, &z, Some(f.entry)),
            )
        }),
        (
            "renaming an account",
            format!(
                "UPDATE ledger_accounts SET code = 'other', version = version + 1
                 WHERE tenant_id = '{}' AND id = '{}';",
                f.a, f.src
            ),
        ),
    ]
}

fn code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// A balanced entry written the same raw way is accepted: the refusals above are the
/// database's rules, not broken SQL.
fn accepted_script(f: &Fixture) -> String {
    let x = EntryId::new_random().to_string();
    format!(
        "{}{}{}",
        posting(f.a, &x, 0, f.src, -5),
        posting(f.a, &x, 1, f.dst, 5),
        entry_row(f.a, &x, None)
    )
}

#[tokio::test]
async fn sqlite_refuses_what_breaks_the_ledger_on_a_raw_connection() {
    let env = Env::sqlite().await;
    let f = fixture(&env).await;
    let mut conn = env.raw_sqlite().await;
    for (what, script) in refused_scripts(&f) {
        let res = async {
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        let err = res
            .err()
            .unwrap_or_else(|| unreachable!("SQLite accepted {what}"));
        // Refused by a rule (trigger, CHECK, key), not by broken SQL (SQLITE_ERROR = 1).
        assert_ne!(code(&err).as_str(), "1", "{what}: {err}");
    }
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(accepted_script(&f)))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Nothing leaked in: the ledger still holds.
    let mut tx = env.tx_a().await;
    let c = ledger::check(&mut tx).await.unwrap();
    assert!(c.holds(), "{c:?}");
    assert_eq!(
        ledger::entries_for_reference(&mut tx, "raw")
            .await
            .unwrap()
            .len(),
        0
    );
}

async fn pg_attempt(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    script: String,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[tokio::test]
async fn postgresql_refuses_what_breaks_the_ledger_as_the_application_role() {
    let env = Env::postgres().await;
    let f = fixture(&env).await;
    let mut conn = env.raw_pg().await;
    for (what, script) in refused_scripts(&f) {
        let res = pg_attempt(&mut conn, f.a, script).await;
        let err = res
            .err()
            .unwrap_or_else(|| unreachable!("PostgreSQL accepted {what}"));
        // Refused by a rule or a privilege, not by broken SQL (class 42 but 42501).
        let c = code(&err);
        assert!(!c.starts_with("42") || c == "42501", "{what}: {err}");
    }
    // Only as the application role: no TRUNCATE (privilege), no row of another tenant.
    for script in [
        "TRUNCATE postings".to_owned(),
        "TRUNCATE journal_entries".to_owned(),
        "DELETE FROM ledger_accounts".to_owned(),
        posting(f.b, &EntryId::new_random().to_string(), 0, f.b_clearing, 5),
    ] {
        assert!(pg_attempt(&mut conn, f.a, script).await.is_err());
    }
    pg_attempt(&mut conn, f.a, accepted_script(&f))
        .await
        .unwrap();
    // Tenant A's raw reads see none of B's postings.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(f.a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let tenants: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM postings")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, vec![f.a.to_string()]);
    tx.rollback().await.unwrap();
    // The raw entry balanced but did not move balances: `check` names the drift.
    let mut tx = env.tx_a().await;
    let c = ledger::check(&mut tx).await.unwrap();
    assert_eq!(c.totals, vec![(eur(), 0)]);
    assert!(c.unbalanced_entries.is_empty());
    assert_eq!(c.drifted_accounts.len(), 2, "{c:?}");
}

#[tokio::test]
async fn postgresql_triggers_refuse_changes_even_to_the_owner_role() {
    let env = Env::postgres().await;
    // Rows to refuse: row-level triggers do not fire on an empty table.
    let _f = fixture(&env).await;
    let mut owner = sqlx::PgConnection::connect(&env.pg.as_ref().unwrap().owner_url)
        .await
        .unwrap();
    for script in [
        "UPDATE postings SET amount_minor = amount_minor * 2",
        "DELETE FROM postings",
        "TRUNCATE postings",
        "UPDATE journal_entries SET kind = 'x'",
        "DELETE FROM journal_entries",
        "TRUNCATE journal_entries CASCADE",
        "DELETE FROM ledger_accounts",
    ] {
        let mut tx = owner.begin().await.unwrap();
        let err = sqlx::raw_sql(script).execute(&mut *tx).await.unwrap_err();
        assert_eq!(code(&err), "BA003", "{script}: {err}");
        tx.rollback().await.unwrap();
    }
}
