//! TOTP secrets encrypted at rest (DESIGN.md field-level encryption, case U5): the row holds
//! a sealed value, a restart with the same secret reads it, another key or another row does
//! not, and an unreadable row is no usable factor.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure aborts the test"
)]

use std::sync::Arc;

use bastion_crypto::{FIELD_FORMAT_V1, FIELD_OVERHEAD_BYTES};
use bastion_identity::{
    AuthError, IdentityConfig, IdentityService, LoginOutcome, NewAccount, TOTP_SECRET_BYTES,
    totp_code,
};
use bastion_store::{TenantScope, mfa, users};
use bastion_types::{SharedClock, TenantId, UserId};

use crate::common::{Harness, PASSWORD, addr, captured_logs, config, slug};

const FIELD_SECRET: &[u8] = b"field-secret-for-tests-0123456789abcdef";
const OTHER_SECRET: &[u8] = b"another-deployment-secret-0123456789abcdef";

async fn tenant_id(h: &Harness, s: &str) -> TenantId {
    h.svc
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.slug.as_str() == s)
        .unwrap()
        .id
}

async fn user_id(h: &Harness, tenant: TenantId, name: &str) -> UserId {
    let mut tx = h.store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    let u = users::user_by_username(&mut tx, &slug(name))
        .await
        .unwrap()
        .unwrap();
    tx.rollback().await.unwrap();
    u.id
}

async fn stored_secret(h: &Harness, tenant: TenantId, user: UserId) -> Option<Vec<u8>> {
    let mut tx = h.store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    let row = mfa::totp_for(&mut tx, user).await.unwrap();
    tx.rollback().await.unwrap();
    row.map(|r| r.secret)
}

async fn write_row(h: &Harness, tenant: TenantId, user: UserId, bytes: &[u8]) {
    let mut tx = h.store.begin(TenantScope::pre_auth(tenant)).await.unwrap();
    mfa::set_totp_secret(&mut tx, user, bytes, true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn assert_sealed(row: &[u8], secret: &[u8]) {
    assert_eq!(row.len(), TOTP_SECRET_BYTES + FIELD_OVERHEAD_BYTES);
    assert_eq!(row[0], FIELD_FORMAT_V1);
    assert!(
        !row.windows(secret.len()).any(|w| w == secret),
        "the clear secret is in the row"
    );
}

/// The same store, keys and clock behind a service with another configuration (a restart).
async fn restarted(h: &Harness, config: IdentityConfig) -> IdentityService {
    let shared: SharedClock = Arc::new(h.clock.clone());
    IdentityService::new(h.store.clone(), h.keys.clone(), shared, config)
        .await
        .unwrap()
}

async fn mfa_token_for(svc: &IdentityService, tenant: &str, user: &str) -> String {
    match svc.login(tenant, user, PASSWORD, addr(2)).await.unwrap() {
        LoginOutcome::MfaRequired { mfa_token, .. } => mfa_token,
        other => panic!("expected MFA, got {other:?}"),
    }
}

fn code_now(h: &Harness, secret: &[u8]) -> String {
    totp_code(secret, u64::try_from(h.now()).unwrap(), 6)
}

#[tokio::test]
async fn enrolled_and_provisioned_secrets_are_sealed_in_the_row() {
    let h = Harness::new().await;
    let acme = tenant_id(&h, "acme").await;
    let alice = user_id(&h, acme, "alice").await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let row = stored_secret(&h, acme, alice).await.unwrap();
    assert_sealed(&row, &secret);

    // The operator path (bastion demo) seals too, with a fresh nonce each time.
    h.svc
        .add_user(
            &slug("acme"),
            NewAccount {
                username: slug("bob"),
                password: PASSWORD.to_owned(),
                roles: vec![],
                is_demo: false,
            },
        )
        .await
        .unwrap();
    let p1 = h
        .svc
        .provision_totp(&slug("acme"), &slug("bob"))
        .await
        .unwrap();
    let p2 = h
        .svc
        .provision_totp(&slug("acme"), &slug("bob"))
        .await
        .unwrap();
    assert_ne!(p1.secret_base32, p2.secret_base32);
    let bob_secret = data_encoding::BASE32_NOPAD
        .decode(p2.secret_base32.as_bytes())
        .unwrap();
    let bob = user_id(&h, acme, "bob").await;
    let bob_row = stored_secret(&h, acme, bob).await.unwrap();
    assert_sealed(&bob_row, &bob_secret);

    // And the sealed secret is the one that logs in.
    let token = mfa_token_for(&h.svc, "acme", "bob").await;
    h.svc
        .verify_totp(&token, &code_now(&h, &bob_secret))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restart_with_the_same_secret_reads_it_and_another_key_refuses_it() {
    let h = Harness::with_config(config().with_field_secret(FIELD_SECRET).unwrap()).await;
    let (secret, codes, _pair) = h.enroll_alice().await;

    // Same secret after a restart: TOTP works.
    let same = restarted(&h, config().with_field_secret(FIELD_SECRET).unwrap()).await;
    let token = mfa_token_for(&same, "acme", "alice").await;
    same.verify_totp(&token, &code_now(&h, &secret))
        .await
        .unwrap();
    h.clock.advance(30);

    // Another deployment secret, or the ephemeral default: the factor is unusable — the
    // right code is refused, an alert is logged, and the user is still asked for MFA (never
    // offered a fresh enrollment by password alone).
    let others = [config().with_field_secret(OTHER_SECRET).unwrap(), config()];
    for (other, recovery) in others.into_iter().zip(&codes) {
        let svc = restarted(&h, other).await;
        let token = mfa_token_for(&svc, "acme", "alice").await;
        assert_eq!(
            svc.verify_totp(&token, &code_now(&h, &secret)).await,
            Err(AuthError::InvalidCode)
        );
        // A recovery code still proves the second factor.
        svc.verify_recovery_code(&token, recovery).await.unwrap();
        h.clock.advance(30);
    }
    let logs = String::from_utf8(captured_logs().0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("stored totp secret does not decrypt"));
    let b32 = data_encoding::BASE32_NOPAD.encode(&secret);
    assert!(!logs.contains(&b32), "logs leak the secret");
}

#[tokio::test]
async fn a_sealed_secret_copied_to_another_users_or_tenants_row_does_not_open() {
    let h = Harness::new().await;
    let acme = tenant_id(&h, "acme").await;
    let alice = user_id(&h, acme, "alice").await;
    let (secret, _codes, _pair) = h.enroll_alice().await;
    let sealed = stored_secret(&h, acme, alice).await.unwrap();

    // An attacker with database write access copies alice's row to mallory, whose password
    // they know, hoping to log in as mallory with alice's authenticator codes.
    h.svc
        .add_user(
            &slug("acme"),
            NewAccount {
                username: slug("mallory"),
                password: PASSWORD.to_owned(),
                roles: vec![],
                is_demo: false,
            },
        )
        .await
        .unwrap();
    let mallory = user_id(&h, acme, "mallory").await;
    write_row(&h, acme, mallory, &sealed).await;
    let token = mfa_token_for(&h.svc, "acme", "mallory").await;
    assert_eq!(
        h.svc.verify_totp(&token, &code_now(&h, &secret)).await,
        Err(AuthError::InvalidCode)
    );

    // The same across tenants: a user of globex with alice's sealed row.
    h.svc.create_tenant(&slug("globex"), "eu").await.unwrap();
    h.svc
        .add_user(
            &slug("globex"),
            NewAccount {
                username: slug("alice"),
                password: PASSWORD.to_owned(),
                roles: vec![],
                is_demo: false,
            },
        )
        .await
        .unwrap();
    let globex = tenant_id(&h, "globex").await;
    let g_alice = user_id(&h, globex, "alice").await;
    write_row(&h, globex, g_alice, &sealed).await;
    let token = mfa_token_for(&h.svc, "globex", "alice").await;
    assert_eq!(
        h.svc.verify_totp(&token, &code_now(&h, &secret)).await,
        Err(AuthError::InvalidCode)
    );

    // A clear-text secret (a row from before encryption) is no usable factor either.
    write_row(&h, acme, mallory, &secret).await;
    let token = mfa_token_for(&h.svc, "acme", "mallory").await;
    assert_eq!(
        h.svc.verify_totp(&token, &code_now(&h, &secret)).await,
        Err(AuthError::InvalidCode)
    );

    // Alice's own row still works.
    h.mfa_login(&secret).await;
}

#[test]
fn field_secrets_shorter_than_32_bytes_are_refused_and_never_printed() {
    assert!(config().with_field_secret(&[b'x'; 31]).is_err());
    assert!(config().with_field_secret(b"").is_err());
    let c = config().with_field_secret(FIELD_SECRET).unwrap();
    assert!(!c.field_key.is_ephemeral());
    assert!(config().field_key.is_ephemeral());
    let shown = format!("{c:?}");
    assert!(!shown.contains("field-secret"), "{shown}");
}
