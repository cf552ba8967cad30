//! Step 7, record: audit before action. The request event is on a required sink before the
//! upstream is asked, or the request does not run.

use serde_json::json;

use super::ask::Ask;
use super::{Call, ToolCall, Trail};
use crate::gateway::Gateway;
use crate::refusal::Refusal;

/// A tool call's decision event.
pub(super) async fn tool(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    trail: &mut Trail,
) -> Result<(), Refusal> {
    trail.outcome = Some("allowed");
    required(gw, call, &req.name, trail.event(call, "tool.call")).await
}

/// A resource, prompt or completion request.
pub(super) async fn ask(gw: &Gateway, call: &Call, ask: &Ask) -> Result<(), Refusal> {
    let mut e = call.event("mcp.request");
    e.method = Some(ask.method.clone());
    e.server = Some(ask.up.name().to_string());
    e.outcome = Some("allowed");
    e.detail = Some(json!({ "target": crate::redact::uri_for_record(ask.target()) }));
    required(gw, call, &ask.method, e).await
}

/// `logging/setLevel`, with the servers it is relayed to.
pub(super) async fn set_level(
    gw: &Gateway,
    call: &Call,
    level: &str,
    servers: &[String],
) -> Result<(), Refusal> {
    let method = "logging/setLevel";
    let mut e = call.event("mcp.request");
    e.method = Some(method.to_string());
    e.outcome = Some("allowed");
    e.detail = Some(json!({ "level": level, "servers": servers }));
    required(gw, call, method, e).await
}

async fn required(
    gw: &Gateway,
    call: &Call,
    what: &str,
    event: audit::Event,
) -> Result<(), Refusal> {
    let (server, tool) = (event.server.clone(), event.tool.clone());
    gw.audit.record(event).await.map_err(|e| {
        tracing::error!(subject = %call.caller.subject, ?server, ?tool, %what, error = %e, "audit log cannot record the request; refused");
        Refusal::AuditUnavailable {
            what: what.to_string(),
            error: e.to_string(),
        }
    })
}
