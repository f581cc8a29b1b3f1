//! The vendor-quote example loads cleanly and resolves as documented.

use bastion_app::{
    AppSpec, FieldType, ListScope, Risk, Sensitivity, ToolKind, record_output, schema_violations,
};
use bastion_types::{Record, RecordId, UserId};
use serde_json::json;

use crate::example_dir;

#[test]
fn vendor_quote_loads_with_no_findings() {
    let spec = AppSpec::load(&example_dir()).unwrap_or_else(|f| {
        panic!(
            "findings:\n{}",
            f.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(spec.name, "vendor-quote");
    assert_eq!(spec.region, "eu");
    let roles: Vec<&str> = spec.roles.keys().map(|r| r.as_str()).collect();
    assert_eq!(roles, ["buyer", "finance", "seller"]);
    let tools: Vec<&str> = spec.tools.keys().map(|r| r.as_str()).collect();
    assert_eq!(
        tools,
        [
            "accept_proposal",
            "charge_deposit",
            "create_quote",
            "draft_proposal",
            "get_quote",
            "issue_refund",
            "list_quotes",
            "submit_proposal"
        ]
    );
    assert_eq!(spec.policies.len(), 1);
    assert_eq!(
        spec.tool("charge_deposit").unwrap().kind,
        ToolKind::PaymentCharge
    );
    assert_eq!(
        spec.tool("issue_refund").unwrap().kind,
        ToolKind::PaymentRefund
    );
    assert_eq!(spec.payments.velocity.len(), 3);
    assert_eq!(
        spec.payments.velocity[1],
        bastion_app::VelocityRule {
            subject: bastion_app::VelocitySubject::Card,
            window_secs: 600,
            max_count: 5,
            max_amount_minor: 2_000_000,
        }
    );

    let quote = spec.entity("quote").unwrap();
    assert_eq!(quote.type_name(), "Quote");
    assert_eq!(quote.fields["seller"].ty, FieldType::User);
    assert_eq!(quote.fields["contact_email"].sensitivity, Sensitivity::Pii);
    let proposal = spec.entity("proposal").unwrap();
    assert_eq!(proposal.fields["quote_id"].entity.as_deref(), Some("quote"));

    let create = spec.tool("create_quote").unwrap();
    assert_eq!(create.kind, ToolKind::RecordCreate);
    assert_eq!(create.risk, Risk::Low);
    assert_eq!(create.set.get("status"), Some(&json!("open")));
    let caller = UserId::new_random();
    assert_eq!(
        create.resolved_set(&caller).get("buyer"),
        Some(&json!(caller.to_string()))
    );

    let submit = spec.tool("submit_proposal").unwrap();
    assert_eq!(submit.parent.as_deref(), Some("quote_id"));
    let accept = spec.tool("accept_proposal").unwrap();
    assert_eq!(accept.kind, ToolKind::RecordUpdate);
    assert_eq!(accept.set.get("status"), Some(&json!("accepted")));

    let list = spec.tool("list_quotes").unwrap();
    let scope: Vec<(&str, &ListScope)> = list.scope.iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(
        scope,
        [
            ("buyer", &ListScope::Owner),
            ("finance", &ListScope::Tenant),
            ("seller", &ListScope::Field("seller".into()))
        ]
    );
}

#[test]
fn example_validators_accept_good_input_and_refuse_bad_input() {
    let spec = AppSpec::load(&example_dir()).unwrap();
    let v = spec.tool("create_quote").unwrap().validators().unwrap();
    let good = json!({
        "title": "Office chairs", "seller": UserId::new_random().to_string(),
        "line_items": [{"description": "chair", "quantity": 10, "unit_price_minor": 12900}],
        "amount_minor": 129000, "currency": "EUR",
        "contact_email": "buyer@example.com", "contact_phone": "+49 30 1234567", "note": "asap"
    });
    assert!(schema_violations(&v.input, &good).is_empty());

    let mut bad = good.clone();
    bad["currency"] = json!("euro");
    bad["owner_id"] = json!(UserId::new_random().to_string());
    bad["contact_email"] = json!("not-an-email-but-private");
    let out = schema_violations(&v.input, &bad);
    let pointers: Vec<&str> = out.iter().map(|o| o.pointer.as_str()).collect();
    assert!(pointers.contains(&"/currency"), "{out:?}");
    assert!(pointers.contains(&"/contact_email"), "{out:?}");
    assert!(
        pointers.contains(&""),
        "additionalProperties at the root: {out:?}"
    );
    assert!(
        out.iter()
            .all(|o| !o.message.contains("not-an-email-but-private")),
        "{out:?}"
    );

    // The output shape of a stored record validates against the quote output schema.
    let record = Record {
        id: RecordId::new_random(),
        entity: "quote".into(),
        owner_id: caller_id(),
        data: {
            let mut d = good.clone();
            d["buyer"] = json!(UserId::new_random().to_string());
            d["status"] = json!("open");
            d
        },
        version: 1,
        created_at: 1_764_400_000,
        updated_at: 1_764_400_000,
    };
    let shown = record_output(&record);
    assert_eq!(shown["version"], json!(1));
    assert_eq!(shown["contact_email"], json!("buyer@example.com"));
    assert_eq!(schema_violations(&v.output, &shown), vec![]);
}

fn caller_id() -> UserId {
    UserId::new_random()
}

#[test]
fn every_example_tool_has_compiled_validators() {
    let spec = AppSpec::load(&example_dir()).unwrap();
    let all = spec.validators().unwrap();
    assert_eq!(all.len(), spec.tools.len());
    let accept = &all
        .iter()
        .find(|(k, _)| k.as_str() == "accept_proposal")
        .unwrap()
        .1;
    assert!(
        schema_violations(
            &accept.input,
            &json!({"id": RecordId::new_random().to_string()})
        )
        .is_empty()
    );
    let v = schema_violations(&accept.input, &json!({"id": "x", "status": "accepted"}));
    assert_eq!(v.len(), 2, "{v:?}");
}
