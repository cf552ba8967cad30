//! Holding a write or destructive call for a human: the request path's side of approvals.
//!
//! A call that policy says needs approval first looks for an approval granted to exactly this
//! call (same requester, server, tool, argument digest and tool fingerprint) and uses it, once.
//! Otherwise it files a request (or finds the one it filed before), then waits up to
//! `approvals.hold` for a decision, sending progress when the caller asked for it. An approval
//! that arrives in time lets this very call proceed; otherwise the answer is `approval_pending`
//! with the request's id, and the identical call made later proceeds once the request is
//! approved.

use std::time::{Duration, Instant};

use policy::{ArgumentsDigest, ToolClass};
use serde_json::{Value, json};
use store::{ApprovalKey, ApprovalRecord, ApprovalStatus, NewApproval};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::jsonrpc;
use crate::refusal::Refusal;

/// How often a held call looks at its request (besides being woken by local decisions).
const POLL: Duration = Duration::from_millis(200);
/// How often a held call tells a caller that asked for progress that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn unavailable(e: &dyn std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "approval state unavailable; call refused");
    Refusal::ApprovalUnavailable {
        error: e.to_string(),
    }
}

/// What the held call is.
pub(crate) struct HeldCall<'a> {
    pub(crate) caller: &'a Caller,
    pub(crate) server: &'a str,
    pub(crate) tool: &'a str,
    /// The name the caller used (`server__tool` or `tool`).
    pub(crate) name: &'a str,
    pub(crate) class: ToolClass,
    pub(crate) fingerprint: &'a str,
    pub(crate) arguments: &'a Value,
    pub(crate) digest: &'a ArgumentsDigest,
}

impl<'a> HeldCall<'a> {
    /// What an approval for exactly this call matches on; `digest` is the arguments' in hex.
    fn key(&'a self, digest: &'a str) -> ApprovalKey<'a> {
        ApprovalKey {
            requester: &self.caller.subject,
            server: self.server,
            tool: self.tool,
            arguments: digest,
            fingerprint: self.fingerprint,
        }
    }
}

/// `Ok(id)` of the approval this call used; otherwise the refusal to answer with.
pub(crate) async fn hold(
    gw: &Gateway,
    call: &HeldCall<'_>,
    progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    cancel: &CancellationToken,
    client: &mpsc::UnboundedSender<Value>,
) -> Result<String, Refusal> {
    let digest = registry::hex_lower(&call.digest.0);
    let key = call.key(&digest);
    if let Some(id) = gw
        .store
        .use_approval(&key)
        .await
        .map_err(|e| unavailable(&e))?
    {
        tracing::info!(approval = %id, subject = %call.caller.subject, server = call.server, tool = call.tool, "approved call proceeds");
        return Ok(id);
    }
    let id = request(gw, call, &key).await?;
    wait(gw, call, id, progress, cancel, client).await
}

/// The id of the pending request for exactly this call: the one filed before, or a new one.
async fn request(
    gw: &Gateway,
    call: &HeldCall<'_>,
    key: &ApprovalKey<'_>,
) -> Result<String, Refusal> {
    let pending = gw
        .store
        .pending_approval(key)
        .await
        .map_err(|e| unavailable(&e))?;
    match pending {
        Some(r) => Ok(r.id),
        None => Ok(file_request(gw, call, key).await?.id),
    }
}

/// For a call that follows as a task: the id of the request it waits on, filed now or found.
pub(crate) async fn file(gw: &Gateway, call: &HeldCall<'_>) -> Result<String, Refusal> {
    let digest = registry::hex_lower(&call.digest.0);
    request(gw, call, &call.key(&digest)).await
}

/// For a task's call: use approval `id`, granted to exactly this call, once.
pub(crate) async fn granted(
    gw: &Gateway,
    call: &HeldCall<'_>,
    id: &str,
) -> Result<String, Refusal> {
    let rec = gw.store.approval(id).await.map_err(|e| unavailable(&e))?;
    let lapsed = |used| Refusal::ApprovalLapsed {
        name: call.name.to_string(),
        approval: id.to_string(),
        used,
    };
    let Some(rec) = rec else {
        return Err(lapsed(false));
    };
    let exact = rec.requester == call.caller.subject
        && rec.server == call.server
        && rec.tool == call.tool
        && rec.arguments_digest == registry::hex_lower(&call.digest.0)
        && rec.tool_fingerprint == call.fingerprint;
    if !exact {
        // The tool's definition changed since the call was held: the approval was for another.
        return Err(Refusal::Changed {
            name: call.name.to_string(),
        });
    }
    if gw
        .store
        .use_approval_id(id)
        .await
        .map_err(|e| unavailable(&e))?
    {
        tracing::info!(approval = %id, subject = %call.caller.subject, server = call.server, tool = call.tool, "task's approved call proceeds");
        return Ok(id.to_string());
    }
    Err(lapsed(rec.status() == ApprovalStatus::Used))
}

/// Wait up to `approvals.hold` for the request `id` to be decided: progress every second to a
/// caller that asked for it, woken by local decisions and polling the store otherwise.
async fn wait(
    gw: &Gateway,
    call: &HeldCall<'_>,
    id: String,
    progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    cancel: &CancellationToken,
    client: &mpsc::UnboundedSender<Value>,
) -> Result<String, Refusal> {
    let hold = gw.registry().access.approvals.hold;
    let started = Instant::now();
    let deadline = started + hold;
    let mut last_progress: Option<Instant> = None;
    if progress.is_none() && !hold.is_zero() {
        // No progress token: still open the answer's stream now (a client taking SSE gets
        // its headers at once and comments while it waits), so no client's read timeout
        // runs out before the decision or `approval_pending` arrives.
        let _ = client.send(crate::jsonrpc::OPEN_STREAM);
    }
    loop {
        if let Some((token, sink)) = &progress
            && last_progress.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
            && !hold.is_zero()
        {
            last_progress = Some(Instant::now());
            let _ = sink.send(jsonrpc::notification(
                "notifications/progress",
                json!({
                    "progressToken": token,
                    "progress": started.elapsed().as_secs(),
                    "total": hold.as_secs(),
                    "message": format!("waiting for a human to approve request {id}"),
                }),
            ));
        }
        if let Some(decided) = decided(gw, call, &id).await? {
            return decided;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(pending(call, &id));
        }
        tokio::select! {
            () = gw.approval_decided.notified() => {}
            () = tokio::time::sleep(left.min(POLL)) => {}
            // The client cancelled or went away: an approval arriving now must not run a
            // call nobody is waiting for. The request stays pending for a later retry.
            () = cancel.cancelled() => return Err(abandoned(call, &id)),
            () = client.closed() => return Err(abandoned(call, &id)),
        }
    }
}

/// What request `id` says now: `None` while it is pending, else how the held call ends.
async fn decided(
    gw: &Gateway,
    call: &HeldCall<'_>,
    id: &str,
) -> Result<Option<Result<String, Refusal>>, Refusal> {
    let now = gw.store.approval(id).await.map_err(|e| unavailable(&e))?;
    let Some(now) = now else {
        return Err(unavailable(&"the approval request disappeared"));
    };
    let approval = id.to_string();
    Ok(Some(match now.status() {
        ApprovalStatus::Pending => return Ok(None),
        ApprovalStatus::Approved => {
            let used = gw.store.use_approval_id(id).await;
            if used.map_err(|e| unavailable(&e))? {
                tracing::info!(approval = %id, subject = %call.caller.subject, "held call approved and proceeds");
                Ok(approval)
            } else {
                // Another identical call used it first: this one waits for a new approval.
                Err(pending(call, id))
            }
        }
        ApprovalStatus::Denied => Err(Refusal::ApprovalDenied {
            name: call.name.to_string(),
            approval,
            by: now.decided_by.as_deref().unwrap_or("an approver").into(),
        }),
        ApprovalStatus::Voided => Err(Refusal::Voided {
            name: call.name.to_string(),
            approval,
        }),
        ApprovalStatus::Used | ApprovalStatus::Expired => Err(pending(call, id)),
    }))
}

async fn file_request(
    gw: &Gateway,
    call: &HeldCall<'_>,
    key: &ApprovalKey<'_>,
) -> Result<ApprovalRecord, Refusal> {
    let settings = &gw.registry().access.approvals;
    let target = settings.target_arguments.iter().find_map(|name| {
        call.arguments.get(name).map(|v| match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
                let shown = match crate::redact::redact(v) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let mut shown = crate::redact::visible(&shown);
                crate::redact::shorten(&mut shown, 200);
                shown
            }
            other => {
                let mut shown = crate::redact::visible(&crate::redact::redact(other).to_string());
                crate::redact::shorten(&mut shown, 200);
                shown
            }
        })
    });
    // An approver sees the whole call or nothing is held: a call too large to show is refused.
    let preview =
        crate::redact::preview(call.arguments).ok_or_else(|| Refusal::TooLargeToReview {
            name: call.name.to_string(),
            limit_kib: crate::redact::MAX_PREVIEW / 1024,
        })?;
    // The keys above the caller's key are kept with the request, so a kill switch on any of
    // them voids it as it would the key's own.
    let mut principals = call.caller.identity.principals().to_vec();
    principals.extend(
        call.caller
            .identity
            .key_lineage()
            .iter()
            .map(|k| format!("key:{k}")),
    );
    let ttl_ms = i64::try_from(settings.ttl.as_millis()).unwrap_or(i64::MAX);
    let record = gw
        .store
        .create_approval(&NewApproval {
            key: key.clone(),
            principals: &principals,
            class: call.class.as_str(),
            preview: &preview,
            target: target.as_deref(),
            ttl_ms,
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let detail = json!({
        "approval_id": record.id,
        "server": call.server,
        "tool": call.tool,
        "class": call.class.as_str(),
        "arguments_digest": key.arguments,
        "principals": principals,
    });
    if let Err(e) = gw
        .store
        .record_event("approval.requested", &call.caller.subject, &detail)
        .await
    {
        return Err(unavailable(&e));
    }
    let mut event = audit::Event::new("approval.request");
    event.identity = Some(crate::auth::who(call.caller));
    event.server = Some(call.server.to_string());
    event.tool = Some(call.tool.to_string());
    event.arguments_digest = Some(key.arguments.to_string());
    event.detail = Some(json!({ "approval_id": record.id, "class": call.class.as_str() }));
    gw.audit.note(event);
    tracing::info!(approval = %record.id, subject = %call.caller.subject, server = call.server, tool = call.tool, "call held for approval");
    Ok(record)
}

fn abandoned(call: &HeldCall<'_>, id: &str) -> Refusal {
    tracing::info!(approval = %id, subject = %call.caller.subject, "held call abandoned by its client");
    Refusal::Cancelled {
        name: call.name.to_string(),
        approval: Some(id.to_string()),
    }
}

fn pending(call: &HeldCall<'_>, id: &str) -> Refusal {
    Refusal::ApprovalPending {
        name: call.name.to_string(),
        class: call.class,
        approval: id.to_string(),
    }
}
