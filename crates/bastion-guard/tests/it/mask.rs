use bastion_guard::{EntityKind, GuardError, HashKey, MaskMode, Masker};
use serde_json::json;

const PROMPT: &str = "Card 4111 1111 1111 1111 for jane@example.com; again 4111-1111-1111-1111, \
                      SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, mail JANE@example.com";

#[test]
fn placeholders_are_stable_within_a_conversation() {
    let mut m = Masker::new(MaskMode::Counter).unwrap();
    let masked = m.mask_text(PROMPT).unwrap();
    assert_eq!(
        masked,
        "Card <CARD_1> for <EMAIL_2>; again <CARD_1>, SSN <SSN_3>, IBAN <IBAN_4>, mail <EMAIL_2>"
    );
    // A later turn reuses the same placeholders and continues the counter.
    let next = m
        .mask_text("pay with 4111111111111111 or 5555 5555 5555 4444")
        .unwrap();
    assert_eq!(next, "pay with <CARD_1> or <CARD_5>");
    assert_eq!(m.len(), 5);
    for value in ["4111", "jane@", "123-45", "GB82", "WEST"] {
        assert!(!masked.contains(value), "{value} leaked");
    }
}

#[test]
fn restore_respects_the_predicate() {
    let mut m = Masker::new(MaskMode::Counter).unwrap();
    let masked = m.mask_text(PROMPT).unwrap();
    let all = m.restore(&masked, |_| true);
    // Each placeholder comes back as the first spelling seen.
    assert_eq!(
        all,
        "Card 4111 1111 1111 1111 for jane@example.com; again 4111 1111 1111 1111, \
         SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, mail jane@example.com"
    );
    let emails_only = m.restore(&masked, |k| k == EntityKind::Email);
    assert!(emails_only.contains("jane@example.com"));
    assert!(emails_only.contains("<CARD_1>") && emails_only.contains("<SSN_3>"));
    assert!(!emails_only.contains("4111"));
    let none = m.restore(&masked, |_| false);
    assert_eq!(none, masked);
}

#[test]
fn restore_leaves_unknown_and_forged_placeholders() {
    let mut m = Masker::new(MaskMode::Counter).unwrap();
    m.mask_text("jane@example.com").unwrap();
    let out = m.restore("<EMAIL_1> <EMAIL_9> <CARD_1> <EMAIL_1 <<EMAIL_1>>", |_| {
        true
    });
    assert_eq!(
        out,
        "jane@example.com <EMAIL_9> <CARD_1> <EMAIL_1 <jane@example.com>"
    );
}

#[test]
fn keyed_hash_mode_is_stable_across_conversations_of_a_tenant() {
    let key = [7u8; 32];
    let mut a = Masker::new(MaskMode::KeyedHash(HashKey::new(&key).unwrap())).unwrap();
    let mut b = Masker::new(MaskMode::KeyedHash(HashKey::new(&key).unwrap())).unwrap();
    let other = [8u8; 32];
    let mut c = Masker::new(MaskMode::KeyedHash(HashKey::new(&other).unwrap())).unwrap();
    let pa = a.mask_text("write to jane@example.com").unwrap();
    let pb = b.mask_text("write to Jane@Example.com").unwrap();
    let pc = c.mask_text("write to jane@example.com").unwrap();
    assert_eq!(pa, pb);
    assert_ne!(pa, pc);
    let placeholder = pa.strip_prefix("write to ").unwrap();
    assert!(placeholder.starts_with("<EMAIL_h:") && placeholder.ends_with('>'));
    assert_eq!(placeholder.len(), "<EMAIL_h:>".len() + 16);
    assert_eq!(a.restore(&pa, |_| true), "write to jane@example.com");
    assert!(matches!(
        HashKey::new(&[0u8; 16]),
        Err(GuardError::HashKeyTooShort { min: 32 })
    ));
    assert_eq!(
        format!("{:?}", HashKey::new(&key).unwrap()),
        "HashKey(<redacted>)"
    );
}

#[test]
fn sensitive_fields_are_masked_whatever_they_look_like() {
    // Key order depends on serde_json's features (sorted, or insertion order when another
    // crate of the build enables `preserve_order`), so placeholders are checked by shape and
    // by identity, not by their number.
    let mut m = Masker::new(MaskMode::Counter).unwrap();
    let doc = json!({
        "customer": {"name": "Jane Doe", "tax_id": "X-99", "notes": "card 4111 1111 1111 1111"},
        "secret_answer": ["blue", {"deep": "purple"}, 42],
        "amount": 1200,
        "name": "Jane Doe",
        "ok": true
    });
    let masked = m
        .mask_json(&doc, &["name", "tax_id", "secret_answer"])
        .unwrap();
    let field = |v: &serde_json::Value| {
        let s = v.as_str().unwrap().to_owned();
        assert!(
            s.starts_with("<FIELD_") && s.ends_with('>'),
            "{s} is not a field placeholder"
        );
        s
    };
    let name_inner = field(&masked["customer"]["name"]);
    let name_outer = field(&masked["name"]);
    assert_eq!(
        name_inner, name_outer,
        "the same value gets the same placeholder"
    );
    let mut placeholders = vec![
        name_inner.clone(),
        field(&masked["customer"]["tax_id"]),
        field(&masked["secret_answer"][0]),
        field(&masked["secret_answer"][1]["deep"]),
        field(&masked["secret_answer"][2]),
    ];
    placeholders.sort();
    placeholders.dedup();
    assert_eq!(
        placeholders.len(),
        5,
        "distinct values, distinct placeholders"
    );
    let notes = masked["customer"]["notes"].as_str().unwrap();
    assert!(
        notes.starts_with("card <CARD_") && !notes.contains("4111"),
        "{notes}"
    );
    assert_eq!(masked["amount"], 1200);
    assert_eq!(masked["ok"], true);
    let text = masked.to_string();
    assert!(!text.contains("Jane") && !text.contains("X-99") && !text.contains("purple"));
    let restored = m.restore(&text, |k| k == EntityKind::SensitiveField);
    assert!(restored.contains("Jane Doe") && restored.contains("<CARD_"));
    assert!(
        !restored.contains("4111"),
        "cards stay masked for this caller"
    );
}

#[test]
fn json_depth_is_limited() {
    let mut doc = json!("x");
    for _ in 0..100 {
        doc = json!([doc]);
    }
    let mut m = Masker::new(MaskMode::Counter).unwrap();
    assert!(matches!(
        m.mask_json(&doc, &[]),
        Err(GuardError::JsonTooDeep { .. })
    ));
}
