//! Upstream connections bound to one client session (`connection: per_session`).
//!
//! On a shared connection nothing an upstream sends identifies the caller it concerns, so the
//! gateway drops its log messages and refuses its sampling and elicitation requests. A
//! per-session connection (a [`Link`]) belongs to exactly one client session, so what arrives on
//! it can go to that client and no other:
//!
//! - log messages go to the session's most recent call still running on the link (if the client
//!   takes a stream for it), else to the session's GET stream;
//! - a sampling or elicitation request goes to the client only on the stream of the call that
//!   caused it (rmcp marks each request with the upstream POST stream it arrived on), only if the
//!   client declared the capability, and only while the server is neither stopped nor killed
//!   for the caller; the client's answer (routed back by [`Pending`]) goes to the upstream. A
//!   request tied to no running call is refused: it would have to be broadcast to the session's
//!   GET streams. Each relayed request is audited before the client is asked (refused if it
//!   cannot be recorded), and so is how it ended.
//!
//! The link declares to the upstream only the sampling and elicitation capabilities the client
//! declared at `initialize` (sampling without `context`: the gateway does not let one server ask
//! for the context of others). Links open at the session's first request to the server and close
//! with the session, or when the upstream is stopped or replaced.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use audit::{Audit, Event, Who};
use policy::Identity;
use rmcp::ErrorData as McpError;
use rmcp::model::{ClientCapabilities, ErrorCode, RequestId};
use rmcp::service::InboundStreamOrigin;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{ClientSide, Waiting};
use crate::jsonrpc;
use crate::levers::Levers;

/// A call running on a link whose client takes a stream: the upstream's request id, the
/// client's response stream, and a token cancelled when the call ends.
struct Call {
    id: RequestId,
    sink: mpsc::UnboundedSender<Value>,
    ended: CancellationToken,
}

/// Whom a link acts for: the session's caller, checked against the kill switch at each request.
pub(super) struct Owner {
    pub(super) who: Who,
    pub(super) identity: Arc<Identity>,
    pub(super) levers: Arc<Levers>,
}

/// The session side of one link: who it belongs to and where its messages go.
pub(crate) struct Relay {
    server: String,
    session: Weak<ClientSide>,
    owner: Owner,
    audit: Option<Arc<Audit>>,
    /// How long the client may take to answer (the server's request timeout, which also bounds
    /// the call that is waiting).
    timeout: Duration,
    /// Cancelled when the upstream is stopped (removed or replaced by a reload, or shutdown).
    stop: CancellationToken,
    /// Calls running on the link, oldest first.
    calls: Mutex<Vec<Call>>,
}

/// Removes a call from its link's running calls when it ends.
pub(super) struct Running {
    relay: Arc<Relay>,
    id: RequestId,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.relay.calls.lock() {
            calls.retain(|c| {
                let ended = c.id == self.id;
                if ended {
                    c.ended.cancel();
                }
                !ended
            });
        }
    }
}

/// The client's capabilities a link declares: `sampling` (without `context`) and
/// `elicitation`, each only if the client declared it as an object.
fn relayable(declared: &Value) -> serde_json::Map<String, Value> {
    declared_of(declared, &["sampling", "elicitation"])
}

/// Of what a client declared, the capabilities named in `keys` that are objects; `sampling`
/// without `context` (the client's context is every server's: no server asks for it). Links
/// declare sampling and elicitation; a multi-round request (`call/input.rs`) roots too.
pub(crate) fn declared_of(declared: &Value, keys: &[&str]) -> serde_json::Map<String, Value> {
    let mut caps = serde_json::Map::new();
    for key in keys {
        if let Some(Value::Object(v)) = declared.get(*key) {
            let mut v = v.clone();
            if *key == "sampling" {
                v.remove("context");
            }
            caps.insert((*key).to_string(), Value::Object(v));
        }
    }
    caps
}

impl Relay {
    pub(super) fn new(
        server: &str,
        session: &Arc<ClientSide>,
        owner: Owner,
        audit: Option<Arc<Audit>>,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Relay {
        Relay {
            server: server.to_string(),
            session: Arc::downgrade(session),
            owner,
            audit,
            timeout,
            stop,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// What the link declares to the upstream.
    pub(super) fn capabilities(&self) -> ClientCapabilities {
        let declared = self
            .session
            .upgrade()
            .map(|s| s.client_capabilities.clone())
            .unwrap_or(Value::Null);
        serde_json::from_value(Value::Object(relayable(&declared))).unwrap_or_default()
    }

    /// Note a call running on the link, until the returned guard drops.
    pub(super) fn running(
        self: &Arc<Self>,
        id: RequestId,
        sink: mpsc::UnboundedSender<Value>,
    ) -> Running {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Call {
                id: id.clone(),
                sink,
                ended: CancellationToken::new(),
            });
        }
        Running {
            relay: self.clone(),
            id,
        }
    }

    /// The running call `id`. A request can arrive a moment before the call that caused it is
    /// noted (the upstream answers as soon as rmcp has sent it), so this waits briefly.
    async fn call(
        &self,
        id: &RequestId,
    ) -> Option<(mpsc::UnboundedSender<Value>, CancellationToken)> {
        for _ in 0..20 {
            if let Some(found) = self.calls.lock().ok().and_then(|calls| {
                calls
                    .iter()
                    .find(|c| c.id == *id)
                    .map(|c| (c.sink.clone(), c.ended.clone()))
            }) {
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    fn latest_sink(&self) -> Option<mpsc::UnboundedSender<Value>> {
        let calls = self.calls.lock().ok()?;
        calls
            .iter()
            .rev()
            .find(|c| !c.sink.is_closed())
            .map(|c| c.sink.clone())
    }

    /// An upstream log message: to the session's latest running call on this link, else to its
    /// GET stream (dropped if it has none). Nothing once the server is stopped or killed.
    pub(super) fn log(&self, params: Value) {
        if self.stop.is_cancelled() || self.killed().is_some() {
            return;
        }
        let message = jsonrpc::notification("notifications/message", params);
        if let Some(sink) = self.latest_sink()
            && sink.send(message.clone()).is_ok()
        {
            return;
        }
        if let Some(session) = self.session.upgrade() {
            let _ = session.events.send(message);
        }
    }

    fn killed(&self) -> Option<crate::levers::Killed> {
        self.owner
            .levers
            .killed(&self.owner.identity, &self.server, "")
    }

    /// Why the client may not be asked this, if it may not.
    fn refusal(
        &self,
        session: &ClientSide,
        method: &str,
        capability: &str,
        params: &Value,
    ) -> Option<(ErrorCode, String)> {
        let refused = |why: String| Some((ErrorCode::INVALID_REQUEST, why));
        let undeclared = |why: String| Some((ErrorCode::METHOD_NOT_FOUND, why));
        if self.stop.is_cancelled() {
            return refused("the server's connection is closing".into());
        }
        if let Some(k) = self.killed() {
            return refused(format!("the kill switch is engaged: {k}"));
        }
        let declared = relayable(&session.client_capabilities);
        let Some(cap) = declared.get(capability) else {
            return undeclared(format!("the client did not declare `{capability}`"));
        };
        if method == "elicitation/create"
            && params.get("mode").and_then(Value::as_str) == Some("url")
            && cap.get("url").is_none()
        {
            return undeclared("the client did not declare URL-mode elicitation".into());
        }
        None
    }

    /// An audit event about a request this link's upstream sent the session's client.
    fn event(&self, kind: &'static str, session: &ClientSide, method: &str) -> Event {
        let mut e = Event::new(kind);
        e.session = Some(session.id.clone());
        e.identity = Some(self.owner.who.clone());
        e.server = Some(self.server.clone());
        e.method = Some(method.to_string());
        e
    }

    /// The client stream a request from the upstream goes to: that of the running call it came
    /// on, if the client declared the capability and nothing refuses it.
    async fn stream_for(
        &self,
        session: &ClientSide,
        method: &'static str,
        capability: &str,
        params: &Value,
        origin: Option<&InboundStreamOrigin>,
    ) -> Result<(mpsc::UnboundedSender<Value>, CancellationToken), (ErrorCode, String)> {
        if let Some(refused) = self.refusal(session, method, capability, params) {
            return Err(refused);
        }
        match origin {
            Some(InboundStreamOrigin::OutboundRequest(id)) => self.call(id).await,
            _ => None,
        }
        .ok_or_else(|| {
            (
                ErrorCode::INVALID_REQUEST,
                "the request is tied to no running call whose client takes a stream".into(),
            )
        })
    }

    /// Send the request to the client and wait for its answer, until the call, the session or
    /// the connection ends, the upstream withdraws it, or the server's timeout passes. `Err`
    /// carries the outcome's name for the record.
    async fn exchange(
        &self,
        session: &ClientSide,
        sink: &mpsc::UnboundedSender<Value>,
        ended: &CancellationToken,
        waiting: &mut Waiting<'_>,
        message: Value,
        withdrawn: CancellationToken,
    ) -> Result<Value, (&'static str, McpError)> {
        let fail = |code: ErrorCode, why: String| McpError::new(code, why, None);
        let closed = |why: &str| ("closed", fail(ErrorCode::INTERNAL_ERROR, why.to_string()));
        if sink.send(message).is_err() {
            Err(closed("the client's request ended before it was asked"))
        } else {
            tokio::select! {
                r = &mut waiting.answer => match r {
                    Ok(Ok(result)) => Ok(result),
                    Ok(Err(error)) => Err(("client_error", client_error(&error))),
                    Err(_) => Err(closed("the client's session has ended")),
                },
                () = ended.cancelled() => Err(closed("the call that caused the request ended")),
                () = session.links.closed.cancelled() => Err(closed("the client's session has ended")),
                () = self.stop.cancelled() => Err(closed("the server's connection is closing")),
                () = withdrawn.cancelled() => {
                    let note = jsonrpc::notification(
                        "notifications/cancelled",
                        json!({ "requestId": waiting.id, "reason": "withdrawn by the server" }),
                    );
                    let _ = sink.send(note);
                    Err(("cancelled", fail(ErrorCode::INTERNAL_ERROR, "the server withdrew the request".into())))
                }
                () = tokio::time::sleep(self.timeout) => Err(("timeout", fail(
                    ErrorCode::INTERNAL_ERROR,
                    format!("the client did not answer within {:?}", self.timeout),
                ))),
            }
        }
    }

    /// The `upstream.answer` record of a request to the client.
    fn note_answer(
        &self,
        session: &ClientSide,
        method: &str,
        id: &Value,
        outcome: &Result<Value, (&'static str, McpError)>,
    ) {
        let mut done = self.event("upstream.answer", session, method);
        done.detail = Some(json!({ "client_request_id": id }));
        match outcome {
            Ok(result) => {
                done.outcome = Some("answered");
                if let Some(d) = done.detail.as_mut().and_then(Value::as_object_mut) {
                    d.insert("response_bytes".into(), json!(result.to_string().len()));
                }
            }
            Err((kind, err)) => {
                done.outcome = Some(kind);
                done.reason = Some(err.message.to_string());
            }
        }
        self.note(done);
    }

    /// Ask the session's client on the upstream's behalf and return its answer. `capability` is
    /// the client capability the request needs; `origin` says which upstream stream it came
    /// on; `withdrawn` is cancelled if the upstream cancels its request.
    pub(super) async fn ask(
        &self,
        method: &'static str,
        capability: &str,
        mut params: Value,
        origin: Option<&InboundStreamOrigin>,
        withdrawn: CancellationToken,
    ) -> Result<Value, McpError> {
        let fail = |code: ErrorCode, why: String| McpError::new(code, why, None);
        let Some(session) = self.session.upgrade() else {
            return Err(fail(
                ErrorCode::INTERNAL_ERROR,
                "the client's session has ended".into(),
            ));
        };
        let mut e = self.event("upstream.request", &session, method);
        let call = self
            .stream_for(&session, method, capability, &params, origin)
            .await;
        let (sink, ended) = match call {
            Ok(found) => found,
            Err((code, why)) => {
                e.outcome = Some("refused");
                e.reason = Some(why.clone());
                self.note(e);
                tracing::info!(server = %self.server, session = %audit::session_ref(&session.id), %method, reason = %why, "request to the client refused");
                return Err(fail(code, why));
            }
        };
        if method == "sampling/createMessage"
            && let Some(p) = params.as_object_mut()
            && p.get("includeContext").is_some_and(|c| c != "none")
        {
            // The client's context is every server's; this server gets none of it.
            p.insert("includeContext".into(), json!("none"));
        }
        let Some(mut waiting) = session.pending.register() else {
            e.outcome = Some("refused");
            e.reason = Some("too many requests already wait for the client".into());
            self.note(e);
            return Err(fail(
                ErrorCode::INTERNAL_ERROR,
                "too many requests already wait for the client".into(),
            ));
        };
        e.outcome = Some("relayed");
        e.detail = Some(json!({
            "client_request_id": waiting.id,
            "request_bytes": params.to_string().len(),
        }));
        if let Some(audit) = &self.audit
            && let Err(err) = audit.record(e).await
        {
            tracing::error!(server = %self.server, %method, error = %err, "audit log cannot record a request to the client; refused");
            crate::metrics::get().fail_closed("audit_unavailable");
            return Err(fail(
                ErrorCode::INTERNAL_ERROR,
                "the gateway cannot record the request".into(),
            ));
        }
        let message =
            json!({ "jsonrpc": "2.0", "id": waiting.id, "method": method, "params": params });
        let outcome = self
            .exchange(&session, &sink, &ended, &mut waiting, message, withdrawn)
            .await;
        self.note_answer(&session, method, &waiting.id, &outcome);
        outcome.map_err(|(_, err)| err)
    }

    fn note(&self, e: Event) {
        if let Some(audit) = &self.audit {
            audit.note(e);
        }
    }
}

/// The client's JSON-RPC error, as the upstream is told it.
fn client_error(error: &Value) -> McpError {
    let code = error
        .get("code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok())
        .map_or(ErrorCode::INTERNAL_ERROR, ErrorCode);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the client refused the request")
        .to_string();
    McpError::new(code, message, error.get("data").cloned())
}

#[cfg(test)]
mod tests;
