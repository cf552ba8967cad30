use super::*;
use serde_json::json;

#[test]
fn each_limit_refuses_what_exceeds_it() {
    let limits = ArgumentLimits {
        bytes: 100,
        nodes: 10,
        depth: 3,
    };
    assert_eq!(limits.check(&json!({ "a": "short" })), Ok(()));
    assert_eq!(
        limits.check(&json!({ "a": "x".repeat(200) })),
        Err(ArgumentExcess::Bytes(100))
    );
    let many: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("{i}"), json!(1))).collect();
    let roomy = ArgumentLimits {
        bytes: 10_000,
        ..limits
    };
    assert_eq!(
        roomy.check(&Value::Object(many)),
        Err(ArgumentExcess::Nodes(10))
    );
    assert_eq!(
        limits.check(&json!({ "a": { "b": { "c": 1 } } })),
        Err(ArgumentExcess::Depth(3))
    );
    assert_eq!(limits.check(&json!({ "a": { "b": 1 } })), Ok(()));
}

#[test]
fn the_default_refuses_a_wide_object_well_below_the_body_limit() {
    let wide: serde_json::Map<String, Value> =
        (0..300_000).map(|i| (format!("k{i}"), json!(i))).collect();
    assert!(
        ArgumentLimits::default()
            .check(&Value::Object(wide))
            .is_err()
    );
}
