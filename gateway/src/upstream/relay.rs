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

use super::client::ClientSide;
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
    let mut caps = serde_json::Map::new();
    for key in ["sampling", "elicitation"] {
        if let Some(Value::Object(v)) = declared.get(key) {
            let mut v = v.clone();
            if key == "sampling" {
                v.remove("context");
            }
            caps.insert(key.to_string(), Value::Object(v));
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
        let call = match self.refusal(&session, method, capability, &params) {
            Some(refused) => Err(refused),
            None => match origin {
                Some(InboundStreamOrigin::OutboundRequest(id)) => self.call(id).await,
                _ => None,
            }
            .ok_or_else(|| {
                (
                    ErrorCode::INVALID_REQUEST,
                    "the request is tied to no running call whose client takes a stream".into(),
                )
            }),
        };
        let (sink, ended) = match call {
            Ok(found) => found,
            Err((code, why)) => {
                e.outcome = Some("refused");
                e.reason = Some(why.clone());
                self.note(e);
                tracing::info!(server = %self.server, session = %session.id, %method, reason = %why, "request to the client refused");
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
        let closed = |why: &str| ("closed", fail(ErrorCode::INTERNAL_ERROR, why.to_string()));
        let outcome: Result<Value, (&'static str, McpError)> = if sink.send(message).is_err() {
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
        };
        let mut done = self.event("upstream.answer", &session, method);
        done.detail = Some(json!({ "client_request_id": waiting.id }));
        match &outcome {
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
mod tests {
    use super::*;
    use crate::session::Session;
    use crate::upstream::client::{MAX_PENDING, Pending};

    /// The upstream asks the client `method` (`sampling/…` or `elicitation/…`, the capability
    /// being the part before `/`) on behalf of the call behind `origin`; it never withdraws.
    async fn ask(
        relay: &Relay,
        method: &'static str,
        params: Value,
        origin: &InboundStreamOrigin,
    ) -> Result<Value, McpError> {
        let capability = method.split('/').next().unwrap_or_default();
        relay
            .ask(
                method,
                capability,
                params,
                Some(origin),
                CancellationToken::new(),
            )
            .await
    }

    async fn sample(
        relay: &Relay,
        params: Value,
        origin: &InboundStreamOrigin,
    ) -> Result<Value, McpError> {
        ask(relay, "sampling/createMessage", params, origin).await
    }

    async fn elicit(
        relay: &Relay,
        params: Value,
        origin: &InboundStreamOrigin,
    ) -> Result<Value, McpError> {
        ask(relay, "elicitation/create", params, origin).await
    }

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

    /// A store, levers read once, a caller and a session that declared `capabilities`.
    struct Setup {
        _dir: tempfile::TempDir,
        store: store::Store,
        levers: Arc<Levers>,
        caller: crate::auth::Caller,
        session: Arc<Session>,
    }

    async fn setup(capabilities: Value) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = store::Store::open(&url).await.unwrap();
        let settings = registry::load_str("t.yaml", "servers: {}\n")
            .unwrap()
            .settings;
        let levers = Arc::new(Levers::new(store.clone(), &settings));
        levers.refresh().await.unwrap();
        let caller = crate::auth::Caller {
            subject: "key:alice".into(),
            identity: Arc::new(policy::Identity::new()),
            endpoint: None,
        };
        let session = crate::session::Sessions::new(Duration::from_secs(60)).create(
            &caller,
            crate::session::Scope::Federated,
            "2025-11-25".into(),
            capabilities,
        );
        Setup {
            _dir: dir,
            store,
            levers,
            caller,
            session,
        }
    }

    /// Fault injection: the only required audit sink (the store) loses its table. A request the
    /// upstream sends the client cannot be recorded, so the client is never asked.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_to_the_client_that_cannot_be_recorded_is_refused() {
        let Setup {
            _dir,
            store,
            levers,
            caller,
            session,
        } = setup(json!({ "sampling": {} })).await;
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
        let stop = CancellationToken::new();
        let relay = Arc::new(Relay::new(
            "fx",
            &session.client,
            Owner {
                who: crate::auth::who(&caller),
                identity: caller.identity.clone(),
                levers: levers.clone(),
            },
            Some(audit),
            Duration::from_secs(5),
            stop.clone(),
        ));
        let (sink, mut client) = mpsc::unbounded_channel();
        let _running = relay.running(RequestId::Number(7), sink);
        let origin = InboundStreamOrigin::OutboundRequest(RequestId::Number(7));
        let params = json!({ "messages": [], "maxTokens": 1 });

        // Recorded: the request reaches the call's stream under the gateway's own id, and the
        // client's answer to that id comes back.
        let asking = sample(&relay, params.clone(), &origin);
        let answering = async {
            let sent = client.recv().await.unwrap();
            assert_eq!(sent["method"], "sampling/createMessage");
            assert!(
                session
                    .client
                    .pending
                    .answer(&sent["id"], Ok(json!({ "ok": true })))
            );
        };
        let (answer, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(asking, answering)
        })
        .await
        .expect("the relayed request was not answered");
        assert_eq!(answer.unwrap(), json!({ "ok": true }));

        // The server's kill switch: the client is not asked.
        store
            .set_switch("server", "fx", true, "test", "operator:test")
            .await
            .unwrap();
        levers.refresh().await.unwrap();
        let killed = sample(&relay, params.clone(), &origin).await.unwrap_err();
        assert!(killed.message.contains("kill switch"), "{}", killed.message);
        assert!(client.try_recv().is_err(), "the client was asked");
        store
            .set_switch("server", "fx", false, "test", "operator:test")
            .await
            .unwrap();
        levers.refresh().await.unwrap();

        store
            .execute_for_test("DROP TABLE audit_events")
            .await
            .unwrap();
        let refused = sample(&relay, params, &origin).await.unwrap_err();
        assert_eq!(refused.message, "the gateway cannot record the request");
        assert!(client.try_recv().is_err(), "the client was asked");
        assert!(session.client.pending.waiting.lock().unwrap().is_empty());

        // A request tied to no running call, or arriving once the server is stopped, is refused.
        let unassociated = sample(&relay, json!({}), &InboundStreamOrigin::Unassociated)
            .await
            .unwrap_err();
        assert!(
            unassociated.message.contains("no running call"),
            "{}",
            unassociated.message
        );
        stop.cancel();
        let stopped = sample(&relay, json!({}), &origin).await.unwrap_err();
        assert!(stopped.message.contains("closing"), "{}", stopped.message);
        assert!(client.try_recv().is_err(), "the client was asked");
    }

    /// A request the upstream withdraws stops waiting, and the client is told with
    /// `notifications/cancelled` for the gateway's id; the call ending stops it too.
    #[tokio::test]
    async fn a_withdrawn_request_is_cancelled_at_the_client() {
        let Setup {
            _dir,
            levers,
            caller,
            session,
            ..
        } = setup(json!({ "elicitation": {} })).await;
        let relay = Arc::new(Relay::new(
            "fx",
            &session.client,
            Owner {
                who: crate::auth::who(&caller),
                identity: caller.identity.clone(),
                levers,
            },
            None,
            Duration::from_secs(30),
            CancellationToken::new(),
        ));
        let (sink, mut client) = mpsc::unbounded_channel();
        let running = relay.running(RequestId::Number(1), sink);
        let origin = InboundStreamOrigin::OutboundRequest(RequestId::Number(1));
        let withdrawn = CancellationToken::new();
        let params = json!({ "message": "name?", "requestedSchema": { "type": "object", "properties": {} } });
        let asking = relay.ask(
            "elicitation/create",
            "elicitation",
            params.clone(),
            Some(&origin),
            withdrawn.clone(),
        );
        let withdrawing = async {
            let sent = client.recv().await.unwrap();
            withdrawn.cancel();
            sent["id"].clone()
        };
        let (r, id) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(asking, withdrawing)
        })
        .await
        .unwrap();
        assert!(r.unwrap_err().message.contains("withdrew"));
        let note = client.recv().await.unwrap();
        assert_eq!(note["method"], "notifications/cancelled");
        assert_eq!(note["params"]["requestId"], id);

        // URL-mode elicitation needs `elicitation.url`.
        let url_mode =
            json!({ "mode": "url", "message": "go", "url": "https://x", "elicitationId": "e" });
        let refused = elicit(&relay, url_mode, &origin).await.unwrap_err();
        assert!(refused.message.contains("URL-mode"), "{}", refused.message);

        // The call ends while the client has not answered: the wait ends with it.
        let asking = elicit(&relay, params, &origin);
        let ending = async {
            client.recv().await.unwrap();
            drop(running);
        };
        let (r, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(asking, ending)
        })
        .await
        .unwrap();
        assert!(
            r.unwrap_err()
                .message
                .contains("call that caused the request ended")
        );
    }

    #[test]
    fn sampling_context_is_never_declared_to_an_upstream() {
        let caps = relayable(&json!({
            "sampling": { "context": {}, "tools": {} },
            "elicitation": { "form": {} },
            "roots": { "listChanged": true },
            "experimental": {}
        }));
        assert_eq!(
            Value::Object(caps),
            json!({ "sampling": { "tools": {} }, "elicitation": { "form": {} } })
        );
        assert!(relayable(&json!({ "sampling": null, "elicitation": true })).is_empty());
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
