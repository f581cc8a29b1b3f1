//! The webhook inbox: one event stored once however often it is delivered (P7), even
//! concurrently on both backends; processed marks; retention.

use bastion_store::webhook::{self, NewEvent, Recorded};
use bastion_store::{BackendKind, StoreError, jobs};

use crate::{Env, T0};

fn event<'a>(id: &'a str, body: &'a str) -> NewEvent<'a> {
    NewEvent {
        provider: "stripe",
        event_id: id,
        event_type: "payment_intent.succeeded",
        object_id: Some("pi_1"),
        ordering_key: T0 - 5,
        body,
    }
}

#[tokio::test]
async fn p7_an_event_delivered_five_times_is_stored_and_enqueued_once() {
    let env = Env::new().await;
    let mut inserted = 0;
    for i in 0..5 {
        env.clock.advance(1);
        let mut sys = env.store.system().await.unwrap();
        // A redelivery may differ in bytes (pretty-printing); the event id decides.
        let body = format!("{{\"id\":\"evt_1\",\"delivery\":{i}}}");
        match webhook::record_event(&mut sys, &event("evt_1", &body))
            .await
            .unwrap()
        {
            Recorded::Inserted => {
                inserted += 1;
                jobs::enqueue(
                    &mut sys,
                    &jobs::NewJob {
                        kind: "webhook.process",
                        payload: r#"{"provider":"stripe","event_id":"evt_1"}"#,
                        max_attempts: 5,
                        delay_secs: 0,
                    },
                )
                .await
                .unwrap();
            }
            Recorded::Duplicate => {}
        }
        sys.commit().await.unwrap();
    }
    assert_eq!(inserted, 1);
    let mut sys = env.store.system().await.unwrap();
    let stored = webhook::get_event(&mut sys, "stripe", "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.body, r#"{"id":"evt_1","delivery":0}"#);
    assert_eq!(stored.received_at, T0 + 1);
    assert_eq!(stored.ordering_key, T0 - 5);
    assert_eq!(stored.object_id.as_deref(), Some("pi_1"));
    assert_eq!(stored.processed_at, None);
    assert_eq!(
        jobs::claim_due(&mut sys, "w", 60, 10).await.unwrap().len(),
        1
    );
    // Another provider's event of the same id is another event.
    let other = NewEvent {
        provider: "adyen",
        ..event("evt_1", "{}")
    };
    assert_eq!(
        webhook::record_event(&mut sys, &other).await.unwrap(),
        Recorded::Inserted
    );

    assert!(
        webhook::mark_processed(&mut sys, "stripe", "evt_1")
            .await
            .unwrap()
    );
    assert!(
        !webhook::mark_processed(&mut sys, "stripe", "evt_1")
            .await
            .unwrap()
    );
    assert!(matches!(
        webhook::mark_processed(&mut sys, "stripe", "evt_404").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        webhook::get_event(&mut sys, "stripe", "evt_1")
            .await
            .unwrap()
            .unwrap()
            .processed_at,
        Some(T0 + 5)
    );
    // Only processed events past the cutoff are purged.
    assert_eq!(
        webhook::purge_processed_before(&mut sys, T0 + 100, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        webhook::get_event(&mut sys, "stripe", "evt_1")
            .await
            .unwrap(),
        None
    );
    assert!(
        webhook::get_event(&mut sys, "adyen", "evt_1")
            .await
            .unwrap()
            .is_some()
    );
    sys.commit().await.unwrap();
}

#[tokio::test]
async fn inbox_input_is_bounded() {
    let env = Env::new().await;
    let mut sys = env.store.system().await.unwrap();
    let long = "e".repeat(256);
    let huge = "x".repeat(4 * 1024 * 1024 + 1);
    for bad in [
        event("", "{}"),
        event(&long, "{}"),
        event("evt\n1", "{}"),
        event("evt_1", &huge),
        NewEvent {
            provider: "Stripe",
            ..event("evt_1", "{}")
        },
        NewEvent {
            event_type: "",
            ..event("evt_1", "{}")
        },
        NewEvent {
            object_id: Some(""),
            ..event("evt_1", "{}")
        },
    ] {
        let r = webhook::record_event(&mut sys, &bad).await;
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    }
    assert!(matches!(
        webhook::purge_processed_before(&mut sys, T0, 0).await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn concurrent_deliveries(kind: BackendKind) {
    let env = Env::on(kind).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let store = env.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut sys = store.system().await.unwrap();
            let r = webhook::record_event(&mut sys, &event("evt_race", "{}"))
                .await
                .unwrap();
            sys.commit().await.unwrap();
            r
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let inserted = outcomes
        .iter()
        .filter(|o| **o == Recorded::Inserted)
        .count();
    assert_eq!(inserted, 1, "{kind:?}: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p7_five_concurrent_deliveries_insert_once_on_sqlite() {
    concurrent_deliveries(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p7_five_concurrent_deliveries_insert_once_on_postgres() {
    concurrent_deliveries(BackendKind::Postgres).await;
}
