//! The daily balance report (major units), fees and their rounding rule, date parsing.

use bastion_payments::psp::{CreateRefund, Psp};
use bastion_psp_sandbox::{
    FeeSchedule, RetryPolicy, format_major, minor_unit_exponent, parse_date_utc,
};
use bastion_types::TenantId;
use reqwest::Method;

use crate::{T0, create, key, start};

#[test]
fn fee_rounding_is_half_up_in_integers() {
    let f = FeeSchedule::default();
    assert_eq!(f.fee_minor(1234), 36 + 30); // 35.786
    assert_eq!(f.fee_minor(50), 1 + 30); // 1.45
    assert_eq!(f.fee_minor(1500), 44 + 30); // 43.5 → 44
    assert_eq!(f.fee_minor(0), 30);
    assert_eq!(f.fee_minor(99_999_999), 2_900_000 + 30); // 2 899 999.971
    let none = FeeSchedule {
        basis_points: 0,
        fixed_minor: 0,
    };
    assert_eq!(none.fee_minor(1234), 0);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let r = RetryPolicy {
        attempts_max: 5,
        backoff_initial_ms: 100,
        backoff_max_ms: 500,
    };
    let waits: Vec<u64> = (1..=5).map(|a| r.backoff_ms(a)).collect();
    assert_eq!(waits, [100, 200, 400, 500, 500]);
    assert_eq!(r.backoff_ms(200), 500);
}

#[test]
fn major_units_and_dates() {
    assert_eq!(format_major(1234, 2), "12.34");
    assert_eq!(format_major(-5, 2), "-0.05");
    assert_eq!(format_major(0, 2), "0.00");
    assert_eq!(format_major(1234, 0), "1234");
    assert_eq!(format_major(1234, 3), "1.234");
    assert_eq!(format_major(i64::MIN, 2), "-92233720368547758.08");
    assert_eq!(
        (
            minor_unit_exponent("eur"),
            minor_unit_exponent("JPY"),
            minor_unit_exponent("kwd")
        ),
        (2, 0, 3)
    );
    assert_eq!(parse_date_utc("1970-01-01"), Ok(0));
    assert_eq!(parse_date_utc("2026-11-29"), Ok(T0 - 12 * 3600));
    assert_eq!(parse_date_utc("2024-02-29"), Ok(1_709_164_800));
    for bad in [
        "2026-02-29",
        "2026-13-01",
        "2026-1-01",
        "26-11-29",
        "2026-11-29T00",
        "+026-11-29",
        "1969-12-31",
        "2026-04-31",
    ] {
        assert!(parse_date_utc(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn daily_report_is_in_major_units_per_utc_day() {
    let sb = start(&[]).await;
    let psp = sb.psp();
    let pi = psp
        .create_payment_intent(&create(1234, "pm_card_visa", "pay_rep1"), &key("rep1"))
        .await
        .unwrap();
    psp.create_refund(
        &CreateRefund {
            payment_intent: pi.id,
            amount_minor: 234,
            tenant: TenantId::parse("0b7e2a2e-52a5-4a53-9a3e-6f1f9c1d2e3f").unwrap(),
            refund_id: "ref_rep".to_owned(),
        },
        &key("rep2"),
    )
    .await
    .unwrap();
    // A yen payment (zero-decimal) the same day, and a charge on the next day.
    let (s, _, _) = sb
        .raw(
            Method::POST,
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "jpy"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200);
    sb.clock.advance(12 * 3600);
    psp.create_payment_intent(&create(999, "pm_card_visa", "pay_rep3"), &key("rep3"))
        .await
        .unwrap();

    let (status, report, _) = sb
        .raw(
            Method::GET,
            "/v1/reporting/daily_balance?date=2026-11-29",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["units"], "major");
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (
            lines[0]["type"].as_str(),
            lines[0]["gross"].as_str(),
            lines[0]["fee"].as_str(),
            lines[0]["net"].as_str()
        ),
        (Some("charge"), Some("12.34"), Some("0.66"), Some("11.68"))
    );
    assert_eq!(
        (
            lines[1]["type"].as_str(),
            lines[1]["gross"].as_str(),
            lines[1]["fee"].as_str()
        ),
        (Some("refund"), Some("-2.34"), Some("0.00"))
    );
    assert_eq!(
        (
            lines[2]["currency"].as_str(),
            lines[2]["gross"].as_str(),
            lines[2]["fee"].as_str()
        ),
        (Some("jpy"), Some("500"), Some("45"))
    );
    let eur = report["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "eur")
        .unwrap();
    assert_eq!(
        (
            eur["gross"].as_str(),
            eur["fee"].as_str(),
            eur["net"].as_str(),
            eur["count"].as_u64()
        ),
        (Some("10.00"), Some("0.66"), Some("9.34"), Some(2))
    );

    let (_, next_day, _) = sb
        .raw(
            Method::GET,
            "/v1/reporting/daily_balance?date=2026-11-30",
            &[],
            None,
        )
        .await;
    assert_eq!(next_day["lines"].as_array().unwrap().len(), 1);
    assert_eq!(next_day["lines"][0]["gross"], "9.99");
    for bad in [
        "date=2026-02-30",
        "date=yesterday",
        "",
        "date=2026-11-29&x=1",
    ] {
        let (status, _, _) = sb
            .raw(
                Method::GET,
                &format!("/v1/reporting/daily_balance?{bad}"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
}
