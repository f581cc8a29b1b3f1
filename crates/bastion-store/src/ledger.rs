//! The double-entry ledger's tables: accounts with their balances, journal entries and their
//! postings (migration `0002_ledger.sql`).
//!
//! Double entry as Pacioli wrote it down (*Summa de arithmetica*, 1494, "Particularis de
//! computis et scripturis") and as ledgers for developers state it (Modern Treasury,
//! "Accounting for Developers"; Formance Ledger docs, "Transactions"): every entry moves money
//! between accounts with **signed** postings that sum to zero per currency, so money is never
//! created or lost; entries are immutable, a mistake is corrected by a reversing entry; an
//! account's balance is the sum of its postings.
//!
//! Sign convention (Formance's): a positive `amount_minor` is money *into* the account, a
//! negative one money *out of* it; an account's balance is what it holds. Accounts with
//! `allow_negative = false` never go below zero — the database refuses it (`CHECK`), and
//! [`post_entry`] refuses it first, under a row lock, with [`Refusal::Overdraft`].
//!
//! What the database enforces on both backends, whatever writes to it (see the migration):
//! an entry has two or more postings summing to zero per currency; no posting is added to an
//! entry after it is written; postings and entries are never updated or deleted; an entry is
//! reversed at most once; a posting's currency is its account's; every key includes
//! `tenant_id`. [`post_entry`] inserts the postings, then the entry (whose insert trigger
//! checks the sum), then the balances, in the caller's transaction.
//!
//! Concurrency: on PostgreSQL [`post_entry`] locks the entry's accounts with
//! `SELECT … ORDER BY id FOR UPDATE` (one order for everyone, so two entries never deadlock)
//! before reading their balances; on SQLite every transaction holds the write lock already.
//! So a check such as "this balance stays ≥ 0" holds at commit.

use std::collections::BTreeMap;

use bastion_types::{Currency, Money, UnixTime};
use serde_json::Value;
use uuid::Uuid;

use crate::TenantTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, Row, col};

/// Most postings in one entry.
pub const POSTINGS_PER_ENTRY_MAX: usize = 16;
/// Longest entry kind (`capture`, `refund`, …), in bytes.
pub const KIND_LEN_MAX: usize = 32;
/// Longest entry reference (a payment id, a payout id, …), in bytes.
pub const REFERENCE_LEN_MAX: usize = 128;
/// Longest account code, in bytes.
pub const CODE_LEN_MAX: usize = 160;
/// Longest serialized entry detail (JSON), in bytes.
pub const DETAIL_LEN_MAX: usize = 4 * 1024;
/// Most entries [`entries_for_reference`] returns (the oldest first).
pub const ENTRIES_PER_REFERENCE_MAX: usize = 1_000;
/// Most account codes one [`balances`] call may name.
pub const BALANCE_CODES_MAX: usize = 64;
/// Most ids each list of a [`LedgerCheck`] holds.
pub const CHECK_FINDINGS_MAX: usize = 100;

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, " (a random UUID, unique in its tenant).")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            #[must_use]
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the canonical hyphenated form.
            ///
            /// # Errors
            /// [`StoreError::Invalid`] when `s` is not a UUID.
            pub fn parse(s: &str) -> StoreResult<Self> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| StoreError::Invalid {
                        reason: concat!("bad ", $what, " id"),
                    })
            }

            /// The underlying UUID.
            #[must_use]
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> StoreResult<Self> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(AccountId, "ledger account");
uuid_id!(EntryId, "journal entry");

/// A ledger account of this tenant: one code in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Its code, unique per currency in the tenant (e.g. `psp_clearing`).
    pub code: String,
    /// The one currency of every posting to it.
    pub currency: Currency,
    /// Whether its balance may go below zero (a source of outside money); `false` means the
    /// database refuses any entry that would overdraw it.
    pub allow_negative: bool,
    /// The sum of its postings, minor units.
    pub balance_minor: i64,
    /// How many entries have changed the balance.
    pub version: i64,
    /// Creation time, Unix seconds.
    pub created_at: UnixTime,
}

impl Account {
    /// The balance as [`Money`].
    #[must_use]
    pub fn balance(&self) -> Money {
        Money {
            minor: self.balance_minor,
            currency: self.currency,
        }
    }
}

/// An entry to post: signed postings (positive = into the account) that must sum to zero per
/// currency, each account's currency being the currency of its postings.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// What happened, `1..=`[`KIND_LEN_MAX`] bytes (e.g. `capture`).
    pub kind: String,
    /// What it is about, `1..=`[`REFERENCE_LEN_MAX`] bytes (e.g. the PSP payment id).
    pub reference: String,
    /// The entry this one reverses, if it is a reversal (each entry is reversed at most once).
    pub reverses: Option<EntryId>,
    /// Free JSON for people (at most [`DETAIL_LEN_MAX`] bytes serialized); never read back
    /// by the ledger's rules.
    pub detail: Value,
    /// `(account, amount_minor)`, `2..=`[`POSTINGS_PER_ENTRY_MAX`] of them, none zero.
    pub postings: Vec<(AccountId, i64)>,
}

/// One posting of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// Position in its entry, from 0.
    pub seq: i64,
    /// The account.
    pub account_id: AccountId,
    /// Signed minor units: positive into the account, negative out of it.
    pub amount_minor: i64,
    /// The account's currency.
    pub currency: Currency,
}

/// A stored journal entry with its postings (ordered by `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// What happened.
    pub kind: String,
    /// What it is about.
    pub reference: String,
    /// The entry it reverses, if any.
    pub reverses: Option<EntryId>,
    /// When it was posted, Unix seconds.
    pub created_at: UnixTime,
    /// The detail JSON.
    pub detail: Value,
    /// Its postings, summing to zero per currency.
    pub postings: Vec<Posting>,
}

/// Why [`post_entry`] or [`reverse_entry`] wrote nothing. Checked before any write, so the
/// transaction is still usable (on PostgreSQL too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The postings do not sum to zero in `currency`.
    #[error("the entry does not balance in {currency}")]
    Unbalanced {
        /// The first currency whose postings do not sum to zero.
        currency: Currency,
    },
    /// A posting names an account that does not exist in this tenant.
    #[error("unknown ledger account")]
    UnknownAccount,
    /// The entry would take `account` below zero, and it may not go negative.
    #[error("the entry would overdraw an account")]
    Overdraft {
        /// The account.
        account: AccountId,
        /// Its balance before the entry, minor units.
        balance_minor: i64,
        /// The entry's net change to it, minor units (negative).
        change_minor: i64,
    },
    /// A sum or a balance would not fit in an `i64`.
    #[error("amount overflow")]
    Overflow,
    /// The entry to reverse does not exist in this tenant.
    #[error("unknown journal entry")]
    UnknownEntry,
    /// The entry to reverse was reversed already.
    #[error("the entry was reversed already")]
    AlreadyReversed,
}

/// What [`check`] found; everything empty and every total zero means the ledger holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerCheck {
    /// Sum of every posting of the tenant, per currency (each must be 0).
    pub totals: Vec<(Currency, i64)>,
    /// Accounts whose stored balance differs from the sum of their postings (at most
    /// [`CHECK_FINDINGS_MAX`]).
    pub drifted_accounts: Vec<AccountId>,
    /// Entries whose postings do not sum to zero in some currency (at most
    /// [`CHECK_FINDINGS_MAX`]).
    pub unbalanced_entries: Vec<EntryId>,
}

impl LedgerCheck {
    /// Whether every invariant holds.
    #[must_use]
    pub fn holds(&self) -> bool {
        self.totals.iter().all(|(_, t)| *t == 0)
            && self.drifted_accounts.is_empty()
            && self.unbalanced_entries.is_empty()
    }
}

fn check_text(s: &str, max: usize, reason: &'static str) -> StoreResult<()> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(StoreError::Invalid { reason });
    }
    Ok(())
}

fn currency(s: &str) -> StoreResult<Currency> {
    Currency::parse(s).map_err(|_| StoreError::internal("corrupt currency in a stored row"))
}

const ACCOUNT_COLS: &str = "id, code, currency, allow_negative, balance_minor, version, created_at";

fn account_from(row: &Row) -> StoreResult<Account> {
    Ok(Account {
        id: parse_id(&col::<String>(row, "id")?)?,
        code: col(row, "code")?,
        currency: currency(&col::<String>(row, "currency")?)?,
        allow_negative: col(row, "allow_negative")?,
        balance_minor: col(row, "balance_minor")?,
        version: col(row, "version")?,
        created_at: col(row, "created_at")?,
    })
}

/// The account `code` in `currency`, created (balance 0) if absent. Idempotent, also across
/// concurrent transactions (`INSERT … ON CONFLICT DO NOTHING`, then a read).
///
/// # Errors
/// [`StoreError::Invalid`] for a code that is empty, longer than [`CODE_LEN_MAX`] or holds
/// control characters, or when the account exists with the other `allow_negative`.
pub async fn account(
    tx: &mut TenantTx,
    code: &str,
    currency: Currency,
    allow_negative: bool,
) -> StoreResult<Account> {
    check_text(
        code,
        CODE_LEN_MAX,
        "account code must be 1..=160 printable bytes",
    )?;
    let tenant = tx.tenant_text();
    let now = tx.now();
    sql::query(
        "INSERT INTO ledger_accounts
            (tenant_id, id, code, currency, allow_negative, balance_minor, version, created_at)
         VALUES ($1, $2, $3, $4, $5, 0, 0, $6)
         ON CONFLICT (tenant_id, code, currency) DO NOTHING",
    )
    .bind(&tenant)
    .bind(AccountId::new_random().to_string())
    .bind(code)
    .bind(currency.as_str())
    .bind(allow_negative)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let acc = account_by_code(tx, code, currency)
        .await?
        .ok_or(StoreError::internal("ledger account vanished after insert"))?;
    if acc.allow_negative != allow_negative {
        return Err(StoreError::Invalid {
            reason: "the account exists with another overdraft rule",
        });
    }
    Ok(acc)
}

/// The account `code` in `currency`, if it exists in this tenant.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn account_by_code(
    tx: &mut TenantTx,
    code: &str,
    currency: Currency,
) -> StoreResult<Option<Account>> {
    let tenant = tx.tenant_text();
    sql::query(format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts
         WHERE tenant_id = $1 AND code = $2 AND currency = $3"
    ))
    .bind(tenant)
    .bind(code)
    .bind(currency.as_str())
    .fetch_optional(tx.conn())
    .await?
    .map(|r| account_from(&r))
    .transpose()
}

/// Most currencies one account code may exist in, as [`accounts_with_code`] returns them.
pub const CURRENCIES_PER_CODE_MAX: usize = 32;

/// The accounts with code `code`, one per currency (at most [`CURRENCIES_PER_CODE_MAX`]),
/// ordered by currency.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn accounts_with_code(tx: &mut TenantTx, code: &str) -> StoreResult<Vec<Account>> {
    let tenant = tx.tenant_text();
    let max = i64::try_from(CURRENCIES_PER_CODE_MAX).unwrap_or(i64::MAX);
    sql::query(format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE tenant_id = $1 AND code = $2
         ORDER BY currency LIMIT $3"
    ))
    .bind(tenant)
    .bind(code)
    .bind(max)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(account_from)
    .collect()
}

/// The balance of account `id`.
///
/// # Errors
/// [`StoreError::NotFound`] when the account is not in this tenant.
pub async fn account_balance(tx: &mut TenantTx, id: AccountId) -> StoreResult<Money> {
    let tenant = tx.tenant_text();
    let row = sql::query(
        "SELECT balance_minor, currency FROM ledger_accounts WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id.to_string())
    .fetch_one(tx.conn())
    .await?;
    Ok(Money {
        minor: col(&row, "balance_minor")?,
        currency: currency(&col::<String>(&row, "currency")?)?,
    })
}

/// The accounts named by `codes` in `currency` that exist, ordered by code.
///
/// # Errors
/// [`StoreError::Invalid`] for more than [`BALANCE_CODES_MAX`] codes.
pub async fn balances(
    tx: &mut TenantTx,
    currency: Currency,
    codes: &[&str],
) -> StoreResult<Vec<Account>> {
    if codes.len() > BALANCE_CODES_MAX {
        return Err(StoreError::Invalid {
            reason: "at most 64 account codes per balance query",
        });
    }
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = sql::Builder::new(&format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE tenant_id = "
    ));
    b.push_bind(tx.tenant_text())
        .push(" AND currency = ")
        .push_bind(currency.as_str())
        .push(" AND code IN (");
    for (i, c) in codes.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push_bind(*c);
    }
    b.push(") ORDER BY code");
    b.build()
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(account_from)
        .collect()
}

fn check_new_entry(e: &NewEntry) -> StoreResult<String> {
    check_text(
        &e.kind,
        KIND_LEN_MAX,
        "entry kind must be 1..=32 printable bytes",
    )?;
    check_text(
        &e.reference,
        REFERENCE_LEN_MAX,
        "entry reference must be 1..=128 printable bytes",
    )?;
    if e.postings.len() < 2 || e.postings.len() > POSTINGS_PER_ENTRY_MAX {
        return Err(StoreError::Invalid {
            reason: "an entry has 2..=16 postings",
        });
    }
    if e.postings.iter().any(|(_, a)| *a == 0) {
        return Err(StoreError::Invalid {
            reason: "a posting amount is never zero",
        });
    }
    let detail =
        serde_json::to_string(&e.detail).map_err(|_| StoreError::internal("detail encoding"))?;
    if detail.len() > DETAIL_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "entry detail must be at most 4096 bytes",
        });
    }
    Ok(detail)
}

/// Locks (PostgreSQL: `FOR UPDATE`, in id order) and reads the accounts `ids` (sorted,
/// distinct).
async fn lock_accounts(tx: &mut TenantTx, ids: &[AccountId]) -> StoreResult<Vec<Account>> {
    let mut b = sql::Builder::new(&format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE tenant_id = "
    ));
    b.push_bind(tx.tenant_text()).push(" AND id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push_bind(id.to_string());
    }
    b.push(") ORDER BY id");
    if tx.conn().is_postgres() {
        b.push(" FOR UPDATE");
    }
    b.build()
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(account_from)
        .collect()
}

/// Serialises reversals of one entry on PostgreSQL (SQLite transactions are serial already),
/// so the "not reversed yet" check holds at commit.
async fn lock_reversal(tx: &mut TenantTx, entry: EntryId) -> StoreResult<()> {
    if tx.conn().is_postgres() {
        let key = format!("bastion.ledger_reversal:{}:{entry}", tx.tenant_text());
        sql::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// Posts `entry` in the caller's transaction: checks it, locks its accounts, refuses it
/// (writing nothing) if it does not balance or would overdraw an account, then inserts its
/// postings, then its journal entry (the database checks the sum again), then the new
/// balances. Returns the entry's id, or the [`Refusal`].
///
/// # Errors
/// [`StoreError::Invalid`] for a kind, reference, detail or posting count outside the limits
/// or a zero amount; [`StoreError::Unavailable`] from the database.
pub async fn post_entry(
    tx: &mut TenantTx,
    entry: NewEntry,
) -> StoreResult<Result<EntryId, Refusal>> {
    let detail = check_new_entry(&entry)?;
    if let Some(rev) = entry.reverses {
        lock_reversal(tx, rev).await?;
        let tenant = tx.tenant_text();
        let row = sql::query(
            "SELECT e.id,
                    (SELECT r.id FROM journal_entries r
                     WHERE r.tenant_id = e.tenant_id AND r.reverses_entry_id = e.id) AS reversal
             FROM journal_entries e WHERE e.tenant_id = $1 AND e.id = $2",
        )
        .bind(tenant)
        .bind(rev.to_string())
        .fetch_optional(tx.conn())
        .await?;
        match row {
            None => return Ok(Err(Refusal::UnknownEntry)),
            Some(r) if col::<Option<String>>(&r, "reversal")?.is_some() => {
                return Ok(Err(Refusal::AlreadyReversed));
            }
            Some(_) => {}
        }
    }

    // Net change per account, in a deterministic (sorted) order.
    let mut change: BTreeMap<AccountId, i64> = BTreeMap::new();
    for (acc, amount) in &entry.postings {
        let slot = change.entry(*acc).or_insert(0);
        match slot.checked_add(*amount) {
            Some(v) => *slot = v,
            None => return Ok(Err(Refusal::Overflow)),
        }
    }
    let ids: Vec<AccountId> = change.keys().copied().collect();
    let accounts = lock_accounts(tx, &ids).await?;
    if accounts.len() != ids.len() {
        return Ok(Err(Refusal::UnknownAccount));
    }
    let by_id: BTreeMap<AccountId, &Account> = accounts.iter().map(|a| (a.id, a)).collect();

    // Zero sum per currency (i128: a sum of at most 16 i64 cannot overflow it).
    let mut sums: BTreeMap<Currency, i128> = BTreeMap::new();
    for (acc, amount) in &entry.postings {
        let a = by_id
            .get(acc)
            .ok_or(StoreError::internal("locked account missing"))?;
        *sums.entry(a.currency).or_insert(0) += i128::from(*amount);
    }
    if let Some((cur, _)) = sums.iter().find(|(_, s)| **s != 0) {
        return Ok(Err(Refusal::Unbalanced { currency: *cur }));
    }

    // New balances; no overdraft.
    let mut updates = Vec::with_capacity(accounts.len());
    for a in &accounts {
        let delta = change.get(&a.id).copied().unwrap_or(0);
        let Some(new) = a.balance_minor.checked_add(delta) else {
            return Ok(Err(Refusal::Overflow));
        };
        if new < 0 && !a.allow_negative {
            return Ok(Err(Refusal::Overdraft {
                account: a.id,
                balance_minor: a.balance_minor,
                change_minor: delta,
            }));
        }
        if delta != 0 {
            updates.push((a.id, new, a.version));
        }
    }

    let id = EntryId::new_random();
    let tenant = tx.tenant_text();
    let now = tx.now();
    let mut b = sql::Builder::new(
        "INSERT INTO postings (tenant_id, entry_id, seq, account_id, amount_minor, currency) VALUES ",
    );
    for (seq, (acc, amount)) in entry.postings.iter().enumerate() {
        let a = by_id
            .get(acc)
            .ok_or(StoreError::internal("locked account missing"))?;
        if seq > 0 {
            b.push(", ");
        }
        b.push("(")
            .push_bind(tenant.as_str())
            .push(", ")
            .push_bind(id.to_string())
            .push(", ")
            .push_bind(i64::try_from(seq).map_err(|_| StoreError::internal("posting seq"))?)
            .push(", ")
            .push_bind(acc.to_string())
            .push(", ")
            .push_bind(*amount)
            .push(", ")
            .push_bind(a.currency.as_str())
            .push(")");
    }
    b.build().execute(tx.conn()).await?;
    sql::query(
        "INSERT INTO journal_entries
            (tenant_id, id, kind, reference, reverses_entry_id, created_at, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(id.to_string())
    .bind(entry.kind.as_str())
    .bind(entry.reference.as_str())
    .bind(entry.reverses.map(|r| r.to_string()))
    .bind(now)
    .bind(detail)
    .execute(tx.conn())
    .await?;
    for (acc, new, version) in updates {
        let done = sql::query(
            "UPDATE ledger_accounts SET balance_minor = $1, version = version + 1
             WHERE tenant_id = $2 AND id = $3 AND version = $4",
        )
        .bind(new)
        .bind(tenant.as_str())
        .bind(acc.to_string())
        .bind(version)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() != 1 {
            // The row is locked (or the transaction serialised): this cannot happen.
            return Err(StoreError::internal("a locked ledger account changed"));
        }
    }
    Ok(Ok(id))
}

/// Posts the reversal of entry `id`: the same postings negated, with `reverses = id`, kind
/// `kind` and reference `reference`. An entry is reversed at most once; a reversal that would
/// overdraw an account is refused like any entry.
///
/// # Errors
/// As [`post_entry`].
pub async fn reverse_entry(
    tx: &mut TenantTx,
    id: EntryId,
    kind: &str,
    reference: &str,
    detail: Value,
) -> StoreResult<Result<EntryId, Refusal>> {
    let Some(original) = entry(tx, id).await? else {
        return Ok(Err(Refusal::UnknownEntry));
    };
    let mut postings = Vec::with_capacity(original.postings.len());
    for p in &original.postings {
        let Some(neg) = p.amount_minor.checked_neg() else {
            return Ok(Err(Refusal::Overflow));
        };
        postings.push((p.account_id, neg));
    }
    post_entry(
        tx,
        NewEntry {
            kind: kind.to_owned(),
            reference: reference.to_owned(),
            reverses: Some(id),
            detail,
            postings,
        },
    )
    .await
}

const ENTRY_COLS: &str = "id, kind, reference, reverses_entry_id, created_at, detail";

fn entry_from(row: &Row) -> StoreResult<Entry> {
    let reverses: Option<String> = col(row, "reverses_entry_id")?;
    let detail: String = col(row, "detail")?;
    Ok(Entry {
        id: parse_id(&col::<String>(row, "id")?)?,
        kind: col(row, "kind")?,
        reference: col(row, "reference")?,
        reverses: reverses.as_deref().map(parse_id).transpose()?,
        created_at: col(row, "created_at")?,
        detail: serde_json::from_str(&detail)
            .map_err(|_| StoreError::internal("corrupt entry detail"))?,
        postings: Vec::new(),
    })
}

fn posting_from(row: &Row) -> StoreResult<(EntryId, Posting)> {
    Ok((
        parse_id(&col::<String>(row, "entry_id")?)?,
        Posting {
            seq: col(row, "seq")?,
            account_id: parse_id(&col::<String>(row, "account_id")?)?,
            amount_minor: col(row, "amount_minor")?,
            currency: currency(&col::<String>(row, "currency")?)?,
        },
    ))
}

/// Entry `id` with its postings, if it exists in this tenant.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn entry(tx: &mut TenantTx, id: EntryId) -> StoreResult<Option<Entry>> {
    let tenant = tx.tenant_text();
    let Some(row) = sql::query(format!(
        "SELECT {ENTRY_COLS} FROM journal_entries WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(&tenant)
    .bind(id.to_string())
    .fetch_optional(tx.conn())
    .await?
    else {
        return Ok(None);
    };
    let mut e = entry_from(&row)?;
    let rows = sql::query(
        "SELECT entry_id, seq, account_id, amount_minor, currency FROM postings
         WHERE tenant_id = $1 AND entry_id = $2 ORDER BY seq",
    )
    .bind(&tenant)
    .bind(id.to_string())
    .fetch_all(tx.conn())
    .await?;
    for r in &rows {
        e.postings.push(posting_from(r)?.1);
    }
    Ok(Some(e))
}

/// The entries whose reference is `reference`, oldest first, with their postings; at most
/// [`ENTRIES_PER_REFERENCE_MAX`].
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn entries_for_reference(tx: &mut TenantTx, reference: &str) -> StoreResult<Vec<Entry>> {
    let tenant = tx.tenant_text();
    let limit = i64::try_from(ENTRIES_PER_REFERENCE_MAX).unwrap_or(i64::MAX);
    let rows = sql::query(format!(
        "SELECT {ENTRY_COLS} FROM journal_entries WHERE tenant_id = $1 AND reference = $2
         ORDER BY created_at, id LIMIT $3"
    ))
    .bind(&tenant)
    .bind(reference)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    let mut entries = rows
        .iter()
        .map(entry_from)
        .collect::<StoreResult<Vec<_>>>()?;
    if entries.is_empty() {
        return Ok(entries);
    }
    // The postings of exactly the entries returned (the same bounded selection).
    let postings = sql::query(
        "SELECT p.entry_id, p.seq, p.account_id, p.amount_minor, p.currency
         FROM postings p
         WHERE p.tenant_id = $1 AND p.entry_id IN (
             SELECT e.id FROM journal_entries e WHERE e.tenant_id = $1 AND e.reference = $2
             ORDER BY e.created_at, e.id LIMIT $3)
         ORDER BY p.entry_id, p.seq",
    )
    .bind(&tenant)
    .bind(reference)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    let mut by_entry: BTreeMap<EntryId, Vec<Posting>> = BTreeMap::new();
    for r in &postings {
        let (e, p) = posting_from(r)?;
        by_entry.entry(e).or_default().push(p);
    }
    for e in &mut entries {
        e.postings = by_entry.remove(&e.id).unwrap_or_default();
    }
    Ok(entries)
}

/// Checks this tenant's whole ledger in the database: the sum of all postings per currency,
/// accounts whose stored balance is not the sum of their postings, and entries that do not
/// balance. Reads every posting: for audits and tests, not for the request path.
///
/// # Errors
/// [`StoreError::Unavailable`] from the database.
pub async fn check(tx: &mut TenantTx) -> StoreResult<LedgerCheck> {
    let tenant = tx.tenant_text();
    let max = i64::try_from(CHECK_FINDINGS_MAX).unwrap_or(i64::MAX);
    let mut out = LedgerCheck::default();
    for r in &sql::query(
        "SELECT currency, CAST(SUM(amount_minor) AS BIGINT) AS total FROM postings
         WHERE tenant_id = $1 GROUP BY currency ORDER BY currency",
    )
    .bind(&tenant)
    .fetch_all(tx.conn())
    .await?
    {
        out.totals
            .push((currency(&col::<String>(r, "currency")?)?, col(r, "total")?));
    }
    for r in &sql::query(
        "SELECT a.id FROM ledger_accounts a
         WHERE a.tenant_id = $1 AND a.balance_minor <> COALESCE(
             (SELECT CAST(SUM(p.amount_minor) AS BIGINT) FROM postings p
              WHERE p.tenant_id = a.tenant_id AND p.account_id = a.id), 0)
         ORDER BY a.id LIMIT $2",
    )
    .bind(&tenant)
    .bind(max)
    .fetch_all(tx.conn())
    .await?
    {
        out.drifted_accounts
            .push(parse_id(&col::<String>(r, "id")?)?);
    }
    for r in &sql::query(
        "SELECT DISTINCT entry_id FROM postings WHERE tenant_id = $1
         GROUP BY entry_id, currency HAVING SUM(amount_minor) <> 0
         ORDER BY entry_id LIMIT $2",
    )
    .bind(&tenant)
    .bind(max)
    .fetch_all(tx.conn())
    .await?
    {
        out.unbalanced_entries
            .push(parse_id(&col::<String>(r, "entry_id")?)?);
    }
    Ok(out)
}

/// Most entries [`entries_between`] returns; a busier range is refused, not cut.
pub const ENTRIES_BETWEEN_MAX: usize = 50_000;

/// The entries of this tenant posted in `[from, to)` (Unix seconds, by `created_at`), oldest
/// first, with their postings — the ledger side of a daily reconciliation.
///
/// # Errors
/// [`StoreError::Invalid`] when `to < from` or the range holds more than
/// [`ENTRIES_BETWEEN_MAX`] entries (reconcile a shorter range);
/// [`StoreError::Unavailable`] from the database.
pub async fn entries_between(
    tx: &mut TenantTx,
    from: UnixTime,
    to: UnixTime,
) -> StoreResult<Vec<Entry>> {
    if to < from {
        return Err(StoreError::Invalid {
            reason: "entry range ends before it starts",
        });
    }
    let tenant = tx.tenant_text();
    // One more than the limit, to tell "exactly the limit" from "too many".
    let limit = i64::try_from(ENTRIES_BETWEEN_MAX + 1).unwrap_or(i64::MAX);
    let rows = sql::query(format!(
        "SELECT {ENTRY_COLS} FROM journal_entries
         WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
         ORDER BY created_at, id LIMIT $4"
    ))
    .bind(&tenant)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    if rows.len() > ENTRIES_BETWEEN_MAX {
        return Err(StoreError::Invalid {
            reason: "more journal entries in the range than one read allows",
        });
    }
    let mut entries = rows
        .iter()
        .map(entry_from)
        .collect::<StoreResult<Vec<_>>>()?;
    if entries.is_empty() {
        return Ok(entries);
    }
    let postings = sql::query(
        "SELECT p.entry_id, p.seq, p.account_id, p.amount_minor, p.currency
         FROM postings p JOIN journal_entries e
           ON e.tenant_id = p.tenant_id AND e.id = p.entry_id
         WHERE p.tenant_id = $1 AND e.created_at >= $2 AND e.created_at < $3
         ORDER BY p.entry_id, p.seq",
    )
    .bind(&tenant)
    .bind(from)
    .bind(to)
    .fetch_all(tx.conn())
    .await?;
    let mut by_entry: BTreeMap<EntryId, Vec<Posting>> = BTreeMap::new();
    for r in &postings {
        let (e, p) = posting_from(r)?;
        by_entry.entry(e).or_default().push(p);
    }
    for e in &mut entries {
        e.postings = by_entry.remove(&e.id).unwrap_or_default();
    }
    Ok(entries)
}
