//! An upstream that answers a `tools/call` with a task (the 2026-07-28 tasks extension, which
//! the gateway declares to every upstream) is followed here to its end, within the call's
//! `max_timeout`: `tasks/get` at the upstream's poll interval, on the call's own connection and
//! with the call's own credential. The caller gets the tool's result as if the upstream had
//! answered at once; a failed task is the upstream's error. A call cancelled, timed out or
//! whose task asks for input (which the gateway does not relay into a task) cancels the
//! upstream's task (`tasks/cancel`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{ClientRequest, GetExtensions as _};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Connection, Upstream, UpstreamError, http, result_value};

/// Bounds on the upstream's poll interval.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(5);

/// Whether an upstream's answer is a task rather than the call's result.
pub(super) fn is_task(answer: &Value) -> bool {
    answer.get("resultType").and_then(Value::as_str) == Some("task")
}

fn poll(state: &Value) -> Duration {
    let ms = state
        .get("pollIntervalMs")
        .and_then(Value::as_u64)
        .unwrap_or(1000);
    Duration::from_millis(ms).clamp(POLL_MIN, POLL_MAX)
}

impl Upstream {
    /// Follow the task `created` to its end, until `deadline`; the call's result.
    pub(super) async fn follow_task(
        &self,
        conn: &Connection,
        created: &Value,
        cancel: &CancellationToken,
        credential: Option<Arc<str>>,
        deadline: Instant,
        timeout: std::time::Duration,
    ) -> Result<Value, UpstreamError> {
        let name = self.name.clone();
        let Some(task_id) = created.get("taskId").and_then(Value::as_str) else {
            return Err(UpstreamError::Unreadable(name));
        };
        tracing::debug!(server = %name, task = task_id, "upstream answered with a task; following it");
        let mut wait = poll(created);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.cancel_task(conn, task_id, credential.clone()).await;
                return Err(UpstreamError::Timeout(name, timeout));
            }
            tokio::select! {
                () = tokio::time::sleep(wait.min(left)) => {}
                () = cancel.cancelled() => {
                    self.cancel_task(conn, task_id, credential.clone()).await;
                    return Err(UpstreamError::Cancelled(name));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = self.task_request(conn, "tasks/get", task_id, credential.clone(), left);
            let state = tokio::select! {
                state = asked => state,
                () = cancel.cancelled() => Err(UpstreamError::Cancelled(name.clone())),
            };
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // Whatever went wrong, the upstream's task is not left running for nobody,
                    // and the caller is told the upstream failed (not that its call was bad).
                    tracing::warn!(server = %name, task = task_id, error = %e, "following an upstream's task failed");
                    self.cancel_task(conn, task_id, credential.clone()).await;
                    return Err(match e {
                        UpstreamError::Cancelled(_) => UpstreamError::Cancelled(name),
                        UpstreamError::Timeout(..) => UpstreamError::Timeout(name, timeout),
                        _ => UpstreamError::Transport(name),
                    });
                }
            };
            match state.get("status").and_then(Value::as_str) {
                Some("working") => wait = poll(&state),
                Some("completed") => {
                    let mut result = state
                        .get("result")
                        .filter(|r| r.is_object())
                        .cloned()
                        .ok_or_else(|| UpstreamError::Unreadable(name.clone()))?;
                    // A task's result asks for nothing: one that asks for input is not relayed.
                    if result.get("resultType").and_then(Value::as_str) == Some("input_required") {
                        let error = json!({
                            "code": crate::jsonrpc::INTERNAL_ERROR,
                            "message": "the upstream's task ended asking for input, which the gateway does not relay from a task",
                        });
                        return Err(UpstreamError::Rpc {
                            server: name,
                            error,
                        });
                    }
                    if let Some(o) = result.as_object_mut() {
                        o.remove("resultType");
                    }
                    return Ok(result);
                }
                Some("failed") => {
                    let mut error = state.get("error").cloned().unwrap_or_else(
                        || json!({ "code": crate::jsonrpc::INTERNAL_ERROR, "message": "the task failed" }),
                    );
                    // As any upstream error: nothing the gateway sent it, no `portcullis/` marks.
                    super::scrub::scrub(&mut error, &name, &self.sent_secrets());
                    return Err(UpstreamError::Rpc {
                        server: name,
                        error,
                    });
                }
                Some("cancelled") => return Err(UpstreamError::Cancelled(name)),
                Some("input_required") => {
                    self.cancel_task(conn, task_id, credential.clone()).await;
                    let error = json!({
                        "code": crate::jsonrpc::INTERNAL_ERROR,
                        "message": "the upstream's task asked for input, which the gateway does not relay into a task; it was cancelled",
                    });
                    return Err(UpstreamError::Rpc {
                        server: name,
                        error,
                    });
                }
                _ => return Err(UpstreamError::Unreadable(name)),
            }
        }
    }

    /// `tasks/cancel`, best effort.
    async fn cancel_task(&self, conn: &Connection, task_id: &str, credential: Option<Arc<str>>) {
        let bound = Duration::from_secs(2);
        if let Err(e) = self
            .task_request(conn, "tasks/cancel", task_id, credential, bound)
            .await
        {
            tracing::warn!(server = %self.name, task = task_id, error = %e, "the upstream's task could not be cancelled");
        }
    }

    /// One `tasks/*` request about `task_id`, on the call's connection with its credential.
    async fn task_request(
        &self,
        conn: &Connection,
        method: &str,
        task_id: &str,
        credential: Option<Arc<str>>,
        within: Duration,
    ) -> Result<Value, UpstreamError> {
        let name = &self.name;
        let msg = json!({ "method": method, "params": { "taskId": task_id } });
        let mut request: ClientRequest =
            serde_json::from_value(msg).map_err(|_| UpstreamError::Unreadable(name.clone()))?;
        if let Some(token) = credential {
            request.extensions_mut().insert(http::CallCredential(token));
        }
        let options = PeerRequestOptions::with_timeout(within);
        let handle = conn
            .peer
            .send_cancellable_request(request, options)
            .await
            .map_err(|e| self.map_error(e, conn))?;
        let answer = handle
            .await_response()
            .await
            .map_err(|e| self.map_error(e, conn))?;
        result_value(&answer).ok_or_else(|| UpstreamError::Unreadable(name.clone()))
    }
}
