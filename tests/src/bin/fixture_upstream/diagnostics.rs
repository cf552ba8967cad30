//! The diagnostic tools the conformance suite's `server-stateless` scenario calls (2026-07-28):
//! one that needs a capability the client may not have declared, one that needs the client's
//! input (asked as an `InputRequiredResult`, never as a request on the response stream), one
//! that logs, and the hooks that change the tool and prompt lists while the suite listens.

use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::json;

/// The diagnostic tools, with their descriptions.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "test_missing_capability",
        "Needs the client's sampling capability; refuses with -32021 if it was not declared",
    ),
    (
        "test_streaming_elicitation",
        "Needs the client's answer (elicitation), asked for in its result",
    ),
    (
        "test_logging_tool",
        "Logs a message (sent only where the client asked for a log level)",
    ),
    (
        "test_trigger_tool_change",
        "Adds or removes `late_tool` and announces the tool list changed",
    ),
    (
        "test_trigger_prompt_change",
        "Adds or removes `late_prompt` and announces the prompt list changed",
    ),
];

/// `-32021`, MissingRequiredClientCapabilityError.
const MISSING_CAPABILITY: i32 = -32021;

fn done(text: &str) -> Result<CallToolResponse, McpError> {
    Ok(
        super::from::<CallToolResult>(json!({ "content": [{ "type": "text", "text": text }] }))?
            .into(),
    )
}

/// A diagnostic tool's answer, if `req` names one.
pub async fn call(
    req: &CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
    extra_tool: &AtomicBool,
    extra_prompt: &AtomicBool,
) -> Option<Result<CallToolResponse, McpError>> {
    let name = req.name.as_ref();
    TOOLS.iter().find(|(t, _)| *t == name)?;
    let caps = ctx.client_capabilities().unwrap_or_default();
    Some(match name {
        "test_missing_capability" if caps.sampling.is_none() => Err(McpError::new(
            ErrorCode(MISSING_CAPABILITY),
            "this tool needs the client's sampling capability, which the request did not declare",
            Some(json!({ "requiredCapabilities": { "sampling": {} } })),
        )),
        "test_missing_capability" => done("sampling is declared"),
        "test_streaming_elicitation" => {
            let answered = req
                .input_responses
                .as_ref()
                .and_then(|r| r.get("confirmation"));
            match (answered, caps.elicitation.is_some()) {
                (Some(_), _) => done("confirmed"),
                (None, false) => done("nothing to ask: the client cannot be asked"),
                (None, true) => super::from::<rmcp::model::InputRequiredResult>(json!({
                    "resultType": "input_required",
                    "inputRequests": { "confirmation": { "method": "elicitation/create", "params": {
                        "message": "Continue?", "requestedSchema": { "type": "object",
                        "properties": { "ok": { "type": "boolean" } }, "required": ["ok"] } } } },
                }))
                .map(Into::into),
            }
        }
        "test_logging_tool" => {
            let log =
                serde_json::from_value(json!({ "level": "info", "data": "test_logging_tool ran" }));
            if let Ok(param) = log {
                let _ = ctx.peer.notify_logging_message(param).await;
            }
            done("logged")
        }
        "test_trigger_tool_change" => {
            extra_tool.fetch_xor(true, Ordering::SeqCst);
            let _ = ctx.peer.notify_tool_list_changed().await;
            done("the tool list changed")
        }
        _ => {
            extra_prompt.fetch_xor(true, Ordering::SeqCst);
            let _ = ctx.peer.notify_prompt_list_changed().await;
            done("the prompt list changed")
        }
    })
}

/// The diagnostic tools as listed.
pub fn tools() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|(name, description)| super::tool(name, description, super::no_args()))
        .collect()
}
