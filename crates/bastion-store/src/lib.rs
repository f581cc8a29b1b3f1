//! Bastion's storage: the only crate that runs SQL.
//!
//! Everything happens in a transaction handed out by [`Store`]:
//! - [`Store::begin`]`(`[`TenantScope`]`)` → [`TenantTx`] for one tenant's rows. Every
//!   repository function takes `&mut TenantTx` and adds `WHERE tenant_id = <the tx's tenant>`
//!   itself; no function takes a tenant id parameter, so a request cannot reach another
//!   tenant's rows by naming them.
//! - [`Store::system`] → [`SystemTx`] for the tenant-less tables: [`tenants`], [`throttle`],
//!   the [`webhook`] inbox, the [`jobs`] queue, payment routes, the global and tool-wide
//!   [`killswitch`]es and the system audit chain.
//!
//! Repositories: [`tenants`], [`users`], [`mfa`], [`refresh`], [`throttle`], [`records`],
//! [`audit`], [`ledger`] (double-entry journal, balances checked by the database), for
//! payments [`idempotency`], [`payments`], [`velocity`], [`webhook`], [`jobs`], and
//! [`killswitch`] (tool calls stopped globally, per tool, per tenant), and [`approvals`]
//! (tool calls held for a second person's decision).
//!
//! SQLite is the embedded backend (WAL, foreign keys on, `BEGIN IMMEDIATE` so writers are
//! serialised). SQLite has no row-level security: there, isolation rests on [`TenantTx`] and
//! on composite foreign keys that include `tenant_id` (a record cannot reference another
//! tenant's user or parent, the database refuses it). Database-enforced RLS arrives with the
//! Postgres backend; the SQL is written to port (TEXT ids, BIGINT Unix seconds, JSON as TEXT,
//! `$n` placeholders) and callers will not change.
//!
//! On SQLite every transaction takes the write lock when it begins: keep transactions short
//! and never hold two at once in one task (the second waits for the first, then fails with
//! [`StoreError::Unavailable`]).
//!
//! Errors are [`StoreError`]; [`StoreError::Unavailable`] means answer 503 and do nothing.

mod db;
mod error;
mod rls;
mod sql;

pub mod approvals;
pub mod audit;
pub mod idempotency;
pub mod jobs;
pub mod killswitch;
pub mod ledger;
pub mod mfa;
pub mod payments;
pub mod records;
pub mod refresh;
pub mod tenants;
pub mod throttle;
pub mod users;
pub mod velocity;
pub mod webhook;

/// Test databases for this workspace's tests; not part of the serving path.
#[doc(hidden)]
pub mod testing;

pub use db::{
    ACQUIRE_TIMEOUT, BUSY_TIMEOUT, BackendKind, PG_POOL_CONNECTIONS_MAX, POOL_CONNECTIONS_MAX,
    POSTGRES_VERSION_MIN, Store, SystemTx, TenantScope, TenantTx,
};
pub use error::{Cause, StoreError, StoreResult};
pub use records::{FieldRef, ListFilter, PAGE_SIZE_MAX, Page, RefTarget};
pub use refresh::{FamilyId, RotateOutcome, TokenFamily};
pub use rls::{IsolationFinding, SYSTEM_TABLES};
