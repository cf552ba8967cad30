//! Upstream connections bound to one client session (`connection: per_session`).
//!
//! On a shared connection nothing an upstream sends identifies the caller it concerns, so the
//! gateway drops its log messages and refuses its sampling and elicitation requests. A
//! per-session connection (a [`Link`]) belongs to exactly one client session, so what arrives on
//! it can go to that client and no other:
//!
//! - log messages go to the session's most recent call still running on the link, else to the
//!   session's GET stream;
//! - sampling and elicitation requests go to the client on the stream of the call that caused
//!   them (rmcp marks each request with the upstream POST stream it arrived on), else on the
//!   session's GET stream; only if the client declared the capability, with the client's answer
//!   (routed back by [`Pending`]) returned to the upstream. Each is audited, and refused when it
//!   cannot be recorded.
//!
//! The link declares to the upstream only the sampling and elicitation capabilities the client
//! declared at `initialize`. Links are opened at the session's first request to the server and
//! closed with the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{ClientCapabilities, ErrorCode, RequestId};
use rmcp::service::InboundStreamOrigin;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::Connection;
use crate::audit::{Audit, Event, Who};
use crate::jsonrpc;
use crate::session::Session;

/// How many server-to-client requests of one session may wait for the client at once.
const MAX_PENDING: usize = 64;

/// One session's upstream links, by server name.
#[derive(Default)]
pub(crate) struct Links {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Link>>>>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Links").field("servers", &names).finish()
    }
}

impl Links {
    /// The slot for `server`, created empty if need be. Opening a link holds only its own
    /// slot, so a slow upstream does not hold up the session's other servers.
    pub(super) fn slot(&self, server: &str) -> Option<Arc<tokio::sync::Mutex<Option<Link>>>> {
        let mut slots = self.slots.lock().ok()?;
        Some(slots.entry(server.to_string()).or_default().clone())
    }

    /// Close every link (the session ended).
    pub(crate) fn close(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }
}

/// A live per-session connection to one upstream.
#[derive(Clone)]
pub(super) struct Link {
    /// The [`super::Upstream::serial`] it was opened for: an upstream replaced by a reload
    /// (new source or credentials) gets new links.
    pub(super) serial: u64,
    pub(super) conn: Connection,
    pub(super) relay: Arc<Relay>,
}

/// Server-to-client requests waiting for the client's answer, by the id the gateway gave them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<Result<Value, Value>>>>,
}

/// One request waiting for the client: its id and the receiver of the answer. Dropping it,
/// answered or not, removes the request.
struct Waiting<'a> {
    pending: &'a Pending,
    key: String,
    id: Value,
    answer: oneshot::Receiver<Result<Value, Value>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.pending.waiting.lock() {
            w.remove(&self.key);
        }
    }
}

impl Pending {
    /// A fresh id (unique in the session) and the receiver of the client's answer to it.
    fn register(&self) -> Option<Waiting<'_>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("portcullis-{n}"));
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().ok()?;
        if w.len() >= MAX_PENDING {
            return None;
        }
        w.insert(id.to_string(), tx);
        Some(Waiting {
            pending: self,
            key: id.to_string(),
            id,
            answer: rx,
        })
    }

    /// Deliver the client's answer to `id`. False if nothing waits for it.
    pub(crate) fn answer(&self, id: &Value, outcome: Result<Value, Value>) -> bool {
        let waiter = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&id.to_string()));
        match waiter {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }
}

/// The session side of one link: who it belongs to and where its messages go.
pub(crate) struct Relay {
    server: String,
    session: Weak<Session>,
    who: Who,
    audit: Option<Arc<Audit>>,
    /// How long the client may take to answer (the server's request timeout).
    timeout: Duration,
    /// Calls running on the link, oldest first: the upstream request id and the stream of the
    /// client's request that caused it.
    calls: Mutex<Vec<(RequestId, mpsc::UnboundedSender<Value>)>>,
}

/// Removes a call from its link's running calls when it ends.
pub(super) struct Running {
    relay: Arc<Relay>,
    id: RequestId,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.relay.calls.lock() {
            calls.retain(|(id, _)| *id != self.id);
        }
    }
}

impl Relay {
    pub(super) fn new(
        server: &str,
        session: &Arc<Session>,
        who: Who,
        audit: Option<Arc<Audit>>,
        timeout: Duration,
    ) -> Relay {
        Relay {
            server: server.to_string(),
            session: Arc::downgrade(session),
            who,
            audit,
            timeout,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// What the link declares to the upstream: the client's own sampling and elicitation
    /// capabilities, nothing else.
    pub(super) fn capabilities(&self) -> ClientCapabilities {
        let declared = self
            .session
            .upgrade()
            .map(|s| s.client_capabilities.clone())
            .unwrap_or(Value::Null);
        let mut caps = serde_json::Map::new();
        for key in ["sampling", "elicitation"] {
            if let Some(v) = declared.get(key).filter(|v| v.is_object()) {
                caps.insert(key.to_string(), v.clone());
            }
        }
        serde_json::from_value(Value::Object(caps)).unwrap_or_default()
    }

    /// Note a call running on the link, until the returned guard drops.
    pub(super) fn running(
        self: &Arc<Self>,
        id: RequestId,
        sink: mpsc::UnboundedSender<Value>,
    ) -> Running {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((id.clone(), sink));
        }
        Running {
            relay: self.clone(),
            id,
        }
    }

    fn sink_for(&self, id: &RequestId) -> Option<mpsc::UnboundedSender<Value>> {
        let calls = self.calls.lock().ok()?;
        calls.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone())
    }

    fn latest_sink(&self) -> Option<mpsc::UnboundedSender<Value>> {
        let calls = self.calls.lock().ok()?;
        calls
            .iter()
            .rev()
            .find(|(_, s)| !s.is_closed())
            .map(|(_, s)| s.clone())
    }

    /// An upstream log message: to the session's latest running call on this link, else to its
    /// GET stream (dropped if it has none).
    pub(super) fn log(&self, params: Value) {
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

    /// Ask the client on the upstream's behalf and return its answer. `capability` is the
    /// client capability the request needs.
    pub(super) async fn ask(
        &self,
        method: &'static str,
        capability: &str,
        params: Value,
        origin: Option<&InboundStreamOrigin>,
    ) -> Result<Value, McpError> {
        let refuse = |code: ErrorCode, why: String| McpError::new(code, why, None);
        let Some(session) = self.session.upgrade() else {
            return Err(refuse(
                ErrorCode::INTERNAL_ERROR,
                "the client's session has ended".into(),
            ));
        };
        let mut e = Event::new("upstream.request");
        e.session = Some(session.id.clone());
        e.identity = Some(self.who.clone());
        e.server = Some(self.server.clone());
        e.method = Some(method.to_string());
        if session.client_capabilities.get(capability).is_none() {
            e.outcome = Some("refused");
            e.reason = Some(format!("the client did not declare `{capability}`"));
            self.note(e);
            return Err(refuse(
                ErrorCode::METHOD_NOT_FOUND,
                format!("the client does not support {capability}"),
            ));
        }
        let Some(mut waiting) = session.pending.register() else {
            e.outcome = Some("refused");
            e.reason = Some("too many requests already wait for the client".into());
            self.note(e);
            return Err(refuse(
                ErrorCode::INTERNAL_ERROR,
                "too many requests already wait for the client".into(),
            ));
        };
        // The stream of the call that caused the request; a request that arrived outside any
        // call goes on the session's GET stream.
        let sink = match origin {
            Some(InboundStreamOrigin::OutboundRequest(call)) => self.sink_for(call),
            _ => None,
        };
        e.outcome = Some("relayed");
        e.detail = Some(json!({
            "client_request_id": waiting.id,
            "stream": if sink.is_some() { "call" } else { "session" },
            "request_bytes": params.to_string().len(),
        }));
        if let Some(audit) = &self.audit
            && let Err(err) = audit.record(e).await
        {
            tracing::error!(server = %self.server, %method, error = %err, "audit log cannot record a request to the client; refused");
            crate::metrics::get().fail_closed("audit_unavailable");
            return Err(refuse(
                ErrorCode::INTERNAL_ERROR,
                "the gateway cannot record the request".into(),
            ));
        }
        let message =
            json!({ "jsonrpc": "2.0", "id": waiting.id, "method": method, "params": params });
        let sent = match &sink {
            Some(s) => s.send(message).is_ok(),
            None => session.events.send(message).is_ok(),
        };
        if !sent {
            return Err(refuse(
                ErrorCode::INTERNAL_ERROR,
                "the client has no open stream to take the request".into(),
            ));
        }
        let closed = async {
            match &sink {
                Some(s) => s.closed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut waiting.answer => match r {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(error)) => Err(client_error(&error)),
                Err(_) => Err(refuse(ErrorCode::INTERNAL_ERROR, "the client's session has ended".into())),
            },
            () = closed => Err(refuse(ErrorCode::INTERNAL_ERROR, "the client's request ended before it answered".into())),
            () = tokio::time::sleep(self.timeout) => Err(refuse(
                ErrorCode::INTERNAL_ERROR,
                format!("the client did not answer within {:?}", self.timeout),
            )),
        }
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_only_its_own_waiter_and_unknown_ids_are_dropped() {
        let pending = Pending::default();
        let a = pending.register().unwrap();
        let mut b = pending.register().unwrap();
        assert_ne!(a.id, b.id);
        assert!(!pending.answer(&json!("portcullis-99"), Ok(json!({}))));
        assert!(pending.answer(&b.id, Ok(json!({ "n": 2 }))));
        assert_eq!((&mut b.answer).await.unwrap().unwrap(), json!({ "n": 2 }));
        // An id is answered once.
        assert!(!pending.answer(&b.id, Ok(json!({}))));
        // A waiter that gave up leaves nothing behind.
        let gone = a.id.clone();
        drop(a);
        assert!(!pending.answer(&gone, Ok(json!({}))));
        drop(b);
        assert!(pending.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn a_session_may_not_have_unbounded_requests_waiting() {
        let pending = Pending::default();
        let held: Vec<_> = (0..MAX_PENDING)
            .map(|_| pending.register().unwrap())
            .collect();
        assert!(pending.register().is_none());
        drop(held);
        assert!(pending.register().is_some());
    }

    /// Fault injection: the only required audit sink (the store) loses its table. A request the
    /// upstream sends the client cannot be recorded, so the client is never asked.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_to_the_client_that_cannot_be_recorded_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::Store::open(&url).await.unwrap();
        let settings = registry::AuditSettings {
            sinks: vec![registry::AuditSink {
                kind: registry::SinkKind::Store,
                required: true,
            }],
            redact: Vec::new(),
            redact_key: None,
        };
        let audit = Arc::new(
            Audit::open(&settings, &store, "test", "sha256:t")
                .await
                .unwrap(),
        );
        let caller = crate::auth::Caller {
            subject: "key:alice".into(),
            identity: Arc::new(policy::Identity::new()),
            endpoint: None,
        };
        let sessions = crate::session::Sessions::new(Duration::from_secs(60));
        let session = sessions.create(
            &caller,
            crate::session::Scope::Federated,
            "2025-11-25".into(),
            json!({ "sampling": {} }),
        );
        let relay = Arc::new(Relay::new(
            "fx",
            &session,
            Who::of(&caller),
            Some(audit),
            Duration::from_secs(5),
        ));
        let (sink, mut client) = mpsc::unbounded_channel();
        let _running = relay.running(RequestId::Number(7), sink);
        let origin = InboundStreamOrigin::OutboundRequest(RequestId::Number(7));
        let params = json!({ "messages": [], "maxTokens": 1 });

        // Recorded: the request reaches the call's stream under the gateway's own id, and the
        // client's answer to that id comes back.
        let asking = relay.ask(
            "sampling/createMessage",
            "sampling",
            params.clone(),
            Some(&origin),
        );
        let answering = async {
            let sent = client.recv().await.unwrap();
            assert_eq!(sent["method"], "sampling/createMessage");
            assert!(
                session
                    .pending
                    .answer(&sent["id"], Ok(json!({ "ok": true })))
            );
        };
        let (answer, ()) = tokio::join!(asking, answering);
        assert_eq!(answer.unwrap(), json!({ "ok": true }));

        store.execute_for_test("DROP TABLE audit_events").await;
        let refused = relay
            .ask("sampling/createMessage", "sampling", params, Some(&origin))
            .await
            .unwrap_err();
        assert_eq!(refused.message, "the gateway cannot record the request");
        assert!(client.try_recv().is_err(), "the client was asked");
        assert!(session.pending.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn client_errors_keep_their_code_and_message() {
        let e = client_error(&json!({ "code": -1, "message": "User rejected sampling request" }));
        assert_eq!(e.code, ErrorCode(-1));
        assert_eq!(e.message, "User rejected sampling request");
        let e = client_error(&json!("nonsense"));
        assert_eq!(e.code, ErrorCode::INTERNAL_ERROR);
    }
}
