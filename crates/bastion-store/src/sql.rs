//! One query API over both backends.
//!
//! Repositories write each statement once, in the SQL both SQLite and PostgreSQL accept
//! (`$n` placeholders, TEXT ids, BIGINT Unix seconds, BOOLEAN, BLOB/BYTEA), bind arguments
//! from a small closed set of types ([`Arg`]), and run it on the transaction's connection
//! ([`DbTx`]). Rows come back as [`Row`], read with [`col`] into any type both drivers decode.
//! Where the dialects differ, [`DbTx::is_postgres`] picks the text.

use std::borrow::Cow;

use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _};

use crate::error::{StoreError, StoreResult};

/// The driver transaction inside `TenantTx` and `SystemTx`.
pub(crate) enum DbTx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(PgTx),
}

/// A PostgreSQL transaction, and whether a statement in it failed. After any error
/// PostgreSQL aborts the transaction and a later `COMMIT` quietly rolls back; Bastion makes
/// that commit an error instead, so no caller believes lost work was saved.
pub(crate) struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
    failed: bool,
}

impl PgTx {
    pub(crate) fn new(tx: sqlx::Transaction<'static, Postgres>) -> Self {
        Self { tx, failed: false }
    }

    fn note<T>(&mut self, r: Result<T, sqlx::Error>) -> StoreResult<T> {
        if r.is_err() {
            self.failed = true;
        }
        Ok(r?)
    }
}

impl DbTx {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Sqlite(tx) => Ok(tx.commit().await?),
            Self::Postgres(pg) if pg.failed => {
                pg.tx.rollback().await?;
                Err(StoreError::internal(
                    "commit of a transaction in which a statement failed",
                ))
            }
            Self::Postgres(pg) => Ok(pg.tx.commit().await?),
        }
    }

    pub(crate) async fn rollback(self) -> StoreResult<()> {
        match self {
            Self::Sqlite(tx) => Ok(tx.rollback().await?),
            Self::Postgres(pg) => Ok(pg.tx.rollback().await?),
        }
    }
}

/// A bound argument. Every value a repository binds is one of these.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Self {
        Self::Bytes(v.clone())
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A row of either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A type both drivers can decode a column into.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// Reads a column by name, mapping decode failures to [`StoreError::Internal`].
pub(crate) fn col<T: Column>(row: &Row, name: &'static str) -> StoreResult<T> {
    match row {
        Row::Sqlite(r) => r.try_get(name).map_err(StoreError::from),
        Row::Postgres(r) => r.try_get(name).map_err(StoreError::from),
    }
}

fn col_at<T: Column>(row: &Row, i: usize) -> StoreResult<T> {
    match row {
        Row::Sqlite(r) => r.try_get(i).map_err(StoreError::from),
        Row::Postgres(r) => r.try_get(i).map_err(StoreError::from),
    }
}

/// What an `execute` did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    rows: u64,
}

impl Done {
    pub(crate) fn rows_affected(self) -> u64 {
        self.rows
    }
}

/// A statement with its arguments, not yet run.
#[must_use = "a query does nothing until it is run"]
pub(crate) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

/// A statement: `$1`, `$2`, … are bound in order by [`Query::bind`].
pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

/// Binds every argument onto a driver query. One macro, so both backends bind identically.
macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

impl Query {
    /// Binds the next `$n`.
    pub(crate) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) async fn execute(self, tx: &mut DbTx) -> StoreResult<Done> {
        let sql = AssertSqlSafe(self.sql);
        let rows = match tx {
            DbTx::Sqlite(c) => bind_all!(sqlx::query(sql), self.args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            DbTx::Postgres(c) => {
                let r = bind_all!(sqlx::query(sql), self.args)
                    .execute(&mut *c.tx)
                    .await;
                c.note(r)?.rows_affected()
            }
        };
        Ok(Done { rows })
    }

    pub(crate) async fn fetch_optional(self, tx: &mut DbTx) -> StoreResult<Option<Row>> {
        let sql = AssertSqlSafe(self.sql);
        Ok(match tx {
            DbTx::Sqlite(c) => bind_all!(sqlx::query(sql), self.args)
                .fetch_optional(&mut **c)
                .await?
                .map(Row::Sqlite),
            DbTx::Postgres(c) => {
                let r = bind_all!(sqlx::query(sql), self.args)
                    .fetch_optional(&mut *c.tx)
                    .await;
                c.note(r)?.map(Row::Postgres)
            }
        })
    }

    pub(crate) async fn fetch_one(self, tx: &mut DbTx) -> StoreResult<Row> {
        self.fetch_optional(tx).await?.ok_or(StoreError::NotFound)
    }

    pub(crate) async fn fetch_all(self, tx: &mut DbTx) -> StoreResult<Vec<Row>> {
        let sql = AssertSqlSafe(self.sql);
        Ok(match tx {
            DbTx::Sqlite(c) => bind_all!(sqlx::query(sql), self.args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            DbTx::Postgres(c) => {
                let r = bind_all!(sqlx::query(sql), self.args)
                    .fetch_all(&mut *c.tx)
                    .await;
                c.note(r)?.into_iter().map(Row::Postgres).collect()
            }
        })
    }

    /// The first column of the only row.
    pub(crate) async fn scalar<T: Column>(self, tx: &mut DbTx) -> StoreResult<T> {
        col_at(&self.fetch_one(tx).await?, 0)
    }

    /// The first column of the row, if there is one.
    pub(crate) async fn scalar_optional<T: Column>(self, tx: &mut DbTx) -> StoreResult<Option<T>> {
        self.fetch_optional(tx)
            .await?
            .map(|r| col_at(&r, 0))
            .transpose()
    }
}

/// Builds a statement whose shape depends on input (filters): SQL text is pushed verbatim
/// (only constants of this crate), values only through [`Builder::push_bind`].
pub(crate) struct Builder {
    sql: String,
    args: Vec<Arg>,
}

impl Builder {
    pub(crate) fn new(head: &str) -> Self {
        Self {
            sql: head.to_owned(),
            args: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(crate) fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    pub(crate) fn build(self) -> Query {
        Query {
            sql: Cow::Owned(self.sql),
            args: self.args,
        }
    }
}

/// Runs a script of several statements (migrations, grants) without arguments.
pub(crate) async fn raw(tx: &mut DbTx, text: impl Into<Cow<'static, str>>) -> StoreResult<()> {
    let text = AssertSqlSafe(text.into());
    match tx {
        DbTx::Sqlite(c) => {
            sqlx::raw_sql(text).execute(&mut **c).await?;
        }
        DbTx::Postgres(c) => {
            let r = sqlx::raw_sql(text).execute(&mut *c.tx).await;
            c.note(r)?;
        }
    }
    Ok(())
}
