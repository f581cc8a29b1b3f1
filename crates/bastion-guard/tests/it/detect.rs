use bastion_guard::{
    EntityKind, Finding, card_brand_ok, luhn_valid, resolve_overlaps, shannon_entropy_bits,
    ssn_valid,
};

use crate::{found, found_kind};

#[test]
fn luhn_valid_test_cards_are_found_in_every_layout() {
    // PSP test numbers (Visa, Mastercard 5- and 2-series, Amex, Discover, JCB, Diners, 3DS).
    for card in [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "2223 0031 2200 3222",
        "3782 822463 10005",
        "6011 1111 1111 1117",
        "3530 1113 3330 0000",
        "3056 9309 0259 04",
        "4000 0027 6000 3184",
        "4222222222222",
    ] {
        let text = format!("please charge {card} today");
        assert_eq!(
            found_kind(&text, EntityKind::Card),
            vec![card.to_owned()],
            "{card}"
        );
    }
}

#[test]
fn luhn_invalid_or_unknown_brand_numbers_are_not_cards() {
    for not_card in [
        "4111 1111 1111 1112",     // Luhn fails
        "1234 5678 9012 3456",     // no brand
        "4111 1111-1111 1111",     // mixed separators
        "0000 0000 0000 0000",     // Luhn-valid zeros, no brand
        "41111111111111111111111", // too long a run
        "3782 822463 1000",        // Amex one digit short
    ] {
        let text = format!("ref {not_card} end");
        assert!(found_kind(&text, EntityKind::Card).is_empty(), "{not_card}");
    }
    assert!(luhn_valid(b"79927398713"));
    assert!(!luhn_valid(b"79927398710"));
    assert!(!luhn_valid(b""));
    assert!(card_brand_ok(b"4111111111111111"));
    assert!(!card_brand_ok(b"411111111111111")); // Visa 15 digits
}

#[test]
fn card_inside_a_longer_digit_group_is_found_on_group_bounds() {
    let text = "order 12 4111 1111 1111 1111 thanks";
    assert_eq!(
        found_kind(text, EntityKind::Card),
        vec!["4111 1111 1111 1111"]
    );
}

#[test]
fn published_example_ibans_are_found() {
    for iban in [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
        "CH93 0076 2011 6238 5295 7",
        "BE68 5390 0754 7034",
    ] {
        let text = format!("wire to {iban} please");
        assert_eq!(
            found_kind(&text, EntityKind::Iban),
            vec![iban.to_owned()],
            "{iban}"
        );
    }
}

#[test]
fn corrupted_ibans_are_not_found() {
    for bad in [
        "GB82 WEST 1234 5698 7654 33", // check digits
        "GB83 WEST 1234 5698 7654 32",
        "DE89 3704 0044 0532 0130 0",  // length for DE
        "XX82 WEST 1234 5698 7654 32", // no such country
        "GB82 WEST 1234 5698 7654",    // too short
    ] {
        let text = format!("wire to {bad} please");
        assert!(found_kind(&text, EntityKind::Iban).is_empty(), "{bad}");
    }
}

#[test]
fn iban_followed_by_a_capital_word_keeps_its_own_length() {
    let text = "GB82 WEST 1234 5698 7654 32 THEN stop";
    assert_eq!(
        found_kind(text, EntityKind::Iban),
        vec!["GB82 WEST 1234 5698 7654 32"]
    );
}

#[test]
fn ssn_rules_exclude_never_issued_numbers() {
    assert_eq!(
        found_kind("ssn 123-45-6789.", EntityKind::Ssn),
        vec!["123-45-6789"]
    );
    assert_eq!(
        found_kind("ssn 536 22 8726", EntityKind::Ssn),
        vec!["536 22 8726"]
    );
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",
        "123-45 6789",
        "123-45-6789-1",
    ] {
        assert!(
            found_kind(&format!("ssn {bad} x"), EntityKind::Ssn).is_empty(),
            "{bad}"
        );
    }
    assert!(ssn_valid("899-99-9999"));
    assert!(!ssn_valid("899-99-999"));
}

#[test]
fn emails_are_found_with_exact_bounds() {
    let text = "mail <Jane.Doe+quotes@Example.co.uk>, or ops@acme.io. Not: a@b, x@@y.com";
    assert_eq!(
        found_kind(text, EntityKind::Email),
        vec!["Jane.Doe+quotes@Example.co.uk", "ops@acme.io"]
    );
    assert!(found_kind("user@-bad.com", EntityKind::Email).is_empty());
    assert!(found_kind("jane.@example.com", EntityKind::Email).is_empty());
}

#[test]
fn phone_numbers_in_e164_and_national_formats() {
    for phone in [
        "+1 415-555-2671",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "+44 20 7946 0958",
        "020 7946 0958",
        "+49 30 901820",
        "+33 1 42 68 53 00",
        "+44 (0)20 7946 0958",
        "4155552671",
    ] {
        let text = format!("call {phone} now");
        assert_eq!(
            found_kind(&text, EntityKind::Phone),
            vec![phone.to_owned()],
            "{phone}"
        );
    }
    for not_phone in ["2024-01-15", "12345", "123-456-789", "v1.2.3.4567890"] {
        let text = format!("see {not_phone} ok");
        assert!(
            found_kind(&text, EntityKind::Phone).is_empty(),
            "{not_phone}"
        );
    }
}

#[test]
fn ip_addresses_parse_with_std() {
    assert_eq!(
        found_kind("from 192.168.1.20 and 8.8.8.8;", EntityKind::Ipv4),
        vec!["192.168.1.20", "8.8.8.8"]
    );
    for bad in ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4"] {
        assert!(
            found_kind(&format!("ip {bad} x"), EntityKind::Ipv4).is_empty(),
            "{bad}"
        );
    }
    assert_eq!(
        found_kind(
            "v6 2001:db8:85a3::8a2e:370:7334 and fe80::1, ::1.",
            EntityKind::Ipv6
        ),
        vec!["2001:db8:85a3::8a2e:370:7334", "fe80::1", "::1"]
    );
    for not_ip in ["12:30:45", "std::net::Ipv6Addr", "a::b::c"] {
        assert!(
            found_kind(&format!("t {not_ip} x"), EntityKind::Ipv6).is_empty(),
            "{not_ip}"
        );
    }
}

pub const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----";
pub const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn secret_shapes_are_found() {
    let text = format!("key:\n{PEM}\nthat was it");
    assert_eq!(
        found_kind(&text, EntityKind::PrivateKey),
        vec![PEM.to_owned()]
    );
    let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n";
    assert_eq!(
        found_kind(&format!("{rsa}\n\n(truncated)"), EntityKind::PrivateKey),
        vec![format!("{rsa}\n\n")]
    );
    assert_eq!(
        found_kind(&format!("Bearer {JWT}"), EntityKind::Jwt),
        vec![JWT]
    );
    for key in [
        "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
        "sk-proj-abcdefghijklmnopqrstuvwx",
        "glpat-abcdefghij0123456789",
    ] {
        assert_eq!(
            found_kind(&format!("key={key} "), EntityKind::ApiKey),
            vec![key.to_owned()],
            "{key}"
        );
    }
    assert!(found_kind("pk_live_51HxYzAbCdEfGhIjKlMnOpQr", EntityKind::ApiKey).is_empty());
}

#[test]
fn jwt_needs_a_json_header_with_alg() {
    // {"typ":"JWT"} has no alg.
    let no_alg = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln";
    assert!(found_kind(no_alg, EntityKind::Jwt).is_empty());
}

#[test]
fn high_entropy_tokens_above_the_threshold() {
    let token = "Zq8xN3vR7tLw2pKc9YhB4mFd6sJg1uEa";
    assert_eq!(
        found_kind(&format!("token {token}."), EntityKind::HighEntropy),
        vec![token]
    );
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_eq!(found_kind(hex, EntityKind::HighEntropy), vec![hex]);
    for low in [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ThisIsAVeryLongIdentifierNameForSomething",
        "/usr/local/lib/python3/site-packages/requests",
        "550e8400-e29b-41d4-a716-446655440000",
    ] {
        assert!(found_kind(low, EntityKind::HighEntropy).is_empty(), "{low}");
    }
    assert!(shannon_entropy_bits("abcd") > 1.99 && shannon_entropy_bits("abcd") < 2.01);
    assert!(shannon_entropy_bits("").abs() < f64::EPSILON);
}

#[test]
fn overlaps_go_to_the_more_specific_kind() {
    // The Stripe key is also a high-entropy run: the API key wins.
    let key = "sk_live_51HxYzAbCdEfGhIjKlMnOpQr0123456789";
    assert_eq!(found(key), vec![(EntityKind::ApiKey, key.to_owned())]);
    let f = |kind, start, end| Finding {
        kind,
        start,
        end,
        score: 1.0,
    };
    let resolved = resolve_overlaps(vec![
        f(EntityKind::Phone, 0, 10),
        f(EntityKind::Card, 0, 19),
        f(EntityKind::HighEntropy, 15, 40),
        f(EntityKind::Email, 50, 60),
        f(EntityKind::Email, 50, 60),
    ]);
    assert_eq!(
        resolved,
        vec![f(EntityKind::Card, 0, 19), f(EntityKind::Email, 50, 60)]
    );
}

#[test]
fn a3_prompt_with_card_ssn_email_and_iban() {
    let text = "Hi, I'm Jane (jane.doe@example.com). Card 4111 1111 1111 1111, SSN 123-45-6789, \
                IBAN DE89 3704 0044 0532 0130 00. Call +1 415-555-2671.";
    let kinds: Vec<EntityKind> = found(text).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        vec![
            EntityKind::Email,
            EntityKind::Card,
            EntityKind::Ssn,
            EntityKind::Iban,
            EntityKind::Phone
        ]
    );
}

#[test]
fn offsets_are_bytes_and_survive_multibyte_text() {
    let text = "Grüße — écrivez à zoe@example.com ✉ ou 4111 1111 1111 1111 €";
    let d = bastion_guard::Detector::new().unwrap();
    let f = d.detect(text);
    assert_eq!(f.len(), 2);
    assert_eq!(&text[f[0].start..f[0].end], "zoe@example.com");
    assert_eq!(&text[f[1].start..f[1].end], "4111 1111 1111 1111");
}

#[test]
fn many_unterminated_pem_headers_are_handled_quickly() {
    let text = "-----BEGIN PRIVATE KEY-----.\n".repeat(20_000);
    let d = bastion_guard::Detector::new().unwrap();
    let f = d.detect_kinds(&text, &[EntityKind::PrivateKey]);
    assert_eq!(f.len(), 20_000);
}

#[test]
fn ordinary_business_text_has_no_findings() {
    let text = "Meeting at 12:30 on 2024-01-15 (or 15.01.2024). Total $1,234.56 incl. VAT of 19%; \
                invoice INV-2024-000123, PO 4500012345, ISO 27001 and RFC 9457 apply. Version \
                v1.2.3 (build 20240115.3) ships to ZIP 94107. Call 1-800-FLOWERS. Colour #ff0000. \
                See https://example.com/docs?page=2 and std::collections::HashMap. Quote Q-30595, \
                order 1234567, ticket #998877, 3 × 25 kg at 12.50 EUR.";
    assert_eq!(found(text), vec![]);
}

#[test]
fn detector_and_masker_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<bastion_guard::Detector>();
    send_sync::<bastion_guard::Masker>();
    send_sync::<bastion_guard::UrlAllowlist>();
    let d = bastion_guard::Detector::shared().unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_eq!(d.detect("call +1 415-555-2671").len(), 1));
        }
    });
}
