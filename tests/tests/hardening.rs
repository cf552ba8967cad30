//! Attacks on the gateway from a hostile upstream (`tests/python/hostile_upstream.py`): answers
//! on another caller's stream, a restart with a changed tool, endless progress, echoed
//! credentials and forged gateway markers.

use std::time::{Duration, Instant};

use portcullis_tests::hostile::Hostile;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, bin, create_key_with, fixture_server};
use serde_json::{Value, json};

#[path = "hardening/inputs.rs"]
mod inputs;

const TOKEN: &str = "hostile-credential-4f1c2a9e77";

struct Setup {
    hostile: Hostile,
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

fn setup(extra: &str) -> Setup {
    setup_with("", extra)
}

/// With `top` as extra top-level config lines and `extra` as extra server keys.
fn setup_with(top: &str, extra: &str) -> Setup {
    let hostile = Hostile::start(false).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let gw = Gateway::start_with(top, &hostile.server("hostile", &token, extra)).unwrap();
    Setup {
        hostile,
        gw,
        _secrets: secrets,
    }
}

async fn client(gw: &Gateway, key: &str) -> Raw {
    let mut c = Raw::new(gw.mcp(), key);
    c.init().await;
    c
}

async fn call(c: &Raw, tool: &str, params: Value) -> Value {
    let mut p = params;
    p["name"] = json!(format!("hostile__{tool}"));
    c.call(req(9, "tools/call", p)).await.1
}

/// `GET {admin}{path}` with an operator key, as JSON.
async fn admin_get(gw: &Gateway, key: &str, path: &str) -> Value {
    serde_json::from_str(&portcullis_tests::ops::admin_text_as(gw, key, path).await).unwrap()
}

/// The admin listener's `/metrics`, read with an auditor key.
async fn metrics(gw: &Gateway) -> String {
    portcullis_tests::ops::admin_text(gw, "/metrics").await
}

fn text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_answer_sent_on_another_callers_stream_reaches_nobody() {
    let s = setup("");
    let k1 = client(&s.gw, &s.gw.key).await;
    let k2_key = s.gw.new_key("k2").unwrap();
    let k2 = client(&s.gw, &k2_key).await;
    let held = tokio::spawn(async move { call(&k1, "hold", json!({ "arguments": {} })).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.hostile.calls("hold").await == 0 {
        assert!(Instant::now() < deadline, "hold never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upstream sends the held request's answer on inject's stream first.
    let injected = call(&k2, "inject", json!({ "arguments": {} })).await;
    assert_eq!(text(&injected), "inject's own answer", "{injected}");
    let held = held.await.unwrap();
    assert_eq!(text(&held), "held call's own answer", "{held}");
    let metrics = metrics(&s.gw).await;
    assert!(
        metrics.contains(
            "portcullis_upstream_violations_total{server=\"hostile\",kind=\"foreign_answer\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_restarted_upstream_is_listed_again_before_any_call_runs_on_it() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let r = call(&c, "echo", json!({ "arguments": { "text": "before" } })).await;
    assert_eq!(text(&r), "before", "{r}");
    // The upstream restarts with echo's description changed, announcing nothing.
    s.hostile.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let r = call(&c, "echo", json!({ "arguments": { "text": "after" } })).await;
        if r["error"]["data"]["reason"] == "quarantined" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(last["error"]["data"]["reason"], "quarantined", "{last}");
    assert_eq!(
        s.hostile.calls("echo").await,
        1,
        "the changed echo never ran"
    );
    let events = portcullis_tests::audit_events(&s.gw.audit_file(), "tool.quarantine");
    assert!(
        events
            .iter()
            .any(|e| e["tool"] == "echo" && e["server"] == "hostile"),
        "{events:?}"
    );
}

#[tokio::test]
async fn progress_does_not_keep_a_call_alive_past_its_timeout() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let started = Instant::now();
    let body = req(
        9,
        "tools/call",
        json!({ "name": "hostile__tick", "arguments": {}, "_meta": { "progressToken": "p1" } }),
    );
    let stream = c
        .post(&body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(stream.contains("\"error\""), "{stream}");
    assert!(took < Duration::from_secs(6), "the call ran {took:?}");
    // The progress relayed meanwhile does not carry the credential it echoed.
    assert!(stream.contains("notifications/progress"), "{stream}");
    assert!(!stream.contains(TOKEN), "{stream}");
    assert!(stream.contains("working as [redacted]"), "{stream}");
}

#[tokio::test]
async fn progress_extends_a_call_only_up_to_max_timeout() {
    let s = setup("    max_timeout: 4s\n");
    let c = client(&s.gw, &s.gw.key).await;
    let started = Instant::now();
    let r = call(
        &c,
        "tick",
        json!({ "arguments": {}, "_meta": { "progressToken": "p1" } }),
    )
    .await;
    let took = started.elapsed();
    assert!(r["error"].is_object(), "{r}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "the call ran {took:?}"
    );
}

#[tokio::test]
async fn an_upstream_cannot_echo_the_gateways_credential_or_forge_its_markers() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let r = call(&c, "leak", json!({ "arguments": {} })).await;
    let shown = r.to_string();
    assert!(r["error"].is_object(), "{r}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let log = std::fs::read_to_string(s.gw.audit_file()).unwrap();
    assert!(!log.contains(TOKEN));

    let r = call(&c, "forge", json!({ "arguments": {} })).await;
    assert_eq!(text(&r), "forged", "{r}");
    assert_eq!(r["result"]["_meta"], json!({ "vendor/ok": 1 }), "{r}");
}

#[tokio::test]
async fn a_resource_outside_the_allowlisted_prefix_cannot_be_reached_through_dot_segments() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let read = |uri: &str| {
        req(
            3,
            "resources/read",
            json!({ "uri": format!("hostile+{uri}") }),
        )
    };
    let (_, ok) = c.call(read("note://pub/1")).await;
    assert_eq!(
        ok["result"]["contents"][0]["text"], "content of note://pub/1",
        "{ok}"
    );
    let (_, missing) = c.call(read("note://nothing/1")).await;
    for escape in [
        "note://pub/../secret/1",
        "note://pub/%2e%2e/secret/1",
        "note://pub/..%2fsecret/1",
        "note://pub/%2E%2E%2Fsecret%2F1",
    ] {
        let (_, r) = c.call(read(escape)).await;
        assert_eq!(
            r["error"]["code"], missing["error"]["code"],
            "{escape}: {r}"
        );
        assert!(r["result"].is_null(), "{escape}: {r}");
    }
    assert_eq!(s.hostile.calls("resources/read").await, 1);
}

async fn admin_post(gw: &Gateway, key: &str, path: &str, body: Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.admin))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_key_minted_under_another_is_revoked_and_killed_with_it_and_never_wider() {
    let s = setup("");
    let cfg = s.gw.config();
    let parent = create_key_with(&cfg, "parent", &["hostile/*".into()], &[]).unwrap();
    let pid = parent.split('_').nth(1).unwrap().to_string();
    let child =
        create_key_with(&cfg, "child", &["hostile/echo".into()], &["--parent", &pid]).unwrap();
    // A level the parent lacks cannot be gained.
    let wider = create_key_with(
        &cfg,
        "wider",
        &["hostile/echo".into()],
        &["--parent", &pid, "--org", "acme"],
    );
    assert!(
        wider
            .as_ref()
            .is_err_and(|e| e.to_string().contains("has no org")),
        "{wider:?}"
    );
    let c = client(&s.gw, &child).await;
    let args = json!({ "arguments": { "text": "hi" } });
    assert_eq!(text(&call(&c, "echo", args.clone()).await), "hi");

    // A kill switch on the parent covers the child.
    let op = s.gw.operator_key("admin", None).unwrap();
    let switch = |engaged: bool| json!({ "scope": "key", "target": pid, "engaged": engaged, "reason": "parent leaked" });
    assert_eq!(
        admin_post(&s.gw, &op, "/admin/kill-switch", switch(true)).await,
        200
    );
    let r = call(&c, "echo", args.clone()).await;
    assert_eq!(r["error"]["data"]["reason"], "killed", "{r}");
    assert_eq!(
        admin_post(&s.gw, &op, "/admin/kill-switch", switch(false)).await,
        200
    );
    assert_eq!(text(&call(&c, "echo", args.clone()).await), "hi");

    // Revoking the parent revokes the child: its next request is unauthenticated.
    let out = std::process::Command::new(bin("portcullis"))
        .args(["keys", "revoke", "--config"])
        .arg(&cfg)
        .arg(&pid)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = c
            .post(&req(5, "tools/list", json!({})).to_string())
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child key still works ({status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = std::process::Command::new(bin("portcullis"))
        .args(["keys", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let child_id = child.split('_').nth(1).unwrap();
    let line = listed.lines().find(|l| l.contains(child_id)).unwrap();
    assert!(line.contains("revoked"), "{listed}");
}
