//! Z2: a blanket permit plus an erroring forbid. Strict validation refuses it at load; the
//! decision path (shown in the golden cases `z2-*`) denies with errors when built unvalidated.

use bastion_authz::{Authorizer, AuthzError, check};

use crate::app_with_test_policies;

#[test]
fn strict_validation_refuses_permit_all_with_erroring_forbid() {
    let spec = app_with_test_policies("z2");
    let findings = check(&spec);
    let on_forbid: Vec<_> = findings
        .iter()
        .filter(|f| f.file.ends_with("z2.cedar") && f.message.contains("forbid-closed"))
        .collect();
    assert!(!on_forbid.is_empty(), "{findings:?}");
    // The condition `resource.status == "closed"` is on line 12 of z2.cedar.
    assert!(on_forbid.iter().all(|f| f.line == 12), "{on_forbid:?}");
    match Authorizer::new(&spec) {
        Err(AuthzError::Refused(f)) => assert_eq!(f, findings),
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn the_test_only_path_still_checks_syntax_and_ids() {
    let spec = crate::with_policies(&[("x.cedar", "permit (principal, action, resource);")]);
    assert!(Authorizer::new_unvalidated_for_tests(&spec).is_err());
}
