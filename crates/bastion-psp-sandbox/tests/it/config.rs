//! Configuration rules: test keys only, loopback only by default, limits in range, no
//! secret in `Debug`.

use std::sync::Arc;

use bastion_psp_sandbox::{RetryPolicy, Sandbox, SandboxConfig, SandboxError, serve};
use bastion_types::{FixedClock, SharedClock};
use tokio::net::TcpListener;

use crate::{KEY, WHSEC};

fn clock() -> SharedClock {
    Arc::new(FixedClock::new(0))
}

#[test]
fn only_test_keys_and_whsec_secrets() {
    for bad in [
        "sk_live_abcdef",
        "sk_test_",
        "pk_test_abc",
        "sk_test_has space",
        "",
    ] {
        assert!(
            matches!(
                SandboxConfig::new(bad, clock()),
                Err(SandboxError::InvalidConfig(_))
            ),
            "{bad}"
        );
    }
    let c = SandboxConfig::new(KEY, clock()).unwrap();
    assert!(
        c.clone()
            .with_webhook("http://127.0.0.1:1/x", "not_a_secret")
            .is_err()
    );
    assert!(c.clone().with_webhook("ftp://127.0.0.1/x", WHSEC).is_err());
    let c = c.with_webhook("http://127.0.0.1:1/x", WHSEC).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(KEY) && !debug.contains(WHSEC), "{debug}");
    let mut many = SandboxConfig::new(KEY, clock()).unwrap();
    for _ in 0..bastion_psp_sandbox::WEBHOOK_ENDPOINTS_MAX {
        many = many.with_webhook("http://127.0.0.1:1/x", WHSEC).unwrap();
    }
    assert!(many.with_webhook("http://127.0.0.1:1/x", WHSEC).is_err());
}

#[test]
fn limits_are_checked() {
    let mut c = SandboxConfig::new(KEY, clock()).unwrap();
    c.retry = RetryPolicy {
        attempts_max: 0,
        backoff_initial_ms: 10,
        backoff_max_ms: 10,
    };
    assert!(Sandbox::new(c.clone()).is_err());
    c.retry = RetryPolicy {
        attempts_max: 11,
        backoff_initial_ms: 10,
        backoff_max_ms: 10,
    };
    assert!(Sandbox::new(c.clone()).is_err());
    c.retry = RetryPolicy {
        attempts_max: 3,
        backoff_initial_ms: 100,
        backoff_max_ms: 10,
    };
    assert!(Sandbox::new(c.clone()).is_err());
    c.retry = RetryPolicy::default();
    c.fees.basis_points = 10_001;
    assert!(Sandbox::new(c).is_err());
}

#[tokio::test]
async fn refuses_a_non_loopback_listener_by_default() {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = serve(listener, SandboxConfig::new(KEY, clock()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::NotLoopback(_)), "{err}");
}
