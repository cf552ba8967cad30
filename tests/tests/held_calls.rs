//! A write call held for approval never leaves an official SDK client waiting in silence: the
//! answer's stream opens at once and carries a comment every few seconds, so a client with a
//! short read timeout gets the result after an approval, or `approval_pending` with the id, and
//! never a timeout. Driven with the official Python SDK (both eras) and TypeScript SDK.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_tests::{Fixture, Gateway, fixture_server, node, python, workspace};
use serde_json::{Value, json};

fn python_call(gw: &Gateway, mode: &str, read_timeout_s: u32) -> Child {
    Command::new(python())
        .arg(workspace().join("tests/python/held_call.py"))
        .arg(gw.mcp())
        .arg(&gw.key)
        .arg(mode)
        .arg(read_timeout_s.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn typescript_call(gw: &Gateway) -> Child {
    Command::new(node())
        .arg(workspace().join("tests/node/held_call.mjs"))
        .arg(gw.mcp())
        .arg(&gw.key)
        .current_dir(workspace().join("tests/node"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn outcome(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Wait for the one pending request, then approve it once `after` has passed since `since`.
async fn approve_after(gw: &Gateway, approver: &str, since: Instant, after: Duration) -> String {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let v: Value = http
            .get(format!("{}/admin/approvals?status=pending", gw.admin))
            .bearer_auth(approver)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(after.saturating_sub(since.elapsed())).await;
    let r = http
        .post(format!("{}/admin/approvals/{id}/approve", gw.admin))
        .bearer_auth(approver)
        .json(&json!({ "reason": "held-call test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_after_the_clients_read_timeout_still_reaches_it() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write, hold: 20s }\n",
        &fixture_server("fixture", &fx.url),
    )
    .unwrap();
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    // An 8 s read timeout, and the approval comes at 10 s: only the stream's comments keep the
    // client reading.
    for mode in ["legacy", "2026-07-28"] {
        let started = Instant::now();
        let child = python_call(&gw, mode, 8);
        approve_after(&gw, &approver, started, Duration::from_secs(10)).await;
        let v = tokio::task::spawn_blocking(move || outcome(child))
            .await
            .unwrap();
        assert_eq!(v["result"], "done", "{mode}: {v}");
        assert!(started.elapsed() >= Duration::from_secs(10), "{mode}");
    }
    let started = Instant::now();
    let child = typescript_call(&gw);
    approve_after(&gw, &approver, started, Duration::from_secs(2)).await;
    let v = tokio::task::spawn_blocking(move || outcome(child))
        .await
        .unwrap();
    assert_eq!(v["result"], "done", "typescript: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecided_hold_ends_in_approval_pending_with_its_id_never_a_timeout() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write, hold: 9s }\n",
        &fixture_server("fixture", &fx.url),
    )
    .unwrap();
    // Python with a read timeout shorter than the hold; TypeScript at its default timeout.
    let py = python_call(&gw, "legacy", 7);
    let ts = typescript_call(&gw);
    let (py, ts) = tokio::task::spawn_blocking(move || (outcome(py), outcome(ts)))
        .await
        .unwrap();
    for (who, v) in [("python", &py), ("typescript", &ts)] {
        assert_eq!(v["data"]["reason"], "approval_pending", "{who}: {v}");
        assert!(
            v["data"]["approval_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{who}: {v}"
        );
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("needs a human's approval"),
            "{who}: {v}"
        );
    }
    // The identical call from the same key waits on the same request.
    assert_eq!(py["data"]["approval_id"], ts["data"]["approval_id"]);
}

/// The default hold, with both SDKs at their default timeouts (a newcomer's first write call):
/// each ends in `approval_pending` with the id once the hold is over, never in a timeout.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_hold_ends_in_approval_pending_for_both_sdks_at_their_defaults() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write }\n",
        &fixture_server("fixture", &fx.url),
    )
    .unwrap();
    let started = Instant::now();
    let py = python_call(&gw, "legacy", 0);
    let ts = typescript_call(&gw);
    let (py, ts) = tokio::task::spawn_blocking(move || (outcome(py), outcome(ts)))
        .await
        .unwrap();
    for (who, v) in [("python", &py), ("typescript", &ts)] {
        assert_eq!(v["data"]["reason"], "approval_pending", "{who}: {v}");
        assert!(v["data"]["approval_id"].is_string(), "{who}: {v}");
    }
    // It waited the whole default hold (30 s) for an approver first.
    assert!(started.elapsed() >= Duration::from_secs(30));
}

/// A client whose connection drops resumes the answer's stream with `Last-Event-ID` (a GET on
/// its session) and gets the rest of that stream only: what was kept after the event it names,
/// and the response; for a held call, the refusal (a client that went away stops the hold, and
/// the call never runs on a later approval).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_answer_stream_resumes_with_last_event_id() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write, hold: 20s }\n",
        &fixture_server("fixture", &fx.url),
    )
    .unwrap();
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let mut c = portcullis_tests::raw::Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let before = fx.calls();
    for (tool, arguments) in [
        ("fixture__test_tool_with_progress", json!({})),
        ("fixture__slow", json!({ "ms": 0 })),
    ] {
        let call = json!({
            "jsonrpc": "2.0", "id": 41, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments, "_meta": { "progressToken": "p" } },
        });
        let mut resp = c.post(&call.to_string()).send().await.unwrap();
        // Read until the first event that carries an id (a progress notification), then drop.
        let mut buf = String::new();
        let last_id = loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(id) = buf.lines().find_map(|l| l.strip_prefix("id: ")) {
                break id.trim().to_string();
            }
        };
        drop(resp);
        let resumed = c
            .http
            .get(gw.mcp())
            .bearer_auth(&gw.key)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .header("last-event-id", &last_id)
            .send()
            .await
            .unwrap();
        assert_eq!(resumed.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(20), resumed.text())
            .await
            .expect("the resumed stream ends after the response")
            .unwrap();
        let messages: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let last = messages.last().unwrap();
        assert_eq!(last["id"], 41, "{text}");
        // Nothing from before the event it named comes again.
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert!(!ids.contains(&last_id.as_str()), "{text}");
        match tool {
            "fixture__slow" => {
                // The hold ended when the client left; an approval after that runs nothing.
                assert_eq!(last["error"]["data"]["reason"], "cancelled", "{text}");
                approve_after(&gw, &approver, Instant::now(), Duration::ZERO).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => assert_eq!(last["result"]["content"][0]["type"], "text", "{text}"),
        }
    }
    // The held call whose client went away did not run on the approval that came after.
    assert_eq!(fx.calls(), before + 1);
    // An id it does not keep (another holder's nonce) opens the session's ordinary stream,
    // which replays nothing.
    let mut other = c
        .http
        .get(gw.mcp())
        .bearer_auth(&gw.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .header("last-event-id", "1-0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    let first = tokio::time::timeout(Duration::from_millis(500), other.chunk()).await;
    if let Ok(Ok(Some(chunk))) = first {
        let text = String::from_utf8_lossy(&chunk);
        assert!(
            !text.contains("id: "),
            "replayed from an id it does not keep: {text}"
        );
    }
}
