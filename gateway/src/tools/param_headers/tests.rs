use serde_json::json;

use super::*;

fn schema() -> Value {
    json!({ "type": "object", "properties": {
        "region": { "type": "string", "x-mcp-header": "Region" },
        "count": { "type": "integer", "x-mcp-header": "Count" },
        "dry": { "type": "boolean", "x-mcp-header": "Dry-Run" },
        "nested": { "type": "object", "properties": {
            "zone": { "type": "string", "x-mcp-header": "Zone" } } },
        "list": { "type": "array", "items": { "type": "string" } },
    } })
}

fn sent(pairs: &[(&str, &str)]) -> Vec<Sent> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), Some(v.to_string())))
        .collect()
}

#[test]
fn invalid_declarations_make_the_tool_uncallable() {
    let names: Vec<String> = declared(&schema())
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["count", "dry-run", "region", "zone"]);
    for (bad, why) in [
        (
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "X" },
                                 "b": { "type": "string", "x-mcp-header": "x" } } }),
            "twice",
        ),
        (
            json!({ "properties": { "l": { "type": "array",
            "items": { "type": "string", "x-mcp-header": "Item" } } } }),
            "reachable",
        ),
        (
            json!({ "properties": { "o": { "oneOf": [{ "type": "string", "x-mcp-header": "O" }] } } }),
            "reachable",
        ),
        (
            json!({ "properties": { "n": { "type": "number", "x-mcp-header": "N" } } }),
            "not a string",
        ),
        (
            json!({ "properties": { "s": { "type": "string", "x-mcp-header": "Not A Token" } } }),
            "token",
        ),
        (
            json!({ "type": "string", "x-mcp-header": "Root" }),
            "reachable",
        ),
    ] {
        let err = check(&bad, &json!({}), &[]).unwrap_err();
        assert!(
            err.contains(why) && err.contains("cannot be called"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn headers_must_agree_with_the_arguments() {
    let s = schema();
    let args =
        json!({ "region": "eu-west1", "count": 3, "dry": true, "nested": { "zone": "ü-1" } });
    let good = sent(&[
        ("Region", "eu-west1"),
        ("Count", "3"),
        ("Dry-Run", "true"),
        ("Zone", "=?base64?w7wtMQ==?="),
        ("Unrelated", "anything"),
    ]);
    assert_eq!(check(&s, &args, &good), Ok(()));
    // A wrong value, a missing header, a header without its argument, a repeated header,
    // invalid Base64 and a value that was not ASCII are each refused, naming the header.
    let mut wrong = good.clone();
    wrong[0].1 = Some("us-east1".into());
    assert!(
        check(&s, &args, &wrong)
            .unwrap_err()
            .contains("Mcp-Param-region does not match")
    );
    let missing: Vec<Sent> = good[1..].to_vec();
    assert!(check(&s, &args, &missing).unwrap_err().contains("missing"));
    let no_arg = json!({ "count": 3, "dry": true, "nested": { "zone": "ü-1" } });
    assert!(check(&s, &no_arg, &good).unwrap_err().contains("absent"));
    let mut twice = good.clone();
    twice.push(("region".into(), Some("eu-west1".into())));
    assert!(
        check(&s, &args, &twice)
            .unwrap_err()
            .contains("more than once")
    );
    let mut bad64 = good.clone();
    bad64[3].1 = Some("=?base64?***?=".into());
    assert!(check(&s, &args, &bad64).unwrap_err().contains("Base64"));
    let mut raw = good.clone();
    raw[0].1 = None;
    assert!(
        check(&s, &args, &raw)
            .unwrap_err()
            .contains("not a valid value")
    );
    // Null and absent arguments expect no header.
    let nulls = json!({ "region": null });
    assert_eq!(check(&s, &nulls, &[]), Ok(()));
    // Booleans are exact; integers compare exactly, as plain decimal digits.
    let mut shouting = good.clone();
    shouting[2].1 = Some("TRUE".into());
    assert!(check(&s, &args, &shouting).is_err());
    for (header, body, same) in [
        ("3", json!(3), true),
        ("3", json!(3.0), true),
        ("3.0", json!(3), false),
        ("+3", json!(3), false),
        ("1e3", json!(1000), false),
        ("9007199254740993", json!(9_007_199_254_740_992_u64), false),
        ("18446744073709551615", json!(u64::MAX), true),
        ("-7", json!(-7), true),
    ] {
        assert_eq!(agrees(header, &body), same, "{header} vs {body}");
    }
}

/// The headers a call's arguments are mirrored into upstream: each declared one present in
/// the arguments, under its full name made at load, its value encoded.
#[test]
fn arguments_are_mirrored_into_their_declared_headers() {
    let declared = Declarations::of(&schema());
    let emitted = declared.emit(&json!({
        "region": "eu west",
        "count": 3,
        "dry": true,
        "nested": { "zone": "z\u{e9}" },
    }));
    let mut emitted: Vec<(&str, &str)> = emitted
        .iter()
        .map(|(h, v)| (h.as_str(), v.as_str()))
        .collect();
    emitted.sort();
    assert_eq!(
        emitted,
        [
            ("mcp-param-count", "3"),
            ("mcp-param-dry-run", "true"),
            ("mcp-param-region", "eu west"),
            ("mcp-param-zone", "=?base64?esOp?="),
        ]
    );
}
