use registry::secret_value;
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
    let p = preview(&args).unwrap();
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
fn approvers_see_every_argument_and_every_hidden_character() {
    let tail = format!("{}; ALSO-DELETE-ALL-BACKUPS", "x".repeat(10_000));
    let mut deep = json!(1);
    for _ in 0..50 {
        deep = json!({ "d": deep });
    }
    let args = json!({ "cmd": tail, "deep": deep, "name": "invoice\u{202E}fdp.exe", "zw": "a\u{200B}b\u{E0041}" });
    let p = preview(&args).unwrap();
    assert!(p.contains("ALSO-DELETE-ALL-BACKUPS"), "{p}");
    assert!(!p.contains('…'), "nothing is cut: {p}");
    assert!(
        !p.contains('\u{202E}') && p.contains("invoice\\u202Efdp.exe"),
        "{p}"
    );
    assert!(p.contains("a\\u200Bb\\uDB40\\uDC41"), "{p}");
    // The escaped preview is still the same JSON value.
    let back: Value = serde_json::from_str(&p).unwrap();
    assert_eq!(back["name"], args["name"]);
    assert_eq!(back["deep"], args["deep"]);
    // Too large to show whole: no preview, so no hold.
    assert!(preview(&json!({ "big": "y".repeat(MAX_PREVIEW) })).is_none());
}

#[test]
fn audit_summaries_are_bounded() {
    let long = "x".repeat(10_000);
    let mut deep = json!(1);
    for _ in 0..50 {
        deep = json!({ "d": deep });
    }
    let s = Redactor::new(b"k", Vec::new())
        .summary(&json!({ "long": long, "deep": deep }))
        .to_string();
    assert!(s.len() <= MAX_SUMMARY + 8, "{}", s.len());
    assert!(!s.contains(&"x".repeat(MAX_STRING + 1)));
}

/// A summary of exactly the bound is kept as it is; one byte more is kept as bounded text.
#[test]
fn a_summary_is_kept_whole_up_to_the_bound_and_as_text_past_it() {
    let redactor = Redactor::new(b"k", Vec::new());
    let mut args = serde_json::Map::new();
    let mut i = 0;
    while Value::Object(args.clone()).to_string().len() < MAX_SUMMARY - 16 {
        args.insert(format!("n{i:05}"), json!(i % 10));
        i += 1;
    }
    let size = Value::Object(args.clone()).to_string().len();
    // Pad one value so that the whole is exactly the bound.
    args.insert("pad".into(), json!("p".repeat(MAX_SUMMARY - size - 9)));
    let exact = Value::Object(args.clone());
    assert_eq!(exact.to_string().len(), MAX_SUMMARY);
    assert_eq!(redactor.summary(&exact), exact);
    args.insert("pad".into(), json!("p".repeat(MAX_SUMMARY - size - 8)));
    let over = Value::Object(args);
    let kept = redactor.summary(&over);
    assert!(kept.is_string(), "{kept}");
    assert!(kept.as_str().unwrap_or_default().len() <= MAX_SUMMARY + 8);
}

#[test]
fn passwords_in_other_shapes_are_hidden_and_the_rest_kept() {
    let args = json!({
        "pwd": "hunter2",
        "pass": "hunter3",
        "db_pw": "hunter4",
        "note": "login with password=hunter5 then run backup",
        "odbc": "Server=db;User Id=sa;Password=hunter6;Database=prod",
        "url": "postgres://app:hunter7@db.internal:5432/prod",
        "yaml": "user: bob\npassword: hunter8\n",
        "quoted": "password: \"correct horse battery\" then more",
        "json": "{\"client_secret\": \"hunter9x\"}",
    });
    let p = preview(&args).unwrap();
    for secret in [
        "hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7", "hunter8", "hunter9x",
        "horse", "battery",
    ] {
        assert!(!p.contains(secret), "{secret} leaked into {p}");
    }
    for kept in [
        "then run backup",
        "Database=prod",
        "user: bob",
        "{\\\"client_secret\\\": ",
    ] {
        assert!(p.contains(kept), "{kept} lost from {p}");
    }
    let s = Redactor::new(b"k", Vec::new()).summary(&args).to_string();
    assert!(!s.contains("hunter"), "{s}");
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
