//! Standard Webhooks: P1 (empty or truncated signatures), strict parsing, the two-sided
//! window, rotation, secrets.

use bastion_payments::webhook::standard::{self, SIGNATURE_ENTRIES_MAX};
use bastion_payments::webhook::{StandardSecret, WebhookError};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const T: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"type":"invoice.paid","timestamp":"2023-11-14T22:13:20Z","data":{}}"#;

fn secret() -> StandardSecret {
    StandardSecret::parse(SECRET).unwrap()
}

fn verify_at(id: &str, ts: &str, sig: &str, now: i64) -> Result<i64, WebhookError> {
    standard::verify(id, ts, sig, BODY, &[secret()], 300, now)
}

fn ts() -> String {
    T.to_string()
}

#[test]
fn p1_empty_or_truncated_signature_is_rejected() {
    for sig in ["v1,", "v1,t"] {
        let err = verify_at(ID, &ts(), sig, T).unwrap_err();
        assert!(
            matches!(err, WebhookError::Malformed(_)),
            "{sig:?} gave {err:?}"
        );
    }
    // Every proper prefix of the right signature is refused, and so is the header when
    // a good entry sits next to a truncated one.
    let good = standard::sign(&secret(), ID, T, BODY);
    for cut in 3..good.len() {
        let err = verify_at(ID, &ts(), &good[..cut], T).unwrap_err();
        assert!(
            matches!(err, WebhookError::Malformed(_)),
            "cut {cut}: {err:?}"
        );
    }
    assert_eq!(verify_at(ID, &ts(), &good, T), Ok(T));
    assert!(verify_at(ID, &ts(), &format!("{good} v1,"), T).is_err());
    assert!(verify_at(ID, &ts(), &format!("v1,t {good}"), T).is_err());
}

#[test]
fn window_is_two_sided() {
    let good = standard::sign(&secret(), ID, T, BODY);
    assert_eq!(verify_at(ID, &ts(), &good, T + 300), Ok(T));
    assert_eq!(verify_at(ID, &ts(), &good, T - 300), Ok(T));
    for now in [T + 301, T - 301] {
        assert_eq!(
            verify_at(ID, &ts(), &good, now),
            Err(WebhookError::TimestampOutsideTolerance {
                timestamp: T,
                now,
                tolerance_secs: 300
            })
        );
    }
}

#[test]
fn rotation_and_other_versions() {
    let old = StandardSecret::from_key_bytes(vec![1; 32]).unwrap();
    let new = StandardSecret::from_key_bytes(vec![2; 32]).unwrap();
    let header = format!(
        "{} {}",
        standard::sign(&old, ID, T, BODY),
        standard::sign(&new, ID, T, BODY)
    );
    for secrets in [vec![old.clone()], vec![new.clone()], vec![secret(), new]] {
        assert_eq!(
            standard::verify(ID, &ts(), &header, BODY, &secrets, 300, T),
            Ok(T)
        );
    }
    assert_eq!(
        verify_at(ID, &ts(), &header, T),
        Err(WebhookError::NoMatchingSignature)
    );
    // v1a (asymmetric) and future versions are ignored; alone they match nothing.
    let good = standard::sign(&secret(), ID, T, BODY);
    let v1a = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==";
    assert_eq!(verify_at(ID, &ts(), &format!("{v1a} {good}"), T), Ok(T));
    assert_eq!(
        verify_at(ID, &ts(), v1a, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn malformed_inputs_are_refused() {
    let good = standard::sign(&secret(), ID, T, BODY);
    let b64 = good.strip_prefix("v1,").unwrap();
    let sigs = [
        String::new(),
        format!(" {good}"),                          // leading space: empty entry
        format!("{good}  {good}"),                   // double space
        format!("v1 {b64}"),                         // no comma
        format!(",{b64}"),                           // no version
        format!("v1,{}", b64.trim_end_matches('=')), // unpadded
        format!("v1,{}=", "-".repeat(43)),           // url-safe alphabet
        format!("v1,{b64}="),                        // over-long
        format!("v1,{}", hex::encode([7_u8; 32])),   // hex, not base64
    ];
    for sig in &sigs {
        let err = verify_at(ID, &ts(), sig, T).unwrap_err();
        assert!(
            matches!(err, WebhookError::Malformed(_)),
            "{sig:?} gave {err:?}"
        );
    }
    for bad_ts in [
        "",
        "01700000000",
        "+1700000000",
        "1700000000.0",
        " 1700000000",
    ] {
        let err = verify_at(ID, bad_ts, &good, T).unwrap_err();
        assert!(matches!(err, WebhookError::Malformed(_)), "{bad_ts:?}");
    }
    let long_id = "m".repeat(257);
    for bad_id in ["", "msg 1", "msg\u{e9}", long_id.as_str()] {
        let err = verify_at(bad_id, &ts(), &good, T).unwrap_err();
        assert!(matches!(err, WebhookError::Malformed(_)), "{bad_id:?}");
    }
    let many = vec![good.clone(); SIGNATURE_ENTRIES_MAX + 1].join(" ");
    assert_eq!(
        verify_at(ID, &ts(), &many, T),
        Err(WebhookError::Malformed(
            "webhook-signature header has too many entries"
        ))
    );
    let enough = vec![good; SIGNATURE_ENTRIES_MAX].join(" ");
    assert_eq!(verify_at(ID, &ts(), &enough, T), Ok(T));
}

#[test]
fn signed_content_binds_id_timestamp_and_body() {
    let good = standard::sign(&secret(), ID, T, BODY);
    assert_eq!(
        verify_at("msg_other", &ts(), &good, T),
        Err(WebhookError::NoMatchingSignature)
    );
    assert_eq!(
        verify_at(ID, &(T + 1).to_string(), &good, T),
        Err(WebhookError::NoMatchingSignature)
    );
    assert_eq!(
        standard::verify(ID, &ts(), &good, b"{}", &[secret()], 300, T),
        Err(WebhookError::NoMatchingSignature)
    );
}

#[test]
fn secrets_are_parsed_strictly() {
    // Padded and unpadded base64 of the same key are the same key.
    let unpadded = StandardSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert_eq!(
        StandardSecret::from_key_bytes(vec![0; 24]).unwrap(),
        unpadded
    );
    let padded = format!("whsec_{}==", "A".repeat(38));
    assert!(StandardSecret::parse(&padded).is_ok());
    for bad in [
        "",
        "whsec_",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",     // no prefix
        "whsec_not base64 at all!!!!!!!!!!!!",  // not base64
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 22 bytes: too short
    ] {
        assert!(StandardSecret::parse(bad).is_err(), "{bad:?}");
    }
    let too_long = format!("whsec_{}", "A".repeat(90));
    assert!(StandardSecret::parse(&too_long).is_err());
    assert!(StandardSecret::from_key_bytes(vec![0; 65]).is_err());
    assert!(StandardSecret::from_key_bytes(vec![0; 64]).is_ok());
}
