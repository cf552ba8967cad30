//! `portcullis quickstart` as a newcomer meets it: the banner's own commands (the real MCP
//! Inspector, curl) reach the gateway, its config passes `portcullis check`, a taken port stops
//! it before anything is written, and a re-run moves the ports and replaces the keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use portcullis_tests::quickstart::{self, Quickstart};
use portcullis_tests::{bin, node, workspace};
use serde_json::Value;

const TOOLS: [&str; 4] = [
    "notes__search_notes",
    "notes__get_note",
    "notes__create_note",
    "notes__delete_note",
];

/// A PATH whose `node` is the test environment's Node.js 24 (the Inspector needs 22 or newer).
fn path_with_node24() -> String {
    let dir = node().parent().map(Path::to_path_buf).unwrap_or_default();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A PATH without any Node.js at all.
fn path_without_node() -> String {
    let dir = tempfile::tempdir().unwrap().keep();
    dir.display().to_string()
}

/// The banner's multi-line command that starts with `start`, joined into one shell line.
fn command_in(q: &Quickstart, start: &str) -> String {
    let mut out = String::new();
    for line in q
        .banner
        .iter()
        .skip_while(|l| !l.trim_start().starts_with(start))
    {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => out.push_str(head),
            None => {
                out.push_str(line);
                break;
            }
        }
    }
    assert!(!out.is_empty(), "no `{start}` command in {:#?}", q.banner);
    out
}

fn tool_names(v: &Value) -> Vec<&str> {
    v["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn portcullis(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("portcullis"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn the_banner_inspector_command_lists_the_tools_and_the_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let q = quickstart::start(dir.path(), &[("PATH", &path_with_node24())]);
    let text = q.banner.join("\n");
    assert!(
        text.contains(&format!("Admin URL:   http://127.0.0.1:{}/ui/", q.port + 1)),
        "{text}"
    );
    // Approvals are visible before they bite: which tools, where, and the command with its env var.
    assert!(
        text.contains(
            "Held for a human's approval: notes__create_note (write), notes__delete_note (destructive)."
        ),
        "{text}"
    );
    assert!(
        text.contains("PORTCULLIS_ADMIN_KEY=<admin key> portcullis approvals approve"),
        "{text}"
    );
    assert!(text.contains("Try it with the MCP Inspector:"), "{text}");

    // The printed Inspector command, run as printed except that the package comes from the
    // test tree (`npm ci`) instead of `npx -y`.
    let printed = command_in(&q, "npx -y @modelcontextprotocol/inspector");
    let inspector = workspace().join("tests/node/node_modules/.bin/mcp-inspector");
    let line = printed.replace(
        "npx -y @modelcontextprotocol/inspector",
        &inspector.display().to_string(),
    );
    let out = Command::new("sh")
        .args(["-c", &line])
        .env("PATH", path_with_node24())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(tool_names(&v), TOOLS);

    // The operator page and admin API answer with the admin key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let login = http
            .get(format!("{}/ui/login", q.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
        let r = http
            .get(format!("{}/admin/kill-switch", q.admin))
            .bearer_auth(&q.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });

    // The sign-in page's hint works as written (with a name filled in).
    let login = rt.block_on(async {
        reqwest::get(format!("{}/ui/login", q.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let hint = login
        .split("<code>")
        .nth(1)
        .and_then(|c| c.split("</code>").next())
        .unwrap_or_else(|| panic!("{login}"));
    assert!(hint.starts_with("portcullis keys create "), "{hint}");
    let args: Vec<String> = hint
        .replace("YOUR-NAME", "alice")
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = portcullis(dir.path(), &args);
    assert!(out.status.success(), "{hint}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pcl_"),
        "{out:?}"
    );

    // The config it wrote is one the project's own gate accepts: grants live in the config.
    let out = portcullis(dir.path(), &["check", "--config", "portcullis.yaml"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(dir.path().join("portcullis.yaml")).unwrap();
    assert!(
        config.contains("team:quickstart: [\"notes/*\"]"),
        "{config}"
    );
    let keys = portcullis(dir.path(), &["keys", "list", "--config", "portcullis.yaml"]);
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.lines()
            .any(|l| l.contains("quickstart-client") && l.contains("team:quickstart")),
        "{keys}"
    );
}

#[test]
fn a_held_write_is_approved_at_the_admin_listener_and_runs_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let q = quickstart::start(dir.path(), &[("PORTCULLIS_LOG_FORMAT", "json")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/mcp", q.port);
        let meta = serde_json::json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} });
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "_meta": meta, "name": "notes__create_note", "arguments": { "title": "t", "body": "b" } } });
        let started = std::time::Instant::now();
        let call = http
            .post(&url)
            .bearer_auth(&q.client)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "notes__create_note")
            .json(&body)
            .send();
        let approve = async {
            loop {
                let v: Value = http
                    .get(format!("{}/admin/approvals?status=pending", q.admin))
                    .bearer_auth(&q.admin_key)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(id) = v["approvals"][0]["id"].as_str() {
                    assert_eq!(v["approvals"][0]["target"], "t");
                    let r = http
                        .post(format!("{}/admin/approvals/{id}/approve", q.admin))
                        .bearer_auth(&q.admin_key)
                        .json(&serde_json::json!({ "reason": "quickstart test" }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let (resp, ()) = tokio::join!(call, approve);
        let v: Value = resp.unwrap().json().await.unwrap();
        assert!(
            v["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("\"id\""),
            "{v}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    });
    // Every log line is one JSON object; the approval is among them with its fields.
    let log = q.stderr.lock().unwrap().clone();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"] == "call held for approval"
            && l["tool"] == "create_note"),
        "{log}"
    );
}

#[test]
fn a_taken_port_stops_the_quickstart_before_it_writes_anything() {
    for taken_offset in [0u16, 1] {
        let dir = tempfile::tempdir().unwrap();
        let port = quickstart::free_pair();
        let _holder = std::net::TcpListener::bind(("127.0.0.1", port + taken_offset)).unwrap();
        let out = portcullis(dir.path(), &["quickstart", "--port", &port.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(
            err.contains(&format!(
                "cannot listen on 127.0.0.1:{}",
                port + taken_offset
            )),
            "{err}"
        );
        assert!(
            err.contains("--port ") && err.contains("nothing was written or issued"),
            "{err}"
        );
        let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "the quickstart left {left:?}");
    }
}

#[test]
fn a_rerun_moves_the_ports_and_replaces_the_keys_and_curl_works_without_node() {
    let dir = tempfile::tempdir().unwrap();
    let no_node = path_without_node();
    let first = quickstart::start(dir.path(), &[("PATH", &no_node)]);
    let text = first.banner.join("\n");
    assert!(
        text.contains("the MCP Inspector needs Node.js 22 or newer; Node.js was not found"),
        "{text}"
    );
    // The printed curl command works as printed (where this machine has curl).
    if Command::new("curl").arg("--version").output().is_ok() {
        let line = command_in(&first, "curl -sS");
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(tool_names(&v["result"]), TOOLS);
    }
    let old_key = first.client.clone();
    drop(first);

    // Again in the same directory on other ports: the config follows `--port`, the old keys go.
    let second = quickstart::start(dir.path(), &[]);
    let text = second.banner.join("\n");
    assert!(
        text.contains(&format!(
            "./portcullis.yaml now listens on 127.0.0.1:{} (admin 127.0.0.1:{})",
            second.port,
            second.port + 1
        )),
        "{text}"
    );
    let revoked = text
        .lines()
        .find(|l| l.contains("revoked the keys of the previous quickstart: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        revoked.contains("quickstart-client (") && revoked.contains("quickstart-admin ("),
        "{revoked}"
    );
    let config = std::fs::read_to_string(dir.path().join("portcullis.yaml")).unwrap();
    assert!(
        config.contains(&format!("\nlisten: 127.0.0.1:{}\n", second.port)),
        "{config}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let list = |key: String, port: u16| {
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": { "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} } } });
        rt.block_on(async move {
            reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/mcp"))
                .bearer_auth(key)
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/list")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    assert_eq!(list(old_key, second.port), 401);
    // Both runs' keys are on the record: issued, then the first run's revoked.
    let log = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let kinds = |kind: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    assert_eq!((kinds("key.issue"), kinds("key.revoke")), (4, 2), "{log}");
    assert_eq!(list(second.client.clone(), second.port), 200);
    let port = second.port;
    drop(second);

    // Without `--port`, a taken configured port names a free one and changes nothing.
    let keys_before = portcullis(dir.path(), &["keys", "list", "--config", "portcullis.yaml"]);
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = portcullis(dir.path(), &["quickstart"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("fix: another program holds the port; run `portcullis quickstart --port "),
        "{err}"
    );
    let keys_after = portcullis(dir.path(), &["keys", "list", "--config", "portcullis.yaml"]);
    assert_eq!(keys_before.stdout, keys_after.stdout);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("portcullis.yaml")).unwrap(),
        config
    );
}

#[test]
fn a_config_the_quickstart_did_not_write_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = "listen: 127.0.0.1:8080\nstore: sqlite://portcullis.db\nservers:\n  notes:\n    builtin: notes\n    tools: { search_notes: { class: read } }\n";
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let out = portcullis(dir.path(), &["quickstart", "--port", "18999"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("was not written by the quickstart")
            && err.contains("portcullis serve --config portcullis.yaml"),
        "{err}"
    );
    // Untouched, and no store was made for it.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("portcullis.yaml")).unwrap(),
        config
    );
    assert!(!dir.path().join("portcullis.db").exists());
}

/// Fault injection: the audit log cannot be opened (its file is a directory). No key is issued
/// unrecorded: the quickstart stops and the store holds no key.
#[test]
fn an_audit_log_that_cannot_be_opened_issues_no_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("audit.jsonl")).unwrap();
    let port = quickstart::free_pair();
    let out = portcullis(dir.path(), &["quickstart", "--port", &port.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("nothing was issued"), "{err}");
    let keys = portcullis(dir.path(), &["keys", "list", "--config", "portcullis.yaml"]);
    let listed = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.status.success(), "{keys:?}");
    assert!(!listed.contains("quickstart-"), "{listed}");
}
