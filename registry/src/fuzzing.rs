//! Entry points for the fuzz targets in `registry/fuzz/`, built only under `cfg(fuzzing)` or in
//! tests, where the seed corpora run as ordinary unit tests.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the properties that
//! must hold for any input.

use serde_json::{Value, json};

use crate::{
    Integrity, SecretRef, hidden_characters, hidden_in_definition, instructions_in_definition,
    load_str, normal_uri, secret_spans, tool_pin,
};

/// A tool definition as an upstream sends it (untrusted JSON): its pin and the hidden-character
/// scan.
pub fn tool_definition(data: &[u8]) {
    let Ok(def) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let pin = tool_pin(&def);
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    // The pin is over canonical JSON: how the upstream formats or orders it does not matter.
    let Ok(pretty) = serde_json::to_string_pretty(&def) else {
        return;
    };
    let again = serde_json::from_str::<Value>(&pretty);
    assert!(again.is_ok(), "a serialised definition does not parse");
    if let Ok(again) = again {
        assert_eq!(tool_pin(&again), pin);
    }
    if let Value::Object(fields) = &def {
        // Fields outside the pinned set (`_meta`, `icons`, ...) do not move the pin.
        let mut more = fields.clone();
        more.insert("_meta".into(), json!({ "any": "thing" }));
        more.insert("icons".into(), json!([]));
        assert_eq!(tool_pin(&Value::Object(more)), pin);
        // A pinned field that changes does.
        let mut changed = fields.clone();
        let description = match fields.get("description") {
            Some(Value::String(d)) => format!("{d}."),
            _ => "changed".to_owned(),
        };
        changed.insert("description".into(), Value::String(description.clone()));
        assert_ne!(tool_pin(&Value::Object(changed)), pin);
        // A bidi override added to the description is always found, wherever else it looks.
        let mut smuggled = fields.clone();
        smuggled.insert(
            "description".into(),
            Value::String(format!("{description}\u{202e}")),
        );
        assert!(hidden_in_definition(&Value::Object(smuggled)).is_some());
    }
    match hidden_in_definition(&def) {
        // The pointer names a string, or a key, that carries what was found.
        Some((at, _why)) => {
            let key = at
                .rsplit('/')
                .next()
                .map(|k| k.replace("~1", "/").replace("~0", "~"));
            let in_key = key
                .as_deref()
                .is_some_and(|k| hidden_characters(k).is_some());
            let in_value = def
                .pointer(&at)
                .and_then(Value::as_str)
                .is_some_and(|s| hidden_characters(s).is_some());
            assert!(in_key || in_value, "{at} does not point at hidden text");
        }
        None => assert!(no_hidden_text(&def)),
    }
}

fn no_hidden_text(v: &Value) -> bool {
    match v {
        Value::String(s) => hidden_characters(s).is_none(),
        Value::Array(a) => a.iter().all(no_hidden_text),
        Value::Object(o) => o
            .iter()
            .all(|(k, x)| hidden_characters(k).is_none() && no_hidden_text(x)),
        _ => true,
    }
}

/// Secret references and artifact digests as written in config: parsed, or refused, never
/// anything in between.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = SecretRef::parse(text) {
        assert!(SecretRef::is_reference(text));
        assert_eq!(SecretRef::parse(&r.to_string()), Some(r.clone()));
        match &r {
            SecretRef::Env(name) => {
                assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
            SecretRef::File(path) => assert!(!path.is_empty()),
            SecretRef::Vault { mount, path, key } => {
                for part in [mount, path] {
                    assert!(!part.split('/').any(|s| s.is_empty() || s == ".."), "{r}");
                }
                assert!(!key.is_empty());
            }
        }
    }
    if let Some(i) = Integrity::parse(text) {
        let want = match i.algorithm {
            crate::HashAlgorithm::Sha256 => 32,
            crate::HashAlgorithm::Sha512 => 64,
        };
        assert_eq!(i.digest.len(), want);
        // Written back in the same notation, it parses to the same digest.
        let back = Integrity::parse(&i.render(&i.digest));
        assert!(back.is_some(), "a rendered digest does not parse: {text}");
        if let Some(back) = back {
            assert_eq!(back.digest, i.digest);
            assert_eq!(back.algorithm, i.algorithm);
        }
        assert!(
            ["sha256:", "sha256-", "sha512-"]
                .iter()
                .any(|p| text.starts_with(p))
        );
    }
}

/// Text from callers and upstreams (argument strings, resource URIs, tool descriptions): the
/// secret spans lie in order on character boundaries and hiding them leaves no detectable
/// secret behind; a URI in normal form has no dot segment and no encoded separator; the
/// instruction scan never panics and is case-blind.
pub fn untrusted_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let spans = secret_spans(&text);
    let mut end = 0;
    for r in &spans {
        assert!(
            r.start >= end && r.start < r.end && r.end <= text.len(),
            "{r:?}"
        );
        assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        end = r.end;
    }
    if normal_uri(&text) {
        let path = text.split(['?', '#']).next().unwrap_or_default();
        assert!(!path.split('/').any(|s| s == "." || s == ".."), "{text}");
        let lower = text.to_ascii_lowercase();
        for bad in ["%2e", "%2f", "%5c", "%25", "\\"] {
            assert!(!lower.contains(bad), "{text}");
        }
    }
    let def = json!({ "name": "t", "description": text });
    let upper = json!({ "name": "t", "description": text.to_uppercase() });
    if instructions_in_definition(&def).is_some() && text.is_ascii() {
        assert!(instructions_in_definition(&upper).is_some(), "{text}");
    }
}

/// The config loader on arbitrary text: it loads or names its problems, each at a real place.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match load_str("f.yaml", text) {
        Ok(reg) => {
            use sha2::Digest as _;
            let want = format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(text.as_bytes()))
            );
            assert_eq!(reg.digest, want);
            for s in &reg.servers {
                assert!(!s.name.is_empty());
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1) + 1;
            for p in e.problems() {
                assert!(p.location.line >= 1 && p.location.line <= lines, "{p}");
                assert!(p.location.column >= 1, "{p}");
                assert!(!p.fix.is_empty(), "{p}");
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// An upstream's answer (untrusted bytes): the nesting scan never panics, and on JSON it agrees
/// with the depth of the parsed value at every bound.
pub fn answer_depth(data: &[u8]) {
    for max in [0, 1, 2, 64, usize::MAX] {
        let _ = crate::nested_deeper_than(data, max);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let depth = crate::nesting(&value);
    for max in 0..=depth + 1 {
        assert_eq!(
            crate::nested_deeper_than(data, max),
            depth > max,
            "depth {depth}, bound {max}"
        );
    }
}
