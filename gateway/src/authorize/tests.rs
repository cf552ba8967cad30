use serde_json::json;

use super::*;

#[test]
fn a_panic_inside_evaluation_is_a_deny() {
    // Fault: evaluation fails internally.
    let d = guarded(|| panic!("injected fault inside evaluation"));
    match d {
        Decision::Deny(d) => assert!(matches!(d.reason, DenyReason::Internal(_))),
        other => panic!("expected a deny, got {other:?}"),
    }
    assert_eq!(guarded(|| Decision::Allow), Decision::Allow);
}

#[test]
fn digest_ignores_member_order() {
    let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).unwrap();
    assert_eq!(arguments_digest(&a), arguments_digest(&b));
    assert_ne!(arguments_digest(&a), arguments_digest(&json!({"a": 2})));
}
