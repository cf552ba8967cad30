#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Held calls as MCP tasks, driven with the official SDKs: the TypeScript SDK's tasks client
//! (2025-11-25 task augmentation) and the Python SDK with the 2026-07-28 tasks extension plugged
//! into its client-extension interface (`tests/python/task_call.py`). A held call answers at
//! once with a task; the call runs once, after an approval, when its client next looks; a deny,
//! an expiry or a kill switch ends the task failed; another caller cannot see it; it survives a
//! gateway restart; a client that did not ask for tasks never gets one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portcullis_tests::approve::{admin, decide, pending, with_approvals};
use portcullis_tests::{Fixture, node, python, workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One SDK client process, its output read line by line.
struct Sdk {
    child: Child,
    lines: mpsc::Receiver<String>,
    err: std::thread::JoinHandle<String>,
}

impl Sdk {
    fn typescript(url: &str, key: &str, args: &[&str]) -> Sdk {
        let mut cmd = Command::new(node());
        cmd.arg(workspace().join("tests/node/task_call.mjs"))
            .current_dir(workspace().join("tests/node"));
        Sdk::spawn(cmd, url, key, args)
    }

    fn python(url: &str, key: &str, args: &[&str]) -> Sdk {
        let mut cmd = Command::new(python());
        cmd.arg(workspace().join("tests/python/task_call.py"));
        Sdk::spawn(cmd, url, key, args)
    }

    fn spawn(mut cmd: Command, url: &str, key: &str, args: &[&str]) -> Sdk {
        let mut child = cmd
            .arg(url)
            .arg(key)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Sdk { child, lines, err }
    }

    /// The next JSON line, within `wait`.
    fn next(&mut self, wait: Duration) -> Value {
        match self.lines.recv_timeout(wait) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = std::mem::replace(&mut self.err, std::thread::spawn(String::new));
                panic!(
                    "no line from the client in {wait:?}:\n{}",
                    err.join().unwrap()
                );
            }
        }
    }

    /// Wait for it to exit (it printed what was read already).
    fn exit(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {}", self.err.join().unwrap());
    }

    /// Its last line, once it exits.
    fn outcome(mut self) -> Value {
        let mut last = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            last = Some(line);
        }
        let status = self.child.wait().unwrap();
        let err = self.err.join().unwrap();
        let line = last.unwrap_or_else(|| panic!("client printed nothing ({status}):\n{err}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}\n{err}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_answers_with_a_task_at_once_and_runs_once_after_its_approval() {
    let fx = Fixture::start("both").unwrap();
    // A hold far longer than any client waits: only a task answers at once.
    let gw = with_approvals(&fx, "{ required_from: write, hold: 120s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let before = fx.calls();
    for sdk in ["typescript", "python"] {
        let ran = fx.calls();
        let started = Instant::now();
        let mut c = match sdk {
            "typescript" => Sdk::typescript(&gw.mcp(), &gw.key, &["stream"]),
            _ => Sdk::python(&gw.mcp(), &gw.key, &["stream"]),
        };
        let created = c.next(Duration::from_secs(20));
        let task = created["created"].as_str().unwrap_or_default().to_string();
        assert!(task.starts_with("task_"), "{sdk}: {created}");
        assert_eq!(created["status"], "working", "{sdk}: {created}");
        assert!(started.elapsed() < Duration::from_secs(15), "{sdk}");
        if sdk == "typescript" {
            // The listing told the client it may ask.
            assert_eq!(created["support"], "optional", "{created}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fx.calls(), ran, "{sdk}: nothing runs before the approval");
        let id = pending(&gw, &approver).await;
        decide(&gw, &approver, &id, "approve").await;
        let v = tokio::task::spawn_blocking(move || c.outcome())
            .await
            .unwrap();
        assert_eq!(v["status"], "completed", "{sdk}: {v}");
        assert_eq!(v["result"], "done", "{sdk}: {v}");
        assert_eq!(v["is_error"], false, "{sdk}: {v}");
    }
    assert_eq!(
        fx.calls(),
        before + 2,
        "each approved call ran exactly once"
    );

    // The record: each task's call was held, then ran on its approval, naming the task.
    let events = portcullis_tests::audit_events(&gw.audit_file(), "tool.call");
    let held: Vec<&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "held" && e["detail"]["task_id"].is_string())
        .collect();
    assert_eq!(held.len(), 2, "{events:?}");
    let ran = portcullis_tests::audit_events(&gw.audit_file(), "tool.result");
    for h in &held {
        assert!(
            ran.iter()
                .any(|r| r["detail"]["task_id"] == h["detail"]["task_id"]
                    && r["detail"]["approval_id"] == h["detail"]["approval_id"]
                    && r["status"] == "ok"),
            "{h}: {ran:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deny_an_expiry_and_a_kill_switch_end_the_task_failed_and_nothing_runs() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 5s, ttl: 6s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let op = gw.operator_key("admin", Some("ops")).unwrap();
    let before = fx.calls();
    for (case, sdk) in [
        ("deny", "typescript"),
        ("deny", "python"),
        ("expiry", "typescript"),
        ("expiry", "python"),
        ("kill", "typescript"),
        ("kill", "python"),
    ] {
        let start = |args: &[&str]| match sdk {
            "typescript" => Sdk::typescript(&gw.mcp(), &gw.key, args),
            _ => Sdk::python(&gw.mcp(), &gw.key, args),
        };
        let mut c = start(&["create"]);
        let task = c.next(Duration::from_secs(20))["created"]
            .as_str()
            .unwrap()
            .to_string();
        tokio::task::spawn_blocking(move || c.exit()).await.unwrap();
        let id = pending(&gw, &approver).await;
        let reason = match case {
            "deny" => {
                decide(&gw, &approver, &id, "deny").await;
                "approval_denied"
            }
            "expiry" => {
                tokio::time::sleep(Duration::from_millis(6500)).await;
                "approval_expired"
            }
            _ => {
                let body = json!({ "scope": "server", "target": "fixture", "engaged": true, "reason": "incident" });
                let (s, v) = admin(&gw, &op, "/admin/kill-switch", Some(body)).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                "killed"
            }
        };
        let v = start(&["follow", &task]).outcome();
        assert_eq!(v["status"], "failed", "{case} {sdk}: {v}");
        assert_eq!(v["data"]["reason"], reason, "{case} {sdk}: {v}");
        assert_eq!(v["data"]["approval_id"], id.as_str(), "{case} {sdk}: {v}");
        if case == "kill" {
            let body = json!({ "scope": "server", "target": "fixture", "engaged": false, "reason": "over" });
            let (s, _) = admin(&gw, &op, "/admin/kill-switch", Some(body)).await;
            assert_eq!(s, StatusCode::OK);
        }
    }
    assert_eq!(fx.calls(), before, "no refused task ran its call");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_its_callers_alone_and_survives_a_gateway_restart() {
    let fx = Fixture::start("both").unwrap();
    let mut gw = with_approvals(&fx, "{ required_from: write, hold: 120s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let other = gw.new_key("other").unwrap();
    let before = fx.calls();
    let mut tasks = Vec::new();
    for sdk in ["typescript", "python"] {
        let mut c = match sdk {
            "typescript" => Sdk::typescript(&gw.mcp(), &gw.key, &["create"]),
            _ => Sdk::python(&gw.mcp(), &gw.key, &["create"]),
        };
        let task = c.next(Duration::from_secs(20))["created"]
            .as_str()
            .unwrap()
            .to_string();
        tokio::task::spawn_blocking(move || c.exit()).await.unwrap();
        // Another caller polling the id: not found, exactly as for an id that never existed.
        let v = match sdk {
            "typescript" => Sdk::typescript(&gw.mcp(), &other, &["follow", &task]),
            _ => Sdk::python(&gw.mcp(), &other, &["follow", &task]),
        }
        .outcome();
        assert_eq!(v["code"], -32602, "{sdk}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("Task not found"),
            "{sdk}: {v}"
        );
        tasks.push((sdk, task));
    }
    gw.restart().unwrap();
    let (_, v) = admin(&gw, &approver, "/admin/approvals?status=pending", None).await;
    let ids: Vec<String> = v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    // The two SDKs made the identical call: one request covers both tasks.
    assert_eq!(ids.len(), 1, "{v}");
    decide(&gw, &approver, &ids[0], "approve").await;
    let (sdk, task) = &tasks[0];
    let v = Sdk::typescript(&gw.mcp(), &gw.key, &["follow", task]).outcome();
    assert_eq!(v["status"], "completed", "{sdk}: {v}");
    assert_eq!(v["result"], "done", "{v}");
    assert_eq!(v["related"], task.as_str(), "{v}");
    // The approval was for one call: the second task's call finds it used.
    let (sdk, task) = &tasks[1];
    let v = Sdk::python(&gw.mcp(), &gw.key, &["follow", task]).outcome();
    assert_eq!(v["status"], "failed", "{sdk}: {v}");
    assert_eq!(v["data"]["reason"], "approval_used", "{v}");
    assert_eq!(fx.calls(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_did_not_ask_never_gets_a_task() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 1s }");
    // The Python SDK on 2026-07-28 without the extension: held as before, then told the id.
    let v = Sdk::python(&gw.mcp(), &gw.key, &["plain"]).outcome();
    assert_eq!(v["data"]["reason"], "approval_pending", "{v}");
    assert!(v["data"]["approval_id"].is_string(), "{v}");
}
