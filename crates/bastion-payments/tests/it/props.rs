//! Property tests: a delivery signed by Bastion verifies, and flipping any one byte of the
//! body, the signature or the timestamp (or the Standard Webhooks id) makes it fail.
//! Arbitrary header strings never panic the parsers.

use bastion_payments::webhook::{StandardSecret, StripeSecret, WebhookError, standard, stripe};
use proptest::prelude::*;

const T: i64 = 1_700_000_000;

fn stripe_secret() -> StripeSecret {
    StripeSecret::parse("whsec_prop_secret_0123456789").unwrap()
}

fn standard_secret() -> StandardSecret {
    StandardSecret::from_key_bytes((0..32).collect()).unwrap()
}

/// Flips the bits of `mask` (never 0) in byte `index % len`.
fn flip(bytes: &mut [u8], index: usize, mask: u8) {
    let i = index % bytes.len();
    bytes[i] ^= mask;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn stripe_flipped_body_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<usize>(),
        mask in 1_u8..,
    ) {
        let header = stripe::sign(&stripe_secret(), T, &body);
        prop_assert_eq!(stripe::verify(&header, &body, &[stripe_secret()], 300, T), Ok(T));
        let mut tampered = body.clone();
        flip(&mut tampered, index, mask);
        prop_assert_eq!(
            stripe::verify(&header, &tampered, &[stripe_secret()], 300, T),
            Err(WebhookError::NoMatchingSignature)
        );
    }

    #[test]
    fn stripe_flipped_signature_or_timestamp_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        index in any::<usize>(),
        mask in 1_u8..,
    ) {
        let header = stripe::sign(&stripe_secret(), T, &body);
        let mut bytes = header.clone().into_bytes();
        // Positions after "t=": the timestamp digits, ",v1=" and the 64 hex characters.
        let i = 2 + index % (bytes.len() - 2);
        bytes[i] ^= mask;
        // A flip may leave invalid UTF-8: the HTTP layer would refuse that header outright.
        if let Ok(tampered) = String::from_utf8(bytes) {
            prop_assert!(stripe::verify(&tampered, &body, &[stripe_secret()], 300, T).is_err());
        }
    }

    #[test]
    fn standard_flipped_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        part in 0_usize..4,
        index in any::<usize>(),
        mask in 1_u8..,
    ) {
        let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
        let ts = T.to_string();
        let sig = standard::sign(&standard_secret(), id, T, &body);
        let secrets = [standard_secret()];
        prop_assert_eq!(standard::verify(id, &ts, &sig, &body, &secrets, 300, T), Ok(T));
        let (mut id_b, mut ts_b, mut sig_b, mut body_b) =
            (id.as_bytes().to_vec(), ts.clone().into_bytes(), sig.clone().into_bytes(), body.clone());
        match part {
            0 => flip(&mut id_b, index, mask),
            1 => flip(&mut ts_b, index, mask),
            2 => flip(&mut sig_b, index, mask),
            _ => flip(&mut body_b, index, mask),
        }
        let (Ok(id_s), Ok(ts_s), Ok(sig_s)) =
            (String::from_utf8(id_b), String::from_utf8(ts_b), String::from_utf8(sig_b))
        else {
            return Ok(());
        };
        prop_assert!(standard::verify(&id_s, &ts_s, &sig_s, &body_b, &secrets, 300, T).is_err());
    }

    #[test]
    fn parsers_never_panic(header in ".{0,300}", sig in "[ -~]{0,200}") {
        let _ = stripe::parse_header(&header);
        let _ = standard::parse_signature_header(&header);
        let _ = stripe::verify(&header, b"{}", &[stripe_secret()], 300, T);
        let _ = standard::verify("msg_1", "1700000000", &sig, b"{}", &[standard_secret()], 300, T);
    }

    #[test]
    fn stripe_like_headers_never_panic(
        t in "[0-9]{0,20}",
        v1 in "[0-9a-f]{0,70}",
        extra in "[a-z0-9=,]{0,40}",
    ) {
        let header = format!("t={t},v1={v1},{extra}");
        let r = stripe::verify(&header, b"{}", &[stripe_secret()], 300, T);
        prop_assert!(r.is_err());
    }
}
