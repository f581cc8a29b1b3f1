//! TOTP replay guard, recovery codes and challenges against the clock.

use bastion_store::{StoreError, mfa};

use crate::{Env, T0};

#[tokio::test]
async fn totp_steps_cannot_be_replayed() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let user = env.alice.id;
    assert!(
        !mfa::record_totp_step(&mut tx, user, 1).await.unwrap(),
        "no secret, no step"
    );
    mfa::set_totp_secret(&mut tx, user, b"12345678901234567890", false)
        .await
        .unwrap();
    assert!(
        !mfa::totp_for(&mut tx, user)
            .await
            .unwrap()
            .unwrap()
            .confirmed
    );
    assert!(mfa::record_totp_step(&mut tx, user, 100).await.unwrap());
    assert!(
        !mfa::record_totp_step(&mut tx, user, 100).await.unwrap(),
        "replay"
    );
    assert!(
        !mfa::record_totp_step(&mut tx, user, 99).await.unwrap(),
        "older step"
    );
    // Re-saving the secret keeps the guard.
    mfa::set_totp_secret(&mut tx, user, b"12345678901234567890", true)
        .await
        .unwrap();
    assert!(!mfa::record_totp_step(&mut tx, user, 100).await.unwrap());
    assert!(mfa::record_totp_step(&mut tx, user, 101).await.unwrap());
    let state = mfa::totp_for(&mut tx, user).await.unwrap().unwrap();
    assert_eq!((state.confirmed, state.last_used_step), (true, 101));
    assert!(
        !format!("{state:?}").contains("1234"),
        "Debug leaks the secret"
    );
    mfa::reset_mfa(&mut tx, user).await.unwrap();
    assert_eq!(mfa::totp_for(&mut tx, user).await.unwrap(), None);
    assert!(matches!(
        mfa::confirm_totp(&mut tx, user).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn recovery_codes_are_single_use() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let user = env.alice.id;
    mfa::replace_recovery_codes(&mut tx, user, &[b"h1".to_vec(), b"h2".to_vec()])
        .await
        .unwrap();
    assert!(mfa::use_recovery_code(&mut tx, user, b"h1").await.unwrap());
    assert!(!mfa::use_recovery_code(&mut tx, user, b"h1").await.unwrap());
    assert!(
        !mfa::use_recovery_code(&mut tx, user, b"nope")
            .await
            .unwrap()
    );
    assert_eq!(mfa::recovery_codes_left(&mut tx, user).await.unwrap(), 1);
    mfa::replace_recovery_codes(&mut tx, user, &[b"h3"])
        .await
        .unwrap();
    assert!(
        !mfa::use_recovery_code(&mut tx, user, b"h2").await.unwrap(),
        "old codes are gone"
    );
    assert!(matches!(
        mfa::replace_recovery_codes(&mut tx, user, &[b"dup", b"dup"]).await,
        Err(StoreError::Duplicate)
    ));
    let too_many: Vec<Vec<u8>> = (0..=mfa::RECOVERY_CODES_MAX)
        .map(|i| vec![u8::try_from(i).unwrap() + 1])
        .collect();
    assert!(matches!(
        mfa::replace_recovery_codes(&mut tx, user, &too_many).await,
        Err(StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn challenges_are_single_use_and_expire_by_the_clock() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let user = env.alice.id;
    mfa::create_challenge(&mut tx, user, "mfa", b"tok-1", T0 + 60)
        .await
        .unwrap();
    assert_eq!(
        mfa::take_challenge(&mut tx, b"tok-1", "enroll")
            .await
            .unwrap(),
        None,
        "wrong kind"
    );
    let c = mfa::take_challenge(&mut tx, b"tok-1", "mfa")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.user_id, c.kind.as_str(), c.created_at, c.expires_at),
        (user, "mfa", T0, T0 + 60)
    );
    assert_eq!(
        mfa::take_challenge(&mut tx, b"tok-1", "mfa").await.unwrap(),
        None,
        "single use"
    );

    mfa::create_challenge(&mut tx, user, "mfa", b"tok-2", T0 + 60)
        .await
        .unwrap();
    env.clock.advance(59);
    mfa::create_challenge(&mut tx, user, "mfa", b"tok-3", T0 + 60)
        .await
        .unwrap();
    env.clock.advance(1);
    assert_eq!(
        mfa::take_challenge(&mut tx, b"tok-2", "mfa").await.unwrap(),
        None,
        "expired at T0+60"
    );
    assert!(matches!(
        mfa::create_challenge(&mut tx, user, "mfa", b"tok-4", T0 + 60).await,
        Err(StoreError::Invalid { .. })
    ));
    env.clock.set(T0);
    assert!(
        mfa::take_challenge(&mut tx, b"tok-3", "mfa")
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        mfa::create_challenge(&mut tx, user, "mfa", b"tok-3", T0 + 60).await,
        Err(StoreError::Duplicate)
    ));
}

#[tokio::test]
async fn totp_secret_column_holds_sealed_sized_bytes() {
    // The store keeps the caller's bytes; a sealed 64-byte secret (64 + 29) fits, 129 not.
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let user = env.alice.id;
    mfa::set_totp_secret(&mut tx, user, &[7_u8; 93], true)
        .await
        .unwrap();
    assert_eq!(
        mfa::totp_for(&mut tx, user).await.unwrap().unwrap().secret,
        vec![7_u8; 93]
    );
    mfa::set_totp_secret(&mut tx, user, &[7_u8; mfa::TOTP_SECRET_LEN_MAX], true)
        .await
        .unwrap();
    assert!(matches!(
        mfa::set_totp_secret(&mut tx, user, &[7_u8; mfa::TOTP_SECRET_LEN_MAX + 1], true).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        mfa::set_totp_secret(&mut tx, user, &[], true).await,
        Err(StoreError::Invalid { .. })
    ));
}
