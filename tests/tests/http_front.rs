//! The MCP front over raw HTTP: status codes, JSON-RPC codes, sessions, both eras, refusals.

use portcullis_tests::raw::{Raw, read, req};
use portcullis_tests::{Fixture, Gateway, fixture_server};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "http_front/calls.rs"]
mod calls;

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
