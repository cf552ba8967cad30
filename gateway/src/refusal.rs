//! Every way the gateway refuses a request, as one closed enum, and the one mapping from a
//! refusal to what each audience sees.
//!
//! A step of the request path (`call/`) that says no returns a [`Refusal`]. Nothing on that path
//! builds a reason string: [`Refusal::face`] is the only place a refusal becomes a JSON-RPC code
//! and `data.reason` (what the caller sees), an HTTP status (2026-07-28 answers), an audit outcome
//! and reason (what the operator sees), a metric label, and a fail-closed cause. A refusal that
//! must look like absence to the caller (denied, or denied after a reload) shows the caller
//! exactly what a missing tool shows, while the operator's record says why.

use axum::http::StatusCode;
use policy::{Denial, DenyReason, ToolClass};
use serde_json::{Value, json};

use crate::jsonrpc::{
    GATEWAY_REFUSED, HEADER_MISMATCH, INVALID_PARAMS, METHOD_NOT_FOUND, MISSING_CAPABILITY,
    RESOURCE_NOT_FOUND, RpcError, UPSTREAM_ERROR,
};
use crate::levers::Killed;
use crate::limits::Hit;
use crate::upstream::UpstreamError;

/// Why a request was not answered as asked.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The params are not what the method needs (a missing name, a bad cursor).
    Malformed(String),
    /// No such method in the request's protocol era.
    NoSuchMethod(String),
    /// No tool by that name that this caller may use, or none at all.
    UnknownTool(String),
    /// Policy denied the call; the caller is answered as for an unknown tool.
    Denied { name: String, denial: Denial },
    /// A reload landed while the call waited, and the config now in force does not allow it.
    Reloaded { name: String, why: String },
    /// No prompt by that name that this caller may use.
    UnknownPrompt(String),
    /// Nothing this caller may complete: answered with no values, as for nothing to offer.
    NoCompletion,
    /// No resource at that URI that this caller may read.
    UnknownResource { uri: String, modern: bool },
    /// The tool's definition is not the pinned one.
    Quarantined { name: String, why: String },
    /// The tool's definition changed while the call waited.
    Changed { name: String },
    /// A retry's `requestState` is not one this gateway issued for this caller and request
    /// (forged, altered, another's, or expired).
    InputStateInvalid { why: String },
    /// A 2026-07-28 `Mcp-Param-*` header disagrees with the arguments.
    HeaderMismatch(String),
    /// The arguments fail the tool's limits or schemas; answered as a tool result with
    /// `isError`, so the model can correct itself.
    InvalidArguments { message: String, at: String },
    /// The arguments are too large for an approver to review.
    TooLargeToReview { name: String, limit_kib: usize },
    /// A kill switch covers it, or the switches' state is unknown.
    Killed { what: String, killed: Killed },
    /// A kill switch voided the approval request the call waited on.
    Voided { name: String, approval: String },
    /// Read-only mode and a write or destructive tool.
    ReadOnly { name: String, class: ToolClass },
    /// Shadow mode: decided and recorded, answered without executing.
    Shadow { name: String, needs_approval: bool },
    /// Over a rate: the tool's own (`hit: None`), or a `limits:` entry's for a principal.
    RateLimited {
        name: String,
        rate: registry::Rate,
        wait_s: u64,
        hit: Option<Hit>,
    },
    /// A `limits:` entry's principal already has `cap` calls running.
    ConcurrencyLimited { name: String, cap: u32, hit: Hit },
    /// A `limits:` entry's budget is spent for the principal until its window ends.
    BudgetExceeded {
        name: String,
        budget: registry::Budget,
        wait_s: u64,
        hit: Hit,
    },
    /// The limits' state (the budget store, the limiters) cannot be read or written.
    LimitsUnavailable { name: String, error: String },
    /// Held for a human's approval, which has not come yet.
    ApprovalPending {
        name: String,
        class: ToolClass,
        approval: String,
    },
    /// An approver denied it.
    ApprovalDenied {
        name: String,
        approval: String,
        by: String,
    },
    /// The approval state cannot be read or written.
    ApprovalUnavailable { error: String },
    /// The approval a task waited on lapsed: it expired undecided, or an identical call used it.
    ApprovalLapsed {
        name: String,
        approval: String,
        used: bool,
    },
    /// No task by that id that this caller may follow on this endpoint (or it expired).
    UnknownTask,
    /// A task's state cannot be read or written. `ran`: its call may have run, and how it
    /// ended could not be recorded (or the process running it went away).
    TaskUnavailable { error: String, ran: bool },
    /// The call a task held cannot be read back (altered where it was kept): it never runs.
    TaskUnreadable { error: String },
    /// A 2026-07-28 `tasks/*` request whose client did not declare the tasks extension.
    TasksUndeclared,
    /// A task that ended in a JSON-RPC error, answered again exactly as it ended.
    TaskFailed(RpcError),
    /// The client cancelled it or went away before it ran.
    Cancelled {
        name: String,
        approval: Option<String>,
    },
    /// The kill switch's registry of running calls cannot take it.
    Untracked { name: String },
    /// The upstream's credential could not be minted (token endpoint down, slow or refusing;
    /// a caller without a token to exchange).
    CredentialUnavailable { name: String, error: String },
    /// The audit log cannot record the request, so it does not run.
    AuditUnavailable { what: String, error: String },
    /// The upstream failed, timed out or answered with an error.
    Upstream(UpstreamError),
}

/// How a refusal shows, to each audience.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Face {
    /// JSON-RPC error code; `None` when the refusal is answered as a tool result.
    pub(crate) code: Option<i64>,
    /// `data.reason` the caller sees.
    pub(crate) reason: Option<&'static str>,
    /// HTTP status of a 2026-07-28 answer carrying it (2025-era answers are always 200).
    pub(crate) status: StatusCode,
    /// The audit record's outcome, and the `portcullis_tool_calls_total` label.
    pub(crate) outcome: &'static str,
    /// The `portcullis_requests_total` label.
    pub(crate) label: &'static str,
    /// The `portcullis_fail_closed_total` cause, when the refusal is a failure failing closed.
    pub(crate) fail_closed: Option<&'static str>,
}

impl Face {
    fn new(code: i64, reason: Option<&'static str>, outcome: &'static str) -> Face {
        Face {
            code: Some(code),
            reason,
            status: StatusCode::OK,
            outcome,
            label: reason.unwrap_or(outcome),
            fail_closed: None,
        }
    }

    fn status(self, status: StatusCode) -> Face {
        Face { status, ..self }
    }

    fn fails_closed(self, cause: Option<&'static str>) -> Face {
        Face {
            fail_closed: cause,
            ..self
        }
    }

    /// Over a limit: HTTP 429 on a 2026-07-28 answer (with `Retry-After` where `data`
    /// carries `retry_after_s`: `front/answer.rs`).
    fn too_many(self) -> Face {
        self.status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Answered as a result, not an error, counted under `label`.
    fn answered(self, label: &'static str) -> Face {
        Face {
            code: None,
            label,
            ..self
        }
    }
}

impl Refusal {
    /// The one mapping from a refusal to its code, reason, status, outcome and labels.
    pub(crate) fn face(&self) -> Face {
        use Refusal as R;
        let refused = |reason| Face::new(GATEWAY_REFUSED, Some(reason), reason);
        let absent = |outcome| Face::new(INVALID_PARAMS, Some("not_found"), outcome);
        // Counted as `error` in the request metrics, as protocol errors always were.
        let bad = |code| Face {
            label: "error",
            ..Face::new(code, None, "invalid_request")
        };
        match self {
            R::Malformed(_) => bad(INVALID_PARAMS),
            R::NoSuchMethod(_) => bad(METHOD_NOT_FOUND).status(StatusCode::NOT_FOUND),
            R::HeaderMismatch(_) => bad(HEADER_MISMATCH).status(StatusCode::BAD_REQUEST),
            R::InputStateInvalid { .. } => Face {
                label: "error",
                ..Face::new(
                    INVALID_PARAMS,
                    Some("request_state_invalid"),
                    "invalid_request",
                )
            },
            R::UnknownTool(_) | R::UnknownPrompt(_) => absent("not_found"),
            R::UnknownResource { modern: true, .. } => absent("not_found"),
            R::UnknownResource { modern: false, .. } => {
                Face::new(RESOURCE_NOT_FOUND, Some("not_found"), "not_found")
            }
            R::Denied { denial, .. } => absent("denied").fails_closed(
                matches!(denial.reason, DenyReason::Internal(_)).then_some("policy_error"),
            ),
            R::Reloaded { .. } => absent("denied"),
            R::NoCompletion => absent("not_found").answered("ok"),
            R::Quarantined { .. } | R::Changed { .. } => refused("quarantined"),
            R::InvalidArguments { .. } => {
                Face::new(INVALID_PARAMS, None, "invalid_arguments").answered("tool_error")
            }
            R::TooLargeToReview { .. } => refused("invalid_arguments"),
            R::Killed { killed, .. } => refused("killed").fails_closed(
                (*killed == Killed::StateUnknown).then_some("kill_switch_state_unknown"),
            ),
            R::Voided { .. } => refused("killed"),
            R::ReadOnly { .. } => refused("read_only"),
            R::Shadow { .. } => refused("shadow").answered("ok"),
            R::RateLimited { .. } => refused("rate_limited").too_many(),
            R::ConcurrencyLimited { .. } => refused("concurrency_limited").too_many(),
            R::BudgetExceeded { .. } => refused("budget_exceeded").too_many(),
            R::LimitsUnavailable { .. } => Face {
                outcome: "unavailable",
                ..refused("limits_unavailable")
            }
            .fails_closed(Some("limits_unavailable")),
            R::ApprovalPending { .. } => Face {
                outcome: "held",
                ..refused("approval_pending")
            },
            R::ApprovalDenied { .. } => refused("approval_denied"),
            R::ApprovalLapsed { used: false, .. } => refused("approval_expired"),
            R::ApprovalLapsed { used: true, .. } => refused("approval_used"),
            R::TaskUnavailable { .. } | R::TaskUnreadable { .. } => Face {
                outcome: "unavailable",
                ..refused("task_unavailable")
            }
            .fails_closed(Some("task_state_unavailable")),
            R::UnknownTask => absent("not_found"),
            R::TasksUndeclared => bad(MISSING_CAPABILITY).status(StatusCode::BAD_REQUEST),
            R::TaskFailed(e) => Face {
                label: "error",
                ..Face::new(e.code, None, "error")
            },
            R::ApprovalUnavailable { .. } => Face {
                outcome: "unavailable",
                ..refused("approval_unavailable")
            }
            .fails_closed(Some("approval_state_unavailable")),
            R::Cancelled { .. } => refused("cancelled"),
            R::Untracked { .. } => {
                refused("unavailable").fails_closed(Some("inflight_registry_unavailable"))
            }
            R::AuditUnavailable { .. } => {
                refused("audit_unavailable").fails_closed(Some("audit_unavailable"))
            }
            R::CredentialUnavailable { .. } => Face {
                outcome: "unavailable",
                ..refused("credential_unavailable")
            }
            .fails_closed(Some("credential_unavailable")),
            // The upstream needs a capability this client did not declare (it was told what the
            // client declared): the client's to fix, so answered as the revision says, with 400.
            R::Upstream(e @ UpstreamError::Rpc { .. }) if e.code() == MISSING_CAPABILITY => {
                Face::new(MISSING_CAPABILITY, Some("upstream_error"), "upstream_error")
                    .status(StatusCode::BAD_REQUEST)
            }
            R::Upstream(e @ UpstreamError::Rpc { .. }) => {
                Face::new(e.code(), Some("upstream_error"), "upstream_error")
            }
            R::Upstream(_) => Face::new(
                UPSTREAM_ERROR,
                Some("upstream_unavailable"),
                "upstream_unavailable",
            ),
        }
    }

    /// What the operator's record says beyond the outcome (never shown to the caller).
    pub(crate) fn audit_reason(&self) -> Option<String> {
        use Refusal as R;
        Some(match self {
            R::Denied { denial, .. } => denial.to_string(),
            R::Reloaded { why, .. } => {
                format!("the config was reloaded before the call ran: {why}")
            }
            R::Quarantined { why, .. } => why.clone(),
            R::Changed { .. } => "the tool's definition changed before the call ran".into(),
            R::HeaderMismatch(why) => why.clone(),
            R::InputStateInvalid { why } => format!("requestState refused: {why}"),
            R::InvalidArguments { at, .. } => {
                format!("arguments do not match the schema at `{at}`")
            }
            R::Killed { killed, .. } => killed.to_string(),
            R::RateLimited { rate, hit, .. } => match hit {
                Some(hit) => format!("more than {rate} ({hit})"),
                None => format!("more than {rate} (the tool's rate)"),
            },
            R::ConcurrencyLimited { cap, hit, .. } => {
                format!("{cap} calls already running ({hit})")
            }
            R::BudgetExceeded { budget, hit, .. } => format!("{budget} spent ({hit})"),
            R::LimitsUnavailable { error, .. } | R::CredentialUnavailable { error, .. } => {
                error.clone()
            }
            R::ApprovalUnavailable { error }
            | R::AuditUnavailable { error, .. }
            | R::TaskUnavailable { error, .. }
            | R::TaskUnreadable { error } => error.clone(),
            R::Upstream(e) => e.to_string(),
            _ => return None,
        })
    }

    /// The policy level that denied it, for the record.
    pub(crate) fn level(&self) -> Option<&'static str> {
        match self {
            Refusal::Denied { denial, .. } => denial.level.map(|l| l.as_str()),
            _ => None,
        }
    }

    /// The `limits:` entry this refusal ran into, for the record.
    pub(crate) fn limit(&self) -> Option<&Hit> {
        match self {
            Refusal::RateLimited { hit, .. } => hit.as_ref(),
            Refusal::ConcurrencyLimited { hit, .. } | Refusal::BudgetExceeded { hit, .. } => {
                Some(hit)
            }
            _ => None,
        }
    }

    /// The approval request this refusal concerns.
    pub(crate) fn approval(&self) -> Option<&str> {
        match self {
            Refusal::ApprovalPending { approval, .. }
            | Refusal::ApprovalLapsed { approval, .. }
            | Refusal::ApprovalDenied { approval, .. }
            | Refusal::Voided { approval, .. } => Some(approval),
            Refusal::Cancelled { approval, .. } => approval.as_deref(),
            _ => None,
        }
    }

    /// The JSON-RPC answer: an error, or for the refusals answered as results, the result.
    pub(crate) fn answer(self) -> Result<Value, RpcError> {
        if let Refusal::TaskFailed(e) = self {
            return Err(e);
        }
        let face = self.face();
        let Some(code) = face.code else {
            return Ok(self.result());
        };
        let mut e = RpcError::new(code, self.text());
        e.data = match (face.reason, &self) {
            (None, Refusal::NoSuchMethod(m)) => Some(Value::String(m.clone())),
            (None, Refusal::TasksUndeclared) => Some(json!({
                "requiredCapabilities": { "extensions": { crate::jsonrpc::TASKS_EXTENSION: {} } }
            })),
            (None, _) => None,
            (Some(r), _) => {
                let mut data = serde_json::Map::new();
                data.insert("reason".into(), json!(r));
                data.extend(self.extra().into_iter().map(|(k, v)| (k.to_string(), v)));
                Some(Value::Object(data))
            }
        };
        Err(e)
    }

    /// The result a refusal answered as a result carries.
    fn result(&self) -> Value {
        match self {
            Refusal::InvalidArguments { message, .. } => json!({
                "content": [{ "type": "text", "text": format!("arguments rejected: {message}") }],
                "isError": true,
            }),
            Refusal::NoCompletion => {
                json!({ "completion": { "values": [], "hasMore": false } })
            }
            Refusal::Shadow {
                name,
                needs_approval,
            } => {
                let mut text = format!(
                    "Not executed: the gateway is in shadow mode. The call to `{name}` was allowed by policy and recorded; no upstream was called."
                );
                if *needs_approval {
                    text.push_str(
                        " In enforce mode it would have been held for a human's approval.",
                    );
                }
                json!({
                    "content": [{ "type": "text", "text": text }],
                    "isError": false,
                    "_meta": { "portcullis/shadow": true, "portcullis/executed": false },
                })
            }
            _ => Value::Null,
        }
    }

    /// What the caller may see in `data` besides the reason.
    fn extra(&self) -> Vec<(&'static str, Value)> {
        use Refusal as R;
        match self {
            R::UnknownResource { uri, .. } => vec![("uri", json!(uri))],
            R::Voided { approval, .. }
            | R::ApprovalLapsed { approval, .. }
            | R::ApprovalDenied { approval, .. }
            | R::Cancelled {
                approval: Some(approval),
                ..
            } => vec![("approval_id", json!(approval))],
            R::ReadOnly { class, .. } => vec![("class", json!(class.as_str()))],
            R::RateLimited { wait_s, .. } | R::BudgetExceeded { wait_s, .. } => {
                vec![("retry_after_s", json!(wait_s))]
            }
            R::ApprovalPending {
                class, approval, ..
            } => vec![
                ("approval_id", json!(approval)),
                ("class", json!(class.as_str())),
            ],
            R::Upstream(UpstreamError::Rpc { server, error }) => {
                let data = error.get("data").cloned().unwrap_or(Value::Null);
                let mut extra = vec![("server", json!(server))];
                // What the client must declare, where the revision puts it.
                if let Some(caps) = data.get("requiredCapabilities").filter(|c| c.is_object())
                    && error.get("code").and_then(Value::as_i64) == Some(MISSING_CAPABILITY)
                {
                    extra.push(("requiredCapabilities", caps.clone()));
                }
                extra.push(("upstream", data));
                extra
            }
            R::Upstream(other) => vec![("server", json!(other.server()))],
            _ => Vec::new(),
        }
    }

    /// The caller's message.
    fn text(&self) -> String {
        use Refusal as R;
        match self {
            R::Malformed(m) => m.clone(),
            R::NoSuchMethod(m) => format!("Method not found: {m}"),
            R::InputStateInvalid { .. } => "Invalid params: `requestState` is not valid for this request (altered, expired, or issued for another); start the request again without it".into(),
            R::UnknownTool(name) | R::Denied { name, .. } | R::Reloaded { name, .. } => {
                format!("Unknown tool: {name}")
            }
            R::UnknownPrompt(name) => format!("Unknown prompt: {name}"),
            R::UnknownResource { .. } => "Resource not found".into(),
            R::Quarantined { name, .. } => format!(
                "`{name}` is quarantined: its definition is not the pinned one; an operator must review and re-pin it"
            ),
            R::Changed { name } => format!(
                "`{name}` was not executed: its definition changed; an operator must review and re-pin it"
            ),
            R::HeaderMismatch(why) => format!("Header mismatch: {why}"),
            R::InvalidArguments { message, .. } => format!("arguments rejected: {message}"),
            R::TooLargeToReview { name, limit_kib } => format!(
                "`{name}` needs a human's approval, and its arguments are too large for an approver to review (over {limit_kib} KiB once redacted)"
            ),
            R::Killed { what, killed } => format!("`{what}` was not executed: {killed}"),
            R::Voided { name, approval } => {
                format!("`{name}` was not executed: request {approval} was voided by a kill switch")
            }
            R::ReadOnly { name, class } => format!(
                "`{name}` is a {class} tool and the gateway is in read-only mode; it was not executed"
            ),
            R::Shadow { name, .. } => format!("`{name}` was not executed: shadow mode"),
            R::NoCompletion => String::new(),
            R::RateLimited {
                name, rate, wait_s, ..
            } => format!("`{name}` is limited to {rate}; try again in {wait_s} s"),
            R::ConcurrencyLimited { name, cap, .. } => format!(
                "`{name}` was not executed: at most {cap} such calls may run at once; try again when one has finished"
            ),
            R::BudgetExceeded {
                name,
                budget,
                wait_s,
                ..
            } => format!(
                "`{name}` was not executed: its budget of {budget} is spent until the period renews; try again in {wait_s} s"
            ),
            R::LimitsUnavailable { name, .. } => format!(
                "`{name}` was not executed: the gateway cannot check its limits and budgets"
            ),
            R::ApprovalPending {
                name,
                class,
                approval,
            } => format!(
                "`{name}` is a {class} tool and needs a human's approval: request {approval} is waiting for an approver, who decides it on the gateway's operator page (Approvals) or with `portcullis approvals approve {approval} --reason \"...\" --config <the gateway's config>` (operator key in PORTCULLIS_ADMIN_KEY). Once it is approved, make the identical call again."
            ),
            R::ApprovalDenied { name, approval, by } => {
                format!("`{name}` was not executed: request {approval} was denied by {by}")
            }
            R::ApprovalUnavailable { .. } => {
                "the call needs approval and the approval state cannot be read; it was not executed"
                    .into()
            }
            R::ApprovalLapsed {
                name,
                approval,
                used: false,
            } => format!(
                "`{name}` was not executed: request {approval} expired before the call could run"
            ),
            R::ApprovalLapsed { name, approval, .. } => format!(
                "`{name}` was not executed by this task: the approval of request {approval} was used by an identical call"
            ),
            R::UnknownTask => "Failed to retrieve task: Task not found".into(),
            R::TaskUnavailable { ran: false, .. } => {
                "the task's state cannot be read or written now; nothing was run for it; try again"
                    .into()
            }
            R::TaskUnavailable { ran: true, .. } => "the task's call may have run, but how it ended is not known (the gateway could not record it, or stopped while it ran); check before making the call again".into(),
            R::TaskUnreadable { .. } => "the call this task held cannot be read back (it was altered where it was kept); it was not run and will not be".into(),
            R::TasksUndeclared => format!(
                "tasks need the `{}` extension in the request's client capabilities",
                crate::jsonrpc::TASKS_EXTENSION
            ),
            R::TaskFailed(e) => e.message.clone(),
            R::Cancelled {
                name,
                approval: Some(id),
            } => format!(
                "`{name}` was not executed: the call was cancelled while it waited for approval {id}"
            ),
            R::Cancelled { name, .. } => {
                format!("`{name}` was not executed: the call was cancelled")
            }
            R::Untracked { name } => format!(
                "`{name}` was not executed: the gateway cannot track it for the kill switch"
            ),
            R::AuditUnavailable { what, .. } => {
                format!("`{what}` was not executed: the audit log cannot record it")
            }
            R::CredentialUnavailable { name, .. } => format!(
                "`{name}` was not executed: the gateway could not obtain a credential for its upstream"
            ),
            R::Upstream(UpstreamError::Rpc { server, error }) => {
                let msg = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                format!("upstream `{server}`: {msg}")
            }
            R::Upstream(other) => other.to_string(),
        }
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Refusal {
        if !matches!(e, UpstreamError::Rpc { .. }) {
            tracing::warn!(error = %e, "upstream request failed");
        }
        Refusal::Upstream(e)
    }
}

#[cfg(test)]
mod tests;
