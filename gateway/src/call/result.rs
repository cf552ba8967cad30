//! The last step: the call's final audit event and its metric, whatever the outcome.

use serde_json::{Value, json};

use super::{Call, Trail};
use crate::gateway::Gateway;
use crate::jsonrpc::{INVALID_PARAMS, RESOURCE_NOT_FOUND};
use crate::refusal::Refusal;
use crate::session::Scope;
use crate::upstream::UpstreamError;

/// Record how a tool call ended: its result (if the upstream was called) or its refusal; then
/// settle the budget units it spent (before the answer, so the caller's next call sees them).
pub(super) async fn tool(
    gw: &Gateway,
    call: &Call,
    trail: Trail,
    done: Result<Value, Refusal>,
) -> Result<Value, Refusal> {
    let executed = trail.started.is_some();
    let mut event = trail.event(call, if executed { "tool.result" } else { "tool.call" });
    match (&done, trail.started) {
        (Ok(v), Some(started)) => {
            event.latency_ms = Some(started.elapsed().as_micros() as f64 / 1000.0);
            let failed = v.get("isError").and_then(Value::as_bool) == Some(true);
            let asks = v.get("resultType").and_then(Value::as_str) == Some("input_required");
            event.status = Some(match (asks, failed) {
                // A round of a multi-round call: the upstream needs the client's input first.
                (true, _) => "input_required",
                (false, true) => "tool_error",
                (false, false) => "ok",
            });
            event.response_bytes = Some(json_size(v));
        }
        (Err(refused), Some(started)) => {
            event.latency_ms = Some(started.elapsed().as_micros() as f64 / 1000.0);
            event.status = Some("error");
            let face = refused.face();
            event.reason = Some(face.reason.unwrap_or(face.outcome).to_string());
        }
        (Err(refused), None) => {
            event.outcome = Some(refused.face().outcome);
            event.reason = refused.audit_reason();
            event.level = refused.level().map(str::to_string);
            if let Some(a) = refused.approval() {
                event.detail = Some(json!({ "approval_id": a }));
            }
            if let Some(hit) = refused.limit() {
                let entry = format!("limits[{}]", hit.entry);
                event.detail = Some(json!({ "limit": entry, "principal": hit.principal }));
            }
        }
        (Ok(_), None) => {}
    }
    if let (Some(server), Some(tool)) = (&trail.server, &trail.tool) {
        let outcome = event.status.or(event.outcome).unwrap_or("error");
        crate::metrics::get().tool_call(server, tool, outcome);
    }
    gw.audit.note(event);
    if !trail.spent.is_empty() {
        // Never sent: not called, its server not connected or not reachable, its circuit
        // open, or the caller's deadline gone first. Failed: sent, and the upstream could not
        // answer (it may have run the call; `refund_failed` says so).
        let reached = trail.started.is_some()
            && !matches!(
                &done,
                Err(Refusal::Upstream(
                    UpstreamError::Down(_)
                        | UpstreamError::Unreached(_)
                        | UpstreamError::Expired(_)
                        | UpstreamError::Open(..)
                ))
            );
        let failed = matches!(
            &done,
            Err(Refusal::Upstream(
                UpstreamError::Transport(_)
                    | UpstreamError::Status(..)
                    | UpstreamError::Timeout(..)
                    | UpstreamError::Unreadable(_)
                    | UpstreamError::Exceeded(..)
            ))
        );
        crate::limits::budgets::settle(
            (&gw.store, &gw.limits.leases),
            &trail.spent,
            reached,
            failed,
        )
        .await;
    }
    done
}

/// What a resource, prompt or completion request answers: the upstream's result, with URIs
/// renamed on the federated endpoint; an upstream's own "not found" for a resource answers
/// as the gateway's.
pub(super) fn ask(
    call: &Call,
    ask: &super::ask::Ask,
    answered: Result<Value, UpstreamError>,
) -> Result<Value, Refusal> {
    let mut res = match answered {
        Ok(r) => r,
        Err(UpstreamError::Rpc { error, .. })
            if ask.method == "resources/read"
                && matches!(
                    error.get("code").and_then(Value::as_i64),
                    Some(RESOURCE_NOT_FOUND) | Some(INVALID_PARAMS)
                ) =>
        {
            return Err(ask.absent(call));
        }
        Err(e) => return Err(e.into()),
    };
    if ask.method == "resources/read" && call.scope == Scope::Federated {
        for c in res
            .get_mut("contents")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(Value::String(u)) = c.get("uri") {
                let renamed = json!(format!("{}+{}", ask.up.name(), u));
                if let Some(o) = c.as_object_mut() {
                    o.insert("uri".into(), renamed);
                }
            }
        }
    }
    Ok(res)
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_size(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
