//! Step 3, the operator's levers: the kill switch, then the mode.

use policy::ToolClass;
use registry::Mode;

use super::{Approval, Call, ToolCall};
use crate::gateway::Gateway;
use crate::refusal::Refusal;

/// Refused if a kill switch over the gateway, the caller, the server or the tool is engaged,
/// or the switches' state is unknown. `tool` is empty for what is not a tool call.
pub(super) fn kill(
    gw: &Gateway,
    call: &Call,
    server: &str,
    tool: &str,
    what: &str,
) -> Result<(), Refusal> {
    match gw.levers.killed(&call.caller.identity, server, tool) {
        None => Ok(()),
        Some(killed) => {
            let kind = if tool.is_empty() {
                "request"
            } else {
                "tool call"
            };
            tracing::warn!(subject = %call.caller.subject, server, tool, what, reason = %killed, "{kind} refused: killed");
            Err(Refusal::Killed {
                what: what.to_string(),
                killed,
            })
        }
    }
}

/// Read-only mode refuses a write or destructive tool; shadow mode answers without executing.
pub(super) fn mode(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    approval: Approval,
) -> Result<(), Refusal> {
    let subject = &call.caller.subject;
    let class = req.offered.class;
    match gw.levers.mode_now() {
        Mode::Enforce => Ok(()),
        Mode::ReadOnly if class >= ToolClass::Write => {
            tracing::info!(%subject, server = req.server(), tool = req.tool(), %class, "tool call refused: read-only mode");
            Err(Refusal::ReadOnly {
                name: req.name.clone(),
                class,
            })
        }
        Mode::ReadOnly => Ok(()),
        Mode::Shadow => {
            tracing::info!(%subject, server = req.server(), tool = req.tool(), arguments_digest = %registry::hex_lower(&req.digest.0), ?approval, "shadow mode: call recorded, not executed");
            Err(Refusal::Shadow {
                name: req.name.clone(),
                needs_approval: approval == Approval::Needed,
            })
        }
    }
}
