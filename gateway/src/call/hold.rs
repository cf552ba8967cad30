//! Step 6, hold: a call that policy says needs approval waits for a human (`approvals.rs`);
//! `Ok` carries the id of the approval it runs on.

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Call, Running, ToolCall, Trail};
use crate::approvals::HeldCall;
use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::refusal::Refusal;

fn held<'a>(caller: &'a Caller, req: &'a ToolCall) -> HeldCall<'a> {
    HeldCall {
        caller,
        server: req.server(),
        tool: req.tool(),
        name: &req.name,
        class: req.offered.class,
        fingerprint: &req.offered.fingerprint,
        arguments: req.arguments(),
        digest: &req.digest,
    }
}

/// A call whose client follows a task: its request filed (or found), the task recorded, and
/// the task the answer.
pub(super) async fn task(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    asked: crate::tasks::Asked,
    t: &mut Trail,
) -> Result<Value, Refusal> {
    let approval = crate::approvals::file(gw, &held(&call.caller, req)).await?;
    let (task, created) =
        crate::tasks::create(gw, call, asked, (&req.name, req.arguments()), &approval).await?;
    t.outcome = Some("held");
    t.approval = Some(approval);
    t.task = Some(task);
    Ok(created)
}

/// A task's call, once approved: runs on approval `id` if it was granted to exactly this call.
pub(super) async fn granted(
    gw: &Gateway,
    caller: &Caller,
    req: &ToolCall,
    id: &str,
) -> Result<String, Refusal> {
    crate::approvals::granted(gw, &held(caller, req), id).await
}

pub(super) async fn approval(
    gw: &Gateway,
    caller: &Caller,
    req: &ToolCall,
    running: &Running<'_>,
    sink: &mpsc::UnboundedSender<Value>,
) -> Result<String, Refusal> {
    let held = held(caller, req);
    let progress = req.progress.clone().map(|t| (t, sink.clone()));
    // The sink closes when the client is gone: a held call then stops waiting.
    crate::approvals::hold(gw, &held, progress, running.cancel(), sink).await
}
