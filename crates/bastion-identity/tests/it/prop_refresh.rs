//! Property: under any sequence of refreshes of current or stale tokens, a family never has
//! two live refresh tokens, and reuse of a stale token kills the family for good.

use bastion_identity::AuthError;
use proptest::prelude::*;

use crate::common::Harness;

#[derive(Debug, Clone)]
enum Op {
    /// Refresh with the newest token handed out.
    Current,
    /// Refresh with the token handed out `n` rotations ago (wrapped to what exists).
    Stale(usize),
    /// Let time pass (at most 13 × 239 s in a case: less than the 1 h idle lifetime).
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Current),
        1 => (1_usize..6).prop_map(Op::Stale),
        1 => (1_i64..240).prop_map(Op::Wait),
    ]
}

#[expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "property body: a failure is the finding"
)]
async fn run(ops: Vec<Op>) {
    let h = Harness::new().await;
    let (_secret, _codes, first) = h.enroll_alice().await;
    let mut issued = vec![first];
    let mut revoked = false;
    for op in ops {
        match op {
            Op::Wait(s) => h.clock.advance(s),
            Op::Current | Op::Stale(_) => {
                let last = issued.len() - 1;
                let idx = match op {
                    // k rotations back, k in 1..=last.
                    Op::Stale(n) if last > 0 => last - (1 + (n - 1) % last),
                    _ => last,
                };
                let result = h.svc.refresh(&issued[idx].refresh_token).await;
                let is_current = idx == issued.len() - 1;
                match (revoked, is_current) {
                    (false, true) => {
                        issued.push(result.expect("current token of a live family refreshes"))
                    }
                    (false, false) => {
                        assert_eq!(result, Err(AuthError::InvalidToken));
                        revoked = true;
                    }
                    (true, _) => assert_eq!(result, Err(AuthError::InvalidToken)),
                }
            }
        }
        // Invariant: once the family is revoked no access token of it verifies; while it
        // lives, the newest access token verifies unless it expired by time alone.
        for (i, pair) in issued.iter().enumerate() {
            let live = h.svc.verify_access_token(&pair.access_token).await;
            if revoked {
                assert!(
                    live.is_err(),
                    "access token {i} of a revoked family verified"
                );
            } else if i == issued.len() - 1 {
                assert!(matches!(live, Ok(_) | Err(AuthError::Expired)), "{live:?}");
            }
        }
    }
    // At the end, at most one token refreshes: try the newest first (it is the only
    // candidate), then every other; none of the others may succeed.
    let newest = issued.last().unwrap().refresh_token.clone();
    let newest_ok = h.svc.refresh(&newest).await.is_ok();
    assert_eq!(newest_ok, !revoked);
    for old in &issued[..issued.len() - 1] {
        assert!(h.svc.refresh(&old.refresh_token).await.is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn refresh_families_never_have_two_live_tokens(ops in proptest::collection::vec(op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
