//! `Mcp-Param-<Name>` headers (2026-07-28): a tool may mark input properties with
//! `x-mcp-header: <Name>`, and clients then mirror those arguments into headers so that
//! intermediaries can route on them without reading the body. The gateway reads the body, so it
//! checks the two agree before anything runs: a disagreement is refused with -32020, as the
//! `Mcp-Method`/`Mcp-Name` headers are.
//!
//! Only declarations reachable through `properties` alone, naming an HTTP token, on a string,
//! integer, number or boolean property, are enforced (a conforming client drops a tool with any
//! other kind, so it sends no header for it).

use serde_json::Value;

/// A header the client sent: its name after `Mcp-Param-` (lowercase) and its value, `None` if
/// the value is not visible ASCII.
pub(crate) type Sent = (String, Option<String>);

/// One enforceable declaration: the header name and the argument's path.
#[derive(Debug, PartialEq, Eq)]
struct Declared {
    name: String,
    path: Vec<String>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn declared(schema: &Value) -> Vec<Declared> {
    fn walk(node: &Value, path: &mut Vec<String>, out: &mut Vec<Declared>, depth: usize) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        if depth > 32 {
            return;
        }
        for (key, prop) in props {
            path.push(key.clone());
            let primitive = matches!(
                prop.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "number" | "boolean")
            );
            if let Some(name) = prop.get("x-mcp-header").and_then(Value::as_str)
                && is_token(name)
                && primitive
            {
                out.push(Declared {
                    name: name.to_ascii_lowercase(),
                    path: path.clone(),
                });
            }
            walk(prop, path, out, depth + 1);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out, 0);
    // A name declared twice (case-insensitively) makes the tool invalid: enforce neither.
    let mut seen = std::collections::HashMap::new();
    for d in &out {
        *seen.entry(d.name.clone()).or_insert(0) += 1;
    }
    out.retain(|d| seen.get(&d.name) == Some(&1));
    out
}

/// Whether a header value names the same argument value.
fn agrees(header: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (header.trim().parse::<f64>(), n.as_f64()) {
            (Ok(h), Some(v)) => h == v,
            _ => false,
        },
        _ => false,
    }
}

/// Check the `Mcp-Param-*` headers of a `tools/call` against its arguments. The error names the
/// header and what is wrong with it, never the values.
pub(crate) fn check(schema: &Value, arguments: &Value, sent: &[Sent]) -> Result<(), String> {
    for d in declared(schema) {
        let mut headers = sent.iter().filter(|(n, _)| *n == d.name);
        let header = headers.next();
        if headers.next().is_some() {
            return Err(format!("Mcp-Param-{} is sent more than once", d.name));
        }
        let mut value = Some(arguments);
        for key in &d.path {
            value = value.and_then(|v| v.get(key));
        }
        let value = value.filter(|v| !v.is_null());
        match (header, value) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(format!(
                    "Mcp-Param-{} is missing; the tool declares it for the argument `{}`",
                    d.name,
                    d.path.join(".")
                ));
            }
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Param-{} is sent but the argument `{}` is absent",
                    d.name,
                    d.path.join(".")
                ));
            }
            (Some((_, None)), Some(_)) => {
                return Err(format!(
                    "Mcp-Param-{} is not a valid value (non-ASCII values are sent as =?base64?…?=)",
                    d.name
                ));
            }
            (Some((_, Some(h))), Some(v)) => {
                let decoded =
                    decode(h).ok_or_else(|| format!("Mcp-Param-{} has invalid Base64", d.name))?;
                if !agrees(&decoded, v) {
                    return Err(format!(
                        "Mcp-Param-{} does not match the argument `{}`",
                        d.name,
                        d.path.join(".")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A header value: `=?base64?…?=` is decoded (invalid Base64 is `None`), anything else is literal.
pub(crate) fn decode(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({ "type": "object", "properties": {
            "region": { "type": "string", "x-mcp-header": "Region" },
            "count": { "type": "integer", "x-mcp-header": "Count" },
            "dry": { "type": "boolean", "x-mcp-header": "Dry-Run" },
            "nested": { "type": "object", "properties": {
                "zone": { "type": "string", "x-mcp-header": "Zone" } } },
            "list": { "type": "array", "items": { "type": "string", "x-mcp-header": "Item" } },
            "bad": { "type": "string", "x-mcp-header": "Not A Token" },
            "obj": { "type": "object", "x-mcp-header": "Obj" },
        } })
    }

    fn sent(pairs: &[(&str, &str)]) -> Vec<Sent> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn only_reachable_primitive_token_declarations_count() {
        let names: Vec<String> = declared(&schema()).into_iter().map(|d| d.name).collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["count", "dry-run", "region", "zone"]);
        // A name declared twice is enforced nowhere.
        let twice = json!({ "properties": {
            "a": { "type": "string", "x-mcp-header": "X" },
            "b": { "type": "string", "x-mcp-header": "x" } } });
        assert!(declared(&twice).is_empty());
    }

    #[test]
    fn headers_must_agree_with_the_arguments() {
        let s = schema();
        let args =
            json!({ "region": "eu-west1", "count": 3, "dry": true, "nested": { "zone": "ü-1" } });
        let good = sent(&[
            ("Region", "eu-west1"),
            ("Count", "3.0"),
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
        // Booleans are exact; numbers compare as numbers.
        let mut shouting = good.clone();
        shouting[2].1 = Some("TRUE".into());
        assert!(check(&s, &args, &shouting).is_err());
    }
}
