//! What a test needs to drive a gateway as a client and read it as an operator: a client
//! session, a tool call and its text, one server's state at `/admin/upstreams`, and the
//! admin listener's text (`/metrics`).

use serde_json::{Value, json};

use crate::Gateway;
use crate::raw::{Raw, req};

/// A client session with the harness's key.
pub async fn client(gw: &Gateway) -> Raw {
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    c
}

/// `tools/call` of `tool` with `arguments`: the whole JSON-RPC answer.
pub async fn call_tool(c: &Raw, tool: &str, arguments: Value) -> Value {
    c.call(req(
        7,
        "tools/call",
        json!({ "name": tool, "arguments": arguments }),
    ))
    .await
    .1
}

/// The text of an answer's first content block ("" when there is none).
pub fn tool_text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// `GET {admin}{path}` with an auditor key: its body.
pub async fn admin_text(gw: &Gateway, path: &str) -> String {
    let key = gw.operator_key("auditor", None).unwrap();
    admin_text_as(gw, &key, path).await
}

/// `GET {admin}{path}` with the operator key `key`: its body.
pub async fn admin_text_as(gw: &Gateway, key: &str, path: &str) -> String {
    admin_get(&gw.admin, key, path).await
}

/// `GET {admin}{path}` on any process's admin listener (`http://127.0.0.1:PORT`) with the
/// operator key `key`: its body.
pub async fn admin_get(admin: &str, key: &str, path: &str) -> String {
    reqwest::Client::new()
        .get(format!("{admin}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `server`'s entry in `GET /admin/upstreams`.
pub async fn upstream_state(gw: &Gateway, server: &str) -> Value {
    let all: Value = serde_json::from_str(&admin_text(gw, "/admin/upstreams").await).unwrap();
    all["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["server"] == server)
        .cloned()
        .unwrap()
}
