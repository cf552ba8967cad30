//! Held calls sealed where they wait.

use super::*;

/// What the store holds for a task's call, read from outside.
fn stored_call(gw: &Gateway, task: &str) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT call FROM tasks WHERE id = ?', (sys.argv[2],)).fetchone()[0])",
        ])
        .arg(gw.dir.path().join("store.db"))
        .arg(task)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A held call waits in the store sealed with the session key ring: its name and arguments do
/// not show. One naming a key this gateway does not have waits (another replica may hold it);
/// one altered under a key it has ends failed, on the record, and never runs; one stored
/// unsealed (by a build that did not seal) runs on its approval.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_waits_sealed_and_an_altered_one_never_runs() {
    let fx = Fixture::start("both").unwrap();
    let gw = with_approvals(&fx, "{ required_from: write, hold: 60s }");
    let approver = gw.operator_key("approver", Some("ops")).unwrap();
    let before = fx.calls();
    let (c, task) = raw_task(&gw).await;
    let sealed = stored_call(&gw, &task);
    assert!(sealed.starts_with("ptc1."), "{sealed}");
    assert!(
        !sealed.contains("fixture__slow") && !sealed.contains("arguments"),
        "{sealed}"
    );
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let swap = |at: usize| {
        let to = if &sealed[at..=at] == "A" { "B" } else { "A" };
        format!("{}{to}{}", &sealed[..at], &sealed[at + 1..])
    };
    // The key id changed (the first characters after the prefix): it waits, nothing runs.
    sqlite(&gw, &format!("UPDATE tasks SET call = '{}';", swap(5)));
    let r = get(&c, &task).await;
    assert_eq!(r["error"]["data"]["reason"], "task_unavailable", "{r}");
    let r = get(&c, &task).await;
    assert_eq!(r["error"]["data"]["reason"], "task_unavailable", "{r}");
    // The sealed text changed further on: the task ends failed, and nothing ran.
    sqlite(
        &gw,
        &format!("UPDATE tasks SET call = '{}';", swap(sealed.len() / 2)),
    );
    let r = get(&c, &task).await;
    assert_eq!(r["result"]["status"], "failed", "{r}");
    assert_eq!(fx.calls(), before, "an altered held call ran");
    let log = std::fs::read_to_string(gw.audit_file()).unwrap();
    let ended = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == "task.end")
        .unwrap_or_else(|| panic!("no task.end event: {log}"));
    assert_eq!(ended["outcome"], "failed", "{ended}");
    assert_eq!(ended["reason"], "task_unavailable", "{ended}");
    // As an older build stored it: read as it is, and run once on its approval.
    let params = json!({ "name": "fixture__slow", "arguments": { "ms": 1 }, "task": {} });
    let created = c.call(req(7, "tools/call", params)).await.1;
    let second = created["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    sqlite(
        &gw,
        &format!(
            r#"UPDATE tasks SET call = '{{"name":"fixture__slow","arguments":{{"ms":1}}}}' WHERE id = '{second}';"#
        ),
    );
    let id = pending(&gw, &approver).await;
    decide(&gw, &approver, &id, "approve").await;
    let r = get(&c, &second).await;
    assert_eq!(r["result"]["status"], "completed", "{r}");
    assert_eq!(fx.calls(), before + 1);
}
