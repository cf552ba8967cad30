//! Held calls as MCP tasks: a client that can follow a task gets one at once for a call that
//! needs a human's approval, instead of an answer that waits.
//!
//! Two shapes: the 2025-11-25 task augmentation (the client sends `params.task`; `tasks/get`,
//! `tasks/result`, `tasks/list`, `tasks/cancel`) and the 2026-07-28 tasks extension (the
//! client declares `io.modelcontextprotocol/tasks` in each request's capabilities; `tasks/get`
//! carries the outcome, `tasks/update`, `tasks/cancel`). A task is stored (`store::tasks`),
//! bound to the caller and the endpoint that created it (anyone else: not found), and expires.
//!
//! The held call runs when its client next looks at the task after an approver approved it:
//! the look claims the task (exactly one process does), and the call goes through the whole
//! request path again as that client's request, re-authenticated, re-decided, recorded, and
//! run on the approval granted to exactly this call, once. Nothing runs for a client that
//! stopped looking, and no process has to survive between the approval and the run. A deny,
//! an expiry, a kill switch or a mode that refuses the call ends the task `failed`.

mod run;
pub(crate) mod watch;
mod wire;

use run::{advance, reread};

use std::time::Duration;

use serde_json::{Value, json};
use store::{NewTask, TaskRecord, TaskStatus};
use tokio::sync::mpsc;

use super::{Call, Era};
use crate::call;
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::session::Scope;

use crate::jsonrpc::TASKS_EXTENSION as EXTENSION;
/// What a held call is sealed under in the store (also its associated data: nothing sealed
/// for another purpose opens as a held call).
const SEALED_CALL: &str = "ptc1.";
/// The stateful revision with task augmentation.
const AUGMENTED: &str = "2025-11-25";
/// Tasks listed per page.
const PAGE: i64 = 50;
/// How long a task is kept beyond the time its approval may take.
const KEPT_AFTER: Duration = Duration::from_secs(3600);
/// The longest a task is kept, whatever its client asks.
const KEPT_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which shape of tasks a request's client follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// 2025-11-25: `params.task` on `tools/call`.
    Augmented,
    /// 2026-07-28: the tasks extension.
    Extension,
}

/// A `tools/call` that asked for a task.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked {
    pub(crate) flavor: Flavor,
    /// The lifetime the client asked for, in milliseconds.
    ttl_ms: Option<i64>,
}

/// The shape of tasks this request's client follows, if any: a 2025-11-25 session, or a
/// 2026-07-28 request that declares the extension.
pub(crate) fn flavor(call: &Call, params: Option<&Value>) -> Option<Flavor> {
    match &call.era {
        Era::Stateful(s) if s.protocol_version == AUGMENTED => Some(Flavor::Augmented),
        Era::Stateful(_) => None,
        Era::Stateless => params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
            .and_then(|c| c.get("extensions"))
            .and_then(|e| e.get(EXTENSION))
            .is_some_and(Value::is_object)
            .then_some(Flavor::Extension),
    }
}

/// Whether a `tools/call` takes a task if it is held: 2025-11-25 asks with `params.task`; in
/// the extension, the server decides for any request that declares it.
pub(crate) fn asked(call: &Call, params: Option<&Value>) -> Option<Asked> {
    match flavor(call, params)? {
        Flavor::Augmented => {
            let task = params?.get("task").filter(|t| t.is_object())?;
            Some(Asked {
                flavor: Flavor::Augmented,
                ttl_ms: task.get("ttl").and_then(Value::as_i64),
            })
        }
        Flavor::Extension => Some(Asked {
            flavor: Flavor::Extension,
            ttl_ms: None,
        }),
    }
}

fn endpoint(scope: &Scope) -> String {
    match scope {
        Scope::Federated => "/mcp".into(),
        Scope::Server(s) => format!("/mcp/{s}"),
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "task state unavailable; refused");
    Refusal::TaskUnavailable {
        error: e.to_string(),
        ran: false,
    }
}

/// Record a task for a call held on approval request `approval`; the answer to the
/// `tools/call` that created it.
pub(crate) async fn create(
    gw: &Gateway,
    call: &Call,
    asked: Asked,
    held: (&str, &Value),
    approval: &str,
) -> Result<(String, Value), Refusal> {
    let (name, arguments) = held;
    let floor = gw.registry().access.approvals.ttl + KEPT_AFTER;
    let floor = i64::try_from(floor.as_millis()).unwrap_or(i64::MAX);
    let most = i64::try_from(KEPT_AT_MOST.as_millis()).unwrap_or(i64::MAX);
    let ttl_ms = asked.ttl_ms.unwrap_or(0).clamp(floor.min(most), most);
    let text = json!({ "name": name, "arguments": arguments }).to_string();
    // The arguments wait in the store, sealed with the session key ring: a copy of the store
    // alone does not show them.
    let text = gw
        .sessions
        .sealer()
        .seal_bytes(SEALED_CALL, text.as_bytes())
        .ok_or_else(|| unavailable(&"the held call could not be sealed"))?;
    let message = format!("waiting for a human to approve request {approval}");
    let rec = gw
        .store
        .create_task(&NewTask {
            subject: &call.caller.subject,
            endpoint: &endpoint(&call.scope),
            approval,
            call: &text,
            ttl_ms,
            message: &message,
        })
        .await
        .map_err(|e| unavailable(&e))?;
    tracing::info!(task = %rec.id, approval, subject = %call.caller.subject, "held call follows as a task");
    Ok((rec.id.clone(), wire::created(asked.flavor, &rec)))
}

/// Why a task's held call could not be had.
#[derive(Debug, PartialEq, Eq)]
enum Unheld {
    /// Sealed with a key this ring does not have: another replica's, mid-rotation, or one that
    /// was dropped. Another process may still open it.
    OtherKey,
    /// Altered, or not a call, or none kept.
    Unreadable,
}

/// The call a task holds (`{"name", "arguments"}`), opened with the session key ring. One
/// stored by a build that did not seal is read as it is.
fn held_call(gw: &Gateway, rec: &TaskRecord) -> Result<Value, Unheld> {
    let stored = rec.call.as_deref().ok_or(Unheld::Unreadable)?;
    if !stored.starts_with(SEALED_CALL) {
        return serde_json::from_str(stored).map_err(|_| Unheld::Unreadable);
    }
    let sealer = gw.sessions.sealer();
    if !sealer.has_key_of(SEALED_CALL, stored) {
        return Err(Unheld::OtherKey);
    }
    let plain = sealer
        .open_bytes(SEALED_CALL, stored)
        .ok_or(Unheld::Unreadable)?;
    serde_json::from_slice(&plain).map_err(|_| Unheld::Unreadable)
}

/// `tasks/*`.
pub(crate) async fn method(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    method: &str,
    params: Option<Value>,
    sink: mpsc::UnboundedSender<Value>,
) -> Result<Value, Refusal> {
    let exists = match call.era {
        Era::Stateless => matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel"),
        Era::Stateful(_) => matches!(
            method,
            "tasks/get" | "tasks/result" | "tasks/list" | "tasks/cancel"
        ),
    };
    let flavor = flavor(call, params.as_ref());
    let flavor = match (exists, flavor, &call.era) {
        (true, Some(f), _) => f,
        (true, None, Era::Stateless) => return Err(Refusal::TasksUndeclared),
        _ => return Err(Refusal::NoSuchMethod(method.to_string())),
    };
    if method == "tasks/list" {
        return list(gw, call, params.as_ref(), flavor).await;
    }
    let task_id = call::str_param(&params, "taskId")?;
    let rec = find(gw, call, task_id).await?;
    match method {
        "tasks/get" => Ok(wire::task(
            flavor,
            &advance(gw, call, id, rec, &sink).await?,
        )),
        "tasks/result" => outcome(gw, call, id, rec, &sink).await,
        "tasks/cancel" => cancel(gw, call, rec, flavor).await,
        // `tasks/update` answers input requests; a held call asks for none, so there is
        // nothing to take, and the extension says to ignore what it does not know.
        _ => Ok(json!({})),
    }
}

async fn find(gw: &Gateway, call: &Call, task_id: &str) -> Result<TaskRecord, Refusal> {
    gw.store
        .task(task_id, &call.caller.subject, &endpoint(&call.scope))
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(Refusal::UnknownTask)
}

/// `tasks/result` (2025-11-25): waits until the task ends, then answers what the call
/// answered. The answer's stream stays open meanwhile (comments), so no read timeout runs out,
/// and carries `notifications/tasks/status` when the task's status changes.
async fn outcome(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    mut rec: TaskRecord,
    sink: &mpsc::UnboundedSender<Value>,
) -> Result<Value, Refusal> {
    let _ = sink.send(crate::jsonrpc::OPEN_STREAM);
    let mut last = (wire::status(Flavor::Augmented, &rec), rec.message.clone());
    loop {
        rec = advance(gw, call, id, rec, sink).await?;
        // Each change on the way, as `notifications/tasks/status` on this answer's stream.
        let now = (wire::status(Flavor::Augmented, &rec), rec.message.clone());
        if now != last {
            let params = wire::task(Flavor::Augmented, &rec);
            let _ = sink.send(crate::jsonrpc::notification(
                "notifications/tasks/status",
                params,
            ));
            last = now;
        }
        if rec.status.is_terminal() {
            break;
        }
        tokio::select! {
            () = gw.approval_decided.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = sink.closed() => return Err(Refusal::Cancelled { name: "tasks/result".into(), approval: None }),
        }
        rec = reread(gw, call, &rec).await?;
    }
    match wire::ended(&rec) {
        Some(wire::Ended::Result(r)) => Ok(wire::result(Flavor::Augmented, &rec, r)),
        Some(wire::Ended::Error(e)) => Err(Refusal::TaskFailed(crate::jsonrpc::RpcError {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the task failed")
                .to_string(),
            data: e.get("data").cloned(),
        })),
        None => Err(unavailable(&format!(
            "task {} ended without an outcome",
            rec.id
        ))),
    }
}

/// `tasks/cancel`: a task whose call has not started is cancelled; its approval request
/// stays for an approver (an identical call made later may use it).
async fn cancel(
    gw: &Gateway,
    call: &Call,
    rec: TaskRecord,
    flavor: Flavor,
) -> Result<Value, Refusal> {
    if !rec.status.is_terminal() {
        let name = held_call(gw, &rec)
            .ok()
            .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let name_for_record = name.clone();
        let refusal = Refusal::Cancelled {
            name,
            approval: Some(rec.approval.clone()),
        };
        let refusal_reason = refusal.face().reason;
        let error = match refusal.answer() {
            Err(e) => e.to_value(),
            Ok(v) => v,
        };
        let text = json!({ "error": error }).to_string();
        let done = gw
            .store
            .cancel_task(&rec.id, "cancelled by its client", &text)
            .await
            .map_err(|e| unavailable(&e))?;
        if done {
            let mut event = call.event("task.end");
            event.outcome = Some(TaskStatus::Cancelled.as_str());
            event.reason = refusal_reason.map(str::to_string);
            event.tool = Some(name_for_record.clone());
            event.detail = Some(json!({ "task_id": rec.id, "approval_id": rec.approval }));
            gw.audit.note(event);
        }
    }
    let now = reread(gw, call, &rec).await?;
    match flavor {
        // 2026-07-28: an acknowledgement; the client reads the task's end with `tasks/get`.
        Flavor::Extension => Ok(json!({})),
        Flavor::Augmented if now.status == TaskStatus::Cancelled => Ok(wire::task(flavor, &now)),
        Flavor::Augmented => Err(Refusal::Malformed(format!(
            "Cannot cancel task: it is {}",
            match now.status {
                TaskStatus::Working | TaskStatus::Running => "already running its call",
                _ => "already in a terminal status",
            }
        ))),
    }
}

/// `tasks/list` (2025-11-25): this caller's tasks on this endpoint, newest first.
async fn list(
    gw: &Gateway,
    call: &Call,
    params: Option<&Value>,
    flavor: Flavor,
) -> Result<Value, Refusal> {
    let cursor = params.and_then(|p| p.get("cursor"));
    let after = match cursor {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            c.as_str()
                .and_then(|c| c.split_once(':'))
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| Refusal::Malformed("invalid cursor".into()))?,
        ),
    };
    let rows = gw
        .store
        .tasks(
            &call.caller.subject,
            &endpoint(&call.scope),
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            PAGE + 1,
        )
        .await
        .map_err(|e| unavailable(&e))?;
    let more = rows.len() > usize::try_from(PAGE).unwrap_or(usize::MAX);
    let page: Vec<&TaskRecord> = rows
        .iter()
        .take(usize::try_from(PAGE).unwrap_or(usize::MAX))
        .collect();
    let mut out =
        json!({ "tasks": page.iter().map(|r| wire::task(flavor, r)).collect::<Vec<_>>() });
    if more && let (Some(last), Some(o)) = (page.last(), out.as_object_mut()) {
        o.insert(
            "nextCursor".into(),
            json!(format!("{}:{}", last.created_ms, last.id)),
        );
    }
    Ok(out)
}
