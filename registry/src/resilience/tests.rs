use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use super::{
    Breaker, DEFAULT_MAX_RESPONSE, DEFAULT_MAX_RESPONSE_DEPTH, nested_deeper_than, nesting,
};
use crate::load_str;
use crate::testing::problems;

fn server(extra: &str) -> String {
    format!(
        "servers:\n  notes:\n    url: https://notes.example.com/mcp\n{extra}    tools:\n      search: {{ class: read, timeout: 2s }}\n      save: {{ class: write }}\n"
    )
}

#[test]
fn defaults_bound_every_server_and_turn_the_breaker_on() {
    let r = load_str("t.yaml", &server("")).unwrap();
    let s = &r.servers[0];
    assert_eq!(s.resilience.max_response, DEFAULT_MAX_RESPONSE);
    assert_eq!(s.resilience.max_depth, DEFAULT_MAX_RESPONSE_DEPTH);
    assert_eq!(s.resilience.breaker, Some(Breaker::default()));
    assert_eq!(s.tools["search"].timeout, Some(Duration::from_secs(2)));
    assert_eq!(s.tools["save"].timeout, None);
}

#[test]
fn settings_are_read() {
    let extra = "    max_timeout: 1m\n    max_response: 2MiB\n    max_response_depth: 10\n    breaker: { failures: 3, cooldown: 5s }\n";
    let r = load_str("t.yaml", &server(extra)).unwrap();
    let s = &r.servers[0].resilience;
    assert_eq!(s.max_response, 2 << 20);
    assert_eq!(s.max_depth, 10);
    assert_eq!(
        s.breaker,
        Some(Breaker {
            failures: 3,
            cooldown: Duration::from_secs(5)
        })
    );
    let off = load_str("t.yaml", &server("    breaker: off\n")).unwrap();
    assert_eq!(off.servers[0].resilience.breaker, None);
}

#[test]
fn bad_values_name_their_place_and_fix() {
    let p = problems(&server("    max_response: lots\n"));
    assert!(
        p[0].starts_with("t.yaml:4:19: `servers.notes.max_response`: `\"lots\"` is not a size"),
        "{}",
        p[0]
    );
    let p = problems(&server("    max_response_depth: 500\n"));
    assert!(
        p[0].contains("`servers.notes.max_response_depth`") && p[0].contains("from 1 to 120"),
        "{}",
        p[0]
    );
    let p = problems(&server("    breaker: sometimes\n"));
    assert!(
        p[0].contains("`servers.notes.breaker`") && p[0].contains("`breaker: off`"),
        "{}",
        p[0]
    );
    let p = problems(&server("    breaker: { failures: 0 }\n"));
    assert!(
        p[0].contains("`servers.notes.breaker.failures`"),
        "{}",
        p[0]
    );
    let p = problems(&server("    breaker: { cooldown: soon }\n"));
    assert!(
        p[0].contains("`servers.notes.breaker.cooldown`"),
        "{}",
        p[0]
    );
}

#[test]
fn a_tool_timeout_past_the_servers_max_timeout_is_refused() {
    let text = "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    timeout: 1s\n    tools:\n      search: { class: read, timeout: 2s }\n";
    let p = problems(text);
    assert!(
        p[0].starts_with("t.yaml:6:39: `servers.notes.tools.search.timeout`")
            && p[0].contains("raise the server's `max_timeout`"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search: { class: read, timeout: never }\n",
    );
    assert!(
        p[0].contains("`servers.notes.tools.search.timeout`: `never` is not a duration"),
        "{}",
        p[0]
    );
}

#[test]
fn the_scan_reads_strings_as_strings() {
    assert!(!nested_deeper_than(br#"{"a":"[[[[{{{{"}"#, 1));
    assert!(!nested_deeper_than(br#"["\"[[[", "\\"]"#, 1));
    assert!(nested_deeper_than(br#"["\\", [[]]]"#, 2));
    assert!(!nested_deeper_than(b"42", 0));
    assert!(nested_deeper_than(b"[]", 0));
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[\\[\\]{}\"\\\\a-z ]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[\\[{\"\\\\a-z]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// The scan over the bytes agrees with the parsed value's depth, at every bound, however
    /// the text is laid out.
    #[test]
    fn the_scan_is_the_parsed_depth(v in json(), pretty in any::<bool>()) {
        let text = match pretty {
            true => serde_json::to_vec_pretty(&v).unwrap(),
            false => serde_json::to_vec(&v).unwrap(),
        };
        let depth = nesting(&v);
        for max in 0..=depth + 1 {
            prop_assert_eq!(nested_deeper_than(&text, max), depth > max);
        }
    }
}
