use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{Bounds, CALLER_TIMEOUT, caller_deadline};

fn server() -> registry::Server {
    let text = "servers:\n  up:\n    url: https://up.example.com/mcp\n    timeout: 10s\n    max_timeout: 1m\n    max_response: 1MiB\n    tools:\n      quick: { class: read, timeout: 2s }\n      plain: { class: read }\n";
    registry::load_str("t.yaml", text)
        .unwrap()
        .servers
        .remove(0)
}

#[test]
fn a_tools_timeout_replaces_the_servers_and_the_caller_can_only_shorten() {
    let s = server();
    let quick = json!({ "name": "quick" });
    let b = Bounds::of(&s, "tools/call", Some(&quick), None);
    assert_eq!(
        (b.timeout, b.max_timeout),
        (Duration::from_secs(2), Duration::from_secs(60))
    );
    assert_eq!(
        (b.max_response, b.max_depth),
        (1 << 20, registry::DEFAULT_MAX_RESPONSE_DEPTH)
    );
    let plain = json!({ "name": "plain" });
    let b = Bounds::of(&s, "tools/call", Some(&plain), None);
    assert_eq!(b.timeout, Duration::from_secs(10));
    // Only a tool call has a tool's timeout.
    let b = Bounds::of(&s, "prompts/get", Some(&quick), None);
    assert_eq!(b.timeout, Duration::from_secs(10));
    // The caller's deadline shortens both; it never lengthens either.
    let b = Bounds::of(
        &s,
        "tools/call",
        Some(&quick),
        Some(Duration::from_millis(500)),
    );
    assert_eq!(
        (b.timeout, b.max_timeout),
        (Duration::from_millis(500), Duration::from_millis(500))
    );
    let b = Bounds::of(
        &s,
        "tools/call",
        Some(&quick),
        Some(Duration::from_secs(600)),
    );
    assert_eq!(
        (b.timeout, b.max_timeout),
        (Duration::from_secs(2), Duration::from_secs(60))
    );
}

#[test]
fn the_callers_deadline_is_read_from_its_meta() {
    let now = Instant::now();
    let given = json!({ "_meta": { CALLER_TIMEOUT: 1500 } });
    assert_eq!(
        caller_deadline(Some(&given), now),
        Ok(Some(now + Duration::from_millis(1500)))
    );
    assert_eq!(
        caller_deadline(Some(&json!({ "_meta": {} })), now),
        Ok(None)
    );
    assert_eq!(caller_deadline(None, now), Ok(None));
    for bad in [json!(0), json!(-5), json!(1.5), json!("100"), json!(null)] {
        let p = json!({ "_meta": { CALLER_TIMEOUT: bad } });
        let why = caller_deadline(Some(&p), now).unwrap_err();
        assert!(
            why.contains("positive whole number of milliseconds"),
            "{why}"
        );
    }
}
