//! Operator requests with bad input, read-only and shadow modes, the operator CLI, and held calls
//! whose client or tool went away.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_operator_requests_get_clear_errors() {
    let (_fx, gw) = start("");
    let op = gw.operator_key("admin", None).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let ks = "/admin/kill-switch";
    // Each bad request: who sends it, the body, the status, and words the error must contain.
    let cases = [
        (
            &op,
            json!({ "scope": "planet", "engaged": true, "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "global, server, tool, key, team, org",
        ),
        (
            &op,
            json!({ "scope": "server", "target": "nope", "engaged": true, "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "no server `nope`",
        ),
        (
            &op,
            json!({ "scope": "tool", "target": "fx/unlisted_tool", "engaged": true, "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "allowlisted tool",
        ),
        (
            &op,
            json!({ "scope": "global", "engaged": true, "reason": " " }),
            StatusCode::BAD_REQUEST,
            "reason is required",
        ),
        (
            &op,
            json!({ "scope": "global", "engaged": true, "reason": "x", "extra": 1 }),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            &auditor,
            json!({ "scope": "global", "engaged": true, "reason": "x" }),
            StatusCode::FORBIDDEN,
            "admin role",
        ),
    ];
    for (key, body, status, words) in cases {
        let (s, e) = post(&gw.admin, key, ks, body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(words), "{body}: {e}");
    }
    let (s, _) = get(&gw.admin, &gw.key, ks).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get(
        &gw.admin,
        "pcl_0000000000000000_notakeynotakeynotakeynotakeynotakey",
        ks,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = get(&gw.admin, &auditor, "/admin/approvals?status=weird").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Operator keys do not work on the MCP listener.
    let c = Raw::new(gw.server("fx"), &op); // not a client
    let (s, _) = c.call(req(1, "tools/list", json!({}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The admin routes are not on the MCP listener.
    let r = reqwest::Client::new()
        .get(format!("{}{ks}", gw.base))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // DNS rebinding: a foreign Host is refused.
    let r = reqwest::Client::new()
        .get(format!("{}{ks}", gw.admin))
        .header("host", "evil.example:80")
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A Prometheus scrape names the pod's address: /metrics with a bearer credential only.
    let scrape = |cookie: bool, key: &str| {
        let mut r = reqwest::Client::new()
            .get(format!("{}/metrics", gw.admin))
            .header("host", "10.1.2.3:8081")
            .bearer_auth(key);
        if cookie {
            r = r.header("cookie", "portcullis_ui=x");
        }
        r.send()
    };
    assert_eq!(scrape(false, &op).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        scrape(true, &op).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        scrape(false, "pcl_0123456789abcdef_notakeynotakeynotakeynotakeyxx")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_and_shadow_modes_never_reach_the_upstream_for_what_they_stop() {
    let (fx, gw) = start("mode: read_only\n");
    let op = gw.operator_key("admin", Some("ops")).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let c = client(gw.server("fx"), &gw.key).await;
    let before = fx.calls();
    let r = call(&c, "slow", json!({ "ms": 0 })).await;
    assert_eq!(reason(&r), "read_only", "{r}");
    assert_eq!(fx.calls(), before);
    assert_eq!(
        call(&c, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );
    assert_eq!(fx.calls(), before + 1);
    let (_, m) = get(&gw.admin, &auditor, "/admin/mode").await;
    assert_eq!(m["mode"], "read_only");
    assert_eq!(m["source"], "config");

    let (s, _) = post(
        &gw.admin,
        &auditor,
        "/admin/mode",
        json!({ "mode": "shadow", "reason": "x" }),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = post(
        &gw.admin,
        &op,
        "/admin/mode",
        json!({ "mode": "loud", "reason": "x" }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, m) = post(
        &gw.admin,
        &op,
        "/admin/mode",
        json!({ "mode": "shadow", "reason": "dry run" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["source"], "operator");
    for (tool, args) in [
        ("echo", json!({ "text": "hi" })),
        ("slow", json!({ "ms": 0 })),
    ] {
        let r = call(&c, tool, args).await;
        let text = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        assert!(text.starts_with("Not executed"), "{text}");
        assert_eq!(r["result"]["_meta"]["portcullis/executed"], false);
    }
    assert_eq!(fx.calls(), before + 1, "shadow mode called the upstream");
    // Back to enforce.
    post(
        &gw.admin,
        &op,
        "/admin/mode",
        json!({ "mode": "enforce", "reason": "done" }),
    )
    .await;
    assert_eq!(
        call(&c, "slow", json!({ "ms": 0 })).await["result"]["content"][0]["text"],
        "done"
    );
    let (_, ev) = get(&gw.admin, &auditor, "/admin/events?format=json").await;
    let modes: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mode.set")
        .collect();
    assert_eq!(modes.len(), 2);
    assert!(modes[0]["actor"].as_str().unwrap().contains("user ops"));
    assert_eq!(modes[0]["detail"]["to"], "shadow");
    // NDJSON export for a SIEM.
    let r = reqwest::Client::new()
        .get(format!("{}/admin/events?format=ndjson", gw.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_cli_goes_through_the_admin_api() {
    let (_fx, gw) = start("approvals: { required_from: write, hold: 0s }\n");
    let op = gw.operator_key("admin", Some("ops")).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin("portcullis"))
            .args(args)
            .args(["--admin-url", &gw.admin])
            .env("PORTCULLIS_ADMIN_KEY", &op)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&[
        "kill",
        "engage",
        "--scope",
        "server",
        "--target",
        "fx",
        "--reason",
        "from the cli",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("engaged: server `fx`"), "{out}");
    let c = client(gw.server("fx"), &gw.key).await;
    assert_eq!(
        reason(&call(&c, "echo", json!({ "text": "hi" })).await),
        "killed"
    );
    let (_, out, _) = cli(&["kill", "status"]);
    assert!(
        out.contains("ENGAGED") && out.contains("from the cli"),
        "{out}"
    );
    let (code, _, err) = cli(&["kill", "engage", "--scope", "planet", "--reason", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("valid scopes"), "{err}");
    let (code, _, _) = cli(&[
        "kill", "release", "--scope", "server", "--target", "fx", "--reason", "ok",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(
        call(&c, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );

    let id = approval_id(&call(&c, "slow", json!({ "ms": 0 })).await);
    let (_, out, _) = cli(&["approvals", "list"]);
    assert!(out.contains(&id) && out.contains("fx/slow"), "{out}");
    let (code, out, err) = cli(&["approvals", "approve", &id, "--reason", "looks fine"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approved"), "{out}");
    assert_eq!(
        call(&c, "slow", json!({ "ms": 0 })).await["result"]["content"][0]["text"],
        "done"
    );
    let (code, _, err) = cli(&["approvals", "approve", "apr_unknown", "--reason", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    let (code, out, _) = cli(&["mode", "set", "read_only", "--reason", "freeze"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("read_only (set by"), "{out}");
    // Without a key the CLI says what to set.
    let out = std::process::Command::new(bin("portcullis"))
        .args(["kill", "status", "--admin-url", &gw.admin])
        .env_remove("PORTCULLIS_ADMIN_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORTCULLIS_ADMIN_KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_whose_client_gave_up_never_runs_on_a_later_approval() {
    let (fx, gw) = start("approvals: { required_from: write, hold: 10s }\n");
    let bob = gw.operator_key("approver", Some("bob")).unwrap();
    let before = fx.calls();
    let c = client(gw.server("fx"), &gw.key).await;
    // The client waits one second, then hangs up. (The answer's stream opens at once, so a
    // client's read timeout does not run out while it waits; this one leaves on purpose.)
    let body = req(
        5,
        "tools/call",
        json!({ "name": "slow", "arguments": { "ms": 0 } }),
    );
    let held = c.post(&body.to_string()).send().await.unwrap();
    assert_eq!(held.headers()["content-type"], "text/event-stream");
    let gave_up = tokio::time::timeout(Duration::from_secs(1), held.text()).await;
    assert!(gave_up.is_err(), "the held call answered within a second");
    let (_, list) = get(&gw.admin, &bob, "/admin/approvals?status=pending").await;
    let id = list["approvals"][0]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{id}/approve"),
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fx.calls(), before, "an abandoned call ran");
    let (_, rec) = get(&gw.admin, &bob, &format!("/admin/approvals/{id}")).await;
    assert_eq!(rec["status"], "approved");
    // The client comes back with the identical call: it runs once.
    assert_eq!(
        call(&c, "slow", json!({ "ms": 0 })).await["result"]["content"][0]["text"],
        "done"
    );
    assert_eq!(fx.calls(), before + 1);
}

/// A reload lands while a call waits for approval: the tool is now `destructive`, so the call
/// decided as `write` does not run on that approval; it is refused and recorded as such.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_held_across_a_reload_that_changes_its_tool_does_not_run() {
    let (fx, gw) = start("approvals: { required_from: write, hold: 20s }\n");
    let bob = gw.operator_key("approver", Some("bob")).unwrap();
    let before = fx.calls();
    let c = client(gw.server("fx"), &gw.key).await;
    let body = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "slow", "arguments": { "ms": 0 } } });
    let started = Instant::now();
    let (held, id) = hold(&gw, &bob, c, body).await;
    let cfg = gw.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let raised = text.replace("slow: { class: write }", "slow: { class: destructive }");
    assert_ne!(raised, text);
    std::fs::write(&cfg, raised).unwrap();
    while !portcullis_tests::audit_events(&gw.audit_file(), "config.reload")
        .iter()
        .any(|e| e["outcome"] == "applied")
    {
        assert!(started.elapsed() < Duration::from_secs(15), "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{id}/approve"),
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let answer = held.await.unwrap();
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(
        fx.calls(),
        before,
        "the call ran under a config that changed it"
    );
    // The refusal is queued for the log, not waited for.
    let denied = loop {
        let found = portcullis_tests::audit_events(&gw.audit_file(), "tool.call")
            .into_iter()
            .find(|e| e["outcome"] == "denied" && e["tool"] == "slow");
        if let Some(e) = found {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the refusal is not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        denied["reason"].as_str().unwrap().contains("reloaded"),
        "{denied}"
    );
}
