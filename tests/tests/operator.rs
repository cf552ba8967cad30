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

#[path = "operator/levers.rs"]
mod levers;

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
