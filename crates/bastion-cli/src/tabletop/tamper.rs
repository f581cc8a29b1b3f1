//! The audit-tamper scenario: change one byte of one stored audit record and require that
//! `bastion audit verify` (the real command, run as a child process) fails, naming the chain
//! and the position, after passing on the untouched store.
//!
//! SQLite: the change is made in a copy of the database file (with its WAL), so the
//! instance's own store is never damaged. PostgreSQL (self-started only, as the owner URL the
//! tabletop was given): triggers refuse any change to `audit_log`, so the change is made with
//! `session_replication_role = replica` (superuser) and undone afterwards.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use sqlx::{Connection, Row};

use super::Target;
use super::scenarios::Obs;

/// The position changed in acme's chain.
const SEQ: i64 = 2;

/// Runs the scenario.
///
/// # Errors
/// When the store cannot be copied, opened or changed.
pub async fn run(t: &Target, o: &mut Obs) -> anyhow::Result<()> {
    let Some(instance_db) = t.instance_db_url.clone() else {
        o.skip("the instance's database is not reachable (--data or --database-url)");
        return Ok(());
    };
    let acme = super::tenant_id(t, "acme").await?.to_string();
    if instance_db.starts_with("sqlite://") {
        let src = Path::new(instance_db.trim_start_matches("sqlite://"));
        let tmp = tempfile::tempdir().context("temp dir")?;
        let copy = tmp.path().join("bastion.db");
        std::fs::copy(src, &copy).with_context(|| format!("copy {}", src.display()))?;
        let wal = std::path::PathBuf::from(format!("{}-wal", src.display()));
        if wal.exists() {
            std::fs::copy(&wal, format!("{}-wal", copy.display()))?;
        }
        let url = format!("sqlite://{}", copy.display());
        // Fold the WAL into the copy so the read-only verifier sees one file.
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
        verify(o, &url, true, &acme, "the copy before the change")?;
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut conn)
            .await?;
        flip(&mut conn, &acme, o).await?;
        conn.close().await?;
        verify(o, &url, false, &acme, "the copy after one byte changed")?;
        return Ok(());
    }
    let Some(owner) = t.database_url.clone() else {
        o.skip("changing PostgreSQL's audit log needs the owner URL (self-started with --database-url)");
        return Ok(());
    };
    verify(
        o,
        &instance_db,
        true,
        &acme,
        "the database before the change",
    )?;
    let mut conn = sqlx::PgConnection::connect(&owner).await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .context("disabling the audit triggers needs a superuser")?;
    let original = flip_pg(&mut conn, &acme, o).await?;
    let result = verify(
        o,
        &instance_db,
        false,
        &acme,
        "the database after one byte changed",
    );
    sqlx::query("UPDATE audit_log SET body = $1 WHERE tenant_id = $2 AND seq = $3")
        .bind(&original)
        .bind(&acme)
        .bind(SEQ)
        .execute(&mut conn)
        .await?;
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    result?;
    verify(
        o,
        &instance_db,
        true,
        &acme,
        "the database after the byte was restored",
    )
}

fn flipped(body: &str) -> anyhow::Result<String> {
    let mut bytes = body.as_bytes().to_vec();
    // An ASCII letter in the middle: flipping bit 0 keeps it ASCII (valid UTF-8, valid JSON).
    let i = (bytes.len() / 2..bytes.len())
        .find(|&i| bytes[i].is_ascii_alphabetic())
        .context("no letter to change")?;
    bytes[i] ^= 0x01;
    Ok(String::from_utf8(bytes)?)
}

async fn flip(conn: &mut sqlx::SqliteConnection, acme: &str, o: &mut Obs) -> anyhow::Result<()> {
    let row = sqlx::query("SELECT body FROM audit_log WHERE tenant_id = ? AND seq = ?")
        .bind(acme)
        .bind(SEQ)
        .fetch_one(&mut *conn)
        .await?;
    let body: String = row.get("body");
    let n = sqlx::query("UPDATE audit_log SET body = ? WHERE tenant_id = ? AND seq = ?")
        .bind(flipped(&body)?)
        .bind(acme)
        .bind(SEQ)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    o.check(
        n == 1,
        &format!("changed one byte of acme's audit record #{SEQ}"),
    );
    Ok(())
}

async fn flip_pg(conn: &mut sqlx::PgConnection, acme: &str, o: &mut Obs) -> anyhow::Result<String> {
    let row = sqlx::query("SELECT body FROM audit_log WHERE tenant_id = $1 AND seq = $2")
        .bind(acme)
        .bind(SEQ)
        .fetch_one(&mut *conn)
        .await?;
    let body: String = row.get("body");
    let n = sqlx::query("UPDATE audit_log SET body = $1 WHERE tenant_id = $2 AND seq = $3")
        .bind(flipped(&body)?)
        .bind(acme)
        .bind(SEQ)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    o.check(
        n == 1,
        &format!("changed one byte of acme's audit record #{SEQ}"),
    );
    Ok(body)
}

/// Runs `bastion audit verify --database-url URL` and checks its exit code (and, when it must
/// fail, that it names acme's chain at [`SEQ`]).
fn verify(o: &mut Obs, url: &str, expect_ok: bool, acme: &str, what: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the bastion executable")?;
    let out = Command::new(exe)
        .args(["audit", "verify", "--database-url", url])
        .output()
        .context("cannot run `bastion audit verify`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code().unwrap_or(-1);
    if expect_ok {
        o.check(
            code == 0,
            &format!("`bastion audit verify` on {what}: exit {code}"),
        );
    } else {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_default()
            .to_owned();
        o.check(
            code == 1 && line.contains(acme) && line.contains(&format!("position {SEQ}")),
            &format!("`bastion audit verify` on {what}: exit {code}: {line}"),
        );
    }
    Ok(())
}
