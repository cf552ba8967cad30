//! Canonical JSON (after RFC 8785): object members sorted by the UTF-16 code units of their
//! names, no insignificant whitespace, strings escaped minimally. Numbers use serde_json's
//! shortest round-trip form, which matches RFC 8785 for every integer and ordinary decimal; the
//! two differ only in how very large or very small doubles write their exponent.
//!
//! Equal JSON values give equal bytes whatever order their members arrived in, so digests over
//! arguments and tool definitions are stable.

use serde_json::Value;

/// The canonical bytes of `v`.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly `"`, `\` and control characters, as RFC 8785 requires.
    match serde_json::to_vec(s) {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::canonical_json;

    #[test]
    fn member_order_and_whitespace_do_not_matter() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{ "b": [1, {"y":2,"x":1}], "a": "é\n" }"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":"é\n","b":[1,{"x":1,"y":2}]}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":"é\n","b":[1,{"x":1,"y":2}]}"#
        );
    }

    #[test]
    fn names_sort_by_utf16_code_units() {
        // U+FB01 sorts after U+1F600 in UTF-16 (0xD83D < 0xFB01), unlike by code point.
        let v = json!({"\u{fb01}": 1, "\u{1f600}": 2, "a": 3});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            "{\"a\":3,\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }
}
