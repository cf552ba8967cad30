//! Identity-intersection RBAC end to end, with API keys: discovery equals permission, a denied
//! tool answers exactly like a nonexistent one, every fail-closed fault denies without the
//! upstream ever being called, arguments are checked before forwarding, and end users narrow.

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, create_key_with, fixture_server, python};
use serde_json::{Value, json};

const POLICY: &str = "identity:
  require: [org]
grants:
  org:acme: [\"fixture/*\"]
  team:research: [\"fixture/echo\", \"fixture/slow\", \"fixture/test_simple_text\"]
  team:ops:
    allow: [\"fixture/*\"]
    deny: [\"fixture/add_tool\"]
  team:admins: [\"fixture/*\"]
  user:*: [\"fixture/*\"]
  user:mallory:
    allow: [\"fixture/*\"]
    deny: [\"fixture/echo\"]
approvals: { required_from: destructive, hold: 0s }
";

struct Setup {
    fx: Fixture,
    gw: Gateway,
}

fn setup() -> Setup {
    let fx = Fixture::start("both").unwrap();
    // The operator narrows `echo` to two allowed texts.
    let servers = fixture_server("fixture", &fx.url).replace(
        "      echo: { class: read }\n",
        "      echo:\n        class: read\n        arguments: { properties: { text: { enum: [hello, hi] } } }\n",
    );
    let gw = Gateway::start_with(POLICY, &servers).unwrap();
    Setup { fx, gw }
}

impl Setup {
    fn key(&self, flags: &[&str]) -> String {
        let grants = ["fixture/*".to_owned()];
        create_key_with(&self.gw.config(), "t", &grants, flags).unwrap()
    }

    fn client(&self, key: &str) -> Raw {
        Raw::new(self.gw.mcp(), key)
    }
}

async fn call(c: &Raw, tool: &str, args: Value) -> Value {
    let (_, r) = c
        .call(req(
            2,
            "tools/call",
            json!({ "name": tool, "arguments": args }),
        ))
        .await;
    r
}

/// The error a caller gets for a tool it may not call, with the name replaced, must be the error
/// for a tool that does not exist.
async fn assert_like_nonexistent(c: &Raw, tool: &str, args: Value) {
    let denied = call(c, tool, args.clone()).await;
    let missing = call(c, "fixture__no_such_tool", args).await;
    let normalise = |v: &Value| {
        v.to_string()
            .replace(tool, "NAME")
            .replace("fixture__no_such_tool", "NAME")
    };
    assert_eq!(normalise(&denied), normalise(&missing), "{denied}");
    assert_eq!(denied["error"]["data"]["reason"], "not_found");
}

#[tokio::test]
async fn discovery_equals_permission_and_denied_looks_nonexistent() {
    let s = setup();
    let mut research = s.client(&s.key(&["--org", "acme", "--team", "research"]));
    research.init().await;
    assert_eq!(
        research.tool_names().await,
        [
            "fixture__echo",
            "fixture__slow",
            "fixture__test_simple_text"
        ]
    );
    let before = s.fx.calls();
    assert_like_nonexistent(&research, "fixture__add_tool", json!({})).await;
    assert_like_nonexistent(&research, "fixture__test_image_content", json!({})).await;
    // Names compare exactly.
    assert_like_nonexistent(&research, "fixture__Echo", json!({"text": "hello"})).await;
    assert_like_nonexistent(&research, "fixture__echo\u{200b}", json!({"text": "hello"})).await;
    assert_eq!(s.fx.calls(), before, "a denied call reached the upstream");
    let ok = call(&research, "fixture__echo", json!({"text": "hello"})).await;
    assert_eq!(ok["result"]["content"][0]["text"], "hello", "{ok}");
    assert_eq!(s.fx.calls(), before + 1);

    // Resources need `fixture/*` at every level: research has single tools only.
    let (_, r) = research.call(req(3, "resources/list", json!({}))).await;
    assert_eq!(r["result"]["resources"], json!([]), "{r}");
    let (_, r) = research
        .call(req(
            4,
            "resources/read",
            json!({"uri": "fixture+test://static-text"}),
        ))
        .await;
    assert_eq!(r["error"]["data"]["reason"], "not_found", "{r}");
    let (_, r) = research.call(req(5, "prompts/list", json!({}))).await;
    assert_eq!(r["result"]["prompts"], json!([]), "{r}");

    // The ops team sees everything but its explicit deny, resources included.
    let mut ops = s.client(&s.key(&["--org", "acme", "--team", "ops"]));
    ops.init().await;
    let names = ops.tool_names().await;
    assert!(names.contains(&"fixture__test_image_content".to_string()));
    assert!(!names.contains(&"fixture__add_tool".to_string()));
    let (_, r) = ops
        .call(req(
            6,
            "resources/read",
            json!({"uri": "fixture+test://static-text"}),
        ))
        .await;
    assert!(r["result"]["contents"].is_array(), "{r}");
}

#[tokio::test]
async fn unresolved_required_level_and_corrupt_grants_deny_everything() {
    let s = setup();
    // Fault: a required level (org) does not resolve.
    let mut no_org = s.client(&s.key(&["--team", "research"]));
    no_org.init().await;
    // Fault: the key's stored grants no longer parse (a grant parse error on the decision path).
    let corrupt_key = s.key(&["--org", "acme", "--team", "ops"]);
    let id = &corrupt_key["pcl_".len().."pcl_".len() + 16];
    let db = s.gw.dir.path().join("store.db");
    let status = std::process::Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE api_keys SET grants='[\\\"fixture/\\\"]' WHERE id=?\", (sys.argv[2],)); c.commit()",
        ])
        .arg(&db)
        .arg(id)
        .status()
        .unwrap();
    assert!(status.success());
    let mut corrupt = s.client(&corrupt_key);
    corrupt.init().await;
    let before = s.fx.calls();
    for c in [&no_org, &corrupt] {
        assert_eq!(c.tool_names().await, Vec::<String>::new());
        assert_like_nonexistent(c, "fixture__echo", json!({"text": "hello"})).await;
        let (_, r) = c.call(req(3, "resources/list", json!({}))).await;
        assert_eq!(r["result"]["resources"], json!([]), "{r}");
    }
    assert_eq!(
        s.fx.calls(),
        before,
        "a faulted identity reached the upstream"
    );
}

#[tokio::test]
async fn arguments_are_checked_before_forwarding() {
    let s = setup();
    let mut c = s.client(&s.key(&["--org", "acme", "--team", "research"]));
    c.init().await;
    let before = s.fx.calls();
    // The operator's schema narrows the upstream's: only `hello` and `hi`.
    let r = call(&c, "fixture__echo", json!({"text": "rm -rf /"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("arguments rejected: the gateway's policy:"),
        "{text}"
    );
    // The upstream's own schema: `text` is required and a string.
    let r = call(&c, "fixture__echo", json!({})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = call(&c, "fixture__slow", json!({"ms": "soon"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/ms"),
        "{r}"
    );
    assert_eq!(
        s.fx.calls(),
        before,
        "rejected arguments reached the upstream"
    );
    let r = call(&c, "fixture__slow", json!({"ms": 1})).await;
    assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
}

#[tokio::test]
async fn destructive_tools_are_held_for_approval() {
    let s = setup();
    let mut c = s.client(&s.key(&["--org", "acme", "--team", "admins"]));
    c.init().await;
    // Visible (the caller may ask), but not callable without approval.
    assert!(
        c.tool_names()
            .await
            .contains(&"fixture__add_tool".to_string())
    );
    let before = s.fx.calls();
    let r = call(&c, "fixture__add_tool", json!({})).await;
    assert_eq!(r["error"]["data"]["reason"], "approval_pending", "{r}");
    assert_eq!(r["error"]["data"]["class"], "destructive", "{r}");
    assert!(
        r["error"]["data"]["approval_id"]
            .as_str()
            .unwrap()
            .starts_with("apr_"),
        "{r}"
    );
    assert_eq!(s.fx.calls(), before);
}

#[tokio::test]
async fn end_users_declared_by_service_keys_only_narrow() {
    let s = setup();
    let service = s.key(&["--org", "acme", "--team", "ops", "--service"]);
    let plain = s.key(&["--org", "acme", "--team", "ops"]);
    let mut alice = s.client(&service);
    alice.end_user = Some("alice".into());
    alice.init().await;
    let mut mallory = s.client(&service);
    mallory.end_user = Some("mallory".into());
    mallory.init().await;
    assert!(
        alice
            .tool_names()
            .await
            .contains(&"fixture__echo".to_string())
    );
    assert!(
        !mallory
            .tool_names()
            .await
            .contains(&"fixture__echo".to_string())
    );
    assert_like_nonexistent(&mallory, "fixture__echo", json!({"text": "hi"})).await;
    // A session belongs to the end user it was created for.
    let mut stolen = s.client(&service);
    stolen.end_user = Some("alice".into());
    stolen.session = mallory.session.clone();
    let (status, _) = stolen.call(req(9, "tools/list", json!({}))).await;
    assert_eq!(status, 404);
    // A key that is not a service key cannot declare anyone.
    let mut pretender = s.client(&plain);
    pretender.end_user = Some("alice".into());
    let (status, r) = pretender.call(req(1, "tools/list", json!({}))).await;
    assert_eq!(status, 403, "{r}");
}
