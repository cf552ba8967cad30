//! Step 6, hold: a call that policy says needs approval waits for a human (`approvals.rs`);
//! `Ok` carries the id of the approval it runs on.

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Call, Hold, Running, ToolCall, Trail};
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
    asked: super::tasks::Asked,
    t: &mut Trail,
) -> Result<Value, Refusal> {
    let approval = crate::approvals::file(gw, &held(&call.caller, req)).await?;
    let (task, created) =
        super::tasks::create(gw, call, asked, (&req.name, req.arguments()), &approval).await?;
    t.outcome = Some("held");
    t.approval = Some(approval);
    t.task = Some(task);
    Ok(created)
}

/// Wait for a human here; or, for a task's call, run on the approval granted to exactly this
/// call (used once).
pub(super) async fn approval(
    gw: &Gateway,
    caller: &Caller,
    req: &ToolCall,
    running: &Running<'_>,
    sink: &mpsc::UnboundedSender<Value>,
    hold: &Hold<'_>,
) -> Result<String, Refusal> {
    let held = held(caller, req);
    if let Hold::Run { approval, .. } = hold {
        return crate::approvals::granted(gw, &held, approval).await;
    }
    let progress = req.progress.clone().map(|t| (t, sink.clone()));
    // The sink closes when the client is gone: a held call then stops waiting.
    crate::approvals::hold(gw, &held, progress, running.cancel(), sink).await
}
