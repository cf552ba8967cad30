use super::*;
use serde_json::json;

#[test]
fn markers_and_echoed_secrets_are_removed_everywhere() {
    let mut known = Vec::new();
    remember(
        &mut known,
        [
            "Bearer s3cret-value".to_string(),
            "s3cret-value".to_string(),
        ],
    );
    let mut v = json!({
        "content": [{ "type": "text", "text": "got Bearer s3cret-value", "_meta": { "portcullis/x": 1 } }],
        "_meta": { "portcullis/shadow": true, "vendor/ok": 1 },
        "isError": false
    });
    scrub(&mut v, "s", &by_length(&known));
    assert_eq!(v["_meta"], json!({ "vendor/ok": 1 }));
    assert_eq!(v["content"][0]["_meta"], json!({}));
    assert_eq!(v["content"][0]["text"], json!("got [redacted]"));
    // Short values are not searched for.
    let mut short = Vec::new();
    remember(&mut short, ["abc".to_string()]);
    assert!(short.is_empty());
}
