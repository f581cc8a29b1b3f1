use bastion_guard::{DlpVerdict, EntityKind, dlp_check, dlp_verdict, redact};

use crate::detect::{JWT, PEM};

#[test]
fn a5_secret_shaped_strings_in_outputs_are_blocked() {
    let cases = [
        (
            "Sure! My configuration: STRIPE_KEY=sk_live_51HxYzAbCdEfGhIjKlMnOpQr".to_owned(),
            EntityKind::ApiKey,
        ),
        (
            "the webhook secret is whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            EntityKind::ApiKey,
        ),
        ("aws: AKIAIOSFODNN7EXAMPLE".to_owned(), EntityKind::ApiKey),
        (format!("here is the key\n{PEM}\n"), EntityKind::PrivateKey),
        (format!("Authorization: Bearer {JWT}"), EntityKind::Jwt),
        (
            "password = Zq8xN3vR7tLw2pKc9YhB4mFd6sJg1uEa".to_owned(),
            EntityKind::HighEntropy,
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(
            dlp_verdict(&text),
            DlpVerdict::Block { kinds: vec![kind] },
            "{text}"
        );
    }
}

#[test]
fn ordinary_answers_and_pii_are_not_dlp_findings() {
    for text in [
        "Your quote #1042 totals 1,200.00 EUR and is due on 2026-12-01.",
        "Contact jane@example.com or call +1 415-555-2671.",
        "See https://docs.example.com/guide/getting-started for details.",
        "",
    ] {
        assert_eq!(dlp_verdict(text), DlpVerdict::Clean, "{text}");
        assert!(dlp_check(text).is_empty());
    }
}

#[test]
fn verdict_lists_each_kind_once_and_redact_replaces_spans() {
    let text =
        format!("a {JWT} b sk_test_4eC39HqLyjWDarjtT1zdp7dc c sk_test_4eC39HqLyjWDarjtT1zdp7dd");
    let findings = dlp_check(&text);
    assert_eq!(findings.len(), 3);
    let verdict = DlpVerdict::from_findings(&findings);
    assert!(verdict.is_block());
    assert_eq!(
        verdict,
        DlpVerdict::Block {
            kinds: vec![EntityKind::Jwt, EntityKind::ApiKey]
        }
    );
    assert_eq!(
        redact(&text, &findings),
        "a [REDACTED:JWT] b [REDACTED:API_KEY] c [REDACTED:API_KEY]"
    );
}
