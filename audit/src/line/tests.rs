use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::Who;
use std::sync::Arc;

fn link<'a>(session: Option<&'a str>) -> Link<'a> {
    Link {
        chain: "0123456789abcdef",
        seq: 42,
        prev: "genesis",
        session,
    }
}

fn same(e: &Event, l: &Link<'_>) {
    let fast = members(e, l).expect("members in canonical order");
    let slow = generic(e, l);
    assert_eq!(
        String::from_utf8_lossy(fast.bytes()),
        String::from_utf8_lossy(slow.bytes())
    );
    let hash = Value::String("ab".repeat(32));
    assert_eq!(fast.with(&hash), slow.with(&hash));
}

#[test]
fn every_member_set_gives_the_generic_bytes() {
    let e = Event {
        at_ms: 1_765_000_000_123,
        kind: "tool.call",
        request_id: Some("7".into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        session: Some("raw-session-id".into()),
        identity: Some(Who {
            subject: "key:ab\"cd".into(),
            principals: Arc::from(["org:acme".to_owned(), "team:ünïcode".to_owned()]),
        }),
        method: Some("tools/call".into()),
        server: Some("fixture".into()),
        tool: Some("echo".into()),
        arguments_digest: Some("sha256:00".into()),
        arguments: Some(json!({"z": 1, "a": [true, null, 1.5], "é": "\u{1}"})),
        outcome: Some("allowed"),
        reason: Some("line\nbreak".into()),
        level: Some("info".into()),
        status: Some("ok"),
        latency_ms: Some(12.25),
        request_bytes: Some(120),
        response_bytes: Some(0),
        detail: Some(json!({"b": {"\u{e000}": 1, "z": 2}, "a": "x"})),
    };
    same(&e, &link(Some("s:0123456789abcdef01234567")));
}

#[test]
fn a_bare_event_gives_the_generic_bytes() {
    same(&Event::new("audit.start"), &link(None));
    // A session on the event but none recorded is left out by both.
    let mut e = Event::new("audit.note");
    e.session = Some("x".into());
    same(&e, &link(None));
    // A latency that is not a number is `null` in both.
    e.latency_ms = Some(f64::NAN);
    same(&e, &link(None));
}

#[test]
fn a_member_out_of_order_is_refused() {
    let mut m = Members::new("hash", 16);
    m.string("b", "1").string("a", "2");
    assert!(m.finish().is_none());
    let mut m = Members::new("hash", 16);
    m.string("hash", "1");
    assert!(m.finish().is_none());
}

proptest! {
    #[test]
    fn any_event_gives_the_generic_bytes(
        subject in "\\PC{0,12}",
        principals in proptest::collection::vec("\\PC{0,8}", 0..4),
        reason in proptest::option::of("\\PC{0,20}"),
        server in proptest::option::of("[a-z_]{1,8}"),
        latency in proptest::option::of(any::<f64>()),
        bytes in proptest::option::of(any::<u64>()),
        detail in proptest::option::of(proptest::collection::btree_map("\\PC{0,6}", any::<i64>(), 0..5)),
        seq in 1i64..i64::MAX,
        at_ms in 0i64..4_102_444_800_000,
    ) {
        let mut e = Event::new("tool.result");
        e.at_ms = at_ms;
        e.identity = Some(Who { subject, principals: principals.into() });
        e.reason = reason;
        e.server = server;
        e.latency_ms = latency;
        e.response_bytes = bytes;
        e.detail = detail.map(|d| json!(d));
        let l = Link { chain: "c", seq, prev: "p", session: None };
        same(&e, &l);
    }
}
