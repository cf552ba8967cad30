//! The command line: config errors, exit codes, quickstart.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use portcullis_tests::bin;

/// Write `text` as a config, run `serve` on it, return (exit code, stderr, path).
fn serve_config(dir: &std::path::Path, text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let path = dir.join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("portcullis"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

#[test]
fn invalid_config_exits_64_with_location_and_fix_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 would fail to bind as non-root, and binding must not even be attempted.
    let (code, err, path) = serve_config(
        dir.path(),
        "listen: 127.0.0.1:1\nservers:\n  notes:\n    url: http://127.0.0.1:9/mcp\n",
    );
    assert_eq!(code, Some(64));
    assert!(err.contains(&format!("{}:3:3:", path.display())), "{err}");
    assert!(
        err.contains("has no `tools` allowlist") && err.contains("fix:"),
        "{err}"
    );

    let (code, err, _) = serve_config(
        dir.path(),
        "servers:\n  notes:\n    url: http://127.0.0.1:9/mcp\n    tools: { a: { class: read } }\n    colour: blue\n",
    );
    assert_eq!(code, Some(64));
    assert!(
        err.contains(":5:5:") && err.contains("unknown key `colour`"),
        "{err}"
    );
}

#[test]
fn quickstart_writes_config_issues_keys_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(bin("portcullis"))
        .args(["quickstart", "--port", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut key = None;
    let mut admin_key = None;
    let mut admin_url = None;
    let mut inspector = false;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(k) = line.trim().strip_prefix("Client key:") {
            key = Some(k.trim().to_string());
        }
        if let Some(k) = line.trim().strip_prefix("Admin key:") {
            admin_key = k.split_whitespace().next().map(str::to_string);
        }
        if let Some(u) = line.trim().strip_prefix("Admin URL:") {
            admin_url = u.split_whitespace().next().map(str::to_string);
        }
        if line.contains("@modelcontextprotocol/inspector") {
            inspector = true;
        }
        if line.contains("--method tools/list") {
            break;
        }
    }
    // Keep draining so the gateway's stdout stays open.
    std::thread::spawn(move || for _ in lines {});
    let key = key.expect("client key printed");
    let admin_key = admin_key.expect("admin key printed");
    let admin_url = admin_url.expect("admin URL printed");
    assert_eq!(admin_url, format!("http://127.0.0.1:{}/ui/", port + 1));
    assert!(inspector);
    assert!(dir.path().join("portcullis.yaml").exists());
    assert!(dir.path().join("portcullis.db").exists());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/mcp");
        let meta = serde_json::json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} });
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": { "_meta": meta } });
        let v: serde_json::Value = http
            .post(&url)
            .bearer_auth(&key)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["notes__search_notes", "notes__get_note", "notes__create_note", "notes__delete_note"]);
        // The admin URL serves the operator page, and the admin key works on the admin API.
        let login = http.get(format!("{admin_url}login")).send().await.unwrap();
        assert_eq!(login.status(), 200);
        let admin_base = admin_url.trim_end_matches("/ui/");
        let r = http.get(format!("{admin_base}/admin/kill-switch")).bearer_auth(&admin_key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // A write tool is held for approval by default.
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "_meta": meta, "name": "notes__create_note", "arguments": { "title": "t", "body": "b" } } });
        let started = std::time::Instant::now();
        let call = http.post(&url).bearer_auth(&key).header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call").header("mcp-name", "notes__create_note").json(&body).send();
        let approve = async {
            loop {
                let v: serde_json::Value = http.get(format!("{admin_base}/admin/approvals?status=pending")).bearer_auth(&admin_key)
                    .send().await.unwrap().json().await.unwrap();
                if let Some(id) = v["approvals"][0]["id"].as_str() {
                    assert_eq!(v["approvals"][0]["target"], "t");
                    let r = http.post(format!("{admin_base}/admin/approvals/{id}/approve")).bearer_auth(&admin_key)
                        .json(&serde_json::json!({ "reason": "quickstart test" })).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let (resp, ()) = tokio::join!(call, approve);
        let v: serde_json::Value = resp.unwrap().json().await.unwrap();
        assert!(v["result"]["content"][0]["text"].as_str().unwrap().contains("\"id\""), "{v}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    });
    let _ = child.kill();
    let _ = child.wait();
    // The written config is what `serve` accepts.
    let check = registry_check(&dir.path().join("portcullis.yaml"));
    assert!(check, "quickstart config does not load");
}

fn registry_check(path: &std::path::Path) -> bool {
    let out = Command::new(bin("portcullis"))
        .args(["keys", "list", "--config"])
        .arg(path)
        .current_dir(path.parent().unwrap())
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("quickstart-client")
}
