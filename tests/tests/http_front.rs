//! The MCP front over raw HTTP: status codes, JSON-RPC codes, sessions, both eras, refusals.

use portcullis_tests::raw::{Raw, read, req};
use portcullis_tests::{Fixture, Gateway, fixture_server};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn setup() -> (Fixture, Gateway) {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
    (fx, gw)
}

#[tokio::test]
async fn no_credentials_no_entry() {
    let (_fx, gw) = setup().await;
    let http = reqwest::Client::new();
    let r = http.post(gw.mcp()).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        www,
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            gw.base
        )
    );
    let r = http
        .post(gw.mcp())
        .bearer_auth("pcl_0000000000000000_notarealkeynotarealkeynotarealkey00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let meta: Value = http
        .get(format!("{}/.well-known/oauth-protected-resource", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], json!(gw.base));
    // The path-suffixed form names the endpoint itself (RFC 9728 §3.1).
    for (path, resource) in [
        ("/mcp", format!("{}/mcp", gw.base)),
        ("/mcp/fixture", format!("{}/mcp/fixture", gw.base)),
    ] {
        let meta: Value = http
            .get(format!(
                "{}/.well-known/oauth-protected-resource{path}",
                gw.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["resource"], json!(resource), "{path}");
    }
    // A name no server has gets the same answer as a configured one, so the unauthenticated
    // metadata does not enumerate servers; what cannot be a server name is 404.
    let doc = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}/.well-known/oauth-protected-resource{path}", gw.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (known_status, mut known) = doc("/mcp/fixture").await;
    let (unknown_status, mut unknown) = doc("/mcp/nope").await;
    assert_eq!(
        (known_status, unknown_status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(unknown["resource"], json!(format!("{}/mcp/nope", gw.base)));
    known["resource"] = Value::Null;
    unknown["resource"] = Value::Null;
    assert_eq!(known, unknown);
    let (status, _) = doc("/mcp/Not_A_Server").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn transport_refusals() {
    let (_fx, gw) = setup().await;
    let c = Raw::new(gw.mcp(), &gw.key);
    // Foreign Origin and foreign Host: 403 before anything else.
    let r = c
        .post("{}")
        .header("origin", "http://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post("{}")
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post("{}")
        .header("origin", gw.base.clone())
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::FORBIDDEN);
    // Body over the 4 MiB default: 413.
    let big = "x".repeat(4 * 1024 * 1024 + 1);
    let r = c.post(&big).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Malformed JSON, invalid JSON-RPC.
    let (s, v) = read(c.post("{not json").send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32700))
    );
    let (s, v) = read(c.post(r#"{"jsonrpc":"2.0","id":1}"#).send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32600))
    );
    // No session and not the stateless revision: 400.
    let (s, _) = c.call(req(1, "tools/list", json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // GET without a session: 405.
    let r = c
        .http
        .get(gw.mcp())
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Unknown server endpoint: 404.
    let r = Raw::new(gw.server("nope"), &gw.key)
        .post("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sessions_are_bound_and_end() {
    let (_fx, gw) = setup().await;
    let mut a = Raw::new(gw.mcp(), &gw.key);
    a.init().await;
    let (s, v) = a.call(req(1, "ping", json!({}))).await;
    assert_eq!((s, &v["result"]), (StatusCode::OK, &json!({})));
    let (_, v) = a.call(req(2, "no/such/method", json!({}))).await;
    assert_eq!(v["error"]["code"], json!(-32601));
    // Another identity presenting the same session id: 404, as if it did not exist.
    let mut b = Raw::new(gw.mcp(), &gw.new_key("other").unwrap());
    b.session = a.session.clone();
    let (s, _) = b.call(req(3, "tools/list", json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The same session on another endpoint: 404.
    let mut c = Raw::new(gw.server("fixture"), &gw.key);
    c.session = a.session.clone();
    let (s, _) = c.call(req(4, "tools/list", json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unsupported protocol header inside a session: 400.
    let r = a
        .post(&req(5, "ping", json!({})).to_string())
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // DELETE ends it; afterwards the id is unknown.
    let r = a
        .http
        .delete(gw.mcp())
        .bearer_auth(&gw.key)
        .header("mcp-session-id", a.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = a.call(req(6, "ping", json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn catalogue_is_the_allowlist_with_registry_annotations() {
    let (_fx, gw) = setup().await;
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let (_, v) = c.call(req(1, "tools/list", json!({}))).await;
    let tools = v["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"fixture__echo"));
    assert!(
        !names.iter().any(|n| n.contains("unlisted_tool")),
        "{names:?}"
    );
    // late_tool is allowlisted but not offered yet: not shown.
    assert!(!names.contains(&"fixture__late_tool"));
    let by = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap().clone();
    assert_eq!(
        by("fixture__echo")["annotations"],
        json!({"readOnlyHint": true, "destructiveHint": false})
    );
    assert_eq!(
        by("fixture__slow")["annotations"],
        json!({"readOnlyHint": false, "destructiveHint": false})
    );
    assert_eq!(
        by("fixture__add_tool")["annotations"],
        json!({"readOnlyHint": false, "destructiveHint": true})
    );

    // Unlisted, nonexistent, wrong case and zero-width names all get the identical answer.
    let mut errors = Vec::new();
    for name in [
        "fixture__unlisted_tool",
        "fixture__nope",
        "fixture__ECHO",
        "fixture__ec\u{200b}ho",
        "nope__echo",
        "echo",
    ] {
        let (_, v) = c
            .call(req(
                2,
                "tools/call",
                json!({ "name": name, "arguments": {} }),
            ))
            .await;
        let e = v["error"].clone();
        errors.push((
            e["code"].clone(),
            e["message"].as_str().unwrap().replace(name, "NAME"),
            e["data"].clone(),
        ));
    }
    assert!(errors.windows(2).all(|w| w[0] == w[1]), "{errors:?}");
    assert_eq!(errors[0].0, json!(-32602));

    let (_, v) = c
        .call(req(
            3,
            "tools/call",
            json!({ "name": "fixture__echo", "arguments": { "text": "hi" } }),
        ))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], json!("hi"));

    // Resources: only allowlisted URIs, renamed for the federated endpoint.
    let (_, v) = c.call(req(4, "resources/list", json!({}))).await;
    let uris: Vec<&str> = v["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(uris.contains(&"fixture+test://static-text"), "{uris:?}");
    assert!(!uris.iter().any(|u| u.contains("secret://")));
    let (_, v) = c
        .call(req(
            5,
            "resources/read",
            json!({ "uri": "fixture+test://static-text" }),
        ))
        .await;
    assert_eq!(
        v["result"]["contents"][0]["text"],
        json!("This is the content of the static text resource.")
    );
    let (_, hidden) = c
        .call(req(
            6,
            "resources/read",
            json!({ "uri": "fixture+secret://hidden" }),
        ))
        .await;
    let (_, missing) = c
        .call(req(
            7,
            "resources/read",
            json!({ "uri": "fixture+test://missing" }),
        ))
        .await;
    assert_eq!(hidden["error"]["code"], missing["error"]["code"]);
    assert_eq!(hidden["error"]["message"], missing["error"]["message"]);

    // Bad cursor: -32602.
    let (_, v) = c
        .call(req(8, "tools/list", json!({ "cursor": "garbage!" })))
        .await;
    assert_eq!(v["error"]["code"], json!(-32602));
}

#[tokio::test]
async fn list_changed_reveals_new_allowlisted_tools_only_after_refresh() {
    // In the development profile a tool first seen after the pins were taken is kept as seen;
    // in production it stays quarantined until re-pinned (tests/registry.rs).
    let fx = Fixture::start("both").unwrap();
    let servers = fixture_server("fixture", &fx.url);
    let gw = Gateway::start_with("profile: development\n", &servers).unwrap();
    assert!(
        !std::fs::read_to_string(gw.config())
            .unwrap()
            .contains("pin:")
    );
    let mut c = Raw::new(gw.server("fixture"), &gw.key);
    c.init().await;
    let (_, v) = c
        .call(req(
            1,
            "tools/call",
            json!({ "name": "add_tool", "arguments": {} }),
        ))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], json!("added"));
    let mut seen = false;
    for _ in 0..100 {
        let (_, v) = c.call(req(2, "tools/list", json!({}))).await;
        if v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "late_tool")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "late_tool never appeared after list_changed");
}

#[tokio::test]
async fn stateless_revision_checks_headers_against_the_body() {
    let (_fx, gw) = setup().await;
    let c = Raw::new(gw.mcp(), &gw.key);
    let meta = json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} });
    let body = req(
        1,
        "tools/call",
        json!({ "name": "fixture__echo", "arguments": { "text": "x" }, "_meta": meta }),
    );
    let send = |method: &'static str, name: &'static str| {
        c.post(&body.to_string())
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .header("mcp-name", name)
            .send()
    };
    let (s, v) = read(send("tools/call", "fixture__echo").await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"]["content"][0]["text"], json!("x"));
    assert_eq!(v["result"]["resultType"], json!("complete"));
    // A header naming another tool than the body: 400 with -32020, upstream untouched.
    let (s, v) = read(send("tools/call", "fixture__add_tool").await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32020))
    );
    let (s, v) = read(send("tools/list", "fixture__echo").await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32020))
    );
    // Base64-wrapped header values are decoded before comparing.
    let (s, _) = read(
        send("tools/call", "=?base64?Zml4dHVyZV9fZWNobw==?=")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Unsupported version: 400 with -32022 naming what is supported.
    let old = req(
        2,
        "tools/list",
        json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": "2030-01-01", "io.modelcontextprotocol/clientCapabilities": {} } }),
    );
    let r = c
        .post(&old.to_string())
        .header("mcp-protocol-version", "2030-01-01")
        .header("mcp-method", "tools/list")
        .send()
        .await
        .unwrap();
    let (s, v) = read(r).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32022))
    );
    assert!(
        v["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    // server/discover answers with supported versions and private caching.
    let d = req(3, "server/discover", json!({ "_meta": meta }));
    let r = c
        .post(&d.to_string())
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .send()
        .await
        .unwrap();
    let (s, v) = read(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"]["supportedVersions"][0], json!("2026-07-28"));
    assert_eq!(v["result"]["cacheScope"], json!("private"));
}

#[tokio::test]
async fn upstream_down_or_slow_names_the_server_and_the_session_survives() {
    let fx = Fixture::start("both").unwrap();
    let servers = format!(
        "{}  dead:\n    url: http://127.0.0.1:9/mcp\n    allow_private: true\n    timeout: 300ms\n    tools: {{ x: {{ class: read }} }}\n",
        fixture_server("fixture", &fx.url).replace("timeout: 5s", "timeout: 500ms")
    );
    let gw = Gateway::start_with_unready(&servers);
    // Readiness is unauthenticated: it counts the upstreams that are down and names none.
    let ready = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.text().await.unwrap();
    assert!(
        body.starts_with("not ready: ") && body.ends_with(" of 2 upstreams not connected"),
        "{body}"
    );
    assert!(!body.contains("dead"), "{body}");
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let started = std::time::Instant::now();
    let (_, v) = c
        .call(req(
            1,
            "tools/call",
            json!({ "name": "fixture__slow", "arguments": { "ms": 5000 } }),
        ))
        .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(v["error"]["code"], json!(-32003), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`fixture`"),
        "{v}"
    );
    assert_eq!(v["error"]["data"]["server"], json!("fixture"));
    // The dead server's tool is unknown (it was never offered), and the session still works.
    let (_, v) = c
        .call(req(
            2,
            "tools/call",
            json!({ "name": "fixture__echo", "arguments": { "text": "still here" } }),
        ))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], json!("still here"));
    let (_, v) = c.call(req(3, "resources/list", json!({}))).await;
    assert!(v["result"]["resources"].is_array(), "{v}");
}

#[tokio::test]
async fn resource_updates_reach_subscribed_sessions_only() {
    let fx = Fixture::start("legacy").unwrap();
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
    let mut a = Raw::new(gw.server("fixture"), &gw.key);
    a.init().await;
    let mut b = Raw::new(gw.server("fixture"), &gw.key);
    b.init().await;
    let (_, v) = a
        .call(req(
            1,
            "resources/subscribe",
            json!({ "uri": "test://watched-resource" }),
        ))
        .await;
    assert_eq!(v["result"], json!({}), "{v}");
    let open = |c: &Raw| {
        c.http
            .get(&c.url)
            .bearer_auth(&c.key)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .send()
    };
    let mut sa = open(&a).await.unwrap().bytes_stream();
    let mut sb = open(&b).await.unwrap().bytes_stream();
    let (_, v) = b
        .call(req(
            2,
            "tools/call",
            json!({ "name": "touch_watched", "arguments": {} }),
        ))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], json!("touched"));
    use futures::StreamExt as _;
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = String::new();
        while let Some(chunk) = sa.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if buf.contains("notifications/resources/updated") {
                return buf;
            }
        }
        buf
    })
    .await
    .unwrap();
    assert!(got.contains("test://watched-resource"), "{got}");
    // The session that did not subscribe hears nothing about it.
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), sb.next()).await;
    if let Ok(Some(chunk)) = quiet {
        assert!(!String::from_utf8_lossy(&chunk.unwrap()).contains("resources/updated"));
    }
}

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
