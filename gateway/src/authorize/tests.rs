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
fn arguments_must_satisfy_both_schemas() {
    let upstream =
        json!({"type": "object", "properties": {"repo": {"type": "string"}}, "required": ["repo"]});
    let operator = json!({"properties": {"repo": {"enum": ["acme/api", "acme/web"]}}});
    let check = ArgumentCheck::new(
        &upstream,
        Some(&operator),
        registry::ArgumentLimits::default(),
    );
    assert!(check.check(&json!({"repo": "acme/api"})).is_ok());
    let missing = check.check(&json!({})).unwrap_err().message;
    assert!(
        missing.contains("\"repo\" is a required property"),
        "{missing}"
    );
    let wrong_type = check.check(&json!({"repo": 7})).unwrap_err();
    assert_eq!(wrong_type.at, "/repo");
    assert!(wrong_type.message.contains("at `/repo`"), "{wrong_type:?}");
    let narrowed = check.check(&json!({"repo": "evil/x"})).unwrap_err().message;
    assert!(narrowed.starts_with("the gateway's policy:"), "{narrowed}");
}

#[test]
fn an_uncompilable_upstream_schema_refuses_every_call() {
    let check = ArgumentCheck::new(
        &json!({"type": "no-such-type"}),
        None,
        registry::ArgumentLimits::default(),
    );
    let why = check.check(&json!({})).unwrap_err();
    assert!(why.message.contains("cannot be checked"), "{why:?}");
    assert_eq!(why.at, "schema");
}

#[test]
fn digest_ignores_member_order() {
    let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).unwrap();
    assert_eq!(arguments_digest(&a), arguments_digest(&b));
    assert_ne!(arguments_digest(&a), arguments_digest(&json!({"a": 2})));
}
