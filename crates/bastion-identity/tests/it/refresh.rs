//! Refresh rotation: I7 (race), I8 (reuse after rotation), idle and absolute expiry; logout
//! without false reuse alarms (RFC 7009 §2.2).

use bastion_identity::{AuthError, IdentityConfig};

use crate::common::{Harness, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i7_fifty_parallel_refreshes_one_wins_and_the_family_is_revoked() {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let svc = h.svc.clone();
        let token = pair.refresh_token.clone();
        tasks.push(tokio::spawn(async move { svc.refresh(&token).await }));
    }
    let mut wins = Vec::new();
    let mut losses = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => wins.push(p),
            Err(AuthError::InvalidToken) => losses += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one refresh may win");
    assert_eq!(losses, 49);
    // The family is revoked: the winner's tokens are dead too.
    let winner = &wins[0];
    assert_eq!(
        h.svc.refresh(&winner.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.verify_access_token(&winner.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    let actions = h.audit_actions().await;
    assert!(
        actions
            .iter()
            .filter(|a| *a == "auth.refresh_reuse")
            .count()
            >= 1
    );
}

#[tokio::test]
async fn i8_reuse_after_rotation_kills_the_whole_family() {
    let h = Harness::new().await;
    let (secret, _codes, r1) = h.enroll_alice().await;
    // A second, independent session must survive.
    let other = h.mfa_login(&secret).await;

    let r2 = h.svc.refresh(&r1.refresh_token).await.unwrap();
    let r3 = h.svc.refresh(&r2.refresh_token).await.unwrap();
    h.svc.verify_access_token(&r3.access_token).await.unwrap();
    assert_eq!(
        h.svc.refresh(&r1.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&r3.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.verify_access_token(&r3.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.verify_access_token(&r2.access_token).await,
        Err(AuthError::InvalidToken)
    );
    let bodies = h.audit_bodies().await;
    let reuse: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("auth.refresh_reuse"))
        .collect();
    assert_eq!(reuse.len(), 1);
    assert!(reuse[0].contains("\"outcome\":\"fail\""));

    h.svc
        .verify_access_token(&other.access_token)
        .await
        .unwrap();
    h.svc.refresh(&other.refresh_token).await.unwrap();
}

#[tokio::test]
async fn refresh_keeps_session_facts_and_rotates() {
    let h = Harness::new().await;
    let (_secret, _codes, r1) = h.enroll_alice().await;
    let p1 = h.svc.verify_access_token(&r1.access_token).await.unwrap();
    h.clock.advance(100);
    let r2 = h.svc.refresh(&r1.refresh_token).await.unwrap();
    assert_ne!(r2.refresh_token, r1.refresh_token);
    let p2 = h.svc.verify_access_token(&r2.access_token).await.unwrap();
    assert_eq!(
        p2.auth_time, p1.auth_time,
        "refresh does not re-authenticate"
    );
    assert_eq!(p2.amr, p1.amr);
    assert_ne!(p2.token_id, p1.token_id);
    // Same session id.
    assert_eq!(
        p2.token_id.split_once('.').unwrap().0,
        p1.token_id.split_once('.').unwrap().0
    );
}

#[tokio::test]
async fn idle_expiry() {
    let h = Harness::new().await;
    let (_secret, _codes, r1) = h.enroll_alice().await;
    h.clock.advance(3_600);
    assert_eq!(
        h.svc.refresh(&r1.refresh_token).await,
        Err(AuthError::Expired)
    );
}

#[tokio::test]
async fn absolute_family_lifetime_is_never_extended() {
    let mut cfg: IdentityConfig = config();
    cfg.refresh_absolute_ttl_secs = 4 * 3_600;
    cfg.refresh_idle_ttl_secs = 3_600;
    let h = Harness::with_config(cfg).await;
    let (_secret, _codes, first) = h.enroll_alice().await;
    let started = h.now() - 30; // enroll_alice moved the clock one step after issuing
    let mut token = first.refresh_token;
    let mut refreshed_until = started;
    loop {
        h.clock.advance(50 * 60);
        match h.svc.refresh(&token).await {
            Ok(p) => {
                token = p.refresh_token;
                refreshed_until = h.now();
            }
            Err(e) => {
                assert_eq!(e, AuthError::Expired);
                break;
            }
        }
        assert!(
            h.now() < started + 10 * 3_600,
            "family outlived its absolute lifetime"
        );
    }
    assert!(refreshed_until < started + 4 * 3_600);
    assert!(h.now() >= started + 4 * 3_600);
}

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

#[tokio::test]
async fn logging_out_twice_is_a_quiet_no_op_without_a_reuse_record() {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    h.svc.logout(&pair.refresh_token).await.unwrap();
    let after_first = h.audit_actions().await;
    assert_eq!(count(&after_first, "auth.logout"), 1);
    // RFC 7009 §2.2: the same token again is not an error, and changes nothing.
    h.svc.logout(&pair.refresh_token).await.unwrap();
    h.svc.logout(&pair.refresh_token).await.unwrap();
    let after = h.audit_actions().await;
    assert_eq!(after, after_first, "a second logout wrote an audit record");
    assert_eq!(count(&after, "auth.refresh_reuse"), 0);
    // The session is over all the same.
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&pair.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(count(&h.audit_actions().await, "auth.refresh_reuse"), 0);
}

#[tokio::test]
async fn logout_with_an_already_rotated_token_of_a_live_session_is_a_replay() {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    let rotated = h.svc.refresh(&pair.refresh_token).await.unwrap();
    h.svc
        .verify_access_token(&rotated.access_token)
        .await
        .unwrap();
    // The spent token is presented while the session lives: the family dies and the replay
    // is recorded, as a refresh with it would.
    h.svc.logout(&pair.refresh_token).await.unwrap();
    assert_eq!(
        h.svc.verify_access_token(&rotated.access_token).await,
        Err(AuthError::InvalidToken)
    );
    let actions = h.audit_actions().await;
    assert_eq!(count(&actions, "auth.refresh_reuse"), 1);
    // Logging out again, with either token, is quiet.
    h.svc.logout(&pair.refresh_token).await.unwrap();
    h.svc.logout(&rotated.refresh_token).await.unwrap();
    assert_eq!(h.audit_actions().await, actions);
}

#[tokio::test]
async fn logout_after_the_idle_expiry_still_ends_the_session() {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    h.clock.advance(h.svc.config().refresh_idle_ttl_secs + 1);
    assert_eq!(
        h.svc.refresh(&pair.refresh_token).await,
        Err(AuthError::Expired)
    );
    h.svc.logout(&pair.refresh_token).await.unwrap();
    let actions = h.audit_actions().await;
    assert_eq!(count(&actions, "auth.logout"), 1);
    assert_eq!(count(&actions, "auth.refresh_reuse"), 0);
    // Never issued: still refused.
    let forged = format!(
        "{}.{}",
        pair.refresh_token.split_once('.').unwrap().0,
        "A".repeat(43)
    );
    assert_eq!(h.svc.logout(&forged).await, Err(AuthError::InvalidToken));
}
