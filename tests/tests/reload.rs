//! Hot reload end to end: the config file changes under a running gateway. A good file takes
//! effect without a restart (sessions hear `list_changed` on their GET stream); a bad one, or
//! one that changes a restart-only setting, is refused and the running config keeps serving;
//! every attempt is in the audit log with the file's digest; the self-audit says when the file
//! on disk is not the config in force.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{AuditFifo, Fixture, Gateway, audit_events, file_digest, pin, self_audit};
use serde_json::{Value, json};

fn fixture(url: &str, tools: &[(&str, &str)]) -> String {
    let tools: String = tools
        .iter()
        .map(|(t, c)| format!("      {t}: {{ class: {c} }}\n"))
        .collect();
    format!(
        "  fixture:\n    url: {url}\n    allow_private: true\n    timeout: 5s\n    tools:\n{tools}"
    )
}

fn events(gw: &Gateway, kind: &str) -> Vec<Value> {
    audit_events(&gw.audit_file(), kind)
}

/// Wait for the `n`th `config.reload` event (1-based) and return it.
async fn nth_reload(gw: &Gateway, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = events(gw, "config.reload");
        if all.len() >= n {
            return all[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no reload event #{n}; have {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn echo(c: &Raw) -> Value {
    let (_, r) = c
        .call(req(
            5,
            "tools/call",
            json!({ "name": "fixture__echo", "arguments": { "text": "hi" } }),
        ))
        .await;
    r
}

fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

#[tokio::test]
async fn a_good_file_applies_live_and_a_bad_one_never_replaces_the_running_config() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_logged("", &fixture(&fx.url, &[("echo", "read")]), "info").unwrap();
    let cfg = gw.config();
    let started = file_digest(&cfg).unwrap();
    let serving = events(&gw, "audit.start")
        .into_iter()
        .rfind(|e| e["detail"]["role"] == "serve")
        .expect("the serve process's audit.start");
    assert_eq!(serving["detail"]["config_digest"], started);
    let auditor = gw.operator_key("auditor", None).unwrap();

    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    assert_eq!(c.tool_names().await, vec!["fixture__echo"]);
    // The session's GET stream, where list changes are relayed.
    let mut stream = c
        .http
        .get(&c.url)
        .bearer_auth(&c.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let good = std::fs::read_to_string(&cfg).unwrap();

    // 1. A server without an allowlist: refused with the place and the fix; nothing changes.
    let bad = format!("{good}  broken:\n    url: https://tools.example.com/mcp\n");
    std::fs::write(&cfg, &bad).unwrap();
    let refused = nth_reload(&gw, 1).await;
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(refused["detail"]["trigger"], "file_change", "{refused}");
    assert_eq!(refused["detail"]["digest"], file_digest(&cfg).unwrap());
    assert_eq!(refused["detail"]["previous"], started);
    let reason = refused["reason"].as_str().unwrap();
    let line = bad.lines().count() - 1;
    assert!(
        reason.contains(&format!("portcullis.yaml:{line}:")) && reason.contains("tools"),
        "{reason}"
    );
    assert_eq!(echo(&c).await["result"]["content"][0]["text"], "hi");
    assert_eq!(c.tool_names().await, vec!["fixture__echo"]);
    // The self-audit says the file on disk is not what runs, and why.
    let report = self_audit(&gw.admin, &auditor).await;
    let drift = finding(&report, "onboard.config_drift").expect("drift finding");
    let cited = drift["evidence"][0].clone();
    let shown = report["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == cited)
        .unwrap()
        .to_string();
    assert!(shown.contains(&started), "{shown}");
    assert!(shown.contains("refused"), "{shown}");

    // 2. SIGHUP re-reads the same bad file: refused again, said so again.
    gw.signal("HUP");
    let again = nth_reload(&gw, 2).await;
    assert_eq!(again["outcome"], "refused", "{again}");
    assert_eq!(again["detail"]["trigger"], "sighup", "{again}");

    // 3. A change only a restart can apply is refused whole.
    let moved = good.replacen("listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1);
    assert_ne!(moved, good);
    std::fs::write(&cfg, &moved).unwrap();
    let restart_only = nth_reload(&gw, 3).await;
    assert_eq!(restart_only["outcome"], "refused", "{restart_only}");
    let reason = restart_only["reason"].as_str().unwrap();
    assert!(
        reason.contains("`listen`") && reason.contains("restart"),
        "{reason}"
    );

    // 4. A good file: a newly allowlisted tool, pinned by the operator. It takes effect with no
    // restart, recorded before it does, and the session hears about it.
    let wider = good.replace(
        "      echo: { class: read }\n",
        "      echo: { class: read }\n      add_tool: { class: write }\n",
    );
    assert_ne!(wider, good);
    std::fs::write(&cfg, &wider).unwrap();
    pin(&cfg).unwrap();
    let final_digest = file_digest(&cfg).unwrap();
    let names = c
        .until_tools(|n| n.contains(&"fixture__add_tool".to_string()))
        .await;
    assert_eq!(names, vec!["fixture__add_tool", "fixture__echo"]);
    let applied = events(&gw, "config.reload")
        .into_iter()
        .rfind(|e| e["outcome"] == "applied")
        .expect("an applied reload");
    assert_eq!(applied["detail"]["digest"], final_digest, "{applied}");
    assert_eq!(
        applied["detail"]["changes"]["servers_changed"],
        json!(["fixture"])
    );
    assert_eq!(echo(&c).await["result"]["content"][0]["text"], "hi");
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if buf.contains("notifications/tools/list_changed") {
                return buf;
            }
        }
        buf
    })
    .await
    .expect("list_changed on the GET stream");
    assert!(
        heard.contains("notifications/tools/list_changed"),
        "{heard}"
    );
    // The file is the config in force again: no drift finding.
    let report = self_audit(&gw.admin, &auditor).await;
    assert!(finding(&report, "onboard.config_drift").is_none());
    // The allowlist edit kept the upstream connection: the server was updated, not reconnected.
    let log = std::fs::read_to_string(gw.log_file()).unwrap();
    assert!(log.contains("updated=[\"fixture\"]"), "{log}");

    // 5. Removing the server: its tools are gone at once and its calls find nothing.
    let n = events(&gw, "config.reload").len();
    let without = std::fs::read_to_string(&cfg)
        .unwrap()
        .split("servers:\n")
        .next()
        .unwrap()
        .to_string()
        + "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n";
    std::fs::write(&cfg, &without).unwrap();
    let removed = nth_reload(&gw, n + 1).await;
    assert_eq!(removed["outcome"], "applied", "{removed}");
    assert_eq!(
        removed["detail"]["changes"]["servers_removed"],
        json!(["fixture"])
    );
    assert!(c.until_tools(<[String]>::is_empty).await.is_empty());
    let r = echo(&c).await;
    assert_eq!(r["error"]["data"]["reason"], "not_found", "{r}");
    let before = fx.calls();
    echo(&c).await;
    assert_eq!(fx.calls(), before);
}

/// Fault injection: the audit sink fails (its FIFO's reader goes away). A good file that
/// cannot be recorded does not take effect.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_cannot_be_recorded_does_not_happen() {
    let fx = Fixture::start("both").unwrap();
    let mut fifo = AuditFifo::new().unwrap();
    let gw = Gateway::start_with(&fifo.config(), &fixture(&fx.url, &[("echo", "read")])).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    assert_eq!(c.tool_names().await, vec!["fixture__echo"]);

    fifo.fail();
    let cfg = gw.config();
    let good = std::fs::read_to_string(&cfg).unwrap();
    // Removing the server would be a visible change; it must not happen unrecorded.
    let without = good.split("servers:\n").next().unwrap().to_string()
        + "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n";
    std::fs::write(&cfg, &without).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(gw.log_file()).unwrap();
        if log.contains("config reload refused") {
            assert!(log.contains("the reload could not be recorded"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.tool_names().await, vec!["fixture__echo"]);
}

/// A reload that removes a `connection: per_session` server closes the upstream sessions the
/// gateway opened for its clients, not just the shared connection: the removed server can no
/// longer reach those clients.
#[tokio::test]
async fn removing_a_per_session_server_closes_its_sessions_connections() {
    let fx = Fixture::start("legacy").unwrap();
    let server = fixture(&fx.url, &[("echo", "read")]).replace(
        "    allow_private: true\n",
        "    allow_private: true\n    connection: per_session\n",
    );
    let gw = Gateway::start(&server).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    assert_eq!(echo(&c).await["result"]["content"][0]["text"], "hi");
    // The shared connection and this session's own.
    assert_eq!(fx.sessions(), 2);

    let cfg = std::fs::read_to_string(gw.config()).unwrap();
    let (top, _servers) = cfg.split_once("servers:\n").unwrap();
    std::fs::write(gw.config(), format!("{top}servers: {{}}\n")).unwrap();
    gw.signal("HUP");
    assert_eq!(nth_reload(&gw, 1).await["outcome"], "applied");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.sessions() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} upstream sessions still open",
            fx.sessions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client's session goes on; the server is gone for it.
    assert_eq!(echo(&c).await["error"]["code"], -32602);
}
