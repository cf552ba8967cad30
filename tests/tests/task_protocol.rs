#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Held calls as MCP tasks on the wire, driven with raw HTTP where the SDKs do not reach: each
//! revision's capability, listing marks and errors; status notifications (2026-07-28
//! `subscriptions/listen`, 2025-11-25 `tasks/result`); cancel and a mode change while a task
//! waits; task-state faults injected into the real SQLite store.

use std::process::Command;
use std::time::{Duration, Instant};

use portcullis_tests::approve::{admin, decide, pending, with_approvals};
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, fixture_server, python};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "task_protocol/sealed.rs"]
mod sealed;

#[tokio::test(flavor = "multi_thread")]
async fn tasks_speak_each_revision_and_only_to_clients_that_can_follow_them() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 1s }");
    // 2026-07-28 on the wire: the extension is declared, `tasks/*` needs it, and the task's
    // own methods only.
    let http = reqwest::Client::new();
    let caps = |ext: bool| {
        let mut c = json!({});
        if ext {
            c = json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } });
        }
        json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": c })
    };
    let post = |method: &'static str, name: Option<&str>, params: Value| {
        let mut r = http
            .post(gw.mcp())
            .bearer_auth(&gw.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
        if let Some(n) = name {
            r = r.header("mcp-name", n);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (_, d) = post("server/discover", None, json!({ "_meta": caps(false) })).await;
    assert_eq!(
        d["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({}),
        "{d}"
    );
    assert!(d["result"]["capabilities"].get("tasks").is_none(), "{d}");
    let (s, v) = post(
        "tasks/get",
        Some("task_x"),
        json!({ "taskId": "task_x", "_meta": caps(false) }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], -32021, "{v}");
    assert_eq!(
        v["error"]["data"]["requiredCapabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({}),
        "{v}"
    );
    let (_, v) = post(
        "tasks/get",
        Some("task_x"),
        json!({ "taskId": "task_x", "_meta": caps(true) }),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let (s, v) = post(
        "tasks/result",
        None,
        json!({ "taskId": "task_x", "_meta": caps(true) }),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!(-32601)),
        "{v}"
    );
    let (s, v) = post(
        "tasks/get",
        Some("task_y"),
        json!({ "taskId": "task_x", "_meta": caps(true) }),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020)),
        "{v}"
    );
    // Only a tool that is held for this caller is marked, and only for a client that can ask.
    let (_, l) = post("tools/list", None, json!({ "_meta": caps(true) })).await;
    let marks: Vec<(String, Value)> = l["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["execution"].clone(),
            )
        })
        .collect();
    for (name, mark) in &marks {
        // Approvals are required for writes: every tool allowlisted above `read` is held.
        let held = portcullis_tests::FIXTURE_TOOLS
            .iter()
            .any(|(t, class)| *class != "read" && name == &format!("fixture__{t}"));
        let want = if held {
            json!({ "taskSupport": "optional" })
        } else {
            Value::Null
        };
        assert_eq!(mark, &want, "{name}");
    }
    let (_, l) = post("tools/list", None, json!({ "_meta": caps(false) })).await;
    assert!(!l.to_string().contains("taskSupport"), "{l}");

    // 2025-era sessions: only 2025-11-25 declares tasks; older revisions see none of it.
    for (version, declared) in [("2025-11-25", true), ("2025-06-18", false)] {
        let mut c = Raw::new(gw.mcp(), &gw.key);
        let init = c.init_version(version).await;
        assert_eq!(
            init["result"]["capabilities"]["tasks"].is_object(),
            declared,
            "{version}: {init}"
        );
        let l = c.call(req(2, "tools/list", json!({}))).await.1;
        assert_eq!(l.to_string().contains("taskSupport"), declared, "{version}");
        let t = c.call(req(3, "tasks/list", json!({}))).await.1;
        match declared {
            true => assert_eq!(t["result"]["tasks"], json!([]), "{t}"),
            false => assert_eq!(t["error"]["code"], -32601, "{t}"),
        }
    }
}

/// Read an SSE answer's messages until one satisfies `done` (or `wait` passes).
async fn sse_until(
    mut resp: reqwest::Response,
    wait: Duration,
    done: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    let (mut buf, mut seen) = (String::new(), Vec::new());
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        resp.chunk(),
    )
    .await
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(data).unwrap();
                let stop = done(&v);
                seen.push(v);
                if stop {
                    return seen;
                }
            }
        }
    }
    panic!("the stream ended or stalled before the awaited message: {seen:?}")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_notifications_follow_a_task_in_each_revision() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let other = gw.new_key("other").unwrap();
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": { "extensions": { "io.modelcontextprotocol/tasks": {} } },
    });
    let modern = |key: &str, method: &'static str, name: Option<&str>, params: Value| {
        let mut r = reqwest::Client::new()
            .post(gw.mcp())
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .json(&json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params }));
        if let Some(n) = name {
            r = r.header("mcp-name", n);
        }
        r.send()
    };
    // 2026-07-28: a task created, then followed on `subscriptions/listen`.
    let created: Value = modern(
        &gw.key,
        "tools/call",
        Some("fixture__slow"),
        json!({ "name": "fixture__slow", "arguments": { "ms": 0 }, "_meta": meta }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let r = &created["result"];
    assert_eq!(r["resultType"], "task", "{created}");
    assert_eq!(r["status"], "working", "{created}");
    assert!(
        r["ttlMs"].is_u64() && r["pollIntervalMs"].is_u64(),
        "{created}"
    );
    assert!(
        r.get("task").is_none() && r.get("ttl").is_none(),
        "{created}"
    );
    let task = r["taskId"].as_str().unwrap().to_string();
    // Someone else's task is not followed for them: left out of the acknowledgement.
    let listen = |key: String| {
        let params =
            json!({ "notifications": { "taskIds": [task.clone()] }, "_meta": meta.clone() });
        modern(&key, "subscriptions/listen", None, params)
    };
    let theirs = listen(other.clone()).await.unwrap();
    let ack = sse_until(theirs, Duration::from_secs(10), |_| true).await;
    assert_eq!(
        ack[0]["params"]["notifications"]["taskIds"],
        json!([]),
        "{ack:?}"
    );
    let mine = listen(gw.key.clone()).await.unwrap();
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let seen = sse_until(mine, Duration::from_secs(20), |v| {
        v["method"] == "notifications/tasks" && v["params"]["status"] == "completed"
    })
    .await;
    assert_eq!(
        seen[0]["params"]["notifications"]["taskIds"],
        json!([task]),
        "{seen:?}"
    );
    let last = &seen.last().unwrap()["params"];
    assert_eq!(last["taskId"], task.as_str());
    assert_eq!(last["result"]["content"][0]["text"], "done", "{last}");
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
    // Following it was looking at it: the call ran, once, and `tasks/get` says so.
    let got: Value = modern(
        &gw.key,
        "tasks/get",
        Some(&task),
        json!({ "taskId": task, "_meta": meta }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(got["result"]["status"], "completed", "{got}");
    assert_eq!(got["result"]["resultType"], "complete", "{got}");
    // Without the extension, asking for task notifications is refused.
    let bare = json!({
        "notifications": { "taskIds": [task] },
        "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} },
    });
    let r = modern(&gw.key, "subscriptions/listen", None, bare)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32021);

    // 2025-11-25: `tasks/result` waits, with the status change on its stream, then the result.
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init_version("2025-11-25").await;
    let created = c
        .call(req(
            1,
            "tools/call",
            json!({ "name": "fixture__slow", "arguments": { "ms": 1 }, "task": { "ttl": 1000 } }),
        ))
        .await
        .1;
    let t = &created["result"]["task"];
    assert_eq!(t["status"], "working", "{created}");
    assert!(
        t["ttl"].as_u64().unwrap() > 1000,
        "the gateway keeps it longer: {created}"
    );
    let task = t["taskId"].as_str().unwrap().to_string();
    let waiting = c
        .post(&req(2, "tasks/result", json!({ "taskId": task })).to_string())
        .send()
        .await
        .unwrap();
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let seen = sse_until(waiting, Duration::from_secs(20), |v| v["id"] == 2).await;
    let status = seen
        .iter()
        .find(|v| v["method"] == "notifications/tasks/status")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(status["params"]["status"], "completed", "{status}");
    let result = &seen.last().unwrap()["result"];
    assert_eq!(result["content"][0]["text"], "done", "{result}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        task.as_str()
    );
    let listed = c.call(req(3, "tasks/list", json!({}))).await.1;
    assert_eq!(
        listed["result"]["tasks"][0]["status"], "completed",
        "{listed}"
    );
    let again = c
        .call(req(4, "tasks/cancel", json!({ "taskId": task })))
        .await
        .1;
    assert_eq!(
        again["error"]["code"], -32602,
        "an ended task cannot be cancelled: {again}"
    );
}

/// Run one statement on the gateway's SQLite store from outside (fault injection).
fn sqlite(gw: &Gateway, statement: &str) {
    let db = gw.dir.path().join("store.db");
    let status = Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(statement)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A 2025-11-25 session on `gw`, and a held call made in it as a task: its id.
async fn raw_task(gw: &Gateway) -> (Raw, String) {
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init_version("2025-11-25").await;
    let params = json!({ "name": "fixture__slow", "arguments": { "ms": 0 }, "task": {} });
    let created = c.call(req(1, "tools/call", params)).await.1;
    let task = created["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    (c, task)
}

async fn get(c: &Raw, task: &str) -> Value {
    c.call(req(2, "tasks/get", json!({ "taskId": task })))
        .await
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_a_mode_change_end_a_waiting_task_and_nothing_runs() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let op = gw.operator_key("admin", Some("ops")).unwrap();
    let before = fx.calls();
    // Cancelled by its client: ended at once; the approval request stays for an approver.
    let (c, task) = raw_task(&gw).await;
    let r = c
        .call(req(3, "tasks/cancel", json!({ "taskId": task })))
        .await
        .1;
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
    assert_eq!(r["result"]["taskId"], task.as_str(), "{r}");
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let r = c
        .call(req(4, "tasks/result", json!({ "taskId": task })))
        .await
        .1;
    assert_eq!(r["error"]["data"]["reason"], "cancelled", "{r}");
    assert_eq!(get(&c, &task).await["result"]["status"], "cancelled");
    // Read-only mode set while it waits: the task ends failed, `read_only`.
    let (c, task) = raw_task(&gw).await;
    let body = json!({ "mode": "read_only", "reason": "incident" });
    let (s, v) = admin(&gw, &op, "/admin/mode", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = c
        .call(req(5, "tasks/result", json!({ "taskId": task })))
        .await
        .1;
    assert_eq!(r["error"]["data"]["reason"], "read_only", "{r}");
    assert_eq!(get(&c, &task).await["result"]["status"], "failed");
    assert_eq!(fx.calls(), before, "nothing ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_state_faults_refuse_and_a_run_whose_end_is_lost_never_runs_again() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let before = fx.calls();
    let (c, task) = raw_task(&gw).await;
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    // Fault: the task cannot be claimed. Refused, and nothing runs.
    sqlite(
        &gw,
        "CREATE TRIGGER no_claim BEFORE UPDATE ON tasks WHEN NEW.status = 'running' BEGIN SELECT RAISE(FAIL, 'injected'); END;",
    );
    let r = get(&c, &task).await;
    assert_eq!(r["error"]["data"]["reason"], "task_unavailable", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was run"),
        "{r}"
    );
    assert_eq!(fx.calls(), before);
    // Fault: the call runs, and how it ended cannot be kept. The caller is told it may have
    // run; later looks never run it again.
    sqlite(
        &gw,
        "DROP TRIGGER no_claim; CREATE TRIGGER no_end BEFORE UPDATE ON tasks WHEN NEW.status IN ('completed', 'failed') BEGIN SELECT RAISE(FAIL, 'injected'); END;",
    );
    let r = get(&c, &task).await;
    assert_eq!(r["error"]["data"]["reason"], "task_unavailable", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may have run"),
        "{r}"
    );
    assert_eq!(fx.calls(), before + 1);
    let r = get(&c, &task).await;
    assert_eq!(r["result"]["status"], "working", "{r}");
    assert_eq!(fx.calls(), before + 1, "never run twice");
    // Its heartbeat stopped (the run is over and nothing keeps it): 90 s later a look ends it,
    // failed, the outcome unknown, and still runs nothing.
    sqlite(
        &gw,
        "DROP TRIGGER no_end; UPDATE tasks SET updated_ms = updated_ms - 100000 WHERE status = 'running';",
    );
    let r = get(&c, &task).await;
    assert_eq!(r["result"]["status"], "failed", "{r}");
    let r = c
        .call(req(6, "tasks/result", json!({ "taskId": task })))
        .await
        .1;
    assert_eq!(r["error"]["data"]["reason"], "task_unavailable", "{r}");
    assert_eq!(fx.calls(), before + 1, "never run twice");
}

/// An upstream that answers a call with a task (it may: the gateway declares the extension to
/// it) is followed to its end within the server's time: the caller (here in a 2025-11-25
/// session) gets the tool's result, or the upstream's error for a failed task; a task that
/// outlasts the time is cancelled at the upstream and the call fails.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstreams_task_is_followed_to_its_end_within_the_calls_time() {
    let fx = Fixture::start("modern").unwrap();
    let servers = fixture_server("fixture", &fx.url).replace(
        "      echo: { class: read }\n",
        "      echo: { class: read }\n      deferred: { class: read }\n",
    );
    let gw = Gateway::start(&servers).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init_version("2025-11-25").await;
    let call = |ms: u64| {
        req(
            1,
            "tools/call",
            json!({ "name": "fixture__deferred", "arguments": { "ms": ms } }),
        )
    };
    let r = c.call(call(300)).await.1;
    assert_eq!(r["result"]["content"][0]["text"], "done later", "{r}");
    // A task that fails is the upstream's error.
    let failing = json!({ "name": "fixture__deferred", "arguments": { "ms": 100, "fail": true } });
    let f = c.call(req(3, "tools/call", failing)).await.1;
    assert_eq!(f["error"]["code"], -32050, "{f}");
    assert_eq!(f["error"]["data"]["reason"], "upstream_error", "{f}");
    assert_eq!(f["error"]["data"]["upstream"]["job"], "deferred", "{f}");
    assert!(r["result"].get("resultType").is_none(), "{r}");
    assert!(r["result"].get("taskId").is_none(), "{r}");
    // The listing shows the upstream's tool without the upstream's own task marks.
    let l = c.call(req(2, "tools/list", json!({}))).await.1;
    let listed = l["result"]["tools"].as_array().unwrap();
    let deferred = listed
        .iter()
        .find(|t| t["name"] == "fixture__deferred")
        .unwrap();
    assert!(deferred.get("execution").is_none(), "{deferred}");
    // Longer than the server's 5 s: the upstream's task is cancelled and the call fails.
    let started = Instant::now();
    let r = c.call(call(60_000)).await.1;
    assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(fx.task_cancels(), 1);
}

/// A look that began before its key was revoked (a `tasks/result` waiting for the approval)
/// does not run the call: the credential is checked again before the run, and the task ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_while_its_look_waits_runs_nothing() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let admin_key = gw.operator_key("admin", Some("ops")).unwrap();
    let before = fx.calls();
    let (c, task) = raw_task(&gw).await;
    let waiting = c
        .post(&req(2, "tasks/result", json!({ "taskId": task })).to_string())
        .send()
        .await
        .unwrap();
    let key_id = gw.key.split('_').nth(1).unwrap().to_string();
    let r = reqwest::Client::new()
        .delete(format!("{}/admin/keys/{key_id}", gw.admin))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let seen = sse_until(waiting, Duration::from_secs(20), |v| v["id"] == 2).await;
    let last = seen.last().unwrap();
    assert!(last.get("error").is_some(), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fx.calls(), before, "a revoked key's task ran");
}
