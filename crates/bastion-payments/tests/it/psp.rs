//! The PSP module's own rules: parsing of keys, tokens and ids; the adapter's URL and limit
//! checks; error mapping for transport failures, 5xx, oversized and malformed answers (a
//! one-shot raw HTTP server on loopback).

use bastion_payments::psp::{
    ApiKey, IdempotencyKey, PaymentIntentStatus, PaymentMethodToken, Psp, PspError, StripeConfig,
    StripePsp, check_object_id, check_reference,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const KEY: &str = "sk_test_unit_0123456789";

#[test]
fn keys_tokens_and_ids_parse_strictly() {
    assert!(IdempotencyKey::parse("charge-pay_1").is_ok());
    for bad in ["", "has space", "tab\t", &"k".repeat(256), "é"] {
        assert!(IdempotencyKey::parse(bad).is_err(), "{bad}");
    }
    assert!(PaymentMethodToken::parse("pm_card_visa").is_ok());
    for bad in [
        "4242424242424242",
        "pm_",
        "pm_card visa",
        "tok_visa",
        "pm_../x",
    ] {
        assert!(PaymentMethodToken::parse(bad).is_err(), "{bad}");
    }
    for bad in ["", "../x", "pi_1?x=1", "pi_1/confirm", "pi%2F"] {
        assert!(check_object_id(bad).is_err(), "{bad}");
    }
    assert!(check_object_id("pi_3MtwBwLkdIwHu7ix28a3tqPa").is_ok());
    // Bastion's own references may be UUIDs (hyphens), never blanks or control characters.
    assert!(check_reference("7f0c7c1e-3b8e-4d7e-9d55-0a4cbb1c2d3e").is_ok());
    for bad in ["", "a b", "x\n", &"r".repeat(256)] {
        assert!(check_reference(bad).is_err(), "{bad}");
    }
    for bad in ["pk_test_abcdef", "sk_", "sk_test ", "sk_live_\n123"] {
        assert!(ApiKey::parse(bad).is_err(), "{bad}");
    }
    let key = ApiKey::parse(KEY).unwrap();
    assert!(key.is_test_mode());
    assert!(!ApiKey::parse("sk_live_0123456789").unwrap().is_test_mode());
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    let config = StripeConfig::new("https://api.stripe.com", key);
    assert!(!format!("{config:?}").contains(KEY));
    assert!(!format!("{:?}", StripePsp::new(config).unwrap()).contains(KEY));
    assert_eq!(
        PaymentIntentStatus::parse("requires_capture"),
        PaymentIntentStatus::Other("requires_capture".to_owned())
    );
    assert_eq!(
        PaymentIntentStatus::parse("requires_action").as_str(),
        "requires_action"
    );
}

#[test]
fn base_urls_must_be_https_or_loopback() {
    let ok = [
        "https://api.stripe.com",
        "https://psp.example/prefix/",
        "http://127.0.0.1:8420",
        "http://localhost:1",
        "http://[::1]:8420",
    ];
    for url in ok {
        assert!(
            StripePsp::new(StripeConfig::new(url, ApiKey::parse(KEY).unwrap())).is_ok(),
            "{url}"
        );
    }
    let bad = [
        "http://api.stripe.com",
        "http://10.0.0.1",
        "ftp://127.0.0.1",
        "https://u:p@api.stripe.com",
        "https://api.stripe.com/?x=1",
        "not a url",
    ];
    for url in bad {
        assert!(
            StripePsp::new(StripeConfig::new(url, ApiKey::parse(KEY).unwrap())).is_err(),
            "{url}"
        );
    }
    let mut c = StripeConfig::new("https://api.stripe.com", ApiKey::parse(KEY).unwrap());
    c.request_timeout_secs = 0;
    assert!(StripePsp::new(c).is_err());
}

/// Serves one canned HTTP response per connection, forever; returns the base URL.
async fn canned(status_line: &'static str, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 16 * 1024];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

fn psp(url: &str) -> StripePsp {
    StripePsp::new(StripeConfig::new(url, ApiKey::parse(KEY).unwrap())).unwrap()
}

#[tokio::test]
async fn transport_and_server_failures_map_to_typed_errors() {
    // Nothing listens on port 9 (discard) on loopback here: connection refused.
    let err = psp("http://127.0.0.1:9")
        .retrieve_payment_intent("pi_1")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PspError::Unavailable {
            reason: "connection failed"
        }
    );

    let url = canned(
        "503 Service Unavailable",
        r#"{"error":{"type":"api_error"}}"#.to_owned(),
    )
    .await;
    let err = psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err();
    assert!(matches!(err, PspError::Unavailable { .. }), "{err:?}");

    let url = canned("429 Too Many Requests", "{}".to_owned()).await;
    assert!(matches!(
        psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err(),
        PspError::Unavailable { .. }
    ));

    // Real Stripe's 401 message quotes a masked key: never surfaced.
    let url = canned("401 Unauthorized", r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****6789"}}"#.to_owned()).await;
    let err = psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err();
    assert!(matches!(err, PspError::Unexpected { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("sk_test"));

    // A card_error is a decline, with the decline code preferred; odd characters dropped.
    let url = canned("402 Payment Required", r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"Stolen_Card<script>"}}"#.to_owned()).await;
    let err = psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err();
    assert_eq!(
        err,
        PspError::Declined {
            code: "tolen_ardscript".to_owned()
        }
    );

    // Oversized response: refused without reading it all.
    let huge = format!(r#"{{"id":"pi_1","pad":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let url = canned("200 OK", huge).await;
    let err = psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err();
    assert_eq!(
        err,
        PspError::Unexpected {
            reason: "response body too large"
        }
    );

    // 200 with the wrong shape.
    let url = canned("200 OK", r#"{"id":"pi_1","status":"succeeded"}"#.to_owned()).await;
    assert!(matches!(
        psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err(),
        PspError::Unexpected { .. }
    ));
    let url = canned("200 OK", "not json".to_owned()).await;
    assert!(matches!(
        psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err(),
        PspError::Unexpected { .. }
    ));

    // A redirect is not followed (the Authorization header stays home).
    let url = canned("302 Found", "{}".to_owned()).await;
    assert!(matches!(
        psp(&url).retrieve_payment_intent("pi_1").await.unwrap_err(),
        PspError::Unexpected { .. }
    ));
}
