use serde_json::json;

use super::*;

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
