//! Cancellation, batches, argument headers and calls whose client goes away.

use super::*;

/// Send `notifications/cancelled` for request `id` in `raw`'s session; it is accepted (202).
async fn cancel(raw: &Raw, id: u64) {
    let r = raw
        .post(
            &json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": { "requestId": id, "reason": "user pressed stop" } })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream_and_the_session_goes_on() {
    let fx = Fixture::start("both").unwrap();
    // A long upstream timeout: the gateway's own timeout also cancels upstream, and must not be
    // what this test sees.
    let servers = fixture_server("fixture", &fx.url).replace("timeout: 5s", "timeout: 120s");
    assert!(servers.contains("timeout: 120s"));
    let gw = Gateway::start(&servers).unwrap();
    let mut raw = Raw::new(gw.mcp(), &gw.key);
    raw.init().await;
    let raw = std::sync::Arc::new(raw);
    assert_eq!(fx.cancellations(), 0);
    let calls = fx.calls();
    // A call that would run for a minute.
    let running = {
        let raw = raw.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let resp = raw
                .post(
                    &req(
                        41,
                        "tools/call",
                        json!({ "name": "fixture__slow", "arguments": { "ms": 60_000 } }),
                    )
                    .to_string(),
                )
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            (status, body, started.elapsed())
        })
    };
    // Wait until it reached the upstream, then cancel it by its id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.calls() == calls {
        assert!(
            std::time::Instant::now() < deadline,
            "the call reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cancel(&raw, 41).await;
    let cancelled_at = std::time::Instant::now();
    // The upstream saw the cancellation: its `slow` tool stopped waiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.cancellations() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream saw the cancellation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The cancelled request ends at once, without the tool's result.
    let (status, body, took) = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the cancelled request ended")
        .unwrap();
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    assert!(
        cancelled_at.elapsed() < std::time::Duration::from_secs(4),
        "ended by the client's cancellation, not a timeout"
    );
    assert!(!body.contains("\"done\""), "{status} {body}");
    assert!(body.contains("cancel"), "{status} {body}");
    // A cancellation for an id that is not running, or from another session, changes nothing.
    let other = {
        let mut o = Raw::new(gw.mcp(), &gw.key);
        o.init().await;
        o
    };
    cancel(&other, 42).await;
    let victim = {
        let raw = raw.clone();
        tokio::spawn(async move {
            raw.call(req(
                42,
                "tools/call",
                json!({ "name": "fixture__slow", "arguments": { "ms": 300 } }),
            ))
            .await
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.calls() == calls + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second call reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cancel(&other, 42).await;
    let (status, r) = victim.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["result"]["content"][0]["text"], json!("done"), "{r}");
    assert_eq!(fx.cancellations(), 1);
}

#[tokio::test]
async fn batches_are_taken_in_sessions_of_revisions_that_have_them() {
    let (fx, gw) = setup().await;
    let session = |version: &'static str| {
        let gw_url = gw.mcp();
        let key = gw.key.clone();
        async move {
            let mut raw = Raw::new(gw_url, &key);
            let resp = raw
                .post(
                    &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                        "protocolVersion": version, "capabilities": {},
                        "clientInfo": { "name": "batch", "version": "1" } } })
                    .to_string(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            raw.session = Some(
                resp.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
            raw
        }
    };
    let old = session("2025-03-26").await;
    let calls = fx.calls();
    // Requests, a notification and a broken member in one POST: one JSON array answers the
    // requests and the broken member, in any order.
    let (status, r) = old
        .call(json!([
            { "jsonrpc": "2.0", "method": "notifications/initialized" },
            req(1, "tools/list", json!({})),
            req(2, "tools/call", json!({ "name": "fixture__echo", "arguments": { "text": "batched" } })),
            req(3, "tools/call", json!({ "name": "fixture__unlisted_tool", "arguments": {} })),
            { "jsonrpc": "1.0", "id": 4, "method": "ping" },
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let answers = r.as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(answers.len(), 4, "{r}");
    let by_id = |id: Value| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {r}"))
    };
    assert!(
        by_id(json!(1))["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "fixture__echo")
    );
    assert_eq!(
        by_id(json!(2))["result"]["content"][0]["text"],
        json!("batched")
    );
    // Each member goes through the same controls: a tool not granted is unknown.
    assert_eq!(by_id(json!(3))["error"]["code"], json!(-32602), "{r}");
    assert_eq!(by_id(Value::Null)["error"]["code"], json!(-32600), "{r}");
    assert_eq!(fx.calls(), calls + 1);
    // Only notifications and responses: 202, no body.
    let r = old
        .post(&json!([{ "jsonrpc": "2.0", "method": "notifications/initialized" }]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Repeated ids, and requests mixed with responses, are refused whole; nothing runs.
    let (status, r) = old
        .call(json!([
            req(5, "ping", json!({})),
            req(
                5,
                "tools/call",
                json!({ "name": "fixture__echo", "arguments": { "text": "twice" } })
            )
        ]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("appears twice"),
        "{r}"
    );
    let (status, r) = old
        .call(json!([req(6, "ping", json!({})), { "jsonrpc": "2.0", "id": 99, "result": {} }]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(fx.calls(), calls + 1);
    // An empty batch, and one too large, are refused whole.
    let (status, r) = old.call(json!([])).await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32600)),
        "{r}"
    );
    let many: Vec<Value> = (0..65).map(|i| req(i, "ping", json!({}))).collect();
    let (status, r) = old.call(Value::Array(many)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64"),
        "{r}"
    );
    // Later revisions have no batches; neither has a POST without a session.
    let new = session("2025-11-25").await;
    let (status, r) = new.call(json!([req(1, "ping", json!({}))])).await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32600)),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2025-11-25 has no JSON-RPC batches"),
        "{r}"
    );
    let mut none = Raw::new(gw.mcp(), &gw.key);
    none.session = None;
    let (status, r) = none
        .call(json!([{ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": { "name": "b", "version": "1" } } }]))
        .await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32600)),
        "{r}"
    );
}

#[tokio::test]
async fn stateless_tool_arguments_declared_as_headers_must_match_them() {
    let fx = Fixture::start("both").unwrap();
    let servers = format!(
        "  fixture:\n    url: {}\n    allow_private: true\n    tools:\n      regional: {{ class: read }}\n",
        fx.url
    );
    let gw = Gateway::start(&servers).unwrap();
    let c = Raw::new(gw.mcp(), &gw.key);
    let meta = json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} });
    let call = |args: Value, region: Option<&str>| {
        let body = req(
            1,
            "tools/call",
            json!({ "name": "fixture__regional", "arguments": args, "_meta": meta }),
        );
        let mut r = c
            .post(&body.to_string())
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "fixture__regional");
        if let Some(v) = region {
            r = r.header("Mcp-Param-Region", v);
        }
        async move { read(r.send().await.unwrap()).await }
    };
    // The tool's schema, as the gateway shows it, keeps the declaration clients mirror.
    let (_, list) = c
        .post(&req(2, "tools/list", json!({ "_meta": meta })).to_string())
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .send()
        .await
        .map(|r| async { read(r).await })
        .unwrap()
        .await;
    assert_eq!(
        list["result"]["tools"][0]["inputSchema"]["properties"]["region"]["x-mcp-header"],
        json!("Region"),
        "{list}"
    );
    let calls = fx.calls();
    let (s, v) = call(
        json!({ "region": "eu-west1", "text": "hi" }),
        Some("eu-west1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], json!("eu-west1: hi"));
    // Non-ASCII values travel Base64-wrapped.
    let (s, v) = call(
        json!({ "region": "zürich", "text": "hi" }),
        Some("=?base64?esO8cmljaA==?="),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(fx.calls(), calls + 2);
    // A header routing one way while the body says another, or no header at all: 400, -32020,
    // and the upstream is never asked.
    for (region, why) in [(Some("us-east1"), "does not match"), (None, "missing")] {
        let (s, v) = call(json!({ "region": "eu-west1", "text": "hi" }), region).await;
        assert_eq!(
            (s, v["error"]["code"].as_i64()),
            (StatusCode::BAD_REQUEST, Some(-32020)),
            "{v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(why) && !message.contains("eu-west1"),
            "{message}"
        );
    }
    assert_eq!(fx.calls(), calls + 2);
    // The refusals are in the audit log with their reasons (written after the answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let refused: Vec<Value> = portcullis_tests::audit_events(&gw.audit_file(), "tool.call")
            .into_iter()
            .filter(|e| e["outcome"] == json!("invalid_request"))
            .collect();
        if refused.len() >= 2 || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Mcp-Param-region")
    );
}

#[tokio::test]
async fn a_call_whose_client_goes_away_runs_to_its_end_and_is_recorded_even_at_shutdown() {
    let (fx, gw) = setup().await;
    let mut raw = Raw::new(gw.mcp(), &gw.key);
    raw.init().await;
    let calls = fx.calls();
    // The client gives up (and closes its connection) while the upstream is still working.
    let gave_up = raw
        .post(
            &req(
                7,
                "tools/call",
                json!({ "name": "fixture__slow", "arguments": { "ms": 800 } }),
            )
            .to_string(),
        )
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    drop(raw);
    // The gateway is told to stop while the call runs without its client.
    gw.signal("TERM");
    // The call that was let through is finished, not dropped halfway: the upstream ran it to
    // its end, and its result event is written before the log's last event.
    // (Key and pin commands write chains of their own to the same file: this is the server's.)
    let serving = portcullis_tests::audit_events(&gw.audit_file(), "audit.start")
        .into_iter()
        .find(|e| e["detail"]["role"] == json!("serve"))
        .expect("the server's chain")["chain"]
        .clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !portcullis_tests::audit_events(&gw.audit_file(), "audit.stop")
        .iter()
        .any(|e| e["chain"] == serving)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(gw.audit_file()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["chain"] == serving)
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], json!("audit.stop"), "{text}");
    let result = lines
        .iter()
        .find(|e| e["kind"] == json!("tool.result") && e["tool"] == json!("slow"))
        .unwrap_or_else(|| panic!("no tool.result event for the abandoned call: {text}"));
    assert_eq!(result["status"], json!("ok"), "{result}");
    assert!(result["latency_ms"].as_f64().unwrap() >= 700.0, "{result}");
    assert_eq!(fx.calls(), calls + 1);
    assert_eq!(fx.cancellations(), 0);
}
