//! The job queue shared by every instance on one database, with retries, a dead-letter
//! state and leases. System table.
//!
//! A job is `queued` until its `run_at`; [`claim_due`] moves due jobs to `running` under a
//! lease (`locked_until`) and counts the attempt; the worker then calls [`complete`]
//! (`done`) or [`fail`] — back to `queued` after a backoff, or to `dead` once
//! `max_attempts` attempts were made (the dead-letter queue: [`list_dead`],
//! [`replay_dead`]). A worker that crashes leaves its job `running`; when the lease expires
//! the job is due again (and dead if it had no attempt left).
//!
//! [`claim_due`] on PostgreSQL selects with `FOR UPDATE SKIP LOCKED`, so several instances
//! take disjoint jobs without waiting on each other; on SQLite the transaction holds the
//! write lock (`BEGIN IMMEDIATE`). [`complete`] and [`fail`] are fenced by the attempt
//! number: a worker whose lease expired and whose job was claimed again cannot finish it.
//!
//! [`backoff_secs`] is the retry policy: exponential backoff with full jitter (AWS
//! Architecture Blog, "Exponential Backoff And Jitter", 2015).

use bastion_types::UnixTime;

use crate::SystemTx;
use crate::db::parse_id;
use crate::error::{StoreError, StoreResult};
use crate::sql::{self, col};

/// Longest job kind, in bytes (`[a-z0-9_.-]`, e.g. `webhook.process`).
pub const KIND_LEN_MAX: usize = 64;
/// Longest payload (JSON text), in bytes (64 KiB).
pub const PAYLOAD_LEN_MAX: usize = 64 * 1024;
/// Longest worker name, in bytes.
pub const WORKER_LEN_MAX: usize = 128;
/// Longest stored error, in bytes; longer errors are cut at a character boundary.
pub const LAST_ERROR_LEN_MAX: usize = 512;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS_MAX: i64 = 100;
/// Longest lease, in seconds.
pub const LEASE_SECS_MAX: i64 = 3600;
/// Longest backoff or initial delay, in seconds (one week).
pub const DELAY_SECS_MAX: i64 = 7 * 24 * 3600;
/// Most jobs one [`claim_due`] or [`list_dead`] call returns.
pub const BATCH_MAX: u32 = 100;
/// The error recorded when a job's last lease expired without an outcome.
pub const LEASE_EXPIRED_ERROR: &str = "lease expired without an outcome";

/// A job id (a random UUID, as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(uuid::Uuid);

impl JobId {
    fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Queued,
    /// Claimed by a worker until `locked_until`.
    Running,
    /// Finished successfully.
    Done,
    /// Out of attempts: in the dead-letter queue until replayed.
    Dead,
}

impl JobState {
    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            "dead" => Ok(Self::Dead),
            _ => Err(StoreError::internal("corrupt job state")),
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What to do, e.g. `webhook.process`; the worker dispatches on it.
    pub kind: String,
    /// The job's input, JSON text (never a secret: it is stored in clear).
    pub payload: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far, this one included while `running`.
    pub attempts: i64,
    /// Attempts allowed before the job goes dead.
    pub max_attempts: i64,
    /// Not due before this time, seconds since the epoch.
    pub run_at: UnixTime,
    /// End of the current lease while `running`.
    pub locked_until: Option<UnixTime>,
    /// The worker holding (or that last held) the lease.
    pub locked_by: Option<String>,
    /// The last failure, bounded to [`LAST_ERROR_LEN_MAX`] bytes.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: UnixTime,
    /// When it last changed.
    pub updated_at: UnixTime,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob<'a> {
    /// What to do (`[a-z0-9_.-]`, 1..=[`KIND_LEN_MAX`] bytes).
    pub kind: &'a str,
    /// The input, JSON text up to [`PAYLOAD_LEN_MAX`] bytes. Never put a secret here.
    pub payload: &'a str,
    /// Attempts allowed, `1..=`[`MAX_ATTEMPTS_MAX`].
    pub max_attempts: i64,
    /// Seconds from now before the first attempt, `0..=`[`DELAY_SECS_MAX`].
    pub delay_secs: i64,
}

/// What [`fail`] did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, due at `run_at`.
    Retrying {
        /// When it is due again, seconds since the epoch.
        run_at: UnixTime,
    },
    /// Out of attempts: moved to the dead-letter queue. Raise an alert.
    Dead,
}

const JOB_COLUMNS: &str = "id, kind, payload, state, attempts, max_attempts, run_at, \
     locked_until, locked_by, last_error, created_at, updated_at";

fn job_from_row(row: &sql::Row) -> StoreResult<Job> {
    Ok(Job {
        id: parse_id(&col::<String>(row, "id")?)?,
        kind: col(row, "kind")?,
        payload: col(row, "payload")?,
        state: JobState::parse(&col::<String>(row, "state")?)?,
        attempts: col(row, "attempts")?,
        max_attempts: col(row, "max_attempts")?,
        run_at: col(row, "run_at")?,
        locked_until: col(row, "locked_until")?,
        locked_by: col(row, "locked_by")?,
        last_error: col(row, "last_error")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn check_kind(kind: &str) -> StoreResult<()> {
    let ok = !kind.is_empty()
        && kind.len() <= KIND_LEN_MAX
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "job kind must be 1..=64 of [a-z0-9_.-]",
        })
    }
}

fn check_worker(worker: &str) -> StoreResult<()> {
    let ok = !worker.is_empty()
        && worker.len() <= WORKER_LEN_MAX
        && worker.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "worker name must be 1..=128 visible ascii characters",
        })
    }
}

fn check_delay(secs: i64) -> StoreResult<()> {
    if (0..=DELAY_SECS_MAX).contains(&secs) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            reason: "job delay must be 0..=604800 seconds",
        })
    }
}

fn check_batch(limit: u32) -> StoreResult<()> {
    if limit == 0 || limit > BATCH_MAX {
        return Err(StoreError::Invalid {
            reason: "job batch must be 1..=100",
        });
    }
    Ok(())
}

/// `error` cut to at most [`LAST_ERROR_LEN_MAX`] bytes at a character boundary.
fn bounded_error(error: &str) -> String {
    let mut end = error.len().min(LAST_ERROR_LEN_MAX);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.get(..end).unwrap_or_default().to_owned()
}

/// Enqueues a job, due `delay_secs` from now, and returns its id. Enqueue in the same
/// transaction as whatever makes the job necessary (e.g. the webhook inbox row), so neither
/// exists without the other.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad kind, a payload over [`PAYLOAD_LEN_MAX`], attempts
/// outside `1..=`[`MAX_ATTEMPTS_MAX`] or a delay outside `0..=`[`DELAY_SECS_MAX`].
pub async fn enqueue(tx: &mut SystemTx, job: &NewJob<'_>) -> StoreResult<JobId> {
    check_kind(job.kind)?;
    if job.payload.len() > PAYLOAD_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "job payload exceeds 64 KiB",
        });
    }
    if !(1..=MAX_ATTEMPTS_MAX).contains(&job.max_attempts) {
        return Err(StoreError::Invalid {
            reason: "job max attempts must be 1..=100",
        });
    }
    check_delay(job.delay_secs)?;
    let id = JobId::new_random();
    let now = tx.now();
    sql::query(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at,
             locked_until, locked_by, last_error, created_at, updated_at)
         VALUES ($1, $2, $3, 'queued', 0, $4, $5, NULL, NULL, NULL, $6, $6)",
    )
    .bind(id.to_string())
    .bind(job.kind)
    .bind(job.payload)
    .bind(job.max_attempts)
    .bind(now + job.delay_secs)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// Claims up to `limit` due jobs for `worker`, oldest `run_at` first: each becomes
/// `running` with a lease until now + `lease_secs` and one more attempt counted. Due means
/// `queued` with `run_at` reached, or `running` with an expired lease (its worker crashed).
/// Before claiming, jobs whose lease expired on their last attempt go dead with
/// [`LEASE_EXPIRED_ERROR`].
///
/// Commit promptly: on PostgreSQL the claimed rows stay locked until then, and other
/// instances skip them (`FOR UPDATE SKIP LOCKED`); after the commit the lease protects them.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad worker name, a lease outside `1..=`[`LEASE_SECS_MAX`]
/// or a `limit` outside `1..=`[`BATCH_MAX`].
pub async fn claim_due(
    tx: &mut SystemTx,
    worker: &str,
    lease_secs: i64,
    limit: u32,
) -> StoreResult<Vec<Job>> {
    check_worker(worker)?;
    if !(1..=LEASE_SECS_MAX).contains(&lease_secs) {
        return Err(StoreError::Invalid {
            reason: "job lease must be 1..=3600 seconds",
        });
    }
    check_batch(limit)?;
    let now = tx.now();
    let skip = if tx.conn().is_postgres() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    sql::query(format!(
        "WITH spent AS (SELECT id FROM jobs
                        WHERE state = 'running' AND locked_until <= $1
                          AND attempts >= max_attempts
                        LIMIT $3{skip})
         UPDATE jobs SET state = 'dead', locked_until = NULL, last_error = $2, updated_at = $1
         WHERE id IN (SELECT id FROM spent)"
    ))
    .bind(now)
    .bind(LEASE_EXPIRED_ERROR)
    .bind(i64::from(BATCH_MAX))
    .execute(tx.conn())
    .await?;
    let rows = sql::query(format!(
        "WITH due AS (SELECT id FROM jobs
                      WHERE (state = 'queued' AND run_at <= $1)
                         OR (state = 'running' AND locked_until <= $1
                             AND attempts < max_attempts)
                      ORDER BY run_at, id
                      LIMIT $4{skip})
         UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = $2,
             locked_by = $3, updated_at = $1
         WHERE id IN (SELECT id FROM due)
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(now)
    .bind(now + lease_secs)
    .bind(worker)
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    let mut jobs = rows
        .iter()
        .map(job_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    // RETURNING does not promise an order.
    jobs.sort_by_key(|j| (j.run_at, j.id));
    Ok(jobs)
}

/// Marks `job` (as returned by [`claim_due`]) done.
///
/// # Errors
/// [`StoreError::Conflict`] (with the stored attempt count) when the job is no longer in
/// this attempt: its lease expired and it was claimed again, or it already finished;
/// [`StoreError::NotFound`] when no such job exists.
pub async fn complete(tx: &mut SystemTx, job: &Job) -> StoreResult<()> {
    let now = tx.now();
    let done = sql::query(
        "UPDATE jobs SET state = 'done', locked_until = NULL, updated_at = $3
         WHERE id = $1 AND attempts = $2 AND state = 'running'",
    )
    .bind(job.id.to_string())
    .bind(job.attempts)
    .bind(now)
    .execute(tx.conn())
    .await?;
    fenced(tx, job, done.rows_affected()).await
}

async fn fenced(tx: &mut SystemTx, job: &Job, rows: u64) -> StoreResult<()> {
    if rows == 1 {
        return Ok(());
    }
    match get_job(tx, job.id).await? {
        Some(now) => Err(StoreError::Conflict {
            current_version: now.attempts,
        }),
        None => Err(StoreError::NotFound),
    }
}

/// Records that this attempt of `job` failed with `error` (bounded to
/// [`LAST_ERROR_LEN_MAX`] bytes; never a secret, a token or a card number). With attempts
/// left, the job is queued again, due `backoff_secs` from now (see [`backoff_secs`]);
/// otherwise it goes dead.
///
/// # Errors
/// [`StoreError::Invalid`] for a backoff outside `0..=`[`DELAY_SECS_MAX`]; otherwise as
/// [`complete`].
pub async fn fail(
    tx: &mut SystemTx,
    job: &Job,
    error: &str,
    backoff_secs: i64,
) -> StoreResult<FailOutcome> {
    check_delay(backoff_secs)?;
    let now = tx.now();
    let run_at = now + backoff_secs;
    let row = sql::query(
        "UPDATE jobs SET
             state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
             run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE $4 END,
             locked_until = NULL, last_error = $3, updated_at = $5
         WHERE id = $1 AND attempts = $2 AND state = 'running'
         RETURNING state, run_at",
    )
    .bind(job.id.to_string())
    .bind(job.attempts)
    .bind(bounded_error(error))
    .bind(run_at)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        fenced(tx, job, 0).await?;
        return Err(StoreError::internal("job fence check passed with no row"));
    };
    match JobState::parse(&col::<String>(&row, "state")?)? {
        JobState::Dead => Ok(FailOutcome::Dead),
        _ => Ok(FailOutcome::Retrying {
            run_at: col(&row, "run_at")?,
        }),
    }
}

/// The job with this id, if any.
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot serve.
pub async fn get_job(tx: &mut SystemTx, id: JobId) -> StoreResult<Option<Job>> {
    let row = sql::query(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(tx.conn())
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// Up to `limit` dead jobs, most recently dead first.
///
/// # Errors
/// [`StoreError::Invalid`] for a `limit` outside `1..=`[`BATCH_MAX`].
pub async fn list_dead(tx: &mut SystemTx, limit: u32) -> StoreResult<Vec<Job>> {
    check_batch(limit)?;
    let rows = sql::query(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'dead'
         ORDER BY updated_at DESC, id LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(job_from_row).collect()
}

/// The number of dead jobs (for an alerting gauge).
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot serve.
pub async fn dead_count(tx: &mut SystemTx) -> StoreResult<i64> {
    sql::query("SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
        .scalar(tx.conn())
        .await
}

/// Puts a dead job back in the queue, due now, with its attempts reset to zero (its last
/// error is kept for the record).
///
/// # Errors
/// [`StoreError::NotFound`] when no dead job has this id.
pub async fn replay_dead(tx: &mut SystemTx, id: JobId) -> StoreResult<()> {
    let now = tx.now();
    let done = sql::query(
        "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, locked_until = NULL,
             locked_by = NULL, updated_at = $2
         WHERE id = $1 AND state = 'dead'",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// The delay before retry number `attempt` (1 after the first failure), in seconds:
/// exponential backoff with **full jitter** (AWS Architecture Blog, "Exponential Backoff
/// And Jitter"): a uniform pick in `0..=min(cap, base · 2^(attempt − 1))`, where `random`
/// is a uniformly random `u64` supplied by the caller (so this function is pure and
/// testable). Full jitter spreads the retries of many clients that failed together, which
/// fixed or equal-jitter backoff does not.
///
/// `attempt` 0 is treated as 1; the exponent saturates, so any `attempt` is safe, and the
/// result never exceeds `cap`. The modulo bias of the pick is below 2⁻⁴⁰ for windows under
/// 2²⁴ seconds.
#[must_use]
pub fn backoff_secs(attempt: u32, base: u64, cap: u64, random: u64) -> u64 {
    let exponent = attempt.saturating_sub(1);
    let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
    let window = base.saturating_mul(factor).min(cap);
    match window.checked_add(1) {
        Some(span) => random % span,
        None => random,
    }
}

/// Enqueues `job` unless a job of the same kind and the same payload text exists already, in
/// any state (queued, running, done or dead): a scheduled job that must run once per key
/// (e.g. `reconcile` for one day) is enqueued by every instance and every tick, and stored
/// once. On PostgreSQL concurrent callers are serialised by a transaction-scoped advisory
/// lock on (kind, payload); SQLite transactions are serial already. Returns the new job's
/// id, or `None` when one existed.
///
/// # Errors
/// As [`enqueue`].
pub async fn enqueue_once(tx: &mut SystemTx, job: &NewJob<'_>) -> StoreResult<Option<JobId>> {
    check_kind(job.kind)?;
    if job.payload.len() > PAYLOAD_LEN_MAX {
        return Err(StoreError::Invalid {
            reason: "job payload exceeds 64 KiB",
        });
    }
    if tx.conn().is_postgres() {
        let key = format!("bastion.job_once:{}:{}", job.kind, job.payload);
        sql::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(tx.conn())
            .await?;
    }
    let existing = sql::query("SELECT id FROM jobs WHERE kind = $1 AND payload = $2 LIMIT 1")
        .bind(job.kind)
        .bind(job.payload)
        .fetch_optional(tx.conn())
        .await?;
    if existing.is_some() {
        return Ok(None);
    }
    enqueue(tx, job).await.map(Some)
}
