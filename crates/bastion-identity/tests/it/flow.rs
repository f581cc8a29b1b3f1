//! Login → MFA → tokens; I9, I10; recovery codes; challenge limits; logout; disable; U2;
//! operator functions.

use bastion_identity::{AuthError, LoginOutcome, NewAccount};
use serde_json::json;

use crate::common::{Harness, PASSWORD, addr, payload_of, slug};

#[tokio::test]
async fn enrollment_then_mfa_login_issues_tokens() {
    let h = Harness::new().await;
    let (secret, codes, first) = h.enroll_alice().await;
    assert_eq!(codes.len(), 10);
    h.svc
        .verify_access_token(&first.access_token)
        .await
        .unwrap();
    assert_eq!(first.token_type, "Bearer");
    assert_eq!(first.expires_in, 300);

    let pair = h.mfa_login(&secret).await;
    let principal = h.svc.verify_access_token(&pair.access_token).await.unwrap();
    assert_eq!(principal.username.as_str(), "alice");
    let actions = h.audit_actions().await;
    for a in [
        "auth.login",
        "auth.mfa.enroll_start",
        "auth.mfa.enroll",
        "auth.mfa",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "no {a} audit record in {actions:?}"
        );
    }
}

#[tokio::test]
async fn i9_same_totp_code_twice_is_rejected() {
    let h = Harness::new().await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let code = h.code(&secret);
    let t1 = h.mfa_token().await;
    h.svc.verify_totp(&t1, &code).await.unwrap();
    // Same code, same step, fresh challenge.
    let t2 = h.mfa_token().await;
    assert_eq!(
        h.svc.verify_totp(&t2, &code).await,
        Err(AuthError::InvalidCode)
    );
    // 29 s later the same code is still inside the ±1 step window: still refused.
    h.clock.advance(29);
    assert_eq!(
        h.svc.verify_totp(&t2, &code).await,
        Err(AuthError::InvalidCode)
    );
    // The previous step's code (older than the last used step) is refused too.
    h.clock.advance(1);
    let t3 = h.mfa_token().await;
    assert_eq!(
        h.svc.verify_totp(&t3, &code).await,
        Err(AuthError::InvalidCode)
    );
    // The next step's code works.
    h.svc.verify_totp(&t3, &h.code(&secret)).await.unwrap();
}

#[tokio::test]
async fn i9_enrollment_code_reused_at_first_login_is_rejected() {
    let h = Harness::new().await;
    let LoginOutcome::EnrollmentRequired { enrollment_token } =
        h.login("alice", PASSWORD).await.unwrap()
    else {
        panic!("expected enrollment");
    };
    let e = h.svc.totp_enroll(&enrollment_token).await.unwrap();
    assert!(
        e.otpauth_uri
            .starts_with("otpauth://totp/Bastion:alice%40acme?secret=")
    );
    assert!(e.otpauth_uri.contains(&e.secret_base32));
    let secret = data_encoding::BASE32_NOPAD
        .decode(e.secret_base32.as_bytes())
        .unwrap();
    let code = h.code(&secret);
    h.svc.totp_confirm(&enrollment_token, &code).await.unwrap();
    // First login, same 30 s step, same code.
    let mfa = h.mfa_token().await;
    assert_eq!(
        h.svc.verify_totp(&mfa, &code).await,
        Err(AuthError::InvalidCode)
    );
    // The enrollment token is spent.
    assert!(h.svc.totp_confirm(&enrollment_token, &code).await.is_err());
    assert!(h.svc.totp_enroll(&enrollment_token).await.is_err());
}

#[tokio::test]
async fn i10_no_token_before_the_second_factor() {
    let h = Harness::new().await;
    // Before enrollment: the enrollment token is nothing but an enrollment token.
    let LoginOutcome::EnrollmentRequired { enrollment_token } =
        h.login("alice", PASSWORD).await.unwrap()
    else {
        panic!("expected enrollment");
    };
    assert_eq!(
        h.svc.verify_access_token(&enrollment_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&enrollment_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.verify_totp(&enrollment_token, "000000").await,
        Err(AuthError::InvalidToken)
    );
    let e = h.svc.totp_enroll(&enrollment_token).await.unwrap();
    let secret = data_encoding::BASE32_NOPAD
        .decode(e.secret_base32.as_bytes())
        .unwrap();
    // A wrong code at confirm issues nothing.
    assert_eq!(
        h.svc
            .totp_confirm(&enrollment_token, "000000")
            .await
            .unwrap_err(),
        AuthError::InvalidCode
    );
    h.svc
        .totp_confirm(&enrollment_token, &h.code(&secret))
        .await
        .unwrap();
    h.clock.advance(30);

    // After enrollment: the password step yields an MFA token only.
    let mfa = h.mfa_token().await;
    assert_eq!(mfa.matches('.').count(), 1, "an mfa token is not a JWS");
    assert_eq!(
        h.svc.verify_access_token(&mfa).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(h.svc.refresh(&mfa).await, Err(AuthError::InvalidToken));
    assert_eq!(h.svc.logout(&mfa).await, Err(AuthError::InvalidToken));
    // An MFA token cannot be used as an enrollment token (re-enrolling past MFA).
    assert_eq!(
        h.svc.totp_enroll(&mfa).await.unwrap_err(),
        AuthError::InvalidToken
    );
    // Dressing it up as a bearer JWT does not help either.
    let dressed = format!(
        "eyJhbGciOiJFZERTQSJ9.{}.AAAA",
        bastion_crypto::b64url_encode(mfa.as_bytes())
    );
    assert!(h.svc.verify_access_token(&dressed).await.is_err());
}

#[tokio::test]
async fn mfa_token_is_single_use_and_expires() {
    let h = Harness::new().await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let mfa = h.mfa_token().await;
    h.svc.verify_totp(&mfa, &h.code(&secret)).await.unwrap();
    h.clock.advance(30);
    assert_eq!(
        h.svc.verify_totp(&mfa, &h.code(&secret)).await,
        Err(AuthError::InvalidToken)
    );

    let late = h.mfa_token().await;
    h.clock.advance(301);
    assert_eq!(
        h.svc.verify_totp(&late, &h.code(&secret)).await,
        Err(AuthError::InvalidToken)
    );
}

#[tokio::test]
async fn wrong_codes_burn_the_challenge_after_five_attempts() {
    let h = Harness::new().await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    // Four wrong codes, then the right one: accepted.
    let mfa = h.mfa_token().await;
    for _ in 0..4 {
        assert_eq!(
            h.svc.verify_totp(&mfa, "000000").await,
            Err(AuthError::InvalidCode)
        );
    }
    h.svc.verify_totp(&mfa, &h.code(&secret)).await.unwrap();
    h.clock.advance(30);

    // Five wrong codes: the challenge is burnt, the right code no longer helps.
    let mfa = h.mfa_token().await;
    for _ in 0..5 {
        assert_eq!(
            h.svc
                .verify_recovery_code(&mfa, "AAAA-BBBB-CCCC-DDDD")
                .await,
            Err(AuthError::InvalidCode)
        );
    }
    assert_eq!(
        h.svc.verify_totp(&mfa, &h.code(&secret)).await,
        Err(AuthError::InvalidToken)
    );
    let fails = h
        .audit_bodies()
        .await
        .iter()
        .filter(|b| b.contains("\"action\":\"auth.mfa\"") && b.contains("\"outcome\":\"fail\""))
        .count();
    assert_eq!(fails, 9);
}

#[tokio::test]
async fn recovery_codes_are_single_use() {
    let h = Harness::new().await;
    let (_secret, codes, _pair) = h.enroll_alice().await;
    let mfa = h.mfa_token().await;
    let pair = h.svc.verify_recovery_code(&mfa, &codes[3]).await.unwrap();
    assert_eq!(
        payload_of(&pair.access_token)["amr"],
        json!(["pwd", "rec", "mfa"])
    );
    h.svc.verify_access_token(&pair.access_token).await.unwrap();
    let mfa = h.mfa_token().await;
    assert_eq!(
        h.svc.verify_recovery_code(&mfa, &codes[3]).await,
        Err(AuthError::InvalidCode)
    );
    // Codes are accepted in lowercase and without dashes.
    let relaxed = codes[4].to_lowercase().replace('-', "");
    h.svc.verify_recovery_code(&mfa, &relaxed).await.unwrap();
}

#[tokio::test]
async fn logout_kills_the_access_token_at_once() {
    let h = Harness::new().await;
    let (secret, _codes, pair) = h.enroll_alice().await;
    h.svc.verify_access_token(&pair.access_token).await.unwrap();
    h.svc.logout(&pair.refresh_token).await.unwrap();
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&pair.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    // Idempotent.
    h.svc.logout(&pair.refresh_token).await.unwrap();
    assert_eq!(
        h.svc.logout("not-a-token").await,
        Err(AuthError::InvalidToken)
    );

    // Logout by principal ends only that session.
    let a = h.mfa_login(&secret).await;
    let b = h.mfa_login(&secret).await;
    let principal = h.svc.verify_access_token(&a.access_token).await.unwrap();
    h.svc.logout_principal(&principal).await.unwrap();
    assert_eq!(
        h.svc.verify_access_token(&a.access_token).await,
        Err(AuthError::InvalidToken)
    );
    h.svc.verify_access_token(&b.access_token).await.unwrap();
    // Logout everywhere ends the rest.
    let principal = h.svc.verify_access_token(&b.access_token).await.unwrap();
    h.svc.logout_everywhere(&principal).await.unwrap();
    assert_eq!(
        h.svc.verify_access_token(&b.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&b.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert!(
        h.audit_actions()
            .await
            .iter()
            .filter(|a| *a == "auth.logout")
            .count()
            >= 3
    );
}

#[tokio::test]
async fn disabled_users_access_token_dies_and_login_fails_generically() {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    h.svc.verify_access_token(&pair.access_token).await.unwrap();
    h.svc
        .disable_user(&slug("acme"), &slug("alice"))
        .await
        .unwrap();
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.svc.refresh(&pair.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        h.login("alice", PASSWORD).await,
        Err(AuthError::InvalidCredentials)
    );
    let users = h.svc.list_users(&slug("acme")).await.unwrap();
    assert!(users[0].disabled);
    // Re-enabling does not revive old sessions (the epoch moved on).
    h.svc
        .enable_user(&slug("acme"), &slug("alice"))
        .await
        .unwrap();
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert!(matches!(
        h.login("alice", PASSWORD).await,
        Ok(LoginOutcome::MfaRequired { .. })
    ));
}

#[tokio::test]
async fn operator_functions() {
    let h = Harness::new().await;
    let acme = slug("acme");
    assert!(matches!(
        h.svc.create_tenant(&acme, "eu").await,
        Err(AuthError::Conflict(_))
    ));
    let bob = NewAccount {
        username: slug("bob"),
        password: "short".to_owned(),
        roles: vec![],
        is_demo: true,
    };
    assert!(matches!(
        h.svc.add_user(&acme, bob.clone()).await,
        Err(AuthError::BadRequest(_))
    ));
    let bob = NewAccount {
        password: "bob's long password".to_owned(),
        ..bob
    };
    assert!(!format!("{bob:?}").contains("long password"));
    assert!(matches!(
        h.svc.add_user(&slug("nope"), bob.clone()).await,
        Err(AuthError::NotFound(_))
    ));
    h.svc.add_user(&acme, bob.clone()).await.unwrap();
    assert!(matches!(
        h.svc.add_user(&acme, bob).await,
        Err(AuthError::Conflict(_))
    ));
    assert_eq!(h.svc.list_tenants().await.unwrap().len(), 1);

    // Demo provisioning: a confirmed factor usable at once.
    let totp = h.svc.provision_totp(&acme, &slug("bob")).await.unwrap();
    let secret = data_encoding::BASE32_NOPAD
        .decode(totp.secret_base32.as_bytes())
        .unwrap();
    let LoginOutcome::MfaRequired { mfa_token, .. } = h
        .svc
        .login("acme", "bob", "bob's long password", addr(2))
        .await
        .unwrap()
    else {
        panic!("expected mfa");
    };
    let pair = h
        .svc
        .verify_totp(&mfa_token, &h.code(&secret))
        .await
        .unwrap();

    // Roles change takes effect on the next verification.
    h.svc
        .set_roles(&acme, &slug("bob"), vec![slug("finance")])
        .await
        .unwrap();
    let p = h.svc.verify_access_token(&pair.access_token).await.unwrap();
    assert!(p.has_role("finance"));

    let users = h.svc.list_users(&acme).await.unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(!users[0].mfa_enrolled);
    assert!(users[1].mfa_enrolled && users[1].is_demo);

    // MFA reset: sessions end and the next login enrolls again.
    h.svc.reset_mfa(&acme, &slug("bob")).await.unwrap();
    assert_eq!(
        h.svc.verify_access_token(&pair.access_token).await,
        Err(AuthError::InvalidToken)
    );
    assert!(matches!(
        h.svc
            .login("acme", "bob", "bob's long password", addr(2))
            .await,
        Ok(LoginOutcome::EnrollmentRequired { .. })
    ));
    assert!(matches!(
        h.svc.disable_user(&acme, &slug("carol")).await,
        Err(AuthError::NotFound(_))
    ));

    let actions = h.audit_actions().await;
    for a in [
        "admin.tenant.create",
        "admin.user.create",
        "admin.user.provision_totp",
        "admin.user.set_roles",
        "admin.user.reset_mfa",
    ] {
        assert!(actions.iter().any(|x| x == a), "no {a}");
    }
}

#[tokio::test]
async fn u2_secrets_never_reach_logs_audit_or_errors() {
    // The process-wide subscriber of this test binary: every test's logs land here, so
    // this scan covers more than this test's own calls.
    let logs = crate::common::captured_logs();

    let h = Harness::new().await;
    let (secret, codes, pair) = h.enroll_alice().await;
    let leaked = "Tr0ub4dor&3";
    let mut errors = Vec::new();
    errors.push(h.login("alice", leaked).await.unwrap_err());
    errors.push(h.login("nobody", leaked).await.unwrap_err());
    errors.push(h.login(leaked, leaked).await.unwrap_err());
    errors.push(
        h.svc
            .login(leaked, "alice", leaked, addr(9))
            .await
            .unwrap_err(),
    );
    let mfa = h.mfa_token().await;
    errors.push(h.svc.verify_totp(&mfa, leaked).await.unwrap_err());
    errors.push(h.svc.verify_recovery_code(&mfa, leaked).await.unwrap_err());
    errors.push(h.svc.refresh(leaked).await.unwrap_err());
    let refreshed = h.svc.refresh(&pair.refresh_token).await.unwrap();
    errors.push(h.svc.refresh(&pair.refresh_token).await.unwrap_err()); // reuse

    let secret_b32 = data_encoding::BASE32_NOPAD.encode(&secret);
    let mut forbidden: Vec<String> = vec![
        leaked.to_owned(),
        PASSWORD.to_owned(),
        secret_b32,
        pair.access_token.clone(),
        pair.refresh_token.clone(),
        refreshed.refresh_token.clone(),
        mfa.clone(),
    ];
    forbidden.extend(codes.iter().cloned());
    // The random part of opaque tokens alone must not appear either.
    forbidden.push(pair.refresh_token.split_once('.').unwrap().1.to_owned());
    forbidden.push(bastion_crypto::sha256_hex(pair.refresh_token.as_bytes()));

    let bodies = h.audit_bodies().await;
    assert!(bodies.len() > 5);
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("auth.login"),
        "tracing was not captured: {log_text}"
    );
    for f in &forbidden {
        for b in &bodies {
            assert!(!b.contains(f.as_str()), "audit leaks a secret: {b}");
        }
        assert!(!log_text.contains(f.as_str()), "logs leak a secret");
        for e in &errors {
            assert!(!e.to_string().contains(f.as_str()), "error leaks a secret");
            assert!(
                !format!("{e:?}").contains(f.as_str()),
                "error debug leaks a secret"
            );
        }
    }
    // Debug output of the secret-bearing types is redacted.
    assert!(!format!("{pair:?}").contains(&pair.refresh_token));
    assert!(!format!("{:?}", h.login("alice", PASSWORD).await.unwrap()).contains('.'));
}
