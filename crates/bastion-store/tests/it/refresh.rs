//! Refresh rotation: single winner under concurrency, reuse revokes the family, absolute
//! expiry holds.

use std::sync::Arc;

use bastion_store::refresh::{self, RotateOutcome, TokenFamily};
use bastion_store::{TenantScope, users};
use bastion_types::AuthMethod;

use crate::{Env, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_rotations_have_one_winner_and_revoke_the_family() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let fam = refresh::create_family(
        &mut tx,
        env.alice.id,
        T0,
        &[AuthMethod::Pwd, AuthMethod::Otp],
        T0 + 86_400,
    )
    .await
    .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-0", T0 + 3600)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let store = Arc::new(env.store.clone());
    let tenant = env.a.id;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
            let new = format!("rt-1-{i}");
            let out = refresh::rotate_refresh_token(&mut tx, b"rt-0", new.as_bytes(), T0 + 3600)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (out, new)
        }));
    }
    let mut rotated = Vec::new();
    let mut reused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (
                RotateOutcome::Rotated {
                    family, user, amr, ..
                },
                new,
            ) => {
                assert_eq!((family, user), (fam, env.alice.id));
                assert_eq!(amr, [AuthMethod::Pwd, AuthMethod::Otp]);
                rotated.push(new);
            }
            (RotateOutcome::Reused { family, user }, _) => {
                assert_eq!((family, user), (fam, env.alice.id));
                reused += 1;
            }
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1);
    assert_eq!(reused, 49);
    let mut tx = env.tx_a().await;
    assert!(!refresh::family_active(&mut tx, fam).await.unwrap());
    // Even the winner's new token is dead now.
    let out = refresh::rotate_refresh_token(&mut tx, rotated[0].as_bytes(), b"rt-2", T0 + 3600)
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Revoked);
}

#[tokio::test]
async fn reuse_after_rotation_revokes_the_family() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let fam = refresh::create_family(&mut tx, env.alice.id, T0, &[AuthMethod::Pwd], T0 + 86_400)
        .await
        .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-0", T0 + 3600)
        .await
        .unwrap();
    let out = refresh::rotate_refresh_token(&mut tx, b"rt-0", b"rt-1", T0 + 3600)
        .await
        .unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }));
    tx.commit().await.unwrap();

    // The thief presents the old token.
    let mut tx = env.tx_a().await;
    let out = refresh::rotate_refresh_token(&mut tx, b"rt-0", b"rt-x", T0 + 3600)
        .await
        .unwrap();
    assert_eq!(
        out,
        RotateOutcome::Reused {
            family: fam,
            user: env.alice.id
        }
    );
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    assert!(!refresh::family_active(&mut tx, fam).await.unwrap());
    assert_eq!(
        refresh::rotate_refresh_token(&mut tx, b"rt-1", b"rt-2", T0 + 3600)
            .await
            .unwrap(),
        RotateOutcome::Revoked
    );
    assert_eq!(
        refresh::rotate_refresh_token(&mut tx, b"never-issued", b"rt-3", T0 + 3600)
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
    assert!(matches!(
        refresh::insert_refresh_token(&mut tx, fam, b"rt-4", T0 + 3600).await,
        Err(bastion_store::StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn absolute_expiry_is_never_extended() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let fam = refresh::create_family(&mut tx, env.alice.id, T0, &[AuthMethod::Pwd], T0 + 1000)
        .await
        .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-0", T0 + 600)
        .await
        .unwrap();
    env.clock.advance(500);
    let out = refresh::rotate_refresh_token(&mut tx, b"rt-0", b"rt-1", T0 + 500 + 600)
        .await
        .unwrap();
    let RotateOutcome::Rotated {
        expires_at,
        absolute_expires_at,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((expires_at, absolute_expires_at), (T0 + 1000, T0 + 1000));
    env.clock.advance(500);
    assert_eq!(
        refresh::rotate_refresh_token(&mut tx, b"rt-1", b"rt-2", T0 + 2000)
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
    assert!(!refresh::family_active(&mut tx, fam).await.unwrap());

    // A token that expires before its family is refused after its own expiry.
    let fam2 = refresh::create_family(&mut tx, env.alice.id, T0, &[AuthMethod::Pwd], T0 + 10_000)
        .await
        .unwrap();
    refresh::insert_refresh_token(&mut tx, fam2, b"rt-short", env.clock_now() + 10)
        .await
        .unwrap();
    env.clock.advance(10);
    assert_eq!(
        refresh::rotate_refresh_token(&mut tx, b"rt-short", b"rt-s2", T0 + 5000)
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
    // Logout everywhere.
    assert_eq!(
        refresh::revoke_user_families(&mut tx, env.alice.id, "password change")
            .await
            .unwrap(),
        2
    );
    assert!(!refresh::family_active(&mut tx, fam2).await.unwrap());
    let _ = users::user_by_id(&mut tx, env.alice.id)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn family_of_token_reads_without_spending_or_revoking() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let fam = refresh::create_family(&mut tx, env.alice.id, T0, &[AuthMethod::Pwd], T0 + 86_400)
        .await
        .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-0", T0 + 3600)
        .await
        .unwrap();
    let live = TokenFamily {
        family: fam,
        user: env.alice.id,
        used: false,
        family_revoked: false,
    };
    // Read twice: nothing changes, no reuse is triggered.
    for _ in 0..2 {
        assert_eq!(
            refresh::family_of_token(&mut tx, b"rt-0").await.unwrap(),
            Some(live)
        );
    }
    assert!(refresh::family_active(&mut tx, fam).await.unwrap());
    assert!(matches!(
        refresh::rotate_refresh_token(&mut tx, b"rt-0", b"rt-1", T0 + 3600)
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    // The spent token is reported as used; reading it does not revoke the family.
    assert_eq!(
        refresh::family_of_token(&mut tx, b"rt-0").await.unwrap(),
        Some(TokenFamily { used: true, ..live })
    );
    assert!(refresh::family_active(&mut tx, fam).await.unwrap());
    assert!(
        refresh::revoke_family(&mut tx, fam, "logout")
            .await
            .unwrap()
    );
    assert_eq!(
        refresh::family_of_token(&mut tx, b"rt-1").await.unwrap(),
        Some(TokenFamily {
            family_revoked: true,
            ..live
        })
    );
    assert_eq!(
        refresh::family_of_token(&mut tx, b"never-issued")
            .await
            .unwrap(),
        None
    );
    assert!(refresh::family_of_token(&mut tx, b"").await.is_err());
    tx.commit().await.unwrap();

    // Another tenant cannot see the token.
    let mut tx = env.tx_b().await;
    assert_eq!(
        refresh::family_of_token(&mut tx, b"rt-0").await.unwrap(),
        None
    );
}
