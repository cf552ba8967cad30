//! The operator web UI in a real headless Chromium (Debian `chromium`, driven by npm
//! `playwright-core` from `tests/node/ui.mjs`): sign-in refuses client keys; a pending call is
//! approved from the page and then runs; the kill switch is engaged and released from the page
//! and MCP calls follow. CSRF, CSP and cookie attributes are checked over plain HTTP.
//! Screenshots land in `target/ui-screenshots/`.

use std::process::Command;

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, fixture_server, node, workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ui(gw: &Gateway, phase: &str, env: &[(&str, &str)], admin_key: &str) -> Value {
    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(node())
        .arg(workspace().join("tests/node/ui.mjs"))
        .arg(phase)
        .env("ADMIN_URL", &gw.admin)
        .env("ADMIN_KEY", admin_key)
        .env("SHOTS", &shots)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{phase}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{phase}: {v}");
    // The refused sign-in is itself a 403 the console reports; anything else is a defect (a CSP
    // violation, a missing asset).
    if phase != "signin-refused" {
        assert_eq!(v["violations"], json!([]), "console errors in {phase}: {v}");
    }
    v
}

async fn call(c: &Raw, tool: &str, args: Value) -> Value {
    c.call(req(
        1,
        "tools/call",
        json!({ "name": tool, "arguments": args }),
    ))
    .await
    .1
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_approves_and_kills_from_the_browser() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write, hold: 0s }\n",
        &fixture_server("fx", &fx.url),
    )
    .unwrap();
    let admin = gw.operator_key("admin", Some("ops")).unwrap();
    let mut c = Raw::new(gw.server("fx"), &gw.key);
    c.init().await;

    let v = ui(&gw, "signin-refused", &[("CLIENT_KEY", &gw.key)], &admin);
    assert!(
        v["error"].as_str().unwrap().contains("Client keys")
            || v["error"].as_str().unwrap().contains("client keys"),
        "{v}"
    );
    let csp = v["csp"].as_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // A held call, approved in the page, then runs exactly once.
    let before = fx.calls();
    let r = call(&c, "slow", json!({ "ms": 0, "password": "hunter2" })).await;
    let id = r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let v = ui(&gw, "approve", &[("APPROVAL_ID", &id)], &admin);
    let preview = v["preview"].as_str().unwrap();
    assert!(
        preview.contains("\"ms\":0") && !preview.contains("hunter2"),
        "{preview}"
    );
    assert!(v["flash"].as_str().unwrap().contains("approved"), "{v}");
    assert_eq!(v["still_pending"], 0);
    let r = call(&c, "slow", json!({ "ms": 0, "password": "hunter2" })).await;
    assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
    assert_eq!(fx.calls(), before + 1);

    // Kill switch from the page.
    let v = ui(&gw, "engage", &[], &admin);
    assert_eq!(v["engaged_rows"], 1, "{v}");
    let r = call(&c, "echo", json!({ "text": "hi" })).await;
    assert_eq!(r["error"]["data"]["reason"], "killed", "{r}");
    let v = ui(&gw, "release", &[], &admin);
    assert_eq!(v["none"], true, "{v}");
    assert_eq!(
        call(&c, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );
}

/// The official TypeScript SDK's tasks client (`tests/node/task_call.mjs`): its last line.
fn task_client(gw: &Gateway, args: &[&str]) -> Value {
    let out = Command::new(node())
        .arg(workspace().join("tests/node/task_call.mjs"))
        .arg(gw.mcp())
        .arg(&gw.key)
        .args(args)
        .current_dir(workspace().join("tests/node"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// A held call that follows as a task (TypeScript SDK) is approved from the page; the task then
/// ends with the tool's result, and the call ran once.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_held_for_approval_is_approved_from_the_browser() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "approvals: { required_from: write, hold: 60s }\n",
        &fixture_server("fixture", &fx.url),
    )
    .unwrap();
    let admin = gw.operator_key("admin", Some("ops")).unwrap();
    let before = fx.calls();
    let created = task_client(&gw, &["create"]);
    let task = created["created"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let pending: Value = reqwest::Client::new()
        .get(format!("{}/admin/approvals?status=pending", gw.admin))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = pending["approvals"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(fx.calls(), before);
    let v = ui(&gw, "approve", &[("APPROVAL_ID", &id)], &admin);
    assert!(v["flash"].as_str().unwrap().contains("approved"), "{v}");
    let v = task_client(&gw, &["follow", task]);
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["result"], "done", "{v}");
    assert_eq!(fx.calls(), before + 1);
}

/// A principal's spent budget is on the page, and an admin raises it there; calls follow.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_sees_a_spent_budget_and_raises_it_from_the_browser() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(
        "limits:\n  - { match: \"key:*\", server: fx, budget: { units: 1, per: month } }\n",
        &fixture_server("fx", &fx.url),
    )
    .unwrap();
    let admin = gw.operator_key("admin", Some("ops")).unwrap();
    let mut c = Raw::new(gw.server("fx"), &gw.key);
    c.init().await;
    let echo = || call(&c, "echo", json!({ "text": "hi" }));
    assert_eq!(echo().await["result"]["content"][0]["text"], "hi");
    assert_eq!(echo().await["error"]["data"]["reason"], "budget_exceeded");
    let state: Value = reqwest::Client::new()
        .get(format!("{}/admin/limits", gw.admin))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let principal = state["limits"][0]["budget"]["principals"][0]["principal"]
        .as_str()
        .unwrap_or_else(|| panic!("{state}"))
        .to_string();
    let v = ui(&gw, "budget", &[("PRINCIPAL", &principal)], &admin);
    let row = |key: &str| {
        v[key][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let before = row("before");
    assert!(
        before.starts_with("limits[0]") && before.contains("portcullis.yaml:7:5 | key:* on fx/*"),
        "{before}"
    );
    assert!(
        before.contains(&format!("{principal}: 1 of 1 used, 0 left")),
        "{before}"
    );
    assert!(before.contains("1 units per month"), "{before}");
    assert!(
        v["flash"].as_str().unwrap().contains("1 of 3 used, 2 left"),
        "{v}"
    );
    assert!(
        row("after").contains(&format!("{principal}: 1 of 3 used, 2 left")),
        "{v}"
    );
    assert_eq!(echo().await["result"]["content"][0]["text"], "hi");
    assert_eq!(echo().await["result"]["content"][0]["text"], "hi");
    assert_eq!(echo().await["error"]["data"]["reason"], "budget_exceeded");
}

/// The page shows the gateway: upstream states, allowlisted and quarantined tools with the
/// re-pin command, keys by name, tokens unbroken; a request filed while it is open appears in
/// the framed pending list without the page being reloaded.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_page_shows_the_gateway_and_new_approvals_live() {
    use std::io::{BufRead, BufReader};
    let fx = Fixture::start("both").unwrap();
    let servers = format!(
        "{}  gone:\n    url: http://127.0.0.1:9/mcp\n    allow_private: true\n    tools: {{ lost: {{ class: read }} }}\n",
        fixture_server("fx", &fx.url).replace(
            "      echo: { class: read }\n",
            "      echo: { class: read }\n      rug_pull: { class: read }\n"
        )
    );
    let gw = Gateway::start_unready_with(
        "approvals: { required_from: write, hold: 0s }\n",
        &servers,
        "warn",
    )
    .unwrap();
    let admin = gw.operator_key("admin", Some("ops")).unwrap();
    let mut c = Raw::new(gw.server("fx"), &gw.key);
    c.init().await;
    // The upstream rewrites `echo`: it is quarantined.
    call(&c, "rug_pull", json!({ "mode": 1 })).await;
    c.until_tools(|n| !n.contains(&"echo".to_string())).await;

    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new(node())
        .arg(workspace().join("tests/node/ui.mjs"))
        .arg("overview")
        .env("ADMIN_URL", &gw.admin)
        .env("ADMIN_KEY", &admin)
        .env("SHOTS", &shots)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let ready = line == "READY";
        out.push(line);
        if ready {
            break;
        }
    }
    assert_eq!(out.last().map(String::as_str), Some("READY"), "{out:?}");
    // Filed while the page is open.
    let r = call(&c, "slow", json!({ "ms": 0 })).await;
    let id = r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    out.extend(lines.map_while(Result::ok));
    assert!(child.wait().unwrap().success(), "{out:?}");
    let v: Value = serde_json::from_str(out.last().unwrap()).unwrap();
    assert_eq!(v["violations"], json!([]), "{v}");
    let cells = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} | {}",
                    r["cls"].as_str().unwrap(),
                    r["cells"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            })
            .collect()
    };
    let upstreams = cells("upstreams");
    assert!(
        upstreams
            .iter()
            .any(|r| r.starts_with("up | fx | http://127.0.0.1:")
                && r.contains("| connected |")
                && r.ends_with("| closed | 0")),
        "{upstreams:?}"
    );
    assert!(
        upstreams
            .iter()
            .any(|r| r.starts_with("down | gone |") && r.contains("| not connected: ")),
        "{upstreams:?}"
    );
    let tools = cells("tools");
    assert!(
        tools
            .iter()
            .any(|r| r.starts_with("tool-quarantined | fx/echo | read | quarantined:")),
        "{tools:?}"
    );
    assert!(
        tools
            .iter()
            .any(|r| r.starts_with("tool-served | fx/slow | write | served")),
        "{tools:?}"
    );
    assert!(
        tools
            .iter()
            .any(|r| r.starts_with("tool-missing | gone/lost | read | unavailable")),
        "{tools:?}"
    );
    let repin = v["repin"].as_str().unwrap_or_default();
    assert!(
        repin.contains(&format!(
            "portcullis pin --config {}",
            gw.config().display()
        )),
        "{v}"
    );
    let keys = cells("keys");
    assert!(
        keys.iter().any(|r| r.contains("| admin-ops |")
            && r.contains("| admin |")
            && r.contains("user:ops")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|r| r.contains("| client |")), "{keys:?}");
    // Issued today, not at the epoch.
    let year = keys[0]
        .rsplit(" | ")
        .next()
        .unwrap_or_default()
        .get(..4)
        .unwrap_or_default()
        .to_string();
    assert!(year.as_str() >= "2025", "{keys:?}");
    assert_eq!(v["broken_tokens"], json!([]), "{v}");
    assert_ne!(v["cell_wrap"], "anywhere", "{v}");
    assert_eq!(v["self_audit_link"], true, "{v}");
    assert!(
        v["count_before"].as_str().unwrap().starts_with("0 pending"),
        "{v}"
    );
    assert_eq!(v["live_ids"], json!([id]), "{v}");
    assert!(
        v["count_after"].as_str().unwrap().starts_with("1 pending"),
        "{v}"
    );
}

/// POST a form to the admin listener with an optional session cookie and `Origin`.
async fn form(
    http: &reqwest::Client,
    url: String,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut r = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_forms_need_the_session_csrf_token_and_same_origin() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start(&fixture_server("fx", &fx.url)).unwrap();
    let admin = gw.operator_key("admin", None).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = format!("{}/ui/login", gw.admin);
    let kill = format!("{}/ui/kill", gw.admin);
    let r = form(
        &http,
        login.clone(),
        None,
        Some(&gw.admin),
        format!("key={admin}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/ui"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    // The framed pending list: framed by the page itself only; without a session it says so in
    // the frame (the sign-in page may not be framed) and lists nothing.
    for (cookie, shows) in [(Some(&session), "pending now"), (None, "The session ended")] {
        let mut req = http.get(format!("{}/ui/pending", gw.admin));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("frame-ancestors 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
        let body = r.text().await.unwrap();
        assert!(body.contains(shows), "{body}");
        assert!(body.contains("http-equiv=\"refresh\""), "{body}");
    }
    let page = http
        .get(format!("{}/ui/", gw.admin))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let engage = |token: &str| format!("csrf={token}&action=engage&scope=global&target=&reason=x");
    // No token, a wrong token: refused, nothing engaged.
    for body in [
        "action=engage&scope=global&target=&reason=x".to_string(),
        engage(&"0".repeat(64)),
    ] {
        let r = form(&http, kill.clone(), Some(&session), Some(&gw.admin), body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // A post that does not say where it comes from, even with the token: refused; the same for
    // signing in (login CSRF).
    let r = form(&http, kill.clone(), Some(&session), None, engage(&csrf)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = form(&http, login, None, None, format!("key={admin}")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A cross-origin form post, even with the token: refused.
    let evil = Some("http://evil.example");
    let r = form(&http, kill.clone(), Some(&session), evil, engage(&csrf)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut c = Raw::new(gw.server("fx"), &gw.key);
    c.init().await;
    assert_eq!(
        call(&c, "echo", json!({ "text": "hi" })).await["result"]["content"][0]["text"],
        "hi"
    );
    // With the token, from the page's origin: done.
    let r = form(&http, kill, Some(&session), Some(&gw.admin), engage(&csrf)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        call(&c, "echo", json!({ "text": "hi" })).await["error"]["data"]["reason"],
        "killed"
    );
    // Revoking the key ends the session.
    let id = admin.split('_').nth(1).unwrap();
    let r = http
        .delete(format!("{}/admin/keys/{id}", gw.admin))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{}/ui/", gw.admin))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login");
}
