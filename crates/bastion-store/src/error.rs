//! The store's one error type, and how database errors map onto it.

use std::error::Error as StdError;

/// What went wrong in the store. Messages are lowercase and never contain SQL text or row
/// values; the underlying cause (for logs) is kept as [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist in this tenant (rows of other tenants do not exist either).
    #[error("not found")]
    NotFound,
    /// Optimistic concurrency: the record is no longer at the expected version.
    #[error("version conflict: the record is at version {current_version}")]
    Conflict {
        /// The version now stored.
        current_version: i64,
    },
    /// A row with the same unique key already exists in this tenant.
    #[error("already exists")]
    Duplicate,
    /// The database cannot serve the request: closed, locked past the busy timeout, read-only,
    /// full, or its files are missing or corrupt. Callers answer 503 and do not act: an
    /// effect whose audit record could not be written must not happen.
    #[error("storage unavailable")]
    Unavailable {
        /// The underlying cause, for logs.
        #[source]
        cause: Cause,
    },
    /// The input breaks a rule of the store (a limit, a shape, or a reference to a row that
    /// does not exist in this tenant). `reason` is a fixed lowercase phrase.
    #[error("invalid input: {reason}")]
    Invalid {
        /// Why, e.g. `page size must be 1..=100`.
        reason: &'static str,
    },
    /// The database does not enforce tenant isolation (PostgreSQL self-check): each finding
    /// names the table, view, schema or role attribute at fault. Bastion refuses to start.
    #[error("the database does not enforce tenant isolation: {}", list(findings))]
    Unsafe {
        /// What is wrong, one finding per object.
        findings: Vec<crate::IsolationFinding>,
    },
    /// A bug or a corrupt row. Details are only in the source, never in the message.
    #[error("internal storage error")]
    Internal {
        /// The underlying cause, for logs.
        #[source]
        cause: Cause,
    },
}

/// The opaque cause of an [`StoreError::Unavailable`] or [`StoreError::Internal`], kept for
/// logs. Its message is the driver's (which may name tables and constraints, never values).
#[derive(Debug)]
pub struct Cause(Box<dyn StdError + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl StoreError {
    /// An internal error with a fixed description.
    pub(crate) fn internal(what: &'static str) -> Self {
        Self::Internal {
            cause: Cause::fixed(what),
        }
    }

    /// Whether this is [`StoreError::Unavailable`] (answer 503).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// SQLite primary result codes that mean "the database cannot serve now".
const SQLITE_UNAVAILABLE: &[i64] = &[
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    7,  // SQLITE_NOMEM
    8,  // SQLITE_READONLY
    10, // SQLITE_IOERR
    11, // SQLITE_CORRUPT
    13, // SQLITE_FULL
    14, // SQLITE_CANTOPEN
    15, // SQLITE_PROTOCOL
    26, // SQLITE_NOTADB
];

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => Self::Duplicate,
                ErrorKind::ForeignKeyViolation => Self::Invalid {
                    reason: "reference to a row that does not exist in this tenant",
                },
                ErrorKind::NotNullViolation | ErrorKind::CheckViolation => Self::Invalid {
                    reason: "value breaks a storage constraint",
                },
                _ => {
                    let is_pg = db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some();
                    let unavailable = if is_pg {
                        db.code().is_some_and(|c| pg_unavailable(&c))
                    } else {
                        db.code()
                            .and_then(|c| c.parse::<i64>().ok())
                            .is_some_and(|c| SQLITE_UNAVAILABLE.contains(&(c & 0xff)))
                    };
                    let cause = Cause(Box::new(sqlx::Error::Database(db)));
                    if unavailable {
                        Self::Unavailable { cause }
                    } else {
                        Self::Internal { cause }
                    }
                }
            },
            e @ (sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)) => Self::Unavailable {
                cause: Cause(Box::new(e)),
            },
            e => Self::Internal {
                cause: Cause(Box::new(e)),
            },
        }
    }
}

/// Shorthand for results of this crate.
fn list(findings: &[crate::IsolationFinding]) -> String {
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// SQLSTATE classes and codes of PostgreSQL that mean "try again later" (Appendix A):
/// connection exceptions, insufficient resources, operator intervention, serialization
/// failures and deadlocks, and lock timeouts.
fn pg_unavailable(code: &str) -> bool {
    ["08", "53", "57"].iter().any(|c| code.starts_with(c))
        || matches!(code, "40001" | "40P01" | "55P03" | "25006")
}

/// What every store function returns.
pub type StoreResult<T> = Result<T, StoreError>;

impl Cause {
    /// A cause with a fixed description.
    pub(crate) fn fixed(what: &'static str) -> Self {
        Self(what.into())
    }
}
