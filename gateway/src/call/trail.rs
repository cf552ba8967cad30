//! What the audit log will say about one tool call, filled in step by step.

use std::time::Instant;

use audit::Event;
use serde_json::{Value, json};

use super::Call;

/// The record of one tool call as it is decided.
#[derive(Default)]
pub(crate) struct Trail {
    pub(crate) server: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) digest: Option<String>,
    pub(crate) request_bytes: Option<u64>,
    /// The redacted summary of the arguments, in the decision event only.
    pub(crate) arguments: Option<Value>,
    /// `allowed` once the request event is written.
    pub(crate) outcome: Option<&'static str>,
    /// The approval this call runs on (or, held as a task, waits on).
    pub(crate) approval: Option<String>,
    /// The task this call is held as, or runs for.
    pub(crate) task: Option<String>,
    /// Set when the upstream is called.
    pub(crate) started: Option<Instant>,
    /// Concurrency permits of `limits:` entries, held until the upstream answers.
    pub(crate) permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    /// Budget units spent, settled when the call ends.
    pub(crate) spent: Vec<crate::limits::budgets::Spent>,
    /// What the record says of a minted upstream credential (never the token).
    pub(crate) credential: Option<Value>,
    /// The answers a multi-round call's retry passed on: their keys and size.
    pub(crate) input: Option<Value>,
}

impl Trail {
    /// An event of `kind` about this call.
    pub(crate) fn event(&self, call: &Call, kind: &'static str) -> Event {
        let mut e = call.event(kind);
        e.method = Some("tools/call".into());
        e.server = self.server.clone();
        e.tool = self.tool.clone();
        e.arguments_digest = self.digest.clone();
        e.request_bytes = self.request_bytes;
        e.outcome = self.outcome;
        // The summary goes into one event only: the decision, or the result of an executed call
        // whose decision event already carried it.
        if kind == "tool.call" {
            e.arguments = self.arguments.clone();
        }
        let mut detail = serde_json::Map::new();
        if let Some(a) = &self.approval {
            detail.insert("approval_id".into(), json!(a));
        }
        if let Some(task) = &self.task {
            detail.insert("task_id".into(), json!(task));
        }
        if let Some(c) = &self.credential {
            detail.insert("credential".into(), c.clone());
        }
        if let Some(i) = &self.input {
            detail.insert("input_responses".into(), i.clone());
        }
        if !detail.is_empty() {
            e.detail = Some(Value::Object(detail));
        }
        e
    }
}
