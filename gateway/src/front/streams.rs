//! The long-lived streams: 2026-07-28 `subscriptions/listen`, the stateful GET stream, and
//! DELETE of a session.

use super::*;

/// 2026-07-28 `subscriptions/listen`: acknowledge, then relay list changes for this scope and
/// the changes of the caller's tasks it names (`tasks/watch.rs`).
pub(super) async fn listen(
    gw: Arc<Gateway>,
    call: Call,
    id: Value,
    params: Option<Value>,
) -> Response {
    let wanted = params
        .as_ref()
        .and_then(|p| p.get("notifications"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let want = |k: &str| wanted.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut honoured = json!({
        "toolsListChanged": want("toolsListChanged"),
        "promptsListChanged": want("promptsListChanged"),
        "resourcesListChanged": want("resourcesListChanged"),
    });
    let tasks = match wanted.get("taskIds") {
        None => Vec::new(),
        Some(_) if crate::call::tasks::flavor(&call, params.as_ref()).is_none() => {
            let refused = crate::refusal::Refusal::TasksUndeclared;
            let status = refused.face().status;
            let e = match refused.answer() {
                Err(e) => e,
                Ok(_) => RpcError::new(jsonrpc::INVALID_PARAMS, "tasks need the extension"),
            };
            return rpc_error(status, Some(&id), &e);
        }
        Some(_) => crate::call::tasks::watch::wanted(&gw, &call, params.as_ref()).await,
    };
    if let Some(o) = honoured.as_object_mut()
        && wanted.get("taskIds").is_some()
    {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        o.insert("taskIds".into(), json!(ids));
    }
    let sub_meta = json!({ "io.modelcontextprotocol/subscriptionId": id });
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        json!({ "notifications": honoured, "_meta": sub_meta }),
    );
    let rx = gw.upstreams().events.subscribe();
    let scope = call.scope.clone();
    let caller = call.caller.clone();
    let filter = honoured.clone();
    let followed = crate::call::tasks::watch::follow(gw.clone(), call, tasks, sub_meta.clone());
    let events = tokio_stream_from_broadcast(rx).filter_map(move |ev| {
        let visible = |server: &str| crate::authorize::may_browse(&gw, &caller, server);
        let out =
            crate::dispatch::event_notification(&ev, &scope, visible).and_then(|(kind, method)| {
                filter.get(kind).and_then(Value::as_bool).filter(|b| *b)?;
                Some(jsonrpc::notification(
                    method,
                    json!({ "_meta": sub_meta.clone() }),
                ))
            });
        futures::future::ready(out)
    });
    let events = futures::stream::select(events, followed);
    let stream = futures::stream::iter([ack])
        .chain(events)
        .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn tokio_stream_from_broadcast<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// GET: the stateful session's server-to-client stream (list changes); 405 otherwise.
pub(super) async fn stream(
    gw: Arc<Gateway>,
    server: Option<String>,
    headers: HeaderMap,
) -> Response {
    let admitted = match admit(&gw, server, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(sid) = header_str(&headers, "mcp-session-id") else {
        let mut r = plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "no standalone stream without a session",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    };
    let Some(session) = gw
        .sessions
        .find(&gw.store, sid, &admitted.caller, &admitted.scope)
        .await
    else {
        return plain_error(StatusCode::NOT_FOUND, "session not found");
    };
    let last = header_str(&headers, "last-event-id");
    let resumed_standalone = last.and_then(|l| session.replay.on_standalone(l));
    // Resuming an answer's stream: what it missed on that stream, then the rest.
    if resumed_standalone.is_none()
        && let Some(resumed) = last.and_then(|l| session.replay.resume(l))
    {
        let events = resumed.map(super::answer::sent);
        return Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
    }
    let Some(crate::session::replay::Standalone {
        stream: log,
        opened,
        reader,
        seen,
    }) = session.replay.standalone(last)
    else {
        return plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the stream cannot be opened now",
        );
    };
    if opened {
        // Written until the session ends here, or no GET has read it for a while, so a client
        // that reconnects misses nothing.
        let messages = standalone(&gw, &session);
        let writer = session.clone();
        tokio::spawn(async move {
            let mut messages = std::pin::pin!(messages);
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    m = messages.next() => match m {
                        Some((v, tag)) => writer.replay.push_tagged(log, v.to_string(), tag),
                        None => break,
                    },
                    _ = tick.tick() => {
                        if writer.replay.let_go_if_unread(crate::session::replay::UNREAD_FOR) {
                            break;
                        }
                    }
                }
            }
        });
    }
    // While the stream is open, subscriptions made through other replicas are taken up here.
    let following = tokio_util::sync::CancellationToken::new();
    tokio::spawn(super::follow::subscriptions(
        gw.clone(),
        admitted.caller.clone(),
        session.clone(),
        following.clone(),
    ));
    let until_closed = following.drop_guard();
    // The stream ends with the session here: released when idle, ended by its client or
    // elsewhere. A later request takes the session up afresh, and the client opens a new one.
    let ended = session.client.clone();
    // Each GET sees the list changes of the servers its own caller may browse.
    let (seer, caller) = (gw.clone(), admitted.caller.clone());
    let events = session
        .replay
        .follow_tagged(log, seen)
        .filter(move |(_, server)| {
            let shown = server
                .as_deref()
                .is_none_or(|s| crate::authorize::may_browse(&seer, &caller, s));
            futures::future::ready(shown)
        })
        .take_until(async move { ended.links.ended().await })
        .map(move |(sent, _)| {
            let (_open, _reading) = (&until_closed, &reader);
            super::answer::sent(sent)
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What the session's standalone GET stream carries, until the session ends here: list
/// changes of the servers on its endpoint, each with its server (every GET shows only those its
/// own caller may browse), updates of the resources it subscribed to, and what its per-session
/// upstream connections send it outside any call.
fn standalone(
    gw: &Arc<Gateway>,
    session: &Arc<crate::session::Session>,
) -> impl futures::Stream<Item = (Value, Option<Arc<str>>)> + Send + 'static {
    let scope = session.scope.clone();
    let subscriber = session.clone();
    let upstream =
        tokio_stream_from_broadcast(gw.upstreams().events.subscribe()).filter_map(move |ev| {
            let out = match &ev {
                UpstreamEvent::Updated(server, uri) => {
                    let shown = match &scope {
                        Scope::Federated => format!("{server}+{uri}"),
                        Scope::Server(s) if s == server => uri.clone(),
                        Scope::Server(_) => String::new(),
                    };
                    let subscribed = subscriber
                        .subscriptions
                        .lock()
                        .is_ok_and(|s| s.contains(&shown));
                    subscribed.then(|| {
                        let n = jsonrpc::notification(
                            "notifications/resources/updated",
                            json!({ "uri": shown }),
                        );
                        (n, None)
                    })
                }
                UpstreamEvent::Tools(server)
                | UpstreamEvent::Resources(server)
                | UpstreamEvent::Prompts(server) => {
                    crate::dispatch::event_notification(&ev, &scope, |_| true).map(|(_, method)| {
                        let n = jsonrpc::notification(method, json!({}));
                        (n, Some(Arc::from(server.as_str())))
                    })
                }
            };
            futures::future::ready(out)
        });
    let own = tokio_stream_from_broadcast(session.client.events.subscribe()).map(|v| (v, None));
    let ended = session.client.clone();
    futures::stream::select(upstream, own).take_until(async move { ended.links.ended().await })
}

pub(super) async fn delete(
    gw: Arc<Gateway>,
    server: Option<String>,
    headers: HeaderMap,
) -> Response {
    let admitted = match admit(&gw, server, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(sid) = header_str(&headers, "mcp-session-id") else {
        return plain_error(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id");
    };
    let Some(session) = gw
        .sessions
        .find(&gw.store, sid, &admitted.caller, &admitted.scope)
        .await
    else {
        return plain_error(StatusCode::NOT_FOUND, "session not found");
    };
    // Recorded first, so no replica takes the id up again once the client is told it ended.
    let stored = crate::session::stored_name(sid);
    if let Err(e) = gw.store.end_session(&stored, session.expires_ms).await {
        tracing::error!(error = %e, "cannot record the end of a session");
        return plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session could not be ended now; try again",
        );
    }
    if gw.sessions.remove(sid, &admitted.caller, &admitted.scope) {
        tracing::info!(session = %audit::session_ref(sid), "session ended by client");
        let mut e = AuditEvent::new("session.end");
        e.session = Some(sid.to_string());
        e.identity = Some(crate::auth::who(&admitted.caller));
        e.reason = Some("ended by the client".into());
        gw.audit.note(e);
        StatusCode::NO_CONTENT.into_response()
    } else {
        plain_error(StatusCode::NOT_FOUND, "session not found")
    }
}
