#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! A stateful session's standalone GET stream resumes: a client that reconnects with the
//! `Last-Event-ID` of the last message it got receives what was sent while it was away.

use std::time::Duration;

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, fixture_server};
use serde_json::{Value, json};

/// The GET stream of `raw`'s session, from `last` if given.
async fn open(gw: &Gateway, raw: &Raw, last: Option<&str>) -> reqwest::Response {
    let mut r = raw
        .http
        .get(gw.mcp())
        .bearer_auth(&gw.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", raw.session.clone().unwrap());
    if let Some(id) = last {
        r = r.header("last-event-id", id);
    }
    let resp = r.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// The next message with an event id on `stream`, within `wait`: (id, message).
async fn next(
    stream: &mut reqwest::Response,
    buf: &mut String,
    wait: Duration,
) -> Option<(String, Value)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Events are separated by a blank line.
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let id = event.lines().find_map(|l| l.strip_prefix("id: "));
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                return Some((id.to_string(), serde_json::from_str(data).unwrap()));
            }
            continue;
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .ok()?;
        buf.push_str(&String::from_utf8_lossy(&chunk.ok()??));
    }
}

async fn change_tools(raw: &Raw, n: u64) {
    let (_, v) = raw
        .call(req(
            n,
            "tools/call",
            json!({ "name": "fixture__test_trigger_tool_change", "arguments": {} }),
        ))
        .await;
    assert!(v.get("result").is_some(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standalone_stream_resumes_with_last_event_id() {
    let fx = Fixture::start("legacy").unwrap();
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
    let mut raw = Raw::new(gw.mcp(), &gw.key);
    raw.init().await;
    let mut stream = open(&gw, &raw, None).await;
    let mut buf = String::new();
    change_tools(&raw, 2).await;
    let (first, message) = next(&mut stream, &mut buf, Duration::from_secs(10))
        .await
        .expect("a list change on the stream");
    assert_eq!(
        message["method"], "notifications/tools/list_changed",
        "{message}"
    );
    // The client goes away; the list changes while it is gone. Another session's stream is
    // the witness that the change went out before the client comes back.
    let mut witness_raw = Raw::new(gw.mcp(), &gw.key);
    witness_raw.init().await;
    let mut witness = open(&gw, &witness_raw, None).await;
    let mut wbuf = String::new();
    drop(stream);
    change_tools(&raw, 3).await;
    next(&mut witness, &mut wbuf, Duration::from_secs(10))
        .await
        .expect("the change went out");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = open(&gw, &raw, Some(&first)).await;
    let mut buf = String::new();
    let (second, message) = next(&mut resumed, &mut buf, Duration::from_secs(10))
        .await
        .expect("what was sent while the client was away");
    assert_ne!(second, first);
    assert_eq!(
        message["method"], "notifications/tools/list_changed",
        "{message}"
    );
    // Then the stream goes on.
    change_tools(&raw, 4).await;
    let (third, _) = next(&mut resumed, &mut buf, Duration::from_secs(10))
        .await
        .expect("the stream goes on after the replay");
    assert!(third != second && third != first);
    // A GET without Last-Event-ID starts from now: nothing sent before comes again.
    let mut fresh = open(&gw, &raw, None).await;
    let mut buf = String::new();
    let replayed = next(&mut fresh, &mut buf, Duration::from_millis(700)).await;
    assert!(replayed.is_none(), "{replayed:?}");
}
