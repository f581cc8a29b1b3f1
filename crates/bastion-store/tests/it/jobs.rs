//! The job queue: due times, retries with backoff, the dead-letter queue and its replay,
//! leases that expire, fencing of stale workers, full-jitter backoff, and two instances on
//! one PostgreSQL database never claiming the same job.

use std::collections::HashSet;

use bastion_store::jobs::{
    self, FailOutcome, JobId, JobState, LAST_ERROR_LEN_MAX, LEASE_EXPIRED_ERROR, NewJob,
    backoff_secs,
};
use bastion_store::{StoreError, SystemTx};

use crate::{Env, T0};

fn job(kind: &str, max_attempts: i64, delay_secs: i64) -> NewJob<'_> {
    NewJob {
        kind,
        payload: r#"{"event":"evt_1"}"#,
        max_attempts,
        delay_secs,
    }
}

async fn claim(sys: &mut SystemTx, worker: &str) -> Vec<jobs::Job> {
    jobs::claim_due(sys, worker, 60, 10).await.unwrap()
}

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_then_dead_lettered_and_replayed() {
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    let id = jobs::enqueue(&mut sys, &job("webhook.process", 3, 0))
        .await
        .unwrap();
    let later = jobs::enqueue(&mut sys, &job("webhook.process", 3, 100))
        .await
        .unwrap();
    sys.commit().await.unwrap();

    for attempt in 1..=3 {
        let mut sys = env.store.system().await.unwrap();
        let got = claim(&mut sys, "w1").await;
        assert_eq!(got.len(), 1, "attempt {attempt}: only the due job");
        let j = &got[0];
        assert_eq!(
            (j.id, j.state, j.attempts),
            (id, JobState::Running, attempt)
        );
        assert_eq!(j.locked_until, Some(env.clock_now() + 60));
        assert_eq!(j.locked_by.as_deref(), Some("w1"));
        assert!(claim(&mut sys, "w2").await.is_empty(), "claimed is not due");
        let out = jobs::fail(&mut sys, j, "psp answered 503", 10)
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(
                out,
                FailOutcome::Retrying {
                    run_at: env.clock_now() + 10
                }
            );
            assert!(claim(&mut sys, "w1").await.is_empty(), "backing off");
        } else {
            assert_eq!(out, FailOutcome::Dead);
        }
        sys.commit().await.unwrap();
        env.clock.advance(10);
    }
    let mut sys = env.store.system().await.unwrap();
    let dead = jobs::list_dead(&mut sys, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_error.as_deref(), Some("psp answered 503"));
    assert_eq!(jobs::dead_count(&mut sys).await.unwrap(), 1);
    assert!(
        claim(&mut sys, "w1").await.is_empty(),
        "dead is never claimed"
    );

    jobs::replay_dead(&mut sys, id).await.unwrap();
    assert!(matches!(
        jobs::replay_dead(&mut sys, id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(jobs::dead_count(&mut sys).await.unwrap(), 0);
    let got = claim(&mut sys, "w1").await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].attempts), (id, 1), "attempts reset");
    jobs::complete(&mut sys, &got[0]).await.unwrap();
    let done = jobs::get_job(&mut sys, id).await.unwrap().unwrap();
    assert_eq!((done.state, done.locked_until), (JobState::Done, None));
    assert!(matches!(
        jobs::complete(&mut sys, &got[0]).await,
        Err(StoreError::Conflict { .. })
    ));
    sys.commit().await.unwrap();

    // The delayed job came due meanwhile (T0 + 100).
    env.clock.set(T0 + 100);
    let mut sys = env.store.system().await.unwrap();
    let got = claim(&mut sys, "w1").await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later]);
}

#[tokio::test]
async fn an_expired_lease_makes_a_job_claimable_again_and_fences_the_stale_worker() {
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    let id = jobs::enqueue(&mut sys, &job("ledger.post", 2, 0))
        .await
        .unwrap();
    let first = claim(&mut sys, "crashed").await.remove(0);
    sys.commit().await.unwrap();

    env.clock.advance(59);
    let mut sys = env.store.system().await.unwrap();
    assert!(claim(&mut sys, "w2").await.is_empty(), "lease still held");
    env.clock.advance(1);
    let second = claim(&mut sys, "w2").await.remove(0);
    assert_eq!((second.id, second.attempts), (id, 2));
    assert_eq!(second.locked_by.as_deref(), Some("w2"));
    // The first worker wakes up: it can neither finish nor fail the job it lost.
    assert!(matches!(
        jobs::complete(&mut sys, &first).await,
        Err(StoreError::Conflict { current_version: 2 })
    ));
    assert!(matches!(
        jobs::fail(&mut sys, &first, "late", 1).await,
        Err(StoreError::Conflict { current_version: 2 })
    ));
    sys.commit().await.unwrap();

    // The second worker crashes too, on the last attempt: the job goes dead, not running.
    env.clock.advance(60);
    let mut sys = env.store.system().await.unwrap();
    assert!(claim(&mut sys, "w3").await.is_empty());
    let dead = jobs::get_job(&mut sys, id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some(LEASE_EXPIRED_ERROR));
    assert_eq!(dead.attempts, 2);
    sys.commit().await.unwrap();
}

#[tokio::test]
async fn job_input_is_bounded_and_errors_are_cut() {
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    let big = "x".repeat(64 * 1024 + 1);
    for bad in [
        job("", 1, 0),
        job("Bad Kind", 1, 0),
        job("k", 0, 0),
        job("k", 101, 0),
        job("k", 1, -1),
        job("k", 1, 7 * 24 * 3600 + 1),
        NewJob {
            payload: &big,
            ..job("k", 1, 0)
        },
    ] {
        let r = jobs::enqueue(&mut sys, &bad).await;
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    for r in [
        jobs::claim_due(&mut sys, "", 60, 1).await,
        jobs::claim_due(&mut sys, "w", 0, 1).await,
        jobs::claim_due(&mut sys, "w", 60, 0).await,
        jobs::claim_due(&mut sys, "w", 60, 101).await,
    ] {
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    jobs::enqueue(&mut sys, &job("k", 1, 0)).await.unwrap();
    let j = claim(&mut sys, "w").await.remove(0);
    assert!(matches!(
        jobs::fail(&mut sys, &j, "e", -1).await,
        Err(StoreError::Invalid { .. })
    ));
    // A long multi-byte error is cut at a character boundary.
    let long = "é".repeat(LAST_ERROR_LEN_MAX);
    assert_eq!(
        jobs::fail(&mut sys, &j, &long, 1).await.unwrap(),
        FailOutcome::Dead
    );
    let stored = jobs::get_job(&mut sys, j.id)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap();
    assert_eq!(stored.len(), LAST_ERROR_LEN_MAX);
    assert!(stored.chars().all(|c| c == 'é'));
    let unknown: JobId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
    assert!(matches!(
        jobs::replay_dead(&mut sys, unknown).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(jobs::get_job(&mut sys, unknown).await.unwrap(), None);
}

#[test]
fn backoff_is_exponential_with_full_jitter_and_capped() {
    // The window doubles per attempt from `base`, never beyond `cap`; the pick covers 0..=window.
    for (attempt, window) in [
        (0, 2),
        (1, 2),
        (2, 4),
        (3, 8),
        (4, 16),
        (10, 300),
        (200, 300),
    ] {
        assert_eq!(
            backoff_secs(attempt, 2, 300, u64::MAX),
            u64::MAX % (window + 1)
        );
        assert_eq!(backoff_secs(attempt, 2, 300, 0), 0);
        assert_eq!(backoff_secs(attempt, 2, 300, window), window);
        assert_eq!(backoff_secs(attempt, 2, 300, window + 1), 0);
        for r in 0..1000u64 {
            assert!(backoff_secs(attempt, 2, 300, r.wrapping_mul(0x9E37_79B9_7F4A_7C15)) <= window);
        }
    }
    // Saturation: no overflow for huge bases, exponents or caps.
    assert!(backoff_secs(u32::MAX, u64::MAX, u64::MAX, 12_345) == 12_345);
    assert_eq!(backoff_secs(64, 1, 1_000, 999), 999);
    assert_eq!(backoff_secs(3, 0, 1_000, 999), 0, "a zero base never waits");
    // Full jitter: the picks spread over the whole window, not around its end.
    let picks: HashSet<u64> = (0..2000u64)
        .map(|i| backoff_secs(5, 1, 1_000, i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7))
        .collect();
    assert_eq!(picks.len(), 17, "every value in 0..=16 is drawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_claiming_concurrently_never_get_the_same_job_on_postgres() {
    let env = Env::postgres().await;
    let two = env
        .pg
        .as_ref()
        .unwrap()
        .open(std::sync::Arc::new(env.clock.clone()))
        .await
        .unwrap();
    let stores = [env.store.clone(), two];
    let mut sys = stores[0].system().await.unwrap();
    let mut all = HashSet::new();
    for _ in 0..200 {
        all.insert(jobs::enqueue(&mut sys, &job("k", 3, 0)).await.unwrap());
    }
    sys.commit().await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = stores[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("instance-{}-worker-{w}", w % 2);
            let mut mine = Vec::new();
            loop {
                let mut sys = store.system().await.unwrap();
                let got = jobs::claim_due(&mut sys, &worker, 60, 3).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for j in &got {
                    jobs::complete(&mut sys, j).await.unwrap();
                    mine.push(j.id);
                }
                sys.commit().await.unwrap();
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    let mut per_instance = [0usize; 2];
    for (w, t) in tasks.into_iter().enumerate() {
        let mine = t.await.unwrap();
        per_instance[w % 2] += mine.len();
        seen.extend(mine);
    }
    let unique: HashSet<JobId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 200, "each job claimed exactly once");
    assert_eq!(unique, all);
    assert!(per_instance.iter().all(|n| *n > 0), "{per_instance:?}");
}
