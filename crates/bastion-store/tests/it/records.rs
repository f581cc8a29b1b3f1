//! Records: parents checked by the database (Z5), list scopes in SQL for rows and counts
//! (Z6), optimistic concurrency, limits.

use bastion_store::records::{self, FieldRef, ListFilter, PAGE_SIZE_MAX, Page, RefTarget};
use bastion_store::{StoreError, users};
use serde_json::json;

use crate::{Env, new_user};

fn parent(id: bastion_types::RecordId) -> (serde_json::Value, [FieldRef; 1]) {
    (
        json!({"quote_id": id.to_string(), "price": 10}),
        [FieldRef {
            field: "quote_id".into(),
            target: RefTarget::Record {
                entity: "quote".into(),
                id,
            },
        }],
    )
}

#[tokio::test]
async fn a_parent_from_another_tenant_is_rejected_by_the_database() {
    let env = Env::sqlite().await;
    let mut tx = env.tx_b().await;
    let b_quote = records::insert_record(&mut tx, "quote", env.bob.id, json!({}), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = env.tx_a().await;
    let a_quote = records::insert_record(&mut tx, "quote", env.alice.id, json!({}), &[])
        .await
        .unwrap();
    let (data, refs) = parent(a_quote.id);
    records::insert_record(&mut tx, "proposal", env.alice.id, data, &refs)
        .await
        .unwrap();

    let (data, refs) = parent(b_quote.id);
    let err = records::insert_record(&mut tx, "proposal", env.alice.id, data, &refs)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    // A parent of the wrong entity is refused too (the key includes the entity).
    let a_proposal = records::list_records(&mut tx, "proposal", &ListFilter::All, Page::first(1))
        .await
        .unwrap()
        .0
        .remove(0);
    let data = json!({"quote_id": a_proposal.id.to_string()});
    let refs = [FieldRef {
        field: "quote_id".into(),
        target: RefTarget::Record {
            entity: "quote".into(),
            id: a_proposal.id,
        },
    }];
    assert!(matches!(
        records::insert_record(&mut tx, "proposal", env.alice.id, data, &refs).await,
        Err(StoreError::Invalid { .. })
    ));
    tx.commit().await.unwrap();

    // Not only the code: raw SQL that skips the store is refused by the composite key.
    let mut raw = env.raw().await;
    let res = sqlx::query(
        "INSERT INTO record_parents (tenant_id, record_id, field, parent_entity, parent_id)
         VALUES ($1, $2, 'quote_id', 'quote', $3)",
    )
    .bind(env.a.id.to_string())
    .bind(a_quote.id.to_string())
    .bind(b_quote.id.to_string())
    .execute(&mut raw)
    .await;
    let err = res.unwrap_err();
    assert_eq!(
        err.as_database_error().map(|e| e.kind()),
        Some(sqlx::error::ErrorKind::ForeignKeyViolation),
        "{err}"
    );
}

#[tokio::test]
async fn refs_must_agree_with_the_data() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let refs = [FieldRef {
        field: "seller".into(),
        target: RefTarget::User(env.alice.id),
    }];
    let wrong = json!({"seller": "someone-else"});
    assert!(matches!(
        records::insert_record(&mut tx, "quote", env.alice.id, wrong, &refs).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        records::insert_record(&mut tx, "quote", env.alice.id, json!([1]), &[]).await,
        Err(StoreError::Invalid { .. })
    ));
    let big = json!({"x": "a".repeat(records::DATA_LEN_MAX)});
    assert!(matches!(
        records::insert_record(&mut tx, "quote", env.alice.id, big, &[]).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        records::insert_record(
            &mut tx,
            "Quote; DROP TABLE records",
            env.alice.id,
            json!({}),
            &[]
        )
        .await,
        Err(StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn list_scopes_filter_rows_and_counts_in_sql() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let buyer2 = users::create_user(&mut tx, new_user("buyer2", &["buyer"]))
        .await
        .unwrap();
    let seller = users::create_user(&mut tx, new_user("seller", &["seller"]))
        .await
        .unwrap();
    let with_seller = |n: i32| {
        (
            json!({"n": n, "seller": seller.id.to_string()}),
            [FieldRef {
                field: "seller".into(),
                target: RefTarget::User(seller.id),
            }],
        )
    };
    // alice: 3 quotes (2 for the seller), buyer2: 4 quotes (1 for the seller).
    for n in 0..3 {
        if n < 2 {
            let (d, r) = with_seller(n);
            records::insert_record(&mut tx, "quote", env.alice.id, d, &r)
                .await
                .unwrap();
        } else {
            records::insert_record(&mut tx, "quote", env.alice.id, json!({"n": n}), &[])
                .await
                .unwrap();
        }
    }
    for n in 10..14 {
        env.clock.advance(1); // list order is creation time, ties broken by id
        if n == 10 {
            let (d, r) = with_seller(n);
            records::insert_record(&mut tx, "quote", buyer2.id, d, &r)
                .await
                .unwrap();
        } else {
            records::insert_record(&mut tx, "quote", buyer2.id, json!({"n": n}), &[])
                .await
                .unwrap();
        }
    }
    records::insert_record(&mut tx, "proposal", env.alice.id, json!({}), &[])
        .await
        .unwrap();

    let cases = [
        (ListFilter::All, 7),
        (ListFilter::Owner(env.alice.id), 3),
        (ListFilter::Owner(buyer2.id), 4),
        (ListFilter::Field("seller".into(), seller.id), 3),
        (ListFilter::Field("buyer".into(), seller.id), 0),
        (ListFilter::Field("seller".into(), env.alice.id), 0),
        (
            ListFilter::AnyOf(vec![
                ListFilter::Owner(env.alice.id),
                ListFilter::Field("seller".into(), seller.id),
            ]),
            4,
        ),
        (ListFilter::AnyOf(vec![]), 0),
        (ListFilter::Nothing, 0),
    ];
    for (filter, want) in cases {
        let (rows, total) = records::list_records(&mut tx, "quote", &filter, Page::first(2))
            .await
            .unwrap();
        assert_eq!(total, want, "{filter:?}");
        assert_eq!(rows.len() as u64, want.min(2), "{filter:?}");
        if let ListFilter::Owner(u) = filter {
            assert!(rows.iter().all(|r| r.owner_id == u));
        }
    }
    // Pages walk the whole set exactly once, oldest first.
    let mut seen = Vec::new();
    for offset in (0..8).step_by(3) {
        let (rows, total) = records::list_records(
            &mut tx,
            "quote",
            &ListFilter::Owner(buyer2.id),
            Page { offset, limit: 3 },
        )
        .await
        .unwrap();
        assert_eq!(total, 4);
        seen.extend(rows.into_iter().map(|r| r.data["n"].as_i64().unwrap()));
    }
    assert_eq!(seen, [10, 11, 12, 13]);
    for bad in [Page::first(0), Page::first(PAGE_SIZE_MAX + 1)] {
        assert!(matches!(
            records::list_records(&mut tx, "quote", &ListFilter::All, bad).await,
            Err(StoreError::Invalid { .. })
        ));
    }
    let mut deep = ListFilter::Nothing;
    for _ in 0..6 {
        deep = ListFilter::AnyOf(vec![deep]);
    }
    assert!(matches!(
        records::list_records(&mut tx, "quote", &deep, Page::first(1)).await,
        Err(StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn updates_use_optimistic_concurrency_and_reindex() {
    let env = Env::new().await;
    let mut tx = env.tx_a().await;
    let seller = users::create_user(&mut tx, new_user("seller", &["seller"]))
        .await
        .unwrap();
    let rec = records::insert_record(
        &mut tx,
        "quote",
        env.alice.id,
        json!({"status": "open"}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rec.version, 1);
    env.clock.advance(5);
    let data = json!({"status": "assigned", "seller": seller.id.to_string()});
    let refs = [FieldRef {
        field: "seller".into(),
        target: RefTarget::User(seller.id),
    }];
    let v2 = records::update_record(&mut tx, "quote", rec.id, 1, data, &refs)
        .await
        .unwrap();
    assert_eq!(
        (v2.version, v2.owner_id, v2.created_at, v2.updated_at),
        (2, env.alice.id, rec.created_at, rec.created_at + 5)
    );
    let (_, n) = records::list_records(
        &mut tx,
        "quote",
        &ListFilter::Field("seller".into(), seller.id),
        Page::first(10),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);

    let stale =
        records::update_record(&mut tx, "quote", rec.id, 1, json!({"status": "x"}), &[]).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current_version: 2 })),
        "{stale:?}"
    );
    let missing = records::update_record(
        &mut tx,
        "quote",
        bastion_types::RecordId::new_random(),
        1,
        json!({}),
        &[],
    )
    .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
    // Another entity name does not reach the record.
    assert!(matches!(
        records::update_record(&mut tx, "proposal", rec.id, 2, json!({}), &[]).await,
        Err(StoreError::NotFound)
    ));
    let v3 = records::update_record(
        &mut tx,
        "quote",
        rec.id,
        2,
        json!({"status": "closed"}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(v3.version, 3);
    let (_, n) = records::list_records(
        &mut tx,
        "quote",
        &ListFilter::Field("seller".into(), seller.id),
        Page::first(10),
    )
    .await
    .unwrap();
    assert_eq!(n, 0, "refs follow the latest data");
    assert_eq!(
        records::get_record(&mut tx, "quote", rec.id)
            .await
            .unwrap()
            .unwrap(),
        v3
    );
}
