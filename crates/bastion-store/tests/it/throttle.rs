//! Throttle counters: fixed windows by the clock.

use bastion_store::throttle;

use crate::Env;

#[tokio::test]
async fn throttle_counts_within_a_window_and_resets_after() {
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    let key = "login:acme:alice";
    for want in 1..=3 {
        assert_eq!(
            throttle::throttle_hit(&mut sys, key, 60).await.unwrap(),
            want
        );
    }
    assert_eq!(
        throttle::throttle_count(&mut sys, key, 60).await.unwrap(),
        3
    );
    assert_eq!(
        throttle::throttle_count(&mut sys, "login:acme:bob", 60)
            .await
            .unwrap(),
        0
    );
    env.clock.advance(59);
    assert_eq!(throttle::throttle_hit(&mut sys, key, 60).await.unwrap(), 4);
    env.clock.advance(1);
    assert_eq!(
        throttle::throttle_count(&mut sys, key, 60).await.unwrap(),
        0
    );
    assert_eq!(throttle::throttle_hit(&mut sys, key, 60).await.unwrap(), 1);
    throttle::throttle_clear(&mut sys, key).await.unwrap();
    assert_eq!(
        throttle::throttle_count(&mut sys, key, 60).await.unwrap(),
        0
    );
    assert!(throttle::throttle_hit(&mut sys, key, 0).await.is_err());
    assert!(
        throttle::throttle_hit(&mut sys, &"k".repeat(300), 60)
            .await
            .is_err()
    );
    sys.commit().await.unwrap();
}
