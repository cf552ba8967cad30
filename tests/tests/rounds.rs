#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Multi-round requests (2026-07-28 `InputRequiredResult`) through the gateway: the official
//! Python SDK answering each round, the sealed `requestState` opening only for the caller,
//! endpoint, request and arguments it was issued for, and a 2025-era session never handed a
//! request for input. The upstream is the fixture speaking 2026-07-28 (its multi-round tools
//! are those the conformance suite's scenarios describe).

use std::process::Command;

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, audit_events, fixture_server, python, workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn start() -> (Fixture, Gateway) {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start(&fixture_server("modern", &fx.url)).unwrap();
    (fx, gw)
}

fn sdk(gw: &Gateway, mode: &str) -> Value {
    let out = Command::new(python())
        .arg(workspace().join("tests/python/rounds.py"))
        .args([&gw.mcp(), &gw.key, mode])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// A 2026-07-28 request to `url` as `key`, declaring `caps`: (status, message).
async fn modern(
    url: &str,
    key: &str,
    method: &str,
    params: Value,
    caps: Value,
) -> (StatusCode, Value) {
    let mut params = params;
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
    });
    let mut r = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .json(&req(1, method, params));
    if let Some(n) = name {
        r = r.header("mcp-name", n);
    }
    portcullis_tests::raw::read(r.send().await.unwrap()).await
}

fn statuses(gw: &Gateway, tool: &str) -> Vec<String> {
    audit_events(&gw.audit_file(), "tool.result")
        .iter()
        .filter(|e| e["tool"] == tool)
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_answers_each_round_through_the_gateway() {
    let (_fx, gw) = start();
    let out = sdk(&gw, "all");
    let results = out["results"].as_array().unwrap_or_else(|| panic!("{out}"));
    assert_eq!(results[0], "Alice likes blue", "{out}");
    let multiple = results[1].as_str().unwrap();
    assert!(
        multiple.starts_with("Alice / Hello from the model / "),
        "{out}"
    );
    assert!(multiple.contains("file:///work/project"), "{out}");
    assert_eq!(
        results[2], "Use this context: the quarterly report",
        "{out}"
    );
    let asked: Vec<&str> = out["asked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        asked.contains(&"elicitation: Step 1: What is your name?"),
        "{out}"
    );
    assert!(
        asked.contains(&"elicitation: Step 2: What is your favorite color?"),
        "{out}"
    );
    assert!(asked.contains(&"sampling: Generate a greeting"), "{out}");
    assert!(asked.contains(&"roots"), "{out}");
    // Each round is a call of its own, decided and recorded.
    assert_eq!(
        statuses(&gw, "test_input_required_result_multi_round"),
        ["input_required", "input_required", "ok"]
    );
    // A client that declared only sampling is asked only for that.
    let out = sdk(&gw, "sampling");
    assert_eq!(out["results"], json!(["answered: greeting"]), "{out}");
    assert_eq!(
        out["asked"],
        json!(["sampling: Generate a greeting"]),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_state_opens_only_for_the_caller_endpoint_request_and_arguments_it_was_issued_for()
 {
    let (fx, gw) = start();
    let url = gw.mcp();
    let caps = json!({ "elicitation": {} });
    let tool = "modern__test_input_required_result_request_state";
    let call = |args: Value| json!({ "name": tool, "arguments": args });
    let (s, first) = modern(&url, &gw.key, "tools/call", call(json!({})), caps.clone()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let r = &first["result"];
    assert_eq!(r["resultType"], "input_required", "{first}");
    assert_eq!(
        r["inputRequests"]["confirm"]["method"], "elicitation/create",
        "{first}"
    );
    let state = r["requestState"].as_str().unwrap().to_string();
    // The upstream's own state is sealed, never shown.
    assert!(
        state.starts_with("prs1.") && !state.contains("fixture-"),
        "{state}"
    );
    let answers = json!({ "confirm": { "action": "accept", "content": { "ok": true } } });
    let retry = |name: &str, args: Value, state: &str| json!({ "name": name, "arguments": args, "inputResponses": answers, "requestState": state });
    let calls = fx.calls();
    let refused = |v: &Value| {
        assert_eq!(v["error"]["code"], -32602, "{v}");
        assert_eq!(v["error"]["data"]["reason"], "request_state_invalid", "{v}");
    };
    // Altered; the upstream's own (guessable) state; another caller; another tool; other
    // arguments; another endpoint: refused before anything reaches the upstream.
    let other = gw.new_key("other").unwrap();
    let endpoint = format!("{}/modern", gw.mcp());
    let elsewhere = "modern__test_input_required_result_tampered_state";
    let bare = "test_input_required_result_request_state";
    let tampered = format!("{state}-TAMPERED");
    let cases = [
        (&url, &gw.key, retry(tool, json!({}), &tampered)),
        (&url, &gw.key, retry(tool, json!({}), "fixture-confirm-1")),
        (&url, &other, retry(tool, json!({}), &state)),
        (&url, &gw.key, retry(elsewhere, json!({}), &state)),
        (&url, &gw.key, retry(tool, json!({ "x": 1 }), &state)),
        (&endpoint, &gw.key, retry(bare, json!({}), &state)),
    ];
    for (at, key, body) in cases {
        let (_, v) = modern(at, key, "tools/call", body, caps.clone()).await;
        refused(&v);
    }
    assert_eq!(fx.calls(), calls, "a refused retry reached the upstream");
    // Each refusal is on the operator's record, with why (noted, so read until it lands).
    let refusals = || {
        audit_events(&gw.audit_file(), "tool.call")
            .into_iter()
            .filter(|e| {
                e["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("requestState refused"))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while refusals() < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(refusals(), 6);
    // The retry it was issued for completes, with the upstream's own state restored.
    let (_, done) = modern(
        &url,
        &gw.key,
        "tools/call",
        retry(tool, json!({}), &state),
        caps.clone(),
    )
    .await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("state-ok"), "{done}");
    // Answers go on only with the state they answer, and only those it asked for.
    let extra = json!({ "name": tool, "arguments": {}, "requestState": state,
        "inputResponses": { "confirm": { "action": "accept", "content": { "ok": true } }, "smuggled": { "x": 1 } } });
    let (_, v) = modern(&url, &gw.key, "tools/call", extra, caps.clone()).await;
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    let passed = || {
        audit_events(&gw.audit_file(), "tool.call")
            .into_iter()
            .filter_map(|e| e["detail"].get("input_responses").cloned())
            .collect::<Vec<Value>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while passed().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let passed = passed();
    assert_eq!(passed.len(), 2, "{passed:?}");
    assert!(
        passed.iter().all(|p| p["keys"] == json!(["confirm"])),
        "{passed:?}"
    );
    let stateless = json!({ "name": "modern__test_input_required_result_elicitation", "arguments": {},
        "inputResponses": { "user_name": { "action": "accept", "content": { "name": "Mallory" } } } });
    let (_, v) = modern(&url, &gw.key, "tools/call", stateless, caps.clone()).await;
    assert_eq!(
        v["result"]["resultType"], "input_required",
        "asked again: {v}"
    );
    // A prompt's state is bound to its arguments too.
    let prompt = "modern__test_input_required_result_prompt";
    let (_, p) = modern(
        &url,
        &gw.key,
        "prompts/get",
        json!({ "name": prompt }),
        caps.clone(),
    )
    .await;
    let pstate = p["result"]["requestState"].as_str().unwrap().to_string();
    let answer = json!({ "context": { "action": "accept", "content": { "context": "c" } } });
    let (_, v) = modern(&url, &gw.key, "prompts/get", json!({ "name": prompt, "arguments": { "a": "b" }, "inputResponses": answer, "requestState": pstate }), caps.clone()).await;
    refused(&v);
    let (_, v) = modern(
        &url,
        &gw.key,
        "prompts/get",
        json!({ "name": prompt, "inputResponses": answer, "requestState": pstate }),
        caps.clone(),
    )
    .await;
    assert_eq!(
        v["result"]["messages"][0]["content"]["text"], "Use this context: c",
        "{v}"
    );
    // An input request the client did not declare is never put to it: the call fails as a
    // missing capability, naming it.
    let (s, v) = modern(
        &url,
        &gw.key,
        "tools/call",
        json!({ "name": "modern__test_input_required_result_sampling", "arguments": {} }),
        json!({ "elicitation": {} }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], -32021, "{v}");
    assert_eq!(
        v["error"]["data"]["requiredCapabilities"],
        json!({ "sampling": {} }),
        "{v}"
    );
    // Malformed answers are refused as such.
    let (_, v) = modern(
        &url,
        &gw.key,
        "tools/call",
        json!({ "name": tool, "arguments": {}, "inputResponses": { "confirm": 12345 } }),
        caps,
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2025_era_session_is_never_handed_a_request_for_input() {
    let (fx, gw) = start();
    let mut raw = Raw::new(gw.mcp(), &gw.key);
    raw.init().await;
    let (_, v) = raw
        .call(req(
            2,
            "tools/call",
            json!({ "name": "modern__test_input_required_result_elicitation", "arguments": {} }),
        ))
        .await;
    assert!(v.get("result").is_none(), "{v}");
    assert_eq!(v["error"]["data"]["reason"], "upstream_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("asked for input"), "{v}");
    // Nor can it hand the upstream a state: the 2026-07-28 fields of its params never cross.
    let calls = fx.calls();
    let smuggled = json!({
        "name": "modern__test_input_required_result_request_state", "arguments": {},
        "requestState": "fixture-confirm-1",
        "inputResponses": { "confirm": { "action": "accept", "content": { "ok": true } } },
    });
    let (_, v) = raw.call(req(3, "tools/call", smuggled)).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asked for input"),
        "{v}"
    );
    assert_eq!(fx.calls(), calls + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_run_the_upstream_asks_for_input_fails_and_never_completes() {
    let fx = Fixture::start("both").unwrap();
    let gw = portcullis_tests::approve::with_approvals(&fx, "{ required_from: read, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let caps = json!({ "elicitation": {}, "extensions": { "io.modelcontextprotocol/tasks": {} } });
    let tool = "fixture__test_input_required_result_request_state";
    let call = json!({ "name": tool, "arguments": {} });
    let (_, created) = modern(&gw.mcp(), &gw.key, "tools/call", call, caps.clone()).await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let task = created["result"]["taskId"].as_str().unwrap().to_string();
    let id = portcullis_tests::approve::pending(&gw, &approver).await;
    portcullis_tests::approve::decide(&gw, &approver, &id, "approve").await;
    // The run has no client to ask: the upstream's request for input (and its state) fails the
    // task; it never shows as a completed result.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        let (_, got) = modern(
            &gw.mcp(),
            &gw.key,
            "tasks/get",
            json!({ "taskId": task, "name": task }),
            caps.clone(),
        )
        .await;
        let status = got["result"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if status != "working" || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(got["result"]["status"], "failed", "{got}");
    let error = &got["result"]["error"];
    assert_eq!(error["data"]["reason"], "upstream_error", "{got}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("asked for input"),
        "{got}"
    );
    assert!(!got.to_string().contains("requestState"), "{got}");
}
