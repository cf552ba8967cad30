//! Redaction for what operators are shown and what the audit log keeps.
//!
//! A value is replaced when its key names a secret (password, token, api key, authorization,
//! cookie, private key, credential, secret), when the value itself looks like one (bearer
//! tokens, well-known key prefixes, AWS key ids, PEM blocks, JWTs, long high-entropy strings), or
//! when an operator's `audit.redact` path selects it. Approvers' previews show `[redacted]`; the
//! audit log shows `[redacted:hmac:<16 hex>]`, a keyed digest, so equal secrets correlate without
//! the value being recoverable. Long strings are cut, and the whole summary is bounded.

use aws_lc_rs::hmac;
use registry::{PathStep, RedactPath};
pub(crate) use registry::{high_entropy, secret_key, secret_value};
use serde_json::{Map, Value};

/// Longest string value kept in a preview.
const MAX_STRING: usize = 200;
/// Longest preview, in bytes.
const MAX_PREVIEW: usize = 4096;
/// Deepest nesting shown.
const MAX_DEPTH: usize = 8;

const REDACTED: &str = "[redacted]";

/// A redacted copy of `value`, secrets shown as `[redacted]`.
pub(crate) fn redact(value: &Value) -> Value {
    walk(value, 0, &|_| Value::String(REDACTED.into()))
}

fn walk(value: &Value, depth: usize, hide: &dyn Fn(&Value) -> Value) -> Value {
    if depth >= MAX_DEPTH {
        return Value::String("…".into());
    }
    match value {
        Value::String(s) if secret_value(s) || high_entropy(s) => hide(value),
        Value::String(s) if s.len() > MAX_STRING => {
            let mut s = s.clone();
            shorten(&mut s, MAX_STRING);
            Value::String(s)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| walk(v, depth + 1, hide)).collect())
        }
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let shown = if secret_key(k) && !v.is_null() {
                    hide(v)
                } else {
                    walk(v, depth + 1, hide)
                };
                out.insert(k.clone(), shown);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The preview an approver sees: redacted, compact JSON, bounded.
pub(crate) fn preview(arguments: &Value) -> String {
    let mut text = redact(arguments).to_string();
    shorten(&mut text, MAX_PREVIEW);
    text
}

/// The audit log's redaction: configured paths and the built-in detectors, each hidden value
/// replaced by an HMAC-SHA256 of its canonical JSON under the gateway's redaction key.
pub(crate) struct Redactor {
    key: hmac::Key,
    paths: Vec<RedactPath>,
}

impl Redactor {
    pub(crate) fn new(key: &[u8], paths: Vec<RedactPath>) -> Redactor {
        Redactor {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            paths,
        }
    }

    /// The stand-in for a hidden value.
    pub(crate) fn mark(&self, value: &Value) -> Value {
        let canonical = registry::canonical_json(value);
        let tag = hmac::sign(&self.key, &canonical);
        let hex = hex::encode(tag.as_ref());
        Value::String(format!("[redacted:hmac:{}]", hex.get(..16).unwrap_or(&hex)))
    }

    /// The summary of `arguments` the audit log keeps: configured paths hidden first, then the
    /// detectors; bounded like the preview.
    pub(crate) fn summary(&self, arguments: &Value) -> Value {
        let hide = |v: &Value| self.mark(v);
        if self.paths.is_empty() {
            return bounded(walk(arguments, 0, &hide));
        }
        let mut copy = arguments.clone();
        for p in &self.paths {
            apply(&mut copy, &p.steps, &hide);
        }
        bounded(walk(&copy, 0, &hide))
    }
}

/// Replace what `steps` selects in `value`.
fn apply(value: &mut Value, steps: &[PathStep], hide: &dyn Fn(&Value) -> Value) {
    let Some((step, rest)) = steps.split_first() else {
        *value = hide(value);
        return;
    };
    match step {
        PathStep::Key(k) => {
            if let Some(v) = value.as_object_mut().and_then(|o| o.get_mut(k)) {
                apply(v, rest, hide);
            }
        }
        PathStep::Index(i) => {
            if let Some(v) = value.as_array_mut().and_then(|a| a.get_mut(*i)) {
                apply(v, rest, hide);
            }
        }
        PathStep::Any => match value {
            Value::Object(o) => o.values_mut().for_each(|v| apply(v, rest, hide)),
            Value::Array(a) => a.iter_mut().for_each(|v| apply(v, rest, hide)),
            _ => {}
        },
        PathStep::Descendant(k) => {
            if let Some(o) = value.as_object_mut()
                && let Some(v) = o.get_mut(k)
            {
                apply(v, rest, hide);
            }
            match value {
                Value::Object(o) => o
                    .iter_mut()
                    .filter(|(name, _)| *name != k)
                    .for_each(|(_, v)| apply(v, steps, hide)),
                Value::Array(a) => a.iter_mut().for_each(|v| apply(v, steps, hide)),
                _ => {}
            }
        }
    }
}

/// A summary too large to keep whole is kept as its bounded text.
fn bounded(v: Value) -> Value {
    let text = v.to_string();
    if text.len() <= MAX_PREVIEW {
        return v;
    }
    let mut text = text;
    shorten(&mut text, MAX_PREVIEW);
    Value::String(text)
}

/// A URI as records and spans show it: without userinfo, query or fragment (where signed URLs
/// and tokens travel), and bounded.
pub(crate) fn uri_for_record(uri: &str) -> String {
    let cut = uri.find(['?', '#']).unwrap_or(uri.len());
    let mut out = uri.get(..cut).unwrap_or(uri).to_string();
    if let Some((scheme, rest)) = out.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            out = format!("{scheme}://{host}{path}");
        }
    }
    if cut < uri.len() {
        out.push_str("?…");
    }
    shorten(&mut out, 256);
    out
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn shorten(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_by_key_and_by_shape_never_reach_the_preview() {
        let args = json!({
            "title": "hello",
            "Password": "hunter2",
            "api_key": "abc",
            "nested": { "auth": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl" },
            "list": ["AKIAIOSFODNN7EXAMPLE", "ghp_0123456789abcdefghij", "fine"],
            "pem": "-----BEGIN PRIVATE KEY-----\nMIIE...",
        });
        let p = preview(&args);
        for secret in [
            "hunter2",
            "\"abc\"",
            "eyJhbGci",
            "AKIAIOSFODNN7",
            "ghp_0123",
            "MIIE",
        ] {
            assert!(!p.contains(secret), "{secret} leaked into {p}");
        }
        assert!(p.contains("hello") && p.contains("fine"), "{p}");
    }

    #[test]
    fn long_values_and_deep_nesting_are_bounded() {
        let long = "x".repeat(10_000);
        let mut deep = json!(1);
        for _ in 0..50 {
            deep = json!({ "d": deep });
        }
        let p = preview(&json!({ "long": long, "deep": deep }));
        assert!(p.len() <= MAX_PREVIEW + 3, "{}", p.len());
        assert!(!p.contains(&"x".repeat(MAX_STRING + 1)));
    }

    #[test]
    fn ordinary_words_are_not_secrets() {
        for v in [
            "skeleton",
            "Basically",
            "token bucket",
            "AKIA",
            "a basic idea",
            "bearer of news",
        ] {
            assert!(!secret_value(v), "{v}");
        }
        for k in ["title", "max_tokens", "tokenizer", "author", "keyboard"] {
            assert!(!secret_key(k), "{k}");
        }
        for k in [
            "X-Auth-Token",
            "client_secret",
            "apiKey",
            "api_key",
            "password",
            "privateKey",
            "AWS_ACCESS_KEY",
        ] {
            assert!(secret_key(k), "{k}");
        }
    }

    #[test]
    fn audit_summary_hides_paths_and_detected_secrets_behind_a_keyed_digest() {
        let paths = vec![
            RedactPath::parse("$.arguments.note.body").unwrap(),
            RedactPath::parse("$..pin").unwrap(),
            RedactPath::parse("$.arguments.items[*].code").unwrap(),
        ];
        let r = Redactor::new(b"k1", paths.clone());
        let args = json!({
            "title": "hello",
            "note": { "body": "my diary", "pin": 1234 },
            "items": [{ "code": "alpha" }, { "code": "beta", "deep": { "pin": "9" } }],
            "password": "hunter2",
            "blob": "q8Xz3LmP0aB7cD9eF2gH4iJ6kL8mN1oP3qR5sT",
        });
        let s = r.summary(&args).to_string();
        for secret in [
            "my diary", "1234", "alpha", "beta", "hunter2", "q8Xz3LmP", "\"9\"",
        ] {
            assert!(!s.contains(secret), "{secret} leaked into {s}");
        }
        assert!(s.contains("hello"), "{s}");
        // Equal secrets correlate; another key gives another digest.
        assert_eq!(r.mark(&json!("hunter2")), r.mark(&json!("hunter2")));
        assert!(s.contains(r.mark(&json!("hunter2")).as_str().unwrap()));
        assert_ne!(
            Redactor::new(b"k2", paths).mark(&json!("hunter2")),
            r.mark(&json!("hunter2"))
        );
        // A hex digest is not a secret.
        assert!(!high_entropy(&"ab12".repeat(16)));
    }

    #[test]
    fn recorded_uris_lose_credentials_and_queries() {
        assert_eq!(
            uri_for_record("https://bob:pw@files.example/a/b?X-Amz-Signature=abc#f"),
            "https://files.example/a/b?…"
        );
        assert_eq!(uri_for_record("note://1"), "note://1");
    }

    #[test]
    fn secrets_inside_longer_strings_are_found() {
        for v in [
            "curl -H 'Authorization: Bearer abcdefghijklmnop' https://x",
            "export KEY=ghp_0123456789abcdefghij && run",
            "use AKIAIOSFODNN7EXAMPLE for s3",
            "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl here",
        ] {
            assert!(secret_value(v), "{v}");
        }
    }
}
