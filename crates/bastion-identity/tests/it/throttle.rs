//! I12: credential stuffing, throttling windows and no username enumeration.

use bastion_identity::{AuthError, LoginOutcome, ThrottleConfig};

use crate::common::{Harness, PASSWORD, addr, slug};

#[tokio::test]
async fn i12_a_thousand_failed_logins_from_many_addresses_throttle_the_account() {
    let h = Harness::new().await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let window = ThrottleConfig::default().window_secs;
    let hashes_before = h.svc.hasher().verifications();
    for i in 0..1_000_u32 {
        let err = h
            .svc
            .login("acme", "alice", &format!("guess number {i}"), addr(100 + i))
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidCredentials);
    }
    // Only the first five attempts ran argon2; the rest were refused by the throttle.
    assert_eq!(h.svc.hasher().verifications() - hashes_before, 5);
    // The right password is refused while the window lasts, with the same error.
    let err = h
        .svc
        .login("acme", "alice", PASSWORD, addr(5_000))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::InvalidCredentials);

    // After the window the real user logs in.
    h.clock.advance(window);
    let LoginOutcome::MfaRequired { mfa_token, .. } = h
        .svc
        .login("acme", "alice", PASSWORD, addr(5_000))
        .await
        .unwrap()
    else {
        panic!("expected mfa");
    };
    h.svc
        .verify_totp(&mfa_token, &h.code(&secret))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_error_for_every_kind_of_failure() {
    let h = Harness::new().await;
    h.svc
        .add_user(
            &slug("acme"),
            bastion_identity::NewAccount {
                username: slug("dave"),
                password: PASSWORD.to_owned(),
                roles: vec![],
                is_demo: false,
            },
        )
        .await
        .unwrap();
    h.svc
        .disable_user(&slug("acme"), &slug("dave"))
        .await
        .unwrap();
    let before = h.svc.hasher().verifications();
    let errors = [
        h.svc
            .login("acme", "alice", "wrong password!!", addr(1))
            .await
            .unwrap_err(),
        h.svc
            .login("acme", "nobody", "wrong password!!", addr(2))
            .await
            .unwrap_err(),
        h.svc
            .login("acme", "dave", PASSWORD, addr(3))
            .await
            .unwrap_err(),
        h.svc
            .login("no-such-tenant", "alice", PASSWORD, addr(4))
            .await
            .unwrap_err(),
        h.svc
            .login("acme", "Not A Slug", PASSWORD, addr(5))
            .await
            .unwrap_err(),
        h.svc
            .login("acme", "alice", &"x".repeat(5_000), addr(6))
            .await
            .unwrap_err(),
    ];
    // Unknown users, unknown tenants and over-long passwords cost one argon2 run like a
    // real check: timing does not separate them.
    assert_eq!(h.svc.hasher().verifications() - before, errors.len() as u64);
    for e in &errors {
        assert_eq!(e, &AuthError::InvalidCredentials);
        assert_eq!(e.to_string(), "invalid credentials");
    }
    // A throttled account answers exactly the same.
    for _ in 0..5 {
        let _ = h
            .svc
            .login("acme", "nobody", "wrong password!!", addr(7))
            .await;
    }
    assert_eq!(
        h.svc
            .login("acme", "nobody", "wrong password!!", addr(8))
            .await
            .unwrap_err(),
        AuthError::InvalidCredentials
    );
    // Audit says why, without the typed names or passwords.
    let bodies = h.audit_bodies().await;
    for reason in [
        "unknown_user",
        "wrong_password",
        "disabled",
        "account_throttled",
    ] {
        assert!(bodies.iter().any(|b| b.contains(reason)), "no {reason}");
    }
    assert!(
        !bodies
            .iter()
            .any(|b| b.contains("nobody") || b.contains("wrong password"))
    );
}

#[tokio::test]
async fn one_address_is_throttled_across_usernames() {
    let h = Harness::new().await;
    for i in 0..50 {
        let e = h
            .svc
            .login("acme", &format!("user-{i}"), "wrong password!!", addr(42))
            .await
            .unwrap_err();
        assert_eq!(e, AuthError::InvalidCredentials);
    }
    let e = h
        .svc
        .login("acme", "alice", PASSWORD, addr(42))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Throttled { retry_after_secs } if retry_after_secs == 900));
    // More refused attempts from the throttled address are not audited again in the window:
    // a flood cannot grow the append-only audit log.
    for _ in 0..20 {
        let _ = h.svc.login("acme", "alice", PASSWORD, addr(42)).await;
    }
    let throttled = h
        .audit_bodies()
        .await
        .iter()
        .filter(|b| b.contains("address_throttled"))
        .count();
    assert_eq!(throttled, 1, "one record per throttle window");
    // Other addresses are unaffected.
    assert!(
        h.svc
            .login("acme", "alice", PASSWORD, addr(43))
            .await
            .is_ok()
    );
    h.clock.advance(900);
    assert!(
        h.svc
            .login("acme", "alice", PASSWORD, addr(42))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn success_resets_the_account_counter() {
    let h = Harness::new().await;
    for _ in 0..4 {
        let _ = h
            .svc
            .login("acme", "alice", "wrong password!!", addr(1))
            .await;
    }
    assert!(
        h.svc
            .login("acme", "alice", PASSWORD, addr(1))
            .await
            .is_ok()
    );
    for _ in 0..4 {
        let _ = h
            .svc
            .login("acme", "alice", "wrong password!!", addr(1))
            .await;
    }
    assert!(
        h.svc
            .login("acme", "alice", PASSWORD, addr(1))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn ipv6_addresses_are_throttled_per_64() {
    let h = Harness::new().await;
    for i in 0..50_u16 {
        let a = std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, i));
        let e = h
            .svc
            .login("acme", &format!("user-{i}"), "wrong password!!", a)
            .await
            .unwrap_err();
        assert_eq!(e, AuthError::InvalidCredentials);
    }
    let same_64 = std::net::IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001, 0xdb8, 1, 2, 0xffff, 1, 2, 3,
    ));
    assert!(matches!(
        h.svc.login("acme", "alice", PASSWORD, same_64).await,
        Err(AuthError::Throttled { .. })
    ));
    let other_64 = std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
    assert!(
        h.svc
            .login("acme", "alice", PASSWORD, other_64)
            .await
            .is_ok()
    );
}

/// Knowing the password must not buy unlimited TOTP guesses: each challenge allows five, but
/// new challenges cost only a password login. Wrong codes are counted per user across
/// challenges; past the limit the user cannot log in until the window ends.
#[tokio::test]
async fn wrong_second_factor_codes_are_limited_per_user_across_challenges() {
    let h = Harness::new().await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let cfg = ThrottleConfig::default();
    let mut wrong = 0;
    while wrong < cfg.second_factor_failures_max {
        let token = h.mfa_token().await;
        for _ in 0..2 {
            let err = h.svc.verify_totp(&token, "000000").await.unwrap_err();
            assert_eq!(err, AuthError::InvalidCode);
            wrong += 1;
        }
    }
    // Even the right password no longer starts a login (same generic error).
    let err = h.login("alice", PASSWORD).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidCredentials);
    assert!(
        h.audit_bodies()
            .await
            .iter()
            .any(|b| b.contains("second_factor_throttled")),
        "the refusal is audited"
    );
    // After the window the real user gets in with a correct code.
    h.clock.advance(cfg.window_secs);
    let pair = h.mfa_login(&secret).await;
    assert!(!pair.access_token.is_empty());
}
