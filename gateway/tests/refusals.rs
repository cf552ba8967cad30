//! The refusal table: every way the gateway refuses a real request, answered in-process by the
//! library's routers (`oneshot`, no sockets, no child process) and compared with a golden file
//! under `tests/data/refusals/` (status, the headers that matter, the JSON body). Ids that change
//! from run to run (approval ids) are replaced by a placeholder before the comparison.
//!
//! A change to any answer fails here until the golden file is rewritten on purpose:
//! `PORTCULLIS_BLESS=1 cargo test -p portcullis --test refusals`, then review the diff.

// Test code may unwrap and index: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use store::{KeyRole, KeyScope, Store};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const MCP_AT: &str = "127.0.0.1:9";
const ADMIN_AT: &str = "127.0.0.1:10";
const STATELESS: &str = "2026-07-28";

fn config(dir: &Path, audit: &Path) -> String {
    format!(
        r#"listen: {MCP_AT}
admin_listen: {ADMIN_AT}
store: sqlite://{dir}/g.db
http: {{ max_body: 64KiB }}
audit: {{ sinks: [{{ type: file, path: {audit} }}] }}
approvals: {{ required_from: write, hold: 0s }}
grants:
  team:ops: ["notes/*"]
  key:*: ["notes/*"]
  user:meter: ["notes/search_notes"]
servers:
  notes:
    builtin: notes
    tools:
      search_notes: {{ class: read }}
      get_note: {{ class: read, rate: 1/min }}
      create_note: {{ class: write }}
      delete_note: {{ class: destructive }}
limits:
  - {{ match: "user:meter", server: notes, tool: search_notes, budget: {{ units: 1, per: month }} }}
"#,
        dir = dir.display(),
        audit = audit.display()
    )
}

/// One answer as the golden files keep it.
async fn shown(resp: axum::response::Response) -> Value {
    let status = resp.status().as_u16();
    let mut headers = serde_json::Map::new();
    for name in ["www-authenticate", "retry-after", "content-type"] {
        if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
            // How long is left depends on the clock; that it is a number of seconds does not.
            let v = match name == "retry-after" && v.parse::<u64>().is_ok() {
                true => "<s>",
                false => v,
            };
            headers.insert(name.into(), json!(v));
        }
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    normalised(json!({ "status": status, "headers": headers, "body": body }))
}

/// Approval ids are random: each becomes `<approval>` wherever it appears. How long a rate
/// limit has left depends on the clock: the seconds become `<s>`. The gateway's version becomes
/// `<version>`.
fn normalised(mut v: Value) -> Value {
    if let Some(version) =
        v.pointer_mut("/body/result/_meta/io.modelcontextprotocol~1serverInfo/version")
    {
        *version = json!("<version>");
    }
    if let Some(wait) = v.pointer_mut("/body/error/data/retry_after_s") {
        *wait = json!("<s>");
    }
    if let Some(Value::String(m)) = v.pointer_mut("/body/error/message")
        && let Some((head, tail)) = m.split_once("try again in ")
        && let Some((_, rest)) = tail.split_once(' ')
    {
        *m = format!("{head}try again in <s> {rest}");
    }
    let id = v
        .pointer("/body/error/data/approval_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(id) = id {
        let text = v.to_string().replace(&id, "<approval>");
        v = serde_json::from_str(&text).unwrap();
    }
    v
}

struct Gw {
    _dir: tempfile::TempDir,
    app: axum::Router,
    admin: axum::Router,
    keys: std::collections::HashMap<&'static str, String>,
    _stop: tokio_util::sync::DropGuard,
}

/// A gateway in front of the built-in notes server, writing its audit log to `audit` (a file
/// in its directory if `None`).
async fn gateway(audit: Option<&Path>) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let config = config(dir.path(), audit.unwrap_or(&file));
    let reg = registry::load_str("refusals.yaml", &config).unwrap();
    let store = Store::open(&reg.settings.store).await.unwrap();
    let mut keys = std::collections::HashMap::new();
    let scope = |team: Option<&str>, grants: &[&str], user: Option<&str>| KeyScope {
        team: team.map(str::to_string),
        grants: grants.iter().map(|g| g.to_string()).collect(),
        user: user.map(str::to_string),
        ..KeyScope::default()
    };
    for (name, role, s) in [
        ("ops", KeyRole::Client, scope(Some("ops"), &[], None)),
        // Its own grants reach one tool: the key level denies the others.
        (
            "narrow",
            KeyRole::Client,
            scope(Some("ops"), &["notes/get_note"], None),
        ),
        // No grant for its team: the team level denies everything.
        ("sales", KeyRole::Client, scope(Some("sales"), &[], None)),
        // A user with a budget of one call a day to `search_notes`.
        (
            "meter",
            KeyRole::Client,
            scope(Some("ops"), &[], Some("meter")),
        ),
        ("admin", KeyRole::Admin, scope(None, &[], Some("ann"))),
    ] {
        let issued = store.create_key(name, role, s).await.unwrap();
        keys.insert(name, issued.secret);
    }
    drop(store);
    let stop = CancellationToken::new();
    let mcp_at: SocketAddr = MCP_AT.parse().unwrap();
    let admin_at: SocketAddr = ADMIN_AT.parse().unwrap();
    let state = portcullis::start(reg, mcp_at, admin_at, stop.clone())
        .await
        .unwrap();
    assert!(state.upstreams_ready(Duration::from_secs(10)).await);
    Gw {
        app: portcullis::app(&state),
        admin: portcullis::admin_app(&state),
        _dir: dir,
        keys,
        _stop: stop.drop_guard(),
    }
}

impl Gw {
    /// A 2026-07-28 request by `key` (none: no credentials), with its headers as a client
    /// sends them; `tweak` may change the request before it is sent.
    async fn ask(
        &self,
        key: Option<&str>,
        method: &str,
        params: Value,
        tweak: impl FnOnce(&mut Request<Body>),
    ) -> Value {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        self.ask_meta(key, method, params, meta, tweak).await
    }

    /// [`Gw::ask`] with the request's `_meta` as given.
    async fn ask_meta(
        &self,
        key: Option<&str>,
        method: &str,
        params: Value,
        meta: Value,
        tweak: impl FnOnce(&mut Request<Body>),
    ) -> Value {
        let mut params = params;
        params["_meta"] = meta;
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let mut req = Request::post("/mcp")
            .header("host", MCP_AT)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", STATELESS)
            .header("mcp-method", method);
        if let Some(n) = name {
            req = req.header("mcp-name", n);
        }
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {}", self.keys[k]));
        }
        let mut req = req.body(Body::from(body.to_string())).unwrap();
        tweak(&mut req);
        shown(self.app.clone().oneshot(req).await.unwrap()).await
    }

    async fn call(&self, key: &str, tool: &str, arguments: Value) -> Value {
        let params = json!({ "name": tool, "arguments": arguments });
        self.ask(Some(key), "tools/call", params, |_| {}).await
    }

    /// A request in a new 2025-06-18 session of `key`.
    async fn legacy(&self, key: &str, method: &str, params: Value) -> Value {
        let post = |body: Value, session: Option<&str>| {
            let mut req = Request::post("/mcp")
                .header("host", MCP_AT)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("authorization", format!("Bearer {}", self.keys[key]));
            if let Some(s) = session {
                req = req
                    .header("mcp-session-id", s)
                    .header("mcp-protocol-version", "2025-06-18");
            }
            req.body(Body::from(body.to_string())).unwrap()
        };
        let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "refusals", "version": "1" } } });
        let resp = self.app.clone().oneshot(post(init, None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let session = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let resp = self.app.clone().oneshot(post(body, Some(&session))).await;
        shown(resp.unwrap()).await
    }

    /// The events of `kind` in the audit log, once `ready` holds for them (events are written
    /// behind the answers).
    async fn events(&self, kind: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let path = self._dir.path().join("audit.jsonl");
        for _ in 0..100 {
            let events: Vec<Value> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["kind"] == kind)
                .collect();
            if ready(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the audit log never held the expected `{kind}` events");
    }

    /// An operator action on the admin API, which must succeed.
    async fn operate(&self, path: &str, body: Value) {
        let req = Request::post(path)
            .header("host", ADMIN_AT)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.keys["admin"]))
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.admin.clone().oneshot(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{path}: {}",
            shown(resp).await
        );
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/refusals")
}

/// Compare with (or, blessing, write) the golden file of `case`.
fn check(case: &str, got: &Value, failures: &mut Vec<String>) {
    let path = golden_dir().join(format!("{case}.json"));
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("PORTCULLIS_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(want) if want == text => {}
        Ok(want) => failures.push(format!("{case}: want\n{want}got\n{text}")),
        Err(_) => failures.push(format!(
            "{case}: no golden file {} (write it with PORTCULLIS_BLESS=1)",
            path.display()
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_answers_as_its_golden_file_says() {
    let gw = gateway(None).await;
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let search = json!({ "query": "x" });

    // At the HTTP edge.
    cases.push((
        "unauthenticated",
        gw.ask(None, "tools/list", json!({}), |_| {}).await,
    ));
    let set = |name: &'static str, value: &'static str| {
        move |r: &mut Request<Body>| {
            r.headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
    };
    let evil = set("host", "evil.example");
    cases.push((
        "host_not_allowed",
        gw.ask(Some("ops"), "tools/list", json!({}), evil).await,
    ));
    let bogus = set("mcp-session-id", "no-such-session");
    let listed = gw.ask(Some("ops"), "tools/list", json!({}), bogus).await;
    cases.push(("session_not_found", listed));
    let big = json!({ "query": "x".repeat(70 * 1024) });
    cases.push((
        "body_too_large",
        gw.call("ops", "notes__search_notes", big).await,
    ));
    let lying = set("mcp-method", "tools/list");
    let params = json!({ "name": "notes__search_notes", "arguments": search });
    let mismatch = gw.ask(Some("ops"), "tools/call", params, lying).await;
    cases.push(("header_mismatch", mismatch));

    // The 2026-07-28 revision's own rules.
    let caps_only = json!({ "io.modelcontextprotocol/clientCapabilities": {} });
    let no_version = gw
        .ask_meta(Some("ops"), "server/discover", json!({}), caps_only, |_| {})
        .await;
    cases.push(("meta_without_protocol_version", no_version));
    let other = json!({
        "io.modelcontextprotocol/protocolVersion": "v999.0.0",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let disagree = gw
        .ask_meta(Some("ops"), "server/discover", json!({}), other, |_| {})
        .await;
    cases.push(("version_header_disagrees_with_meta", disagree));
    let init = gw.ask(Some("ops"), "initialize", json!({}), |_| {}).await;
    cases.push(("initialize_in_2026", init));
    let subscribe = gw
        .ask(Some("ops"), "resources/subscribe", json!({}), |_| {})
        .await;
    cases.push(("resources_subscribe_in_2026", subscribe));

    // Resolution and decision: absent and denied look alike to the caller.
    cases.push((
        "method_not_found",
        gw.ask(Some("ops"), "nope/nope", json!({}), |_| {}).await,
    ));
    let no_name = gw.ask(Some("ops"), "tools/call", json!({}), |_| {}).await;
    cases.push(("tool_call_without_mcp_name", no_name));
    let params = json!({ "name": "notes__search_notes", "arguments": 5 });
    let not_object = gw.ask(Some("ops"), "tools/call", params, |_| {}).await;
    cases.push(("arguments_not_an_object", not_object));
    cases.push((
        "unknown_tool",
        gw.call("ops", "notes__nope", search.clone()).await,
    ));
    let prompt = json!({ "name": "notes__nope" });
    let unknown_prompt = gw.ask(Some("ops"), "prompts/get", prompt, |_| {}).await;
    cases.push(("unknown_prompt", unknown_prompt));
    let resource = json!({ "uri": "notes+note://999" });
    let unknown_resource = gw
        .ask(Some("ops"), "resources/read", resource, |_| {})
        .await;
    cases.push(("unknown_resource", unknown_resource));
    // The same in a 2025-era session: the resource answers with its own code.
    let uri = json!({ "uri": "notes+note://999" });
    let legacy = gw.legacy("ops", "resources/read", uri).await;
    cases.push(("unknown_resource_2025", legacy));
    cases.push((
        "denied_at_key",
        gw.call("narrow", "notes__search_notes", search.clone())
            .await,
    ));
    cases.push((
        "denied_at_team",
        gw.call("sales", "notes__search_notes", search.clone())
            .await,
    ));

    // Arguments, limits, approval.
    let wrong = json!({ "query": 5 });
    cases.push((
        "invalid_arguments",
        gw.call("ops", "notes__search_notes", wrong).await,
    ));
    let note = json!({ "id": 1 });
    let first = gw.call("ops", "notes__get_note", note.clone()).await;
    assert_eq!(first["status"], 200, "{first}");
    assert!(first["body"]["result"].is_object(), "{first}");
    cases.push((
        "rate_limited",
        gw.call("ops", "notes__get_note", note).await,
    ));
    // A budget: one unit a month, then refused until the month ends, in both eras.
    let spent = gw
        .call("meter", "notes__search_notes", search.clone())
        .await;
    assert!(spent["body"]["result"].is_object(), "{spent}");
    cases.push((
        "budget_exceeded",
        gw.call("meter", "notes__search_notes", search.clone())
            .await,
    ));
    let params = json!({ "name": "notes__search_notes", "arguments": search });
    let legacy = gw.legacy("meter", "tools/call", params).await;
    cases.push(("budget_exceeded_2025", legacy));
    // Fault injection: the budget's table is gone, so its reservation fails: refused, never
    // unlimited. The table comes back when the store is opened again.
    let url = format!("sqlite://{}", gw._dir.path().join("g.db").display());
    let broken = Store::open(&url).await.unwrap();
    broken
        .execute_for_test("DROP TABLE budget_usage")
        .await
        .unwrap();
    cases.push((
        "limits_unavailable",
        gw.call("meter", "notes__search_notes", search.clone())
            .await,
    ));
    drop(Store::open(&url).await.unwrap());
    let draft = json!({ "title": "t", "body": "b" });
    cases.push((
        "approval_pending",
        gw.call("ops", "notes__create_note", draft.clone()).await,
    ));

    // The operator's levers.
    let mode = |m: &str| json!({ "mode": m, "reason": "refusal table" });
    gw.operate("/admin/mode", mode("read_only")).await;
    cases.push((
        "read_only",
        gw.call("ops", "notes__create_note", draft.clone()).await,
    ));
    gw.operate("/admin/mode", mode("shadow")).await;
    cases.push((
        "shadow",
        gw.call("ops", "notes__create_note", draft.clone()).await,
    ));
    gw.operate("/admin/mode", mode("enforce")).await;
    let switch =
        json!({ "scope": "server", "target": "notes", "engaged": true, "reason": "drill" });
    gw.operate("/admin/kill-switch", switch).await;
    cases.push((
        "killed",
        gw.call("ops", "notes__search_notes", search.clone()).await,
    ));

    // The operator's record says what the caller was not told.
    let calls = gw
        .events("tool.call", |e| {
            e.iter().filter(|e| e["outcome"] == "denied").count() >= 2
        })
        .await;
    let denied: Vec<&Value> = calls.iter().filter(|e| e["outcome"] == "denied").collect();
    assert_eq!(denied[0]["level"], "key", "{}", denied[0]);
    assert_eq!(denied[1]["level"], "team", "{}", denied[1]);
    assert!(
        denied
            .iter()
            .all(|e| e["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );
    let held = calls.iter().find(|e| e["outcome"] == "held").unwrap();
    let id = held["detail"]["approval_id"].as_str().unwrap();
    assert!(!id.is_empty(), "{held}");
    let limited = calls
        .iter()
        .find(|e| e["outcome"] == "rate_limited")
        .unwrap();
    assert_eq!(
        limited["reason"], "more than 1/min (the tool's rate)",
        "{limited}"
    );
    let over = calls
        .iter()
        .find(|e| e["outcome"] == "budget_exceeded")
        .unwrap();
    assert_eq!(
        (&over["detail"]["limit"], &over["detail"]["principal"]),
        (&json!("limits[0]"), &json!("user:meter")),
        "{over}"
    );
    assert_eq!(
        over["reason"], "1 units/month spent (limits[0] for user:meter)",
        "{over}"
    );
    let down = calls
        .iter()
        .find(|e| e["outcome"] == "unavailable" && e["tool"] == "search_notes")
        .unwrap();
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("budget_usage")),
        "{down}"
    );
    let invalid = calls
        .iter()
        .find(|e| e["outcome"] == "invalid_arguments")
        .unwrap();
    assert_eq!(
        invalid["reason"],
        "arguments do not match the schema at `/query`"
    );

    // Fault injection: the only audit sink fails (its FIFO's reader goes away), so a call that
    // would be allowed is not executed. A gateway of its own, so nothing else fills the pipe.
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Open for reading and writing: opening never blocks, and the pipe has a reader until this
    // handle is dropped.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let faulty = gateway(Some(&fifo)).await;
    drop(reader);
    let refused = faulty
        .call("ops", "notes__search_notes", search.clone())
        .await;
    cases.push(("audit_unavailable", refused));

    // The table is what the golden files hold: no file without a case.
    let mut failures = Vec::new();
    for (case, got) in &cases {
        check(case, got, &mut failures);
    }
    let known: std::collections::BTreeSet<String> = std::fs::read_dir(golden_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".json")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    for stale in known.iter().filter(|k| !cases.iter().any(|(c, _)| c == *k)) {
        failures.push(format!("{stale}: a golden file with no case; remove it"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
