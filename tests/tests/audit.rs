//! The audit log end to end: allowed, denied and held calls each leave their events; a secret in
//! the arguments reaches neither the audit file, the export nor the gateway's log; the chain
//! verifies and an edit is named; an unwritable sink refuses calls while the gateway stays up;
//! a gateway killed mid-call has already written the request event; `logging/setLevel` is
//! recorded before it reaches an upstream; on a frozen audit disk, calls are refused at the
//! recording cap and readiness says so (`frozen`).

use std::process::Command;
use std::time::Duration;

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{AuditFifo, Fixture, Gateway, bin, create_key_with, fixture_server};
use serde_json::{Value, json};

#[path = "audit/frozen.rs"]
mod frozen;

/// Detected by its shape (a well-known key prefix).
const SHAPED: &str = "sk-proj-Q8x3LmP0aB7cD9eF2gH4";
/// Detected by its key (`password`).
const BY_KEY: &str = "correct-horse-battery-staple";
/// Redacted by the configured path `$.arguments.diary`.
const BY_PATH: &str = "dear-diary-entry-4711";

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, tool: &str, outcome: &str) -> Option<&'a Value> {
    all.iter().find(|e| {
        e["kind"] == kind && e["tool"] == tool && (outcome.is_empty() || e["outcome"] == outcome)
    })
}

fn verify(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin("portcullis"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [SHAPED, BY_KEY, BY_PATH] {
        assert!(!text.contains(s), "{s} leaked into {what}:\n{text}");
    }
}

async fn call(c: &Raw, id: u64, tool: &str, args: Value) -> Value {
    c.call(req(
        id,
        "tools/call",
        json!({ "name": tool, "arguments": args }),
    ))
    .await
    .1
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_is_recorded_chained_and_free_of_secrets() {
    let fx = Fixture::start("both").unwrap();
    let top = "approvals: { required_from: write, hold: 0s }
audit:
  sinks: [{ type: file, path: {dir}/audit.jsonl }, { type: store }]
  redact: [\"$.arguments.diary\"]
";
    let gw = Gateway::start_logged(top, &fixture_server("fx", &fx.url), "debug").unwrap();
    let secret_args =
        json!({ "text": format!("use {SHAPED}"), "password": BY_KEY, "diary": BY_PATH });

    // Allowed.
    let mut alice = Raw::new(gw.mcp(), &gw.key);
    alice.init().await;
    let r = call(&alice, 1, "fx__echo", secret_args.clone()).await;
    assert!(r["result"]["content"].is_array(), "{r}");
    // Denied: this key is granted one other tool only.
    let narrow =
        create_key_with(&gw.config(), "narrow", &["fx/test_simple_text".into()], &[]).unwrap();
    let mut bob = Raw::new(gw.mcp(), &narrow);
    bob.init().await;
    let r = call(&bob, 2, "fx__echo", secret_args.clone()).await;
    assert_eq!(r["error"]["data"]["reason"], "not_found", "{r}");
    // Held for approval.
    let mut held_args = secret_args.clone();
    held_args["ms"] = json!(1);
    let before = fx.calls();
    let r = call(&alice, 3, "fx__slow", held_args).await;
    assert_eq!(r["error"]["data"]["reason"], "approval_pending", "{r}");
    assert_eq!(fx.calls(), before, "a held call reached the upstream");
    // An operator action.
    let admin = gw.operator_key("admin", None).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/kill-switch", gw.admin))
        .bearer_auth(&admin)
        .json(&json!({ "scope": "tool", "target": "fx/test_sampling", "engaged": true, "reason": "audit test" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let file = gw.audit_file();
    let all = events(&file);
    let allowed = find(&all, "tool.call", "echo", "allowed").expect("allowed call event");
    assert_eq!(allowed["server"], "fx");
    assert!(
        allowed["identity"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("key:")
    );
    // The session is recorded as `s:` and 24 hex digits of its id's SHA-256, never the id.
    let id = alice.session.clone().unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()));
    assert_eq!(allowed["session"], format!("s:{}", &digest[..24]));
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&id));
    // Nor does the gateway's own log (at debug level) carry it.
    let log = std::fs::read_to_string(gw.log_file()).unwrap();
    assert!(log.contains(&format!("s:{}", &digest[..24])), "{log}");
    assert!(!log.contains(&id), "the session id is in the gateway's log");
    assert_eq!(allowed["arguments_digest"].as_str().unwrap().len(), 64);
    let result = all
        .iter()
        .find(|e| e["kind"] == "tool.result" && e["request_id"] == allowed["request_id"])
        .expect("result event");
    assert_eq!(result["status"], "ok");
    assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(result["response_bytes"].as_u64().unwrap() > 0);
    let denied = find(&all, "tool.call", "echo", "denied").expect("denied call event");
    assert!(denied["reason"].as_str().unwrap().len() > 5, "{denied}");
    assert!(denied["level"].is_string(), "{denied}");
    let held = find(&all, "tool.call", "slow", "held").expect("held call event");
    assert!(
        held["detail"]["approval_id"]
            .as_str()
            .unwrap()
            .starts_with("apr_")
    );
    assert!(all.iter().any(|e| e["kind"] == "approval.request"));
    assert!(
        all.iter()
            .any(|e| e["kind"] == "kill_switch.engage" && e["detail"]["reason"] == "audit test")
    );
    assert!(all.iter().any(|e| e["kind"] == "auth.success"));
    assert!(all.iter().any(|e| e["kind"] == "session.start"));
    assert!(
        all.iter()
            .any(|e| e["kind"] == "key.issue" && e["detail"]["name"] == "narrow")
    );
    // Redacted values correlate: the same password shows the same digest in every event.
    let marks: Vec<&str> = [allowed, denied, held]
        .iter()
        .map(|e| e["arguments"]["password"].as_str().unwrap())
        .collect();
    assert!(marks[0].starts_with("[redacted:hmac:"), "{marks:?}");
    assert!(marks.iter().all(|m| *m == marks[0]), "{marks:?}");
    assert!(
        allowed["arguments"]["diary"]
            .as_str()
            .unwrap()
            .starts_with("[redacted:hmac:")
    );

    // No secret anywhere: the file, the export, the log.
    assert_no_secret("the audit file", &std::fs::read_to_string(&file).unwrap());
    let auditor = gw.operator_key("auditor", None).unwrap();
    let export = reqwest::Client::new()
        .get(format!("{}/admin/audit", gw.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let export = export.text().await.unwrap();
    assert_no_secret("the export", &export);
    assert_no_secret(
        "the gateway log",
        &std::fs::read_to_string(gw.log_file()).unwrap(),
    );

    // The file and an unfiltered export verify.
    let (ok, out) = verify(&file);
    assert!(ok, "{out}");
    let exported = gw.dir.path().join("export.jsonl");
    std::fs::write(&exported, &export).unwrap();
    let (ok, out) = verify(&exported);
    assert!(ok, "{out}");

    // A client key cannot export; filters narrow; a session replays as its calls.
    let status = reqwest::Client::new()
        .get(format!("{}/admin/audit", gw.admin))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status == 401 || status == 403, "{status}");
    let get = |q: String| {
        let auditor = auditor.clone();
        let url = format!("{}/admin/audit?{q}", gw.admin);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(auditor)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let by_tool = get("tool=fx__echo&format=json".into()).await;
    let evs = by_tool["events"].as_array().unwrap();
    assert!(
        evs.len() >= 3 && evs.iter().all(|e| e["tool"] == "echo"),
        "{by_tool}"
    );
    let replay = get(format!(
        "session={}&format=replay",
        alice.session.clone().unwrap()
    ))
    .await;
    let calls = replay["calls"].as_array().unwrap();
    let tools: Vec<(&str, &str)> = calls
        .iter()
        .filter(|c| c["method"] == "tools/call")
        .map(|c| (c["tool"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(tools, [("echo", "allowed"), ("slow", "held")], "{replay}");
    assert_eq!(
        calls.iter().find(|c| c["tool"] == "echo").unwrap()["executed"],
        true
    );
    let bad = reqwest::Client::new()
        .get(format!("{}/admin/audit?since=yesterday", gw.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Tampering: change one decision and `audit verify` names the line.
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("\"outcome\":\"denied\""))
        .unwrap();
    let edited: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == line {
                l.replace("\"denied\"", "\"allowed\"")
            } else {
                l.to_string()
            };
            l + "\n"
        })
        .collect();
    std::fs::write(&file, edited).unwrap();
    let (ok, out) = verify(&file);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(":{} ", line + 1)) && out.contains("edited"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_sink_refuses_calls_and_the_gateway_stays_up() {
    let fx = Fixture::start("both").unwrap();
    let mut fifo = AuditFifo::new().unwrap();
    let gw = Gateway::start_with(&fifo.config(), &fixture_server("fx", &fx.url)).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let r = call(&c, 1, "fx__echo", json!({ "text": "hi" })).await;
    assert!(r["result"].is_object(), "{r}");

    fifo.fail();
    let before = fx.calls();
    for id in 2..4 {
        let r = call(&c, id, "fx__echo", json!({ "text": "hi" })).await;
        assert_eq!(r["error"]["data"]["reason"], "audit_unavailable", "{r}");
        assert_eq!(r["error"]["code"], -32001, "{r}");
    }
    assert_eq!(
        fx.calls(),
        before,
        "an unrecorded call reached the upstream"
    );
    // Still up: listings and health answer.
    assert!(c.tool_names().await.len() > 3);
    let health = reqwest::get(format!("{}/healthz", gw.admin)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_level_is_recorded_before_it_reaches_an_upstream_and_refused_when_it_cannot_be() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start(&fixture_server("fx", &fx.url)).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let (_, r) = c
        .call(req(1, "logging/setLevel", json!({ "level": "warning" })))
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(fx.levels(), ["warning"]);
    // The event is on a sink before the upstream hears of it; the file may trail the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let event = loop {
        let all = events(&gw.audit_file());
        if let Some(e) = all
            .iter()
            .find(|e| e["kind"] == "mcp.request" && e["method"] == "logging/setLevel")
        {
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no setLevel event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["outcome"], "allowed", "{event}");
    assert_eq!(event["detail"]["level"], "warning", "{event}");
    assert_eq!(event["detail"]["servers"], json!(["fx"]), "{event}");
    // A level MCP does not name is invalid params, and goes nowhere.
    let (_, r) = c
        .call(req(2, "logging/setLevel", json!({ "level": "loud" })))
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(fx.levels(), ["warning"]);

    // With no sink to record it, it is refused and the upstream never hears of it.
    let fx = Fixture::start("both").unwrap();
    let mut fifo = AuditFifo::new().unwrap();
    let gw = Gateway::start_with(&fifo.config(), &fixture_server("fx", &fx.url)).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    fifo.fail();
    let (_, r) = c
        .call(req(1, "logging/setLevel", json!({ "level": "debug" })))
        .await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "audit_unavailable", "{r}");
    assert!(fx.levels().is_empty(), "{:?}", fx.levels());
}

#[test]
fn a_gateway_without_a_writable_required_sink_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nstore: sqlite://{}\naudit: {{ sinks: [{{ type: file, path: /dev/full }}] }}\nservers:\n  notes:\n    builtin: notes\n    tools: {{ search_notes: {{ class: read }} }}\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin("portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/full") && err.contains("fix:"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_call_has_written_the_request_event() {
    let fx = Fixture::start("both").unwrap();
    // The file is the only sink, so it is the one that must have the event before the call runs
    // (with two required sinks, the first to have it lets the call go on).
    let mut gw = Gateway::start_with(
        "audit: { sinks: [{ type: file, path: \"{dir}/audit.jsonl\" }] }\n",
        &fixture_server("fx", &fx.url),
    )
    .unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let before = fx.calls();
    let pending = tokio::spawn(async move {
        let _ = call(&c, 9, "fx__slow", json!({ "ms": 20_000 })).await;
    });
    // Once the upstream has the call, the request event must already be on disk.
    for _ in 0..100 {
        if fx.calls() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fx.calls() > before, "the call never reached the upstream");
    gw.kill();
    pending.abort();
    let all = events(&gw.audit_file());
    let request = find(&all, "tool.call", "slow", "allowed").expect("request event on disk");
    assert!(
        !all.iter()
            .any(|e| e["kind"] == "tool.result" && e["request_id"] == request["request_id"]),
        "a result was written for a call that never finished"
    );
    let (ok, out) = verify(&gw.audit_file());
    assert!(ok, "{out}");
}

/// `portcullis audit verify` over `files`, as one log in that order.
fn verify_as_one(files: &[std::path::PathBuf], continued: bool) -> (bool, String) {
    let mut cmd = Command::new(bin("portcullis"));
    cmd.args(["audit", "verify"]);
    if continued {
        cmd.arg("--continued");
    }
    let out = cmd.args(files).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// The files rotated away from `file`, oldest first (their names sort by time).
fn rotated(file: &std::path::Path) -> Vec<std::path::PathBuf> {
    let name = format!("{}.2", file.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&name))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_rotates_and_reopens_on_sighup_as_one_chain_and_the_store_keeps_its_retention() {
    let fx = Fixture::start("both").unwrap();
    let top = "audit:
  sinks:
    - { type: file, path: {dir}/audit.jsonl, rotate: { size: 4KiB, keep: 3 } }
    - { type: store, required: false }
  retention: 3s
";
    // The file is the only required sink, so a call is answered once its event is in the file
    // (a required store could answer first, the file's thread still catching up).
    let gw = Gateway::start_with(top, &fixture_server("fx", &fx.url)).unwrap();
    let file = gw.audit_file();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    for i in 0..40 {
        let r = call(&c, i, "fx__echo", json!({ "text": "x" })).await;
        assert!(r["result"]["content"].is_array(), "{r}");
    }
    // Rotated at 4 KiB, the oldest files deleted beyond three; the chain verifies across the
    // four files left, from the one whose predecessors were deleted, when asked to.
    let old = rotated(&file);
    assert_eq!(old.len(), 3, "{old:?}");
    for f in &old {
        let len = std::fs::metadata(f).unwrap().len();
        assert!((4096..8192).contains(&len), "{f:?}: {len} bytes");
    }
    // Strict, the missing head is a broken log, and the message says how to check what is left.
    let (ok, out) = verify(&file);
    assert!(!ok && out.contains("--continued"), "{out}");
    let (ok, out) = verify_as_one(std::slice::from_ref(&file), true);
    assert!(ok, "{out}");
    assert!(out.contains("across 4 files"), "{out}");
    assert!(out.contains("the log begins by linking to"), "{out}");

    // An outside rotator moves the file and sends SIGHUP: the next event starts a new file.
    let moved = gw.dir.path().join("audit.jsonl.moved");
    std::fs::rename(&file, &moved).unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = call(&c, 100, "fx__echo", json!({ "text": "after" })).await;
    assert!(r["result"]["content"].is_array(), "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        events(&file).iter().any(|e| e["kind"] == "tool.call"),
        "no call in the reopened file"
    );
    // Rotated files, the moved one, the new one: one chain. The sink's path alone is followed
    // from its rotated files, which lack the moved file's events: a gap, named.
    let mut all = rotated(&file);
    all.extend([moved.clone(), file.clone()]);
    let (ok, out) = verify_as_one(&all, true);
    assert!(ok, "{out}");
    let (ok, out) = verify_as_one(std::slice::from_ref(&file), true);
    assert!(
        !ok && out.contains("events were removed or reordered"),
        "{out}"
    );
    let (ok, out) = verify_as_one(&[file.clone(), moved.clone()], true);
    assert!(!ok, "files out of order verified: {out}");

    // The store keeps three seconds: once they pass, the calls are gone from the export while
    // the files keep them.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let auditor = gw.operator_key("auditor", None).unwrap();
    let export = reqwest::Client::new()
        .get(format!("{}/admin/audit?kind=tool.call", gw.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        export.lines().filter(|l| !l.trim().is_empty()).count(),
        0,
        "{export}"
    );
    assert!(events(&file).iter().any(|e| e["kind"] == "tool.call"));
}
