//! `Mcp-Param-<Name>` headers (2026-07-28): a tool may mark input properties with
//! `x-mcp-header: <Name>`, and clients then mirror those arguments into headers so that
//! intermediaries can route on them without reading the body. The gateway reads the body, so it
//! checks the two agree before anything runs: a disagreement is refused with -32020, as the
//! `Mcp-Method`/`Mcp-Name` headers are.
//!
//! A declaration must be reachable through `properties` alone, name an HTTP token, sit on a
//! string, integer or boolean property, and be unique (case-insensitively). A tool with any
//! other declaration is invalid: conforming clients drop it, and the gateway takes no call to it
//! in this revision, since it could not tell whether headers and body agree.

use serde_json::Value;

/// A header the client sent: its name after `Mcp-Param-` (lowercase) and its value, `None` if
/// the value is not visible ASCII.
pub(crate) type Sent = (String, Option<String>);

/// One enforceable declaration: the header name and the argument's path.
#[derive(Debug, PartialEq, Eq)]
struct Declared {
    name: String,
    /// `Mcp-Param-<name>`, made once here rather than for every call that sends it.
    header: http::HeaderName,
    path: Vec<String>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The tool's declarations, or why they make the tool invalid: a declaration anywhere but
/// through `properties` alone, a name that is not an HTTP token, a type other than string,
/// integer or boolean, or a name declared twice (case-insensitively).
fn declared(schema: &Value) -> Result<Vec<Declared>, String> {
    fn walk(
        node: &Value,
        reachable: Option<&mut Vec<String>>,
        out: &mut Vec<Declared>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 64 {
            return Err("the input schema is nested too deeply to check".into());
        }
        match node {
            Value::Array(items) => {
                for item in items {
                    walk(item, None, out, depth + 1)?;
                }
                Ok(())
            }
            Value::Object(map) => {
                if let Some(name) = map.get("x-mcp-header") {
                    let Some(path) = reachable.as_deref().filter(|p| !p.is_empty()) else {
                        return Err(
                            "an x-mcp-header is not reachable through `properties` alone".into(),
                        );
                    };
                    let name = name.as_str().filter(|n| is_token(n)).ok_or_else(|| {
                        format!(
                            "the x-mcp-header of `{}` is not an HTTP token",
                            path.join(".")
                        )
                    })?;
                    if !matches!(
                        map.get("type").and_then(Value::as_str),
                        Some("string" | "integer" | "boolean")
                    ) {
                        return Err(format!(
                            "the x-mcp-header `{name}` is on a parameter that is not a string, integer or boolean"
                        ));
                    }
                    let lower = name.to_ascii_lowercase();
                    if out.iter().any(|d| d.name == lower) {
                        return Err(format!("the x-mcp-header `{name}` is declared twice"));
                    }
                    // An HTTP token is a valid header name, so this holds for every name let
                    // through above; one that did not would make the tool invalid.
                    let header = http::HeaderName::try_from(format!("mcp-param-{lower}"))
                        .map_err(|_| format!("the x-mcp-header `{name}` is not a header name"))?;
                    out.push(Declared {
                        name: lower,
                        header,
                        path: path.clone(),
                    });
                }
                let mut reachable = reachable;
                for (key, value) in map {
                    match (key.as_str(), reachable.as_deref_mut()) {
                        ("properties", Some(path)) => {
                            let Value::Object(props) = value else {
                                continue;
                            };
                            for (name, prop) in props {
                                path.push(name.clone());
                                let r = walk(prop, Some(&mut *path), out, depth + 1);
                                path.pop();
                                r?;
                            }
                        }
                        _ => walk(value, None, out, depth + 1)?,
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let mut out = Vec::new();
    walk(schema, Some(&mut Vec::new()), &mut out, 0)?;
    Ok(out)
}

/// Whether a header value names the same argument value. Integers compare exactly (the body's
/// `42.0` is `42`); the header must be plain decimal digits.
fn agrees(header: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => {
            let digits = header.strip_prefix('-').unwrap_or(header);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            let Ok(h) = header.parse::<i128>() else {
                return false;
            };
            if let Some(v) = n.as_i64() {
                return h == i128::from(v);
            }
            if let Some(v) = n.as_u64() {
                return h == i128::from(v);
            }
            // A float body value: only a whole number within f64's exact range.
            n.as_f64().is_some_and(|v| {
                v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_991.0 && h == v as i128
            })
        }
        _ => false,
    }
}

/// [`Declarations::check`] straight from a schema.
#[cfg(test)]
fn check(schema: &Value, arguments: &Value, sent: &[Sent]) -> Result<(), String> {
    Declarations::of(schema).check(arguments, sent)
}

/// A tool's declarations, read once per tool-list refresh (kept on its `Offered`), or why they
/// make it invalid.
#[derive(Debug)]
pub(crate) struct Declarations(Result<Vec<Declared>, String>);

impl Declarations {
    pub(crate) fn of(schema: &Value) -> Declarations {
        Declarations(declared(schema))
    }

    /// Check the `Mcp-Param-*` headers of a `tools/call` against its arguments. The error names
    /// the header and what is wrong with it, never the values.
    pub(crate) fn check(&self, arguments: &Value, sent: &[Sent]) -> Result<(), String> {
        // A tool whose declarations are invalid is one a conforming client drops: nothing it
        // could be sent is checkable, so no call to it is taken.
        let declared = self.0.as_ref().map_err(|why| {
            format!("the tool's Mcp-Param declarations are invalid ({why}); it cannot be called in 2026-07-28")
        })?;
        check_declared(declared, arguments, sent)
    }
}

impl Declarations {
    /// The `Mcp-Param-*` headers a 2026-07-28 `tools/call` with `arguments` carries to the
    /// upstream, as (name after the prefix, value): each declared argument that is present and a
    /// string, number or boolean; a value that cannot travel as a bare header value is sent as
    /// `=?base64?…?=`. None for a tool whose declarations are invalid (such a tool is one
    /// conforming clients drop, and rmcp's client sends it none either).
    pub(crate) fn emit(&self, arguments: &Value) -> Vec<(http::HeaderName, String)> {
        let Ok(declared) = &self.0 else {
            return Vec::new();
        };
        declared
            .iter()
            .filter_map(|d| {
                let value = d.path.iter().try_fold(arguments, |v, key| v.get(key))?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((d.header.clone(), encode(&text)))
            })
            .collect()
    }
}

/// `value` as a header value: bare when it is visible ASCII (inner spaces allowed) without
/// leading or trailing blanks and does not look like the Base64 form, else `=?base64?…?=`.
pub(crate) fn encode(value: &str) -> String {
    let bytes = value.as_bytes();
    let blank_edge =
        matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t'));
    let unsafe_char = bytes.iter().any(|b| *b < 0x20 || *b > 0x7e);
    let looks_encoded = value.starts_with("=?base64?") && value.ends_with("?=");
    if blank_edge || unsafe_char || looks_encoded {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value);
        return format!("=?base64?{b64}?=");
    }
    value.to_string()
}

fn check_declared(declared: &[Declared], arguments: &Value, sent: &[Sent]) -> Result<(), String> {
    for d in declared {
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
mod tests;
