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

fn endpoints_of(text: &str) -> Vec<(String, u32)> {
    let r = load_str("t.yaml", text).unwrap();
    match &r.servers[0].source {
        crate::ServerSource::Http { url, endpoints } => {
            assert_eq!(url, &endpoints[0].url);
            endpoints
                .iter()
                .map(|e| (e.url.clone(), e.weight))
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn endpoints_are_a_list_of_urls_or_weighted_entries() {
    let listed = "servers:\n  notes:\n    url: [https://a.example.com/mcp, https://b.example.com/mcp]\n    tools: {}\n";
    assert_eq!(
        endpoints_of(listed),
        [
            ("https://a.example.com/mcp".into(), 1),
            ("https://b.example.com/mcp".into(), 1)
        ]
    );
    let weighted = "servers:\n  notes:\n    endpoints:\n      - { url: https://a.example.com/mcp, weight: 3 }\n      - https://b.example.com/mcp\n    balance: round_robin\n    health: { interval: 5s }\n    retry_budget: 10%\n    tools: {}\n";
    assert_eq!(
        endpoints_of(weighted),
        [
            ("https://a.example.com/mcp".into(), 3),
            ("https://b.example.com/mcp".into(), 1)
        ]
    );
    let r = load_str("t.yaml", weighted).unwrap();
    let s = &r.servers[0].resilience;
    assert_eq!(s.balance, super::Balance::RoundRobin);
    assert_eq!(s.health, Some(Duration::from_secs(5)));
    assert_eq!(s.retry_budget, 10);
    let defaults = load_str("t.yaml", listed).unwrap();
    let d = &defaults.servers[0].resilience;
    assert_eq!(
        (d.balance, d.health, d.retry_budget),
        (
            super::Balance::LeastRequests,
            Some(super::DEFAULT_HEALTH_INTERVAL),
            20
        )
    );
    let off = load_str("t.yaml", "servers:\n  notes:\n    url: https://a.example.com/mcp\n    health: off\n    retry_budget: off\n    tools: {}\n").unwrap();
    assert_eq!(
        (
            off.servers[0].resilience.health,
            off.servers[0].resilience.retry_budget
        ),
        (None, 0)
    );
}

#[test]
fn bad_endpoints_name_their_place_and_fix() {
    let p = problems(
        "servers:\n  notes:\n    url: [https://a.example.com/mcp, ftp://b]\n    tools: {}\n",
    );
    assert!(
        p[0].starts_with("t.yaml:3:")
            && p[0].contains("`servers.notes.url[1]`: `ftp://b` is not an http(s) URL"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: [https://a.example.com/mcp, http://10.0.0.2/mcp]\n    tools: {}\n",
    );
    assert!(
        p[0].contains("`servers.notes.url[1]`") && p[0].contains("allow_private"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: [https://a.example.com/mcp, https://a.example.com/mcp]\n    tools: {}\n",
    );
    assert!(
        p[0].contains("`servers.notes.url[1]`: `https://a.example.com/mcp` is listed twice"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    endpoints:\n      - { url: https://a.example.com/mcp, weight: 0 }\n    tools: {}\n",
    );
    assert!(
        p[0].starts_with("t.yaml:4:") && p[0].contains("`servers.notes.endpoints[0].weight`"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: https://a.example.com/mcp\n    endpoints: [https://b.example.com/mcp]\n    tools: {}\n",
    );
    assert!(p[0].contains("`url` and `endpoints` both"), "{}", p[0]);
    let p = problems(
        "servers:\n  notes:\n    url: [https://a.example.com/mcp, https://b.example.com/mcp]\n    connection: per_session\n    tools: {}\n",
    );
    assert!(
        p[0].contains("`servers.notes.connection`") && p[0].contains("several endpoints"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: https://a.example.com/mcp\n    retry_budget: lots\n    tools: {}\n",
    );
    assert!(
        p[0].contains("`servers.notes.retry_budget`") && p[0].contains("20%"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: https://a.example.com/mcp\n    balance: random\n    tools: {}\n",
    );
    assert!(p[0].contains("`servers.notes.balance`"), "{}", p[0]);
    let p = problems(
        "servers:\n  notes:\n    url: https://a.example.com/mcp\n    health: sometimes\n    tools: {}\n",
    );
    assert!(
        p[0].contains("`servers.notes.health`") && p[0].contains("`health: off`"),
        "{}",
        p[0]
    );
}
