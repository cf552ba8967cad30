//! `deferred`: a tool that answers with a task (the 2026-07-28 tasks extension) to a client that
//! declared the extension, and completes `ms` milliseconds later (or fails, with `fail: true`); `tasks/get` and
//! `tasks/cancel` for it. Cancellations are counted (`GET /task-cancels`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolResponse, CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult,
};
use serde_json::{Value, json};

/// Tasks `tasks/cancel` ended.
pub static CANCELLED: AtomicU64 = AtomicU64::new(0);

struct Deferred {
    due: Instant,
    cancelled: bool,
    /// Ends failed rather than completed.
    fails: bool,
}

static TASKS: Mutex<Option<HashMap<String, Deferred>>> = Mutex::new(None);

const AT: &str = "2026-12-01T00:00:00Z";

fn task(id: &str, status: &str) -> Value {
    json!({ "taskId": id, "status": status, "createdAt": AT, "lastUpdatedAt": AT, "ttlMs": 600_000, "pollIntervalMs": 50 })
}

/// The task a `deferred` call answers with (`fails`: it ends failed).
pub fn create(ms: u64, fails: bool) -> Result<CallToolResponse, McpError> {
    let id = format!("fx-task-{}", rand_id());
    if let Ok(mut t) = TASKS.lock() {
        t.get_or_insert_with(HashMap::new).insert(
            id.clone(),
            Deferred {
                due: Instant::now() + Duration::from_millis(ms),
                cancelled: false,
                fails,
            },
        );
    }
    let mut created = task(&id, "working");
    created["resultType"] = json!("task");
    let created: CreateTaskResult = super::from(created)?;
    Ok(CallToolResponse::Task(created))
}

fn rand_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

pub fn get(p: GetTaskParams) -> Result<GetTaskResult, McpError> {
    let t = TASKS
        .lock()
        .map_err(|_| McpError::internal_error("lock", None))?;
    let Some(d) = t.as_ref().and_then(|t| t.get(&p.task_id)) else {
        return Err(McpError::invalid_params("Task not found", None));
    };
    let mut state = match (d.cancelled, Instant::now() >= d.due) {
        (true, _) => task(&p.task_id, "cancelled"),
        (false, false) => task(&p.task_id, "working"),
        (false, true) if d.fails => {
            let mut s = task(&p.task_id, "failed");
            s["error"] = json!({ "code": -32050, "message": "the deferred job failed", "data": { "job": "deferred" } });
            s
        }
        (false, true) => {
            let mut s = task(&p.task_id, "completed");
            s["result"] = json!({ "content": [{ "type": "text", "text": "done later" }], "isError": false, "resultType": "complete" });
            s
        }
    };
    state["resultType"] = json!("complete");
    super::from(state)
}

pub fn cancel(p: CancelTaskParams) -> Result<(), McpError> {
    let mut t = TASKS
        .lock()
        .map_err(|_| McpError::internal_error("lock", None))?;
    if let Some(d) = t.as_mut().and_then(|t| t.get_mut(&p.task_id))
        && !d.cancelled
        && Instant::now() < d.due
    {
        d.cancelled = true;
        CANCELLED.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}
