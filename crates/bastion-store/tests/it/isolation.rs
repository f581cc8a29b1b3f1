//! Tenant A's transactions never see or change tenant B's rows, in every repository.

use bastion_store::records::{self, FieldRef, ListFilter, Page, RefTarget};
use bastion_store::{StoreError, audit, mfa, refresh, users};
use bastion_types::AuthMethod;
use serde_json::json;

use crate::{Env, T0, new_user, slug};

#[tokio::test]
async fn users_are_invisible_and_untouchable_across_tenants() {
    let env = Env::new().await;
    // The same username may exist in both tenants, as different users.
    let mut tx = env.tx_a().await;
    let sam_a = users::create_user(&mut tx, new_user("sam", &["seller"]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    let sam_b = users::create_user(&mut tx, new_user("sam", &["finance"]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A refused statement ends its transaction's usefulness (PostgreSQL aborts it), so each
    // refusal below runs in a transaction of its own.
    let mut tx = env.tx_b().await;
    assert!(matches!(
        users::create_user(&mut tx, new_user("sam", &[])).await,
        Err(StoreError::Duplicate)
    ));
    drop(tx);

    let mut tx = env.tx_a().await;
    assert_eq!(users::user_by_id(&mut tx, env.bob.id).await.unwrap(), None);
    assert_eq!(
        users::user_by_username(&mut tx, &slug("bob"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users::user_by_username(&mut tx, &slug("sam"))
            .await
            .unwrap()
            .unwrap()
            .id,
        sam_a.id
    );
    let listed = users::list_users(&mut tx, Page::first(100)).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "sam"]);
    for r in [
        users::set_roles(&mut tx, sam_b.id, &[slug("finance"), slug("admin")]).await,
        users::set_disabled(&mut tx, sam_b.id, true).await,
        users::set_password_hash(&mut tx, sam_b.id, "$argon2id$x").await,
    ] {
        assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    }
    assert!(matches!(
        users::bump_session_epoch(&mut tx, sam_b.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        users::bump_session_epoch(&mut tx, sam_a.id).await.unwrap(),
        1
    );
    tx.commit().await.unwrap();

    let mut tx = env.tx_b().await;
    let b = users::user_by_id(&mut tx, sam_b.id).await.unwrap().unwrap();
    assert_eq!((b.disabled, b.session_epoch, b.roles.len()), (false, 0, 1));
    assert_eq!(b.password_hash, new_user("x", &[]).password_hash);
    assert!(!format!("{b:?}").contains("argon2"), "Debug leaks the hash");
}

#[tokio::test]
async fn mfa_rows_are_invisible_and_untouchable_across_tenants() {
    let env = Env::new().await;
    let mut tx = env.tx_b().await;
    mfa::set_totp_secret(&mut tx, env.bob.id, b"bob-secret-20-bytes!", true)
        .await
        .unwrap();
    mfa::replace_recovery_codes(&mut tx, env.bob.id, &[b"code-hash-1"])
        .await
        .unwrap();
    mfa::create_challenge(&mut tx, env.bob.id, "mfa", b"challenge-b", T0 + 60)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    assert_eq!(mfa::totp_for(&mut tx, env.bob.id).await.unwrap(), None);
    assert!(
        !mfa::record_totp_step(&mut tx, env.bob.id, 10)
            .await
            .unwrap()
    );
    assert!(
        !mfa::use_recovery_code(&mut tx, env.bob.id, b"code-hash-1")
            .await
            .unwrap()
    );
    assert_eq!(
        mfa::take_challenge(&mut tx, b"challenge-b", "mfa")
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();
    // Writing MFA state for a user of another tenant is refused by the foreign key.
    let mut tx = env.tx_a().await;
    assert!(matches!(
        mfa::set_totp_secret(&mut tx, env.bob.id, b"attacker-secret", true).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);
    let mut tx = env.tx_a().await;
    assert!(matches!(
        mfa::create_challenge(&mut tx, env.bob.id, "mfa", b"challenge-x", T0 + 60).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);
    let mut tx = env.tx_a().await;
    mfa::reset_mfa(&mut tx, env.bob.id).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_b().await;
    let totp = mfa::totp_for(&mut tx, env.bob.id).await.unwrap().unwrap();
    assert_eq!(
        (totp.secret.as_slice(), totp.last_used_step),
        (&b"bob-secret-20-bytes!"[..], -1)
    );
    assert_eq!(
        mfa::recovery_codes_left(&mut tx, env.bob.id).await.unwrap(),
        1
    );
    assert!(
        mfa::take_challenge(&mut tx, b"challenge-b", "mfa")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn refresh_families_are_invisible_and_untouchable_across_tenants() {
    let env = Env::new().await;
    let mut tx = env.tx_b().await;
    let fam = refresh::create_family(
        &mut tx,
        env.bob.id,
        T0,
        &[AuthMethod::Pwd, AuthMethod::Otp],
        T0 + 3600,
    )
    .await
    .unwrap();
    refresh::insert_refresh_token(&mut tx, fam, b"rt-b-0", T0 + 600)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    assert!(!refresh::family_active(&mut tx, fam).await.unwrap());
    assert_eq!(
        refresh::rotate_refresh_token(&mut tx, b"rt-b-0", b"rt-a-1", T0 + 600)
            .await
            .unwrap(),
        refresh::RotateOutcome::Unknown
    );
    assert!(
        !refresh::revoke_family(&mut tx, fam, "logout")
            .await
            .unwrap()
    );
    assert_eq!(
        refresh::revoke_user_families(&mut tx, env.bob.id, "disable")
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        refresh::insert_refresh_token(&mut tx, fam, b"rt-a-2", T0 + 600).await,
        Err(StoreError::NotFound)
    ));
    tx.commit().await.unwrap();
    // Refused by the foreign key: the statement fails, and so would this transaction's commit.
    let mut tx = env.tx_a().await;
    assert!(matches!(
        refresh::create_family(&mut tx, env.bob.id, T0, &[], T0 + 60).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(tx.commit().await.is_err() == (env.pg.is_some()));

    let mut tx = env.tx_b().await;
    assert!(refresh::family_active(&mut tx, fam).await.unwrap());
    let out = refresh::rotate_refresh_token(&mut tx, b"rt-b-0", b"rt-b-1", T0 + 600)
        .await
        .unwrap();
    assert!(
        matches!(out, refresh::RotateOutcome::Rotated { .. }),
        "{out:?}"
    );
}

#[tokio::test]
async fn records_are_invisible_and_untouchable_across_tenants() {
    let env = Env::new().await;
    let mut tx = env.tx_b().await;
    let secret_quote =
        records::insert_record(&mut tx, "quote", env.bob.id, json!({"title": "b"}), &[])
            .await
            .unwrap();
    for i in 0..3 {
        records::insert_record(&mut tx, "quote", env.bob.id, json!({"title": i}), &[])
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = env.tx_a().await;
    records::insert_record(&mut tx, "quote", env.alice.id, json!({"title": "a"}), &[])
        .await
        .unwrap();

    assert_eq!(
        records::get_record(&mut tx, "quote", secret_quote.id)
            .await
            .unwrap(),
        None
    );
    for filter in [ListFilter::All, ListFilter::Owner(env.bob.id)] {
        let (rows, total) = records::list_records(&mut tx, "quote", &filter, Page::first(100))
            .await
            .unwrap();
        assert!(rows.iter().all(|r| r.owner_id == env.alice.id));
        assert_eq!(total, rows.len() as u64, "{filter:?}");
    }
    let (_, total) = records::list_records(&mut tx, "quote", &ListFilter::All, Page::first(10))
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert!(matches!(
        records::update_record(
            &mut tx,
            "quote",
            secret_quote.id,
            1,
            json!({"title": "pwned"}),
            &[]
        )
        .await,
        Err(StoreError::NotFound)
    ));
    tx.commit().await.unwrap();
    // A's records cannot be owned by, or point at, B's users (composite foreign keys).
    let mut tx = env.tx_a().await;
    assert!(matches!(
        records::insert_record(&mut tx, "quote", env.bob.id, json!({}), &[]).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);
    let mut tx = env.tx_a().await;
    let data = json!({"seller": env.bob.id.to_string()});
    let refs = [FieldRef {
        field: "seller".into(),
        target: RefTarget::User(env.bob.id),
    }];
    assert!(matches!(
        records::insert_record(&mut tx, "quote", env.alice.id, data, &refs).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);

    let mut tx = env.tx_b().await;
    let still = records::get_record(&mut tx, "quote", secret_quote.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((still.version, still.data), (1, json!({"title": "b"})));
}

#[tokio::test]
async fn audit_chains_are_per_tenant() {
    let env = Env::new().await;
    let ev = |tenant, action: &str| bastion_audit::AuditEvent {
        at: T0,
        tenant_id: tenant,
        actor: None,
        action: action.into(),
        target: None,
        outcome: bastion_audit::Outcome::Ok,
        policy_ids: vec![],
        detail: json!({}),
    };
    let mut tx = env.tx_a().await;
    audit::append_audit(&mut tx, &ev(env.a.id, "a.1"))
        .await
        .unwrap();
    // An event naming another tenant cannot enter this tenant's chain.
    assert!(matches!(
        audit::append_audit(&mut tx, &ev(env.b.id, "b.x")).await,
        Err(StoreError::Invalid { .. })
    ));
    tx.commit().await.unwrap();
    let mut tx = env.tx_b().await;
    let (seq, _) = audit::append_audit(&mut tx, &ev(env.b.id, "b.1"))
        .await
        .unwrap();
    assert_eq!(seq, 1);
    audit::append_audit(&mut tx, &ev(env.b.id, "b.2"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    let chain = audit::read_chain(&mut tx).await.unwrap();
    assert_eq!(chain.records.len(), 1);
    assert!(chain.records[0].body.contains("\"a.1\""));
    assert_eq!(
        bastion_audit::verify(&chain.records, chain.head)
            .unwrap()
            .count,
        1
    );
}
