//! The upstream leg through rmcp's client (its peer, service loop and transport worker): for
//! the `initialize` era, stdio and in-process upstreams, per-session connections, and the
//! requests the lean leg ([`super::direct`]) does not take.

use std::sync::Arc;

use rmcp::model::{ClientRequest, GetExtensions as _};
use rmcp::service::PeerRequestOptions;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::relay::Relay;
use super::{
    Bounds, Connection, On, Outgoing, Upstream, UpstreamError, http, result_value, session_expired,
};

impl Upstream {
    /// Send a request through rmcp's client: its service loop and transport.
    pub(super) async fn send_rmcp(
        &self,
        conn: &Connection,
        relay: Option<Arc<Relay>>,
        on: Option<On<'_>>,
        r: Outgoing<'_>,
        cancel: &CancellationToken,
        bounds: &Bounds,
    ) -> Result<Value, UpstreamError> {
        let name = &self.name;
        let Outgoing {
            method,
            params,
            declared,
            credential,
            progress,
        } = r;
        let mut msg = serde_json::Map::new();
        msg.insert("method".into(), Value::String(method.to_string()));
        if let Some(p) = params {
            msg.insert("params".into(), p);
        }
        let mut request: ClientRequest = serde_json::from_value(Value::Object(msg))
            .map_err(|_| UpstreamError::Unreadable(name.clone()))?;
        if let Some(token) = credential {
            request.extensions_mut().insert(http::CallCredential(token));
        }
        // `timeout` bounds the call; progress the caller asked for may extend it, never past
        // `max_timeout` (which is `timeout` unless the operator sets it higher).
        let mut options = PeerRequestOptions::with_timeout(bounds.timeout)
            .with_max_total_timeout(bounds.max_timeout);
        if progress.is_some() && bounds.max_timeout > bounds.timeout {
            options = options.reset_timeout_on_progress();
        }
        options.meta = declared;
        let handle = conn
            .peer
            .send_cancellable_request(request, options)
            .await
            .map_err(|e| self.map_error(e, conn))?;
        let route = progress.map(|(token, sink)| {
            let key = serde_json::to_value(&handle.progress_token).unwrap_or(Value::Null);
            conn.progress.insert(key.clone(), token, sink);
            key
        });
        // What the upstream sends on this request's stream goes to the caller's stream.
        let _running = relay
            .zip(on.and_then(|o| o.sink))
            .map(|(r, sink)| r.running(handle.id.clone(), sink.clone()));
        let id = handle.id.clone();
        let peer = conn.peer.clone();
        let outcome = tokio::select! {
            r = handle.await_response() => r.map_err(|e| {
                if session_expired(&e) {
                    self.forgot_session(conn);
                }
                self.map_error(e, conn)
            }),
            () = cancel.cancelled() => {
                let note = rmcp::model::CancelledNotificationParam::new(Some(id), Some("cancelled by client".into()));
                let _ = peer.notify_cancelled(note).await;
                Err(UpstreamError::Cancelled(name.clone()))
            }
        };
        if let Some(key) = route {
            conn.progress.remove(&key);
        }
        let result = outcome?;
        let value = result_value(&result).ok_or_else(|| UpstreamError::Unreadable(name.clone()))?;
        // rmcp has read the answer whole; its nesting is checked here.
        if registry::nesting(&value) > bounds.max_depth {
            return Err(UpstreamError::Exceeded(
                name.clone(),
                format!("an answer nested deeper than {}", bounds.max_depth),
            ));
        }
        Ok(value)
    }
}
