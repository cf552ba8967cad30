//! Operator calls the approval and task tests share: the admin API, as an approver uses it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Fixture, Gateway, fixture_server};

/// A gateway in front of `fx` (as server `fixture`) whose `approvals:` are `approvals`.
pub fn with_approvals(fx: &Fixture, approvals: &str) -> Gateway {
    Gateway::start_with(
        &format!("approvals: {approvals}\n"),
        &fixture_server("fixture", &fx.url),
    )
    .unwrap()
}

/// `GET` (no body) or `POST` (`body`) `path` on the admin listener as `key`.
pub async fn admin(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", gw.admin);
    let r = match body {
        Some(b) => http.post(url).json(&b),
        None => http.get(url),
    };
    let r = r.bearer_auth(key).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The one pending approval request's id.
pub async fn pending(gw: &Gateway, approver: &str) -> String {
    let (_, v) = admin(gw, approver, "/admin/approvals?status=pending", None).await;
    let all = v["approvals"].as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 1, "{v}");
    all[0]["id"].as_str().unwrap().to_string()
}

/// Approve or deny request `id`.
pub async fn decide(gw: &Gateway, approver: &str, id: &str, verdict: &str) {
    let path = format!("/admin/approvals/{id}/{verdict}");
    let (s, v) = admin(gw, approver, &path, Some(json!({ "reason": "tasks test" }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
