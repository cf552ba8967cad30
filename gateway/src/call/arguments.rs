//! Step 4, arguments: 2026-07-28 `Mcp-Param-*` headers agree with the body, and the arguments
//! pass the tool's size limits, the upstream's `inputSchema` and the operator's schema.

use super::{Call, Hold, ToolCall};
use crate::refusal::Refusal;

/// A task's run checks no headers: they were checked on the request that created the task, and
/// the request that looks at it names the task, not the tool.
pub(super) fn check(call: &Call, req: &ToolCall, hold: &Hold<'_>) -> Result<(), Refusal> {
    let (server, tool) = (req.server(), req.tool());
    if call.modern()
        && !matches!(hold, Hold::Run { .. })
        && let Err(why) = req
            .offered
            .param_headers
            .check(req.arguments(), &call.param_headers)
    {
        tracing::info!(subject = %call.caller.subject, server, tool, reason = %why, "tool call refused: Mcp-Param header mismatch");
        return Err(Refusal::HeaderMismatch(why));
    }
    req.offered.check.check(req.arguments()).map_err(|why| {
        // The message may quote argument values: logs and the audit log get its place only.
        tracing::info!(subject = %call.caller.subject, server, tool, at = %why.at, "tool call arguments rejected");
        Refusal::InvalidArguments {
            message: why.message,
            at: why.at,
        }
    })
}
