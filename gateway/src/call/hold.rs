//! Step 6, hold: a call that policy says needs approval waits for a human (`approvals.rs`);
//! `Ok` carries the id of the approval it runs on.

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Running, ToolCall};
use crate::approvals::HeldCall;
use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::refusal::Refusal;

pub(super) async fn approval(
    gw: &Gateway,
    caller: &Caller,
    req: &ToolCall,
    running: &Running<'_>,
    sink: &mpsc::UnboundedSender<Value>,
) -> Result<String, Refusal> {
    let held = HeldCall {
        caller,
        server: req.server(),
        tool: req.tool(),
        name: &req.name,
        class: req.offered.class,
        fingerprint: &req.offered.fingerprint,
        arguments: req.arguments(),
        digest: &req.digest,
    };
    let progress = req.progress.clone().map(|t| (t, sink.clone()));
    // The sink closes when the client is gone: a held call then stops waiting.
    crate::approvals::hold(gw, &held, progress, running.cancel(), sink).await
}
