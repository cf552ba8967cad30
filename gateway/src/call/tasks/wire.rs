//! What a task looks like on the wire, in each revision's shape: the 2025-11-25 task
//! augmentation (`task` wrapper, `ttl`, `pollInterval`, a tool error makes the task `failed`)
//! and the 2026-07-28 tasks extension (flat, `resultType`, `ttlMs`, `pollIntervalMs`, the
//! outcome inline in `tasks/get`).

use serde_json::{Map, Value, json};
use store::{TaskRecord, TaskStatus};

use super::Flavor;

/// How often a client is told to look again, in milliseconds.
pub(super) const POLL_MS: i64 = 2000;

/// The `_meta` key naming the task a result belongs to (2025-11-25).
const RELATED: &str = "io.modelcontextprotocol/related-task";

/// How a task ended, as stored.
pub(super) enum Ended {
    Result(Value),
    Error(Value),
}

pub(super) fn ended(rec: &TaskRecord) -> Option<Ended> {
    let outcome: Value = serde_json::from_str(rec.outcome.as_deref()?).ok()?;
    match (outcome.get("result"), outcome.get("error")) {
        (Some(r), _) => Some(Ended::Result(r.clone())),
        (None, Some(e)) => Some(Ended::Error(e.clone())),
        (None, None) => None,
    }
}

fn tool_error(rec: &TaskRecord) -> bool {
    matches!(ended(rec), Some(Ended::Result(r)) if r.get("isError").and_then(Value::as_bool) == Some(true))
}

/// The status a client sees.
pub(super) fn status(flavor: Flavor, rec: &TaskRecord) -> &'static str {
    let shown = match rec.status {
        // A claimed call still runs: the client sees the task working.
        TaskStatus::Running => TaskStatus::Working,
        // 2025-11-25: a tool result with `isError` ends the task `failed`.
        TaskStatus::Completed if flavor == Flavor::Augmented && tool_error(rec) => {
            TaskStatus::Failed
        }
        other => other,
    };
    shown.as_str()
}

/// The task's fields, flat.
fn fields(flavor: Flavor, rec: &TaskRecord) -> Map<String, Value> {
    let mut t = Map::new();
    t.insert("taskId".into(), json!(rec.id));
    t.insert("status".into(), json!(status(flavor, rec)));
    if let Some(m) = &rec.message {
        t.insert("statusMessage".into(), json!(m));
    }
    t.insert(
        "createdAt".into(),
        json!(crate::clock::rfc3339_ms(rec.created_ms)),
    );
    t.insert(
        "lastUpdatedAt".into(),
        json!(crate::clock::rfc3339_ms(rec.updated_ms)),
    );
    match flavor {
        Flavor::Augmented => {
            t.insert("ttl".into(), json!(rec.ttl_ms));
            if !rec.status.is_terminal() {
                t.insert("pollInterval".into(), json!(POLL_MS));
            }
        }
        Flavor::Extension => {
            t.insert("ttlMs".into(), json!(rec.ttl_ms));
            if !rec.status.is_terminal() {
                t.insert("pollIntervalMs".into(), json!(POLL_MS));
            }
        }
    }
    t
}

/// The answer to the `tools/call` that created the task.
pub(super) fn created(flavor: Flavor, rec: &TaskRecord) -> Value {
    match flavor {
        Flavor::Augmented => json!({ "task": fields(flavor, rec) }),
        Flavor::Extension => {
            let mut t = fields(flavor, rec);
            t.insert("resultType".into(), json!("task"));
            Value::Object(t)
        }
    }
}

/// The answer to `tasks/get` (and `tasks/cancel` in 2025-11-25): the task, and in the
/// extension its outcome inline.
pub(super) fn task(flavor: Flavor, rec: &TaskRecord) -> Value {
    let mut t = fields(flavor, rec);
    if flavor == Flavor::Extension {
        match (rec.status, ended(rec)) {
            (TaskStatus::Completed, Some(Ended::Result(r))) => {
                t.insert("result".into(), result(flavor, rec, r));
            }
            (TaskStatus::Failed, Some(Ended::Error(e))) => {
                t.insert("error".into(), e);
            }
            _ => {}
        }
    }
    Value::Object(t)
}

/// A stored tool result as this revision's client reads it.
pub(super) fn result(flavor: Flavor, rec: &TaskRecord, mut r: Value) -> Value {
    if let Some(obj) = r.as_object_mut() {
        match flavor {
            Flavor::Augmented => {
                for key in ["resultType", "ttlMs", "cacheScope"] {
                    obj.remove(key);
                }
                let meta = obj.entry("_meta").or_insert_with(|| json!({}));
                if let Some(m) = meta.as_object_mut() {
                    m.insert(RELATED.into(), json!({ "taskId": rec.id }));
                }
            }
            Flavor::Extension => {
                obj.insert("resultType".into(), json!("complete"));
            }
        }
    }
    r
}
