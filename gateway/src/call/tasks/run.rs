//! A look at a task: what its approval request says now decides what happens to it. Pending:
//! it waits (unless the call may no longer run at all). Approved: this look claims it and runs
//! the call, once. Denied, voided, expired, or used by an identical call: it ends failed.
//!
//! A run that could not start for a passing reason (a limit, the upstream reconnecting, the
//! store or the switches unreadable) gives the task back while its approval is unused, so a
//! later look runs it; anything else is how the task ends. A running call's task beats every
//! 20 s; one whose heartbeat stopped for 90 s (its process went away) ends failed at the next
//! look, its outcome unknown: it is never run again.

use std::time::Duration;

use serde_json::{Value, json};
use store::{ApprovalStatus, TaskRecord, TaskStatus};
use tokio::sync::mpsc;

use super::{find, unavailable};
use crate::call::{self, Call, Hold};
use crate::gateway::Gateway;
use crate::levers::Killed;
use crate::refusal::Refusal;

/// How often a running call's task says it still runs.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long a running task may go without a heartbeat before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(90);

/// The call a task holds: its name, and its `tools/call` params.
fn held(gw: &Gateway, rec: &TaskRecord) -> Result<(String, Value), super::Unheld> {
    let held = super::held_call(gw, rec)?;
    let name = held.get("name").and_then(Value::as_str);
    let name = name.ok_or(super::Unheld::Unreadable)?.to_string();
    Ok((name, held))
}

pub(super) async fn reread(
    gw: &Gateway,
    call: &Call,
    rec: &TaskRecord,
) -> Result<TaskRecord, Refusal> {
    find(gw, call, &rec.id).await
}

/// Bring a task up to date (see the module's comment); the task as it now is.
pub(super) async fn advance(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    rec: TaskRecord,
    sink: &mpsc::UnboundedSender<Value>,
) -> Result<TaskRecord, Refusal> {
    match rec.status {
        TaskStatus::Working => {}
        TaskStatus::Running if lost(&rec) => return end_lost(gw, call, rec).await,
        _ => return Ok(rec),
    }
    let (name, params) = match held(gw, &rec) {
        Ok(held) => held,
        // Another process may hold the key (a rotation under way): the task waits.
        Err(super::Unheld::OtherKey) => {
            return Err(unavailable(&format!(
                "task {}'s held call was sealed with a key this gateway does not have",
                rec.id
            )));
        }
        // It will never open: the task ends, its call never run, on the record.
        Err(super::Unheld::Unreadable) => {
            let error = format!("task {}'s held call does not open", rec.id);
            tracing::error!(task = %rec.id, "{error}; the task ends failed, its call never run");
            let refused = Refusal::TaskUnreadable { error };
            return end(gw, call, &rec, TaskStatus::Working, Err(refused)).await;
        }
    };
    let approval = gw
        .store
        .approval(&rec.approval)
        .await
        .map_err(|e| unavailable(&e))?;
    let approval_id = rec.approval.clone();
    let ended = match approval.as_ref().map(|a| (a.status(), a)) {
        Some((ApprovalStatus::Pending, _)) => match call::still_held(gw, call, Some(params)) {
            Err(refused) if !passing(&refused) => refused,
            _ => return Ok(rec),
        },
        Some((ApprovalStatus::Approved, _)) => return run(gw, call, id, rec, params, sink).await,
        Some((ApprovalStatus::Denied, a)) => Refusal::ApprovalDenied {
            name,
            approval: approval_id,
            by: a.decided_by.as_deref().unwrap_or("an approver").into(),
        },
        Some((ApprovalStatus::Voided, _)) => Refusal::Voided {
            name,
            approval: approval_id,
        },
        Some((ApprovalStatus::Used, _)) => Refusal::ApprovalLapsed {
            name,
            approval: approval_id,
            used: true,
        },
        Some((ApprovalStatus::Expired, _)) | None => Refusal::ApprovalLapsed {
            name,
            approval: approval_id,
            used: false,
        },
    };
    end(gw, call, &rec, TaskStatus::Working, Err(ended)).await
}

/// Claim the approved task and run its call as this look's caller.
async fn run(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    rec: TaskRecord,
    params: Value,
    sink: &mpsc::UnboundedSender<Value>,
) -> Result<TaskRecord, Refusal> {
    // A look may be a long-open request (a listen stream, a waiting `tasks/result`) whose
    // credential was checked when it began: it must still hold now.
    match still_admitted(gw, call, &rec).await {
        Ok(()) => {}
        // Lapsed: the task ends, its call never run.
        Err(refused @ Refusal::Denied { .. }) => {
            return end(gw, call, &rec, TaskStatus::Working, Err(refused)).await;
        }
        // Cannot tell now: the task waits for a later look.
        Err(refused) => return Err(refused),
    }
    let claimed = gw
        .store
        .claim_task(&rec.id, "approved; the call is running")
        .await
        .map_err(|e| unavailable(&e))?;
    if !claimed {
        return reread(gw, call, &rec).await; // another look claimed it
    }
    let hold = Hold::Run {
        task: &rec.id,
        approval: &rec.approval,
    };
    // The call runs with a heartbeat: a task whose heartbeat stops (its process went away)
    // is ended by a later look, its outcome unknown.
    let heartbeat = async {
        for _ in 0..u32::MAX {
            tokio::time::sleep(HEARTBEAT).await;
            match gw.store.touch_task(&rec.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(task = %rec.id, "a running task was ended elsewhere while its call runs")
                }
                Err(e) => {
                    tracing::warn!(task = %rec.id, error = %e, "a running task's heartbeat failed")
                }
            }
        }
        std::future::pending::<()>().await;
    };
    let running = call::tool_held(gw, call, id, Some(params), sink.clone(), hold);
    let done = tokio::select! {
        done = running => done,
        () = heartbeat => Err(unavailable(&"a task's heartbeat ended")),
    };
    // Given back only if nothing can have been sent: a run always uses its approval before
    // anything is recorded or forwarded, so a refusal that leaves it unused came before.
    if let Err(refused) = &done
        && passing(refused)
        && !matches!(refused, Refusal::Killed { .. })
        && unused(gw, &rec.approval).await
    {
        // Not started, and its approval still waits to be used: a later look runs it.
        let reason = refused.face().reason.unwrap_or("for now");
        let why = format!("approved; the call could not run yet ({reason}); a later look runs it");
        tracing::info!(task = %rec.id, reason = ?refused, "task's call could not start; given back");
        gw.store
            .release_task(&rec.id, &why)
            .await
            .map_err(|e| unavailable(&e))?;
        return reread(gw, call, &rec).await;
    }
    end(gw, call, &rec, TaskStatus::Running, done).await
}

/// The look's credential still holds: its key is not revoked, its token has not expired. A
/// store that cannot say refuses the look (the task waits).
async fn still_admitted(gw: &Gateway, call: &Call, rec: &TaskRecord) -> Result<(), Refusal> {
    let caller = &call.caller;
    let name = held(gw, rec).map(|(n, _)| n).unwrap_or_default();
    let lapsed = || Refusal::Denied {
        name: name.clone(),
        denial: policy::Denial {
            level: Some(policy::Level::Key),
            principal: Some(caller.subject.clone()),
            reason: policy::DenyReason::Expired,
        },
    };
    let now_s = u64::try_from(store::now_ms().div_euclid(1000)).unwrap_or(0);
    if caller
        .token
        .as_ref()
        .and_then(|t| t.expires_at)
        .is_some_and(|exp| now_s >= exp)
    {
        return Err(lapsed());
    }
    if let Some(rest) = caller.subject.strip_prefix("key:") {
        let key = rest.split('/').next().unwrap_or(rest);
        match gw.store.key(key).await {
            Ok(Some(k)) if k.revoked_at.is_none() => {}
            Ok(_) => return Err(lapsed()),
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Ok(())
}

/// Whether approval `id` is still approved and unused (a store error counts as used: the task
/// then ends, and is never run twice).
async fn unused(gw: &Gateway, id: &str) -> bool {
    matches!(
        gw.store.approval(id).await,
        Ok(Some(a)) if a.status() == ApprovalStatus::Approved
    )
}

/// A refusal that may not hold at a later look.
fn passing(r: &Refusal) -> bool {
    use Refusal as R;
    match r {
        R::RateLimited { .. }
        | R::ConcurrencyLimited { .. }
        | R::BudgetExceeded { .. }
        | R::LimitsUnavailable { .. }
        | R::UnknownTool(_)
        | R::ApprovalUnavailable { .. }
        | R::TaskUnavailable { ran: false, .. }
        | R::Untracked { .. }
        | R::CredentialUnavailable { .. }
        | R::AuditUnavailable { .. } => true,
        R::Killed { killed, .. } => *killed == Killed::StateUnknown,
        R::Denied { denial, .. } => matches!(denial.reason, policy::DenyReason::Internal(_)),
        _ => false,
    }
}

/// True when a `running` task's heartbeat stopped.
fn lost(rec: &TaskRecord) -> bool {
    let bound = i64::try_from(LOST_AFTER.as_millis()).unwrap_or(i64::MAX);
    store::now_ms().saturating_sub(rec.updated_ms) > bound
}

/// End a task whose run lost its heartbeat, as seen (not one claimed again since): failed, its
/// outcome unknown; it is never run again.
async fn end_lost(gw: &Gateway, call: &Call, rec: TaskRecord) -> Result<TaskRecord, Refusal> {
    let refused = Refusal::TaskUnavailable {
        error: format!("task {}: its call's process stopped while it ran", rec.id),
        ran: true,
    };
    let reason = refused.face().reason;
    let error = match refused.answer() {
        Err(e) => e,
        Ok(_) => return reread(gw, call, &rec).await,
    };
    let outcome = json!({ "error": error.to_value() }).to_string();
    let ended = gw
        .store
        .end_lost_task(&rec.id, rec.updated_ms, &error.message, &outcome)
        .await
        .map_err(|e| unavailable(&e))?;
    if ended {
        tracing::warn!(task = %rec.id, "a task's run lost its heartbeat; ended, outcome unknown");
        record(gw, call, &rec, TaskStatus::Failed, reason);
    }
    reread(gw, call, &rec).await
}

/// Keep how a task ended (if it is still `from`); the task as it now is. The store is asked
/// three times: a call that ran must not look as if it had not.
async fn end(
    gw: &Gateway,
    call: &Call,
    rec: &TaskRecord,
    from: TaskStatus,
    done: Result<Value, Refusal>,
) -> Result<TaskRecord, Refusal> {
    let ran = from == TaskStatus::Running;
    let (status, outcome, message, reason) = match done {
        Ok(result) => {
            let failed = result.get("isError").and_then(Value::as_bool) == Some(true);
            let message = match failed {
                true => "the call ran and its tool reported an error",
                false => "the call ran",
            };
            let outcome = json!({ "result": result });
            (TaskStatus::Completed, outcome, message.to_string(), None)
        }
        Err(refused) => {
            let reason = refused.face().reason;
            match refused.answer() {
                // Answered as a result without running (shadow mode, rejected arguments).
                Ok(result) => {
                    let outcome = json!({ "result": result });
                    let message = "the call was not executed; see its result".to_string();
                    (TaskStatus::Completed, outcome, message, reason)
                }
                Err(e) => {
                    let outcome = json!({ "error": e.to_value() });
                    (TaskStatus::Failed, outcome, e.message.clone(), reason)
                }
            }
        }
    };
    let text = outcome.to_string();
    let mut kept = Err(String::new());
    for wait in [0, 100, 500] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        kept = gw
            .store
            .finish_task(&rec.id, from, status, &message, Some(&text))
            .await
            .map_err(|e| e.to_string());
        if kept.is_ok() {
            break;
        }
    }
    match kept {
        Ok(true) => record(gw, call, rec, status, reason),
        Ok(false) if ran => {
            // Only a look that judged its heartbeat lost ends a running task: that judgement
            // was wrong, and this result is not kept.
            tracing::error!(task = %rec.id, ?status, "a task's call ended after its task was ended as lost; its outcome is not kept");
        }
        Ok(false) => {} // another look ended it first
        Err(error) if ran => {
            tracing::error!(task = %rec.id, %error, "a task's call ran and its outcome could not be kept");
            return Err(Refusal::TaskUnavailable { error, ran: true });
        }
        Err(error) => return Err(unavailable(&error)),
    }
    reread(gw, call, rec).await
}

/// The task's end, on the record.
fn record(
    gw: &Gateway,
    call: &Call,
    rec: &TaskRecord,
    status: TaskStatus,
    reason: Option<&'static str>,
) {
    let mut event = call.event("task.end");
    event.outcome = Some(status.as_str());
    event.reason = reason.map(str::to_string);
    event.tool = held(gw, rec).ok().map(|(name, _)| name);
    event.detail = Some(json!({ "task_id": rec.id, "approval_id": rec.approval }));
    gw.audit.note(event);
}
