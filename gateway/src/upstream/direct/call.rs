//! The call's side of the lean leg: what a request takes from the server's config (its
//! deadlines, the tool's `Mcp-Param-*` declarations), the progress route it holds while it runs,
//! and how a failure becomes the [`UpstreamError`] the pipeline refuses with.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::super::{Bounds, Connection, Outgoing, ProgressRoutes, Upstream, UpstreamError, scrub};
use super::{CLIENT_CAPABILITIES, Direct, Failure, Request};

/// A progress route of the connection, for as long as its call runs.
struct Route<'a> {
    routes: &'a ProgressRoutes,
    key: Value,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.routes.remove(&self.key);
    }
}

impl Upstream {
    /// Send `r` on the lean leg, with the server's deadlines.
    pub(in crate::upstream) async fn send_direct(
        &self,
        direct: &Direct,
        conn: &Connection,
        r: Outgoing<'_>,
        cancel: &CancellationToken,
        bounds: &Bounds,
    ) -> Result<Value, UpstreamError> {
        let name = &self.name;
        let params = r.params.unwrap_or_else(|| Value::Object(Map::new()));
        let param_headers = match r.method {
            "tools/call" => {
                let tool = params.get("name").and_then(Value::as_str);
                let tools = self.tools();
                let offered = tool.and_then(|t| tools.named(t));
                match (offered, params.get("arguments")) {
                    (Some(o), Some(arguments)) => o.param_headers.emit(arguments),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let capabilities = r
            .declared
            .and_then(|m| m.0.0.get(CLIENT_CAPABILITIES).cloned());
        let max_timeout = match r.progress.is_some() {
            true => bounds.max_timeout.max(bounds.timeout),
            false => bounds.timeout,
        };
        let request = Request {
            id: None,
            method: r.method,
            params,
            capabilities,
            credential: r.credential,
            progress: r.progress,
            param_headers,
            cancel: cancel.clone(),
            timeout: bounds.timeout,
            max_timeout,
            max_response: bounds.max_response,
            max_depth: bounds.max_depth,
            wake: Arc::default(),
        };
        let secrets = self.sent_secrets();
        // Progress the upstream sends elsewhere than the call's stream (the session's GET
        // stream) reaches the caller through the connection's routes, and extends the deadline.
        let id = direct.next.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id: Some(id),
            ..request
        };
        // Removed however the call ends, its future dropped included.
        let _route = request.progress.as_ref().map(|(token, sink)| {
            let key = Value::from(id);
            conn.progress.insert_waking(
                key.clone(),
                token.clone(),
                sink.clone(),
                Some(request.wake.clone()),
            );
            Route {
                routes: &conn.progress,
                key,
            }
        });
        match direct.send(request, name, &secrets).await {
            Ok(v) => Ok(v),
            Err(Failure::Rpc(mut error)) => {
                scrub::scrub(&mut error, name, &secrets);
                Err(UpstreamError::Rpc {
                    server: name.clone(),
                    error,
                })
            }
            Err(Failure::Timeout(d)) => Err(UpstreamError::Timeout(name.clone(), d)),
            Err(Failure::Cancelled) => Err(UpstreamError::Cancelled(name.clone())),
            Err(Failure::Transport(why)) => {
                tracing::warn!(server = %name, endpoint = conn.endpoint, error = %why, "upstream request failed");
                // As on rmcp's leg: a failed request has the supervisor check the connection.
                if let Some(ep) = self.endpoint_of(conn) {
                    ep.reconnect.notify_one();
                }
                Err(UpstreamError::Transport(name.clone()))
            }
            Err(Failure::Unreached(why)) => {
                tracing::warn!(server = %name, endpoint = conn.endpoint, error = %why, "upstream endpoint could not be reached");
                if let Some(ep) = self.endpoint_of(conn) {
                    ep.reconnect.notify_one();
                }
                Err(UpstreamError::Unreached(name.clone()))
            }
            Err(Failure::Status(code)) => {
                tracing::warn!(server = %name, endpoint = conn.endpoint, status = code, "upstream answered with an HTTP error");
                Err(UpstreamError::Status(name.clone(), code))
            }
            Err(Failure::SessionExpired) => {
                // Only if the connection is still the server's: one already replaced (its
                // session lost before this request's answer came) is left alone, and so is
                // its successor.
                let current = self
                    .endpoint_of(conn)
                    .and_then(super::super::Endpoint::connection)
                    .is_some_and(|c| Arc::ptr_eq(&c._service, &conn._service));
                if current {
                    self.forgot_session(conn);
                }
                Err(UpstreamError::Transport(name.clone()))
            }
            Err(Failure::Exceeded(why)) => {
                tracing::warn!(server = %name, error = %why, "upstream answer past its bounds; its connection is released");
                Err(UpstreamError::Exceeded(name.clone(), why))
            }
            Err(Failure::Unreadable(why)) => {
                tracing::warn!(server = %name, error = %why, "upstream answer not readable");
                Err(UpstreamError::Unreadable(name.clone()))
            }
        }
    }
}
