//! A session's resource subscriptions follow it to the replica that holds its stream: a client
//! may subscribe through one replica while its GET stream, where updates arrive, is on another.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::call::{Call, Era};
use crate::gateway::Gateway;
use crate::session::{Session, stored_name};

/// How often an open stream compares its session's subscriptions with the store's record.
const EVERY: Duration = Duration::from_secs(5);

/// Until `done` (the stream closed): take up the subscriptions the session made through other
/// replicas, and drop those it ended there. Each runs through the pipeline as the client's own
/// `resources/(un)subscribe` would (decided under the grants in force, recorded, forwarded), so
/// this replica's upstream connection sends the updates to this stream.
pub(super) async fn subscriptions(
    gw: Arc<Gateway>,
    caller: Caller,
    session: Arc<Session>,
    done: CancellationToken,
) {
    let name = stored_name(&session.id);
    // What the store held at the last pass: only a subscription seen there and gone since was
    // ended elsewhere (one made here may not be stored yet). Refused ones are not retried while
    // they stay stored.
    let mut before: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    loop {
        let local: BTreeSet<String> = session
            .subscriptions
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if let Ok(stored) = gw.store.subscriptions(&name).await {
            let stored: BTreeSet<String> = stored.into_iter().collect();
            refused.retain(|uri| stored.contains(uri));
            for uri in stored.difference(&local) {
                if !refused.contains(uri)
                    && !ask(&gw, &caller, &session, "resources/subscribe", uri).await
                {
                    refused.insert(uri.clone());
                }
            }
            for uri in local.intersection(&before) {
                if !stored.contains(uri) {
                    ask(&gw, &caller, &session, "resources/unsubscribe", uri).await;
                }
            }
            before = stored;
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = done.cancelled() => return,
        }
    }
}

/// Run `method` for `uri` as the session's own request; whether it went through.
async fn ask(
    gw: &Gateway,
    caller: &Caller,
    session: &Arc<Session>,
    method: &str,
    uri: &str,
) -> bool {
    let call = Call {
        caller: caller.clone(),
        scope: session.scope.clone(),
        era: Era::Stateful(session.clone()),
        request_id: super::request_id(),
        trace_id: None,
        parent: opentelemetry::Context::new(),
        param_headers: Vec::new(),
        streams: false,
    };
    let (sink, _) = mpsc::unbounded_channel();
    let params = Some(json!({ "uri": uri }));
    match crate::call::ask(gw, &call, method, params, &sink).await {
        Ok(_) => true,
        Err(refused) => {
            tracing::info!(session = %audit::session_ref(&session.id), %uri, %method, reason = refused.face().outcome, "a subscription made through another replica was not followed");
            false
        }
    }
}
