//! Step 9, forward: the upstream is asked, on the session's own connection where the server
//! has them, with the call's minted credential (step 8) where there is one.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::ask::Ask;
use super::{Call, Era, Running, ToolCall, Trail};
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::upstream::{On, Terms, Upstream, UpstreamError};

type Sink = mpsc::UnboundedSender<Value>;

/// The session a forwarded request belongs to, for servers with per-session connections;
/// `sink` is the request's response stream, passed on only if the client takes a stream.
pub(crate) fn on<'a>(gw: &'a Gateway, call: &'a Call, sink: Option<&'a Sink>) -> Option<On<'a>> {
    match &call.era {
        Era::Stateful(session) => Some(On {
            session: &session.client,
            caller: &call.caller,
            sink: sink.filter(|_| call.streams),
            levers: &gw.levers,
        }),
        Era::Stateless => None,
    }
}

/// A tool call. A call cancelled while it was decided is not sent; one that fails while a
/// kill switch covering it is engaged is answered as killed.
pub(super) async fn tool(
    gw: &Gateway,
    call: &Call,
    req: ToolCall,
    running: Running<'_>,
    token: Option<Arc<str>>,
    sink: &Sink,
    trail: &mut Trail,
) -> Result<Value, Refusal> {
    let ToolCall {
        name,
        up,
        offered,
        fwd,
        progress,
        deadline,
        ..
    } = req;
    if running.cancel().is_cancelled() {
        return Err(Refusal::Cancelled {
            name,
            approval: None,
        });
    }
    trail.arguments = None;
    trail.started = Some(Instant::now());
    let cancel = running.cancel().clone();
    let progress = progress.map(|t| (t, sink.clone()));
    let params = Some(Value::Object(fwd));
    let on = on(gw, call, Some(sink));
    let r = up
        .request_as(
            "tools/call",
            params,
            progress,
            Some(cancel),
            on,
            Terms {
                credential: token,
                deadline,
            },
        )
        .await;
    drop(running);
    trail.permits.clear();
    let tool = offered.tool.name.as_ref();
    if r.is_err()
        && let Some(killed) = gw.levers.killed(&call.caller.identity, up.name(), tool)
    {
        tracing::warn!(subject = %call.caller.subject, server = up.name(), tool, reason = %killed, "tool call cancelled: killed");
        return Err(Refusal::Killed { what: name, killed });
    }
    r.map_err(Refusal::from)
}

/// A resource read, prompt or completion; subscriptions go through [`subscription`].
pub(super) async fn ask(
    gw: &Gateway,
    call: &Call,
    ask: &Ask,
    token: Option<Arc<str>>,
    sink: &Sink,
) -> Result<Value, UpstreamError> {
    let params = Some(Value::Object(ask.fwd.clone()));
    match ask.method.as_str() {
        "resources/subscribe" | "resources/unsubscribe" => subscription(gw, call, ask, token).await,
        m => {
            let on = on(gw, call, Some(sink));
            let terms = Terms {
                credential: token,
                deadline: ask.deadline,
            };
            ask.up.request_as(m, params, None, None, on, terms).await
        }
    }
}

/// `resources/(un)subscribe`. The upstream subscription is shared by every session on the
/// connection: it ends only when no other session still holds it.
async fn subscription(
    gw: &Gateway,
    call: &Call,
    ask: &Ask,
    token: Option<Arc<str>>,
) -> Result<Value, UpstreamError> {
    let subscribe = ask.method == "resources/subscribe";
    if !subscribe && let Era::Stateful(session) = &call.era {
        let stored = crate::session::stored_name(&session.id);
        if let Err(e) = gw.store.remove_subscription(&stored, &ask.shown).await {
            tracing::warn!(error = %e, "cannot record an unsubscription for other replicas");
        }
        let held = session
            .subscriptions
            .lock()
            .is_ok_and(|mut subs| subs.remove(&ask.shown));
        if !held
            || gw
                .sessions
                .subscribed_elsewhere(ask.up.name(), &ask.inner, &session.id)
        {
            return Ok(json!({}));
        }
    }
    let params = Some(Value::Object(ask.fwd.clone()));
    ask.up
        .request_as(&ask.method, params, None, None, None, Terms::minted(token))
        .await?;
    if subscribe && let Era::Stateful(session) = &call.era {
        if let Ok(mut subs) = session.subscriptions.lock() {
            subs.insert(ask.shown.clone());
        }
        // For the replica that holds the session's stream, should that be another one.
        let stored = crate::session::stored_name(&session.id);
        let kept = gw
            .store
            .add_subscription(&stored, &ask.shown, session.expires_ms)
            .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "cannot record a subscription for other replicas");
        }
    }
    Ok(json!({}))
}

/// `logging/setLevel` to each target: a per-session server on the session's own connection,
/// a shared connection only to make it more verbose (one session never quiets it for others).
pub(super) async fn set_level(gw: &Gateway, call: &Call, level: &str, ups: Vec<Arc<Upstream>>) {
    let mut targets = Vec::new();
    for up in ups {
        match up.config().connection {
            registry::Connection::PerSession => match &call.era {
                Era::Stateful(session) if up.linked(&session.client) => targets.push((up, true)),
                _ => continue,
            },
            registry::Connection::Shared if up.raise_shared_level(level) => {
                targets.push((up, false));
            }
            registry::Connection::Shared => continue,
        }
    }
    for (up, own) in targets {
        let on = if own { on(gw, call, None) } else { None };
        let params = Some(json!({ "level": level }));
        if let Err(e) = up.request("logging/setLevel", params, None, None, on).await {
            tracing::warn!(server = %up.name(), error = %e, "logging/setLevel not relayed");
        }
    }
}
