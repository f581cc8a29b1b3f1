//! Policy findings (file + line), the generated schema and tool listing.

use bastion_authz::{Authorizer, check};
use bastion_types::{AuthMethod, Principal, Slug, TenantId, UserId};

use crate::{vendor_quote, with_policies};

#[test]
fn vendor_quote_policies_pass_strict_validation() {
    let spec = vendor_quote();
    assert_eq!(check(&spec), vec![]);
    let authz = Authorizer::new(&spec).unwrap();
    let text = authz.schema_text();
    for needle in [
        "entity Quote",
        "entity Proposal",
        "entity User in [Role]",
        "action \"accept_proposal\"",
        "mfa_age_secs",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // pii and json fields are not given to Cedar.
    assert!(
        !text.contains("contact_email") && !text.contains("line_items"),
        "{text}"
    );
    assert_eq!(
        authz.actions(),
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
}

fn findings_for(text: &str) -> Vec<bastion_app::Finding> {
    check(&with_policies(&[("p.cedar", text)]))
}

#[test]
fn a_policy_without_id_is_a_finding_at_its_line() {
    let f = findings_for(
        "@id(\"ok\")\npermit (principal in Role::\"buyer\", action == Action::\"create_quote\", resource);\n\n// no id\npermit (principal, action == Action::\"get_quote\", resource);\n",
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].line, 5, "{f:?}");
    assert!(f[0].file.ends_with("policies/p.cedar"));
    assert!(f[0].message.contains("no `@id"), "{f:?}");
}

#[test]
fn duplicate_and_invalid_ids_are_findings() {
    let f = findings_for(
        "@id(\"a\")\npermit (principal, action == Action::\"create_quote\", resource);\n@id(\"a\")\npermit (principal, action == Action::\"list_quotes\", resource);\n@id(\"Bad Id\")\npermit (principal, action == Action::\"list_quotes\", resource);\n",
    );
    assert!(
        f.iter()
            .any(|x| x.line == 3 && x.message.contains("duplicate policy id `a`")),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|x| x.line == 5 && x.message.contains("is not valid")),
        "{f:?}"
    );
}

#[test]
fn syntax_errors_have_lines() {
    let f = findings_for(
        "@id(\"a\")\npermit (principal, action, resource)\nwhen { resource.owner == };\n",
    );
    assert!(
        f.iter()
            .any(|x| x.line == 3 && x.message.starts_with("cedar syntax")),
        "{f:?}"
    );
}

#[test]
fn type_errors_in_conditions_are_findings_at_the_condition_line() {
    let f = findings_for(
        "@id(\"seller-typo\")\npermit (principal in Role::\"seller\", action == Action::\"get_quote\", resource)\nwhen {\n  resource.sellr == principal\n};\n",
    );
    assert!(
        f.iter()
            .any(|x| x.line == 4 && x.message.contains("seller-typo")),
        "{f:?}"
    );
    // An unguarded optional attribute is refused too (it would error at evaluation).
    let f = findings_for(
        "@id(\"unguarded\")\npermit (principal in Role::\"seller\", action == Action::\"get_quote\", resource)\nwhen { resource.seller == principal };\n",
    );
    assert!(
        f.iter()
            .any(|x| x.line == 3 && x.message.contains("unguarded")),
        "{f:?}"
    );
    // pii fields are not visible to policies at all.
    let f = findings_for(
        "@id(\"pii\")\npermit (principal, action == Action::\"get_quote\", resource)\nwhen { resource has contact_email };\n",
    );
    assert!(!f.is_empty(), "{f:?}");
}

#[test]
fn unknown_actions_and_roles_types_are_findings() {
    let f = findings_for(
        "@id(\"payout\")\npermit (principal, action == Action::\"pay_out\", resource);\n",
    );
    assert!(
        f.iter()
            .any(|x| x.line == 2 && x.message.contains("pay_out")),
        "{f:?}"
    );
}

fn principal(roles: &[&str]) -> Principal {
    Principal {
        tenant_id: TenantId::new_random(),
        tenant: Slug::parse("acme").unwrap(),
        user_id: UserId::new_random(),
        username: Slug::parse("u").unwrap(),
        roles: roles.iter().map(|r| Slug::parse(r).unwrap()).collect(),
        amr: vec![AuthMethod::Pwd, AuthMethod::Otp],
        auth_time: 0,
        token_id: "t".into(),
    }
}

#[test]
fn allowed_actions_follow_the_roles() {
    let authz = Authorizer::new(&vendor_quote()).unwrap();
    let now = 1_764_400_000;
    assert_eq!(
        authz.allowed_actions(&principal(&["buyer"]), now),
        [
            "accept_proposal",
            "create_quote",
            "get_quote",
            "list_quotes"
        ]
    );
    assert_eq!(
        authz.allowed_actions(&principal(&["seller"]), now),
        [
            "draft_proposal",
            "get_quote",
            "list_quotes",
            "submit_proposal"
        ]
    );
    assert_eq!(
        authz.allowed_actions(&principal(&["finance"]), now),
        ["charge_deposit", "get_quote", "issue_refund", "list_quotes"]
    );
    assert!(authz.allowed_actions(&principal(&[]), now).is_empty());
    // The pipeline's one-tool check agrees with the listing, and refuses unknown actions.
    assert!(authz.may_call(&principal(&["seller"]), "submit_proposal", now));
    assert!(!authz.may_call(&principal(&["buyer"]), "submit_proposal", now));
    assert!(!authz.may_call(&principal(&["finance"]), "create_quote", now));
    assert!(authz.may_call(&principal(&["finance"]), "issue_refund", now));
    assert!(!authz.may_call(&principal(&["buyer"]), "charge_deposit", now));
    assert!(!authz.may_call(&principal(&["finance"]), "pay_out", now));
}

/// The generated schema is a reviewed golden file (`tests/vendor-quote.cedarschema`);
/// regenerate with `BLESS=1 cargo test -p bastion-authz`.
#[test]
fn generated_schema_matches_the_golden_file() {
    let authz = Authorizer::new(&vendor_quote()).unwrap();
    let path = crate::crate_dir().join("tests/vendor-quote.cedarschema");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, authz.schema_text()).unwrap();
    }
    assert_eq!(authz.schema_text(), std::fs::read_to_string(&path).unwrap());
}
