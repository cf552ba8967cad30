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
        token: None,
    };
    let session = crate::session::Sessions::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        crate::session::seal::Sealer::ephemeral().unwrap(),
    )
    .create(
        &caller,
        crate::session::Scope::Federated,
        "2025-11-25".into(),
        capabilities,
    )
    .unwrap();
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
        retention: None,
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
    let params =
        json!({ "message": "name?", "requestedSchema": { "type": "object", "properties": {} } });
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
