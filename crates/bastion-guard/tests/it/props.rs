use bastion_guard::{
    Detector, EntityKind, MaskMode, Masker, UrlAllowlist, escape, luhn_valid, neutralize,
};
use proptest::prelude::*;

/// Appends the Luhn check digit to `body`.
fn with_check_digit(body: &[u8]) -> Vec<u8> {
    (0..=9u8)
        .map(|d| {
            let mut v = body.to_vec();
            v.push(b'0' + d);
            v
        })
        .find(|v| luhn_valid(v))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn detector_spans_are_sorted_disjoint_and_on_char_boundaries(text in "\\PC{0,200}") {
        let d = Detector::new().unwrap();
        let f = d.detect(&text);
        for w in f.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        for x in &f {
            prop_assert!(x.start < x.end && x.end <= text.len());
            prop_assert!(text.is_char_boundary(x.start) && text.is_char_boundary(x.end));
        }
    }

    #[test]
    fn any_luhn_valid_visa_is_found_and_masked(body in proptest::collection::vec(b'0'..=b'9', 14)) {
        let mut digits = vec![b'4'];
        digits.extend_from_slice(&body);
        let card = String::from_utf8(with_check_digit(&digits)).unwrap();
        let text = format!("pay {card} now");
        let mut m = Masker::new(MaskMode::Counter).unwrap();
        let masked = m.mask_text(&text).unwrap();
        prop_assert_eq!(&masked, "pay <CARD_1> now");
        prop_assert_eq!(m.restore(&masked, |k| k == EntityKind::Card), text);
    }

    #[test]
    fn a_changed_digit_breaks_luhn(body in proptest::collection::vec(b'0'..=b'9', 15), pos in 0usize..16, delta in 1u8..10) {
        let card = with_check_digit(&body);
        let mut bad = card.clone();
        bad[pos] = b'0' + (bad[pos] - b'0' + delta) % 10;
        prop_assert!(!luhn_valid(&bad));
    }

    #[test]
    fn mask_then_restore_all_is_identity_for_canonical_values(
        user in "[a-z]{1,10}", host in "[a-z]{1,10}", n in 0usize..3
    ) {
        let email = format!("{user}@{host}.com");
        let text = std::iter::repeat_n(email.as_str(), n + 1).collect::<Vec<_>>().join(" and ");
        let mut m = Masker::new(MaskMode::Counter).unwrap();
        let masked = m.mask_text(&text).unwrap();
        prop_assert!(!masked.contains('@'));
        prop_assert_eq!(m.len(), 1);
        prop_assert_eq!(m.restore(&masked, |_| true), text);
    }

    #[test]
    fn neutralized_output_names_no_blocked_host(
        prefix in "[a-z ]{0,20}", path in "[a-z0-9/?=&]{0,20}", form in 0usize..6
    ) {
        let url = format!("https://evil.example/{path}");
        let text = match form {
            0 => format!("{prefix}![x]({url})"),
            1 => format!("{prefix}[x]({url})"),
            2 => format!("{prefix}![x][r]\n\n[r]: {url}\n"),
            3 => format!("{prefix}<{url}>"),
            4 => format!("{prefix}<img src=\"{url}\">"),
            _ => format!("{prefix} {url}"),
        };
        let out = neutralize(&text, &UrlAllowlist::none()).unwrap();
        prop_assert!(!out.text.contains("evil.example"), "{}", out.text);
    }

    #[test]
    fn escaped_content_has_no_double_angle(text in "[<a ]{0,40}") {
        prop_assert!(!escape(&text).contains("<<"));
    }
}
