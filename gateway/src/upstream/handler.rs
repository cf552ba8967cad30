//! The gateway's side of each upstream connection: what it does with what upstreams send.
//!
//! Progress is remapped from the token rmcp chose to the downstream caller's own token and sent
//! only to that caller; each connection has its own routes, so one upstream's tokens never reach
//! another upstream's callers. List changes become [`UpstreamEvent`]s. Server-to-client requests
//! (sampling, elicitation, roots) are refused and log messages dropped on shared connections:
//! the gateway does not act as a model or a user on anyone's behalf. On a connection bound to a
//! client session ([`super::relay`]) log messages, sampling and elicitation go to that client.

use std::collections::HashMap;
use std::sync::Mutex;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, Implementation,
    ProgressNotificationParam, ProtocolVersion, ResourceUpdatedNotificationParam,
};
#[expect(
    deprecated,
    reason = "sampling and logging are deprecated by SEP-2577 but are part of the revisions the gateway serves"
)]
use rmcp::model::{
    CreateMessageRequestParams, CreateMessageResult, LoggingMessageNotificationParam,
};
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::jsonrpc;

/// Something an upstream announced that sessions may need to relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamEvent {
    /// The allowlisted tool list of this server was refreshed.
    Tools(String),
    /// The server's resource list changed.
    Resources(String),
    /// The server's prompt list changed.
    Prompts(String),
    /// A resource the gateway subscribed to changed: (server, upstream URI).
    Updated(String, String),
}

/// Where progress for an upstream token goes: the caller's own token and its response stream,
/// and what to wake when it comes (the lean leg extends its deadline on progress).
#[derive(Debug, Default)]
pub(crate) struct ProgressRoutes {
    routes: Mutex<HashMap<String, Route>>,
}

type Route = (
    Value,
    mpsc::UnboundedSender<Value>,
    Option<std::sync::Arc<tokio::sync::Notify>>,
);

impl ProgressRoutes {
    pub(crate) fn insert(
        &self,
        upstream: Value,
        downstream: Value,
        sink: mpsc::UnboundedSender<Value>,
    ) {
        self.insert_waking(upstream, downstream, sink, None);
    }

    /// [`ProgressRoutes::insert`], waking `wake` at each progress.
    pub(crate) fn insert_waking(
        &self,
        upstream: Value,
        downstream: Value,
        sink: mpsc::UnboundedSender<Value>,
        wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    ) {
        if let Ok(mut r) = self.routes.lock() {
            r.insert(upstream.to_string(), (downstream, sink, wake));
        }
    }

    pub(crate) fn remove(&self, upstream: &Value) {
        if let Ok(mut r) = self.routes.lock() {
            r.remove(&upstream.to_string());
        }
    }

    pub(super) fn forward(&self, p: &ProgressNotificationParam, server: &str, secrets: &[String]) {
        let Ok(key) = serde_json::to_value(&p.progress_token) else {
            return;
        };
        let Ok(routes) = self.routes.lock() else {
            return;
        };
        let Some((token, sink, wake)) = routes.get(&key.to_string()) else {
            return;
        };
        relay_progress(p, token, sink, server, secrets);
        if let Some(w) = wake {
            w.notify_one();
        }
    }
}

/// Send upstream progress `p` to the caller as progress on the caller's own `token`, scrubbed.
pub(super) fn relay_progress(
    p: &ProgressNotificationParam,
    token: &Value,
    sink: &mpsc::UnboundedSender<Value>,
    server: &str,
    secrets: &[String],
) {
    let mut params = json!({ "progressToken": token, "progress": p.progress });
    if let (Some(total), Some(obj)) = (p.total, params.as_object_mut()) {
        obj.insert("total".into(), json!(total));
    }
    if let (Some(msg), Some(obj)) = (&p.message, params.as_object_mut()) {
        obj.insert("message".into(), json!(msg));
    }
    super::scrub::scrub(&mut params, server, secrets);
    let _ = sink.send(jsonrpc::notification("notifications/progress", params));
}

/// The rmcp client handler for one upstream.
#[derive(Clone)]
pub(crate) struct UpstreamHandler {
    pub(crate) server: String,
    pub(crate) progress: std::sync::Arc<ProgressRoutes>,
    pub(crate) events: broadcast::Sender<UpstreamEvent>,
    /// Tells the supervisor to refetch the tool list.
    pub(crate) refresh: mpsc::UnboundedSender<()>,
    /// The client session a per-session connection belongs to; `None` on a shared one.
    pub(crate) relay: Option<std::sync::Arc<super::relay::Relay>>,
    /// The secrets the gateway sent this upstream: never relayed to a client.
    pub(crate) secrets: super::scrub::Sent,
    /// Declare every client capability an upstream may gate tools on (sampling, elicitation,
    /// roots): `portcullis pin` lists what any client could be offered. Sampling and
    /// elicitation requests that follow are refused, as on any connection without a client
    /// behind it, and `roots/list` is answered with no roots.
    pub(crate) pinning: bool,
}

impl UpstreamHandler {
    /// Ask the session's client on the upstream's behalf (per-session connections only).
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        capability: &str,
        params: Value,
        context: &RequestContext<RoleClient>,
    ) -> Result<T, McpError> {
        let Some(relay) = &self.relay else {
            return Err(McpError::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("the gateway does not relay {capability} on a shared connection"),
                None,
            ));
        };
        let mut params = params;
        super::scrub::scrub(
            &mut params,
            &self.server,
            &super::scrub::snapshot(&self.secrets),
        );
        let origin = context.extensions.get::<InboundStreamOrigin>();
        let answer = relay
            .ask(method, capability, params, origin, context.ct.clone())
            .await?;
        serde_json::from_value(answer).map_err(|e| {
            McpError::internal_error(
                format!("the client's answer is not a {method} result: {e}"),
                None,
            )
        })
    }
}

#[expect(
    deprecated,
    reason = "sampling and logging are deprecated by SEP-2577 but are part of the revisions the gateway serves"
)]
impl ClientHandler for UpstreamHandler {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities: ClientCapabilities = match (&self.relay, self.pinning) {
            (_, true) => serde_json::from_value(serde_json::json!({
                "sampling": {}, "elicitation": {}, "roots": { "listChanged": false }
            }))
            .unwrap_or_default(),
            (Some(r), false) => r.capabilities(),
            (None, false) => ClientCapabilities::default(),
        };
        // An upstream may answer a call with a task: the gateway follows it (`task.rs`).
        capabilities
            .extensions
            .get_or_insert_with(Default::default)
            .insert(
                rmcp::model::TASKS_EXTENSION_ID.to_string(),
                Default::default(),
            );
        ClientConfig::new(
            capabilities,
            Implementation::new("portcullis", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        let params = serde_json::to_value(&params)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        self.ask("sampling/createMessage", "sampling", params, &context)
            .await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let params = serde_json::to_value(&params)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        self.ask("elicitation/create", "elicitation", params, &context)
            .await
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(relay) = &self.relay
            && let Ok(mut params) = serde_json::to_value(&params)
        {
            super::scrub::scrub(
                &mut params,
                &self.server,
                &super::scrub::snapshot(&self.secrets),
            );
            relay.log(params);
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.forward(
            &params,
            &self.server,
            &super::scrub::snapshot(&self.secrets),
        );
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.notice("notifications/tools/list_changed", None);
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.notice("notifications/resources/list_changed", None);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self
            .events
            .send(UpstreamEvent::Updated(self.server.clone(), params.uri));
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.notice("notifications/prompts/list_changed", None);
    }
}

impl UpstreamHandler {
    /// Act on a notification about the server's lists or resources, wherever it arrived (the
    /// lean leg reads them on a call's stream): a tool list that changed is fetched again, other
    /// changes go to the sessions. `false` for any other notification.
    pub(super) fn notice(&self, method: &str, params: Option<&Value>) -> bool {
        let event = match method {
            "notifications/tools/list_changed" => {
                let _ = self.refresh.send(());
                return true;
            }
            "notifications/resources/list_changed" => UpstreamEvent::Resources(self.server.clone()),
            "notifications/prompts/list_changed" => UpstreamEvent::Prompts(self.server.clone()),
            "notifications/resources/updated" => {
                let Some(uri) = params.and_then(|p| p.get("uri")).and_then(Value::as_str) else {
                    return false;
                };
                UpstreamEvent::Updated(self.server.clone(), uri.to_string())
            }
            _ => return false,
        };
        let _ = self.events.send(event);
        true
    }
}
