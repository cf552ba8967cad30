//! Operator levers end to end: approvals (single use, bound to arguments, never self-approved,
//! expiring, held calls released by an approval), the kill switch (a second process sharing the
//! store sees it within a second; in-flight calls are cancelled; pending approvals voided; it
//! survives a restart), read-only and shadow modes, the admin listener's credentials and errors,
//! and the operator CLI.

use std::time::{Duration, Instant};

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, bin, create_key_with, fixture_server};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn start(top: &str) -> (Fixture, Gateway) {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(top, &fixture_server("fx", &fx.url)).unwrap();
    (fx, gw)
}

async fn admin(
    gw_admin: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{gw_admin}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, key: &str, path: &str) -> (StatusCode, Value) {
    admin(base, key, reqwest::Method::GET, path, None).await
}

async fn post(base: &str, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
    admin(base, key, reqwest::Method::POST, path, Some(body)).await
}

/// Send `body` (a call that needs approval) in the background and wait, up to 5 s, until its
/// request is pending; returns the call's eventual answer text and the approval id.
async fn hold(
    gw: &Gateway,
    approver: &str,
    c: Raw,
    body: Value,
) -> (tokio::task::JoinHandle<String>, String) {
    let started = Instant::now();
    let held = tokio::spawn(async move {
        c.post(&body.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    loop {
        let (_, list) = get(&gw.admin, approver, "/admin/approvals?status=pending").await;
        if let Some(id) = list["approvals"][0]["id"].as_str() {
            return (held, id.to_string());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no pending request appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(c: &Raw, tool: &str, args: Value) -> Value {
    let (_, r) = c
        .call(req(
            7,
            "tools/call",
            json!({ "name": tool, "arguments": args }),
        ))
        .await;
    r
}

async fn client(url: String, key: &str) -> Raw {
    let mut c = Raw::new(url, key);
    c.init().await;
    c
}

fn reason(r: &Value) -> &str {
    r["error"]["data"]["reason"].as_str().unwrap_or("")
}

fn approval_id(r: &Value) -> String {
    r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval id in {r}"))
        .to_string()
}

const APPROVALS: &str =
    "approvals: { required_from: write, ttl: 30s, hold: 0s, target_arguments: [ms] }
grants:
  user:*: [\"fx/*\"]
";

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_is_single_use_bound_to_the_arguments_and_never_self_approved() {
    let (fx, gw) = start(APPROVALS);
    let alice_key = create_key_with(
        &gw.config(),
        "alice-agent",
        &["fx/*".into()],
        &["--user", "alice"],
    )
    .unwrap();
    let alice = client(gw.server("fx"), &alice_key).await;
    let alice_approver = gw.operator_key("approver", Some("alice")).unwrap();
    let bob = gw.operator_key("approver", Some("bob")).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let before = fx.calls();

    // A write call is held: not executed, answered with the request's id.
    let r = call(&alice, "slow", json!({ "ms": 0 })).await;
    assert_eq!(reason(&r), "approval_pending", "{r}");
    assert_eq!(r["error"]["code"], -32001);
    let a = approval_id(&r);
    // The caller is told where the request is decided.
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("request {a} is waiting for an approver"))
            && message.contains("operator page")
            && message.contains(&format!("`portcullis approvals approve {a} --reason \"...\" --config <the gateway's config>`")),
        "{r}"
    );
    // The identical call finds the same request rather than filing another.
    assert_eq!(
        approval_id(&call(&alice, "slow", json!({ "ms": 0 })).await),
        a
    );
    assert_eq!(fx.calls(), before);

    // The request as an approver sees it.
    let (s, rec) = get(&gw.admin, &bob, &format!("/admin/approvals/{a}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec["status"], "pending");
    assert_eq!(rec["tool"], "slow");
    assert_eq!(rec["target"], "0");
    assert!(
        rec["principals"]
            .as_array()
            .unwrap()
            .contains(&json!("user:alice")),
        "{rec}"
    );
    let (_, list) = get(&gw.admin, &auditor, "/admin/approvals?status=pending").await;
    assert_eq!(list["approvals"].as_array().unwrap().len(), 1);

    // Nobody approves their own call; an auditor approves nothing; client keys are not operators.
    let verdict = format!("/admin/approvals/{a}/approve");
    let (s, e) = post(
        &gw.admin,
        &alice_approver,
        &verdict,
        json!({ "reason": "mine" }),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("another approver"),
        "{e}"
    );
    let (s, _) = post(&gw.admin, &auditor, &verdict, json!({ "reason": "x" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = post(&gw.admin, &alice_key, &verdict, json!({ "reason": "x" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(e["error"].as_str().unwrap().contains("client keys"), "{e}");
    let (s, _) = post(&gw.admin, "", &verdict, json!({ "reason": "x" })).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) = post(&gw.admin, &bob, &verdict, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = post(
        &gw.admin,
        &bob,
        "/admin/approvals/apr_nope/approve",
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Bob approves.
    let (s, rec) = post(&gw.admin, &bob, &verdict, json!({ "reason": "ticket 42" })).await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "approved");
    let (s, _) = post(&gw.admin, &bob, &verdict, json!({ "reason": "twice" })).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Other arguments are another call: held again, nothing executed.
    let r = call(&alice, "slow", json!({ "ms": 1 })).await;
    assert_eq!(reason(&r), "approval_pending");
    assert_ne!(approval_id(&r), a);
    assert_eq!(fx.calls(), before);
    // Another caller making the same call does not ride on alice's approval.
    let other = client(gw.server("fx"), &gw.key).await;
    assert_eq!(
        reason(&call(&other, "slow", json!({ "ms": 0 })).await),
        "approval_pending"
    );
    assert_eq!(fx.calls(), before);

    // The identical call runs, exactly once.
    let r = call(&alice, "slow", json!({ "ms": 0 })).await;
    assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
    assert_eq!(fx.calls(), before + 1);
    let r = call(&alice, "slow", json!({ "ms": 0 })).await;
    assert_eq!(
        reason(&r),
        "approval_pending",
        "a replay must be held again: {r}"
    );
    assert_ne!(approval_id(&r), a);
    assert_eq!(fx.calls(), before + 1);

    // The record keeps who, when and why.
    let (_, rec) = get(&gw.admin, &auditor, &format!("/admin/approvals/{a}")).await;
    assert_eq!(rec["status"], "used");
    assert!(
        rec["decided_by"].as_str().unwrap().contains("user bob"),
        "{rec}"
    );
    assert_eq!(rec["reason"], "ticket 42");
    assert!(rec["decided_at"].as_i64().unwrap() <= rec["used_at"].as_i64().unwrap());
    let (_, ev) = get(&gw.admin, &auditor, "/admin/events").await;
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"approval.requested") && kinds.contains(&"approval.approve"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_proceeds_when_approved_during_its_hold_with_progress() {
    let (fx, gw) = start("approvals: { required_from: write, hold: 10s }\n");
    let bob = gw.operator_key("approver", Some("bob")).unwrap();
    let before = fx.calls();
    let c = client(gw.server("fx"), &gw.key).await;
    let body = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "slow", "arguments": { "ms": 0 }, "_meta": { "progressToken": "p1" } } });
    let started = Instant::now();
    let (held, id) = hold(&gw, &bob, c, body).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, _) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{id}/approve"),
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = held.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the held call was not released promptly"
    );
    assert!(
        text.contains("notifications/progress") && text.contains("waiting for a human"),
        "{text}"
    );
    assert!(text.contains("\"done\""), "{text}");
    assert_eq!(fx.calls(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_denied_requests_never_run() {
    let (fx, gw) = start("approvals: { required_from: write, ttl: 1s, hold: 0s }\n");
    let bob = gw.operator_key("approver", Some("bob")).unwrap();
    let c = client(gw.server("fx"), &gw.key).await;
    let before = fx.calls();
    let a = approval_id(&call(&c, "slow", json!({ "ms": 0 })).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, e) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{a}/approve"),
        json!({ "reason": "late" }),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains("expired"), "{e}");
    let b = approval_id(&call(&c, "slow", json!({ "ms": 0 })).await);
    assert_ne!(a, b);
    // Approved, then left unused past its lifetime.
    let (s, _) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{b}/approve"),
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        reason(&call(&c, "slow", json!({ "ms": 0 })).await),
        "approval_pending"
    );
    assert_eq!(fx.calls(), before);
    // Denied: the identical call is held again, never run.
    let d = approval_id(&call(&c, "slow", json!({ "ms": 0 })).await);
    let (s, _) = post(
        &gw.admin,
        &bob,
        &format!("/admin/approvals/{d}/deny"),
        json!({ "reason": "no" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = call(&c, "slow", json!({ "ms": 0 })).await;
    assert_eq!(reason(&r), "approval_pending");
    assert_ne!(approval_id(&r), d);
    assert_eq!(fx.calls(), before);
}

/// Poll `c` until a call is refused as `killed` (or allowed, when `want_killed` is false).
async fn until(c: &Raw, want_killed: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let r = call(c, "echo", json!({ "text": "hi" })).await;
        let killed = reason(&r) == "killed";
        if killed == want_killed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "state not reached in {limit:?}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kill_switch_reaches_a_second_process_within_a_second_and_survives_restarts() {
    let (_fx, mut gw) = start("");
    let replica = gw.another().unwrap();
    let op = gw.operator_key("admin", Some("ops")).unwrap();
    let on_a = client(gw.server("fx"), &gw.key).await;
    let on_b = client(format!("{}/mcp/fx", replica.base), &gw.key).await;
    assert_eq!(
        call(&on_b, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );
    let key_id = gw.key.split('_').nth(1).unwrap().to_string();

    for (scope, target) in [
        ("global", None),
        ("server", Some("fx")),
        ("tool", Some("fx/echo")),
        ("key", Some(key_id.as_str())),
    ] {
        let (s, v) = post(
            &gw.admin,
            &op,
            "/admin/kill-switch",
            json!({ "scope": scope, "target": target, "engaged": true, "reason": "incident 7" }),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // This process: at once.
        let r = call(&on_a, "echo", json!({ "text": "hi" })).await;
        assert_eq!(reason(&r), "killed", "{scope}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("incident 7"),
            "{r}"
        );
        // The other process: within a second.
        let took = until(&on_b, true, Duration::from_secs(1)).await;
        eprintln!("{scope}: second process refused after {took:?}");
        let (s, _) = post(
            &gw.admin,
            &op,
            "/admin/kill-switch",
            json!({ "scope": scope, "target": target, "engaged": false, "reason": "resolved" }),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        until(&on_b, false, Duration::from_secs(1)).await;
    }
    // Resources, prompts and listings obey the switch too.
    post(
        &gw.admin,
        &op,
        "/admin/kill-switch",
        json!({ "scope": "server", "target": "fx", "engaged": true, "reason": "reads too" }),
    )
    .await;
    let (_, r) = on_a
        .call(req(
            8,
            "resources/read",
            json!({ "uri": "test://static-text" }),
        ))
        .await;
    assert_eq!(reason(&r), "killed", "{r}");
    let (_, r) = on_a
        .call(req(
            9,
            "prompts/get",
            json!({ "name": "test_simple_prompt" }),
        ))
        .await;
    assert_eq!(reason(&r), "killed", "{r}");
    let (_, r) = on_a.call(req(10, "resources/list", json!({}))).await;
    assert_eq!(r["result"]["resources"], json!([]), "{r}");
    post(
        &gw.admin,
        &op,
        "/admin/kill-switch",
        json!({ "scope": "global", "engaged": true, "reason": "all" }),
    )
    .await;
    let (_, r) = on_a.call(req(11, "prompts/list", json!({}))).await;
    assert_eq!(reason(&r), "killed", "{r}");
    for scope in ["global", "server"] {
        post(&gw.admin, &op, "/admin/kill-switch", json!({ "scope": scope, "target": if scope == "server" { Some("fx") } else { None }, "engaged": false, "reason": "ok" })).await;
    }
    let (_, r) = on_a
        .call(req(
            12,
            "resources/read",
            json!({ "uri": "test://static-text" }),
        ))
        .await;
    assert!(r["result"]["contents"].is_array(), "{r}");
    // A tool switch does not touch other tools.
    post(
        &gw.admin,
        &op,
        "/admin/kill-switch",
        json!({ "scope": "tool", "target": "fx/slow", "engaged": true, "reason": "r" }),
    )
    .await;
    assert_eq!(
        call(&on_a, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );
    // Engaged state is in the store: a restarted process starts with it.
    post(
        &gw.admin,
        &op,
        "/admin/kill-switch",
        json!({ "scope": "server", "target": "fx", "engaged": true, "reason": "persist" }),
    )
    .await;
    gw.restart().unwrap();
    let on_a = client(gw.server("fx"), &gw.key).await;
    assert_eq!(
        reason(&call(&on_a, "echo", json!({ "text": "hi" })).await),
        "killed"
    );
    let (_, state) = get(&gw.admin, &op, "/admin/kill-switch").await;
    let engaged = state["engaged"].as_array().unwrap();
    assert_eq!(engaged.len(), 2, "{state}");
    assert!(
        engaged
            .iter()
            .any(|s| s["reason"] == "persist" && s["actor"].as_str().unwrap().contains("user ops"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn engaging_cancels_calls_in_flight_and_voids_pending_approvals() {
    let (fx, gw) = start("approvals: { required_from: destructive, hold: 0s }\n");
    let op = gw.operator_key("admin", None).unwrap();
    let c = client(gw.server("fx"), &gw.key).await;
    // A destructive call waits for approval.
    let a = approval_id(&call(&c, "add_tool", json!({})).await);
    // A slow write call is running.
    let slow_client = client(gw.server("fx"), &gw.key).await;
    let started = Instant::now();
    let running =
        tokio::spawn(async move { call(&slow_client, "slow", json!({ "ms": 20000 })).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, v) = post(
        &gw.admin,
        &op,
        "/admin/kill-switch",
        json!({ "scope": "server", "target": "fx", "engaged": true, "reason": "stop everything" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["voided_approvals"], 1, "{v}");
    let r = running.await.unwrap();
    assert_eq!(reason(&r), "killed", "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, rec) = get(&gw.admin, &op, &format!("/admin/approvals/{a}")).await;
    assert_eq!(rec["status"], "voided");
    assert!(
        rec["reason"].as_str().unwrap().contains("stop everything"),
        "{rec}"
    );
    // The voided request can no longer be approved.
    let approver = gw.operator_key("approver", None).unwrap();
    let (s, _) = post(
        &gw.admin,
        &approver,
        &format!("/admin/approvals/{a}/approve"),
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let _ = fx;
}

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
