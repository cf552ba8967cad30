//! Upstream MCP servers: one rmcp client connection per configured server.
//!
//! Each upstream negotiates its own protocol revision (the `server/discover` era first, the
//! `initialize` era as a fallback), independently of any client. The gateway keeps the
//! allowlisted part of each upstream's tool list, refreshed on connect and on `list_changed`.
//! A connection that fails is re-established in the background with backoff; while it is down,
//! calls to that server fail with an error that names it, and nothing else is affected.

mod connect;
mod handler;
mod launch;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::{ClientRequest, ProtocolVersion, ServerResult, Tool};
use rmcp::service::{PeerRequestOptions, RunningService, ServiceError};
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use connect::fetch_definitions;
pub(crate) use handler::{ProgressRoutes, UpstreamEvent};

use handler::UpstreamHandler;

/// Why an upstream request failed. Every variant names the server in its message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream `{0}` is not connected")]
    Down(String),
    #[error("upstream `{0}` did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("upstream `{server}` returned an error")]
    Rpc { server: String, error: Value },
    #[error("upstream `{0}` connection failed")]
    Transport(String),
    #[error("request to upstream `{0}` was cancelled")]
    Cancelled(String),
    #[error("upstream `{0}` sent a response the gateway could not read")]
    Unreadable(String),
}

impl UpstreamError {
    /// The JSON-RPC code of an upstream's own error, else the gateway's upstream-error code.
    pub(crate) fn code(&self) -> i64 {
        match self {
            UpstreamError::Rpc { error, .. } => error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(crate::jsonrpc::UPSTREAM_ERROR),
            _ => crate::jsonrpc::UPSTREAM_ERROR,
        }
    }

    /// A short name for the kind of failure (span attribute, never a label with free text).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Down(_) => "upstream_down",
            UpstreamError::Timeout(..) => "upstream_timeout",
            UpstreamError::Rpc { .. } => "upstream_error",
            UpstreamError::Transport(_) => "upstream_transport",
            UpstreamError::Cancelled(_) => "cancelled",
            UpstreamError::Unreadable(_) => "upstream_unreadable",
        }
    }
}

/// One upstream server and its live connection.
pub(crate) struct Upstream {
    pub(crate) config: registry::Server,
    /// Host and port of an HTTP upstream, for spans (worked out once, not per call).
    address: Option<(String, u16)>,
    conn: RwLock<Option<Connection>>,
    tools: RwLock<Arc<Vec<Offered>>>,
    events: broadcast::Sender<UpstreamEvent>,
    progress: Arc<ProgressRoutes>,
    reconnect: Notify,
    /// Resolves the secrets the connection needs (credentials, child environment).
    secrets: Arc<crate::secrets::Secrets>,
    /// Where pinned packages are fetched and verified.
    cache: std::path::PathBuf,
    /// The profile: in production an HTTP server without pins offers no tools.
    profile: registry::Profile,
    /// Where quarantine events go.
    audit: Option<Arc<crate::audit::Audit>>,
    /// Allowlisted tools held back, by name.
    quarantine: RwLock<HashMap<String, Quarantined>>,
    /// Definitions first seen on a server the config does not pin (stdio, or development):
    /// later changes within this process are quarantined.
    first_seen: std::sync::Mutex<HashMap<String, String>>,
}

/// An allowlisted tool the gateway does not offer because its definition is not the pinned one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quarantined {
    /// The pin in force, if any.
    pub(crate) pinned: Option<String>,
    /// The digest of the definition the upstream now offers.
    pub(crate) seen: String,
    /// Why, for the operator.
    pub(crate) why: String,
}

#[derive(Clone)]
struct Connection {
    peer: Peer<RoleClient>,
    protocol: ProtocolVersion,
    capabilities: Value,
    // Keeps the connection alive; dropped on reconnect.
    _service: Arc<RunningService<RoleClient, UpstreamHandler>>,
}

/// An allowlisted tool the upstream offers, with what the gateway derives from it once per
/// refresh: its enforced class, its presentation on each endpoint, and its argument schemas.
pub(crate) struct Offered {
    /// The definition as the upstream sent it (untrusted).
    pub(crate) tool: Tool,
    /// The registry's class, raised by upstream hints.
    pub(crate) class: policy::ToolClass,
    /// As shown on `/mcp` (`<server>__<tool>`).
    pub(crate) federated: Value,
    /// As shown on `/mcp/<server>`.
    pub(crate) own: Value,
    /// Compiled argument schemas.
    pub(crate) check: crate::authorize::ArgumentCheck,
    /// The tool's rate limit from the registry, read once per refresh.
    pub(crate) rate: Option<registry::Rate>,
    /// Hex SHA-256 of the definition's canonical JSON: an approval is bound to it, so a tool
    /// that changes after approval does not run on that approval.
    pub(crate) fingerprint: String,
}

/// All upstreams, in config order.
pub(crate) struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
    order: Vec<Arc<Upstream>>,
    /// List changes, for sessions to relay.
    pub(crate) events: broadcast::Sender<UpstreamEvent>,
}

impl Upstreams {
    /// Build the set and start connecting every upstream in the background.
    pub(crate) fn start(
        servers: &[registry::Server],
        setup: UpstreamSetup,
        shutdown: CancellationToken,
    ) -> Arc<Upstreams> {
        let progress = Arc::new(ProgressRoutes::default());
        let (events, _) = broadcast::channel(256);
        let order: Vec<Arc<Upstream>> = servers
            .iter()
            .map(|s| {
                Arc::new(Upstream {
                    address: address(s),
                    config: s.clone(),
                    conn: RwLock::new(None),
                    tools: RwLock::new(Arc::new(Vec::new())),
                    events: events.clone(),
                    progress: progress.clone(),
                    reconnect: Notify::new(),
                    secrets: setup.secrets.clone(),
                    cache: setup.cache.clone(),
                    profile: setup.profile,
                    audit: setup.audit.clone(),
                    quarantine: RwLock::new(HashMap::new()),
                    first_seen: std::sync::Mutex::new(HashMap::new()),
                })
            })
            .collect();
        let by_name = order
            .iter()
            .map(|u| (u.config.name.clone(), u.clone()))
            .collect();
        for u in &order {
            tokio::spawn(connect::supervise(u.clone(), shutdown.clone()));
        }
        Arc::new(Upstreams {
            by_name,
            order,
            events,
        })
    }

    /// One upstream, not connected and not supervised (for `portcullis pin`).
    pub(crate) fn standalone(server: &registry::Server, setup: &UpstreamSetup) -> Upstream {
        let (events, _) = broadcast::channel(16);
        Upstream {
            address: address(server),
            config: server.clone(),
            conn: RwLock::new(None),
            tools: RwLock::new(Arc::new(Vec::new())),
            events,
            progress: Arc::new(ProgressRoutes::default()),
            reconnect: Notify::new(),
            secrets: setup.secrets.clone(),
            cache: setup.cache.clone(),
            profile: setup.profile,
            audit: None,
            quarantine: RwLock::new(HashMap::new()),
            first_seen: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    pub(crate) fn all(&self) -> &[Arc<Upstream>] {
        &self.order
    }

    /// Wait until every upstream has connected once, or `limit` passes. True if all are up.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.order.iter().all(|u| u.is_connected()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What every upstream connection shares.
#[derive(Clone)]
pub(crate) struct UpstreamSetup {
    pub(crate) secrets: Arc<crate::secrets::Secrets>,
    pub(crate) cache: std::path::PathBuf,
    pub(crate) profile: registry::Profile,
    pub(crate) audit: Option<Arc<crate::audit::Audit>>,
}

/// Host and port of an HTTP upstream.
fn address(server: &registry::Server) -> Option<(String, u16)> {
    let registry::ServerSource::Http { url } = &server.source else {
        return None;
    };
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => (v6.trim_end_matches(']'), None),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    Some((
        host.to_string(),
        port.and_then(|p| p.parse().ok()).unwrap_or(default),
    ))
}

impl Upstream {
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.conn.read().map(|c| c.is_some()).unwrap_or(false)
    }

    fn connection(&self) -> Result<Connection, UpstreamError> {
        self.conn
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| UpstreamError::Down(self.config.name.clone()))
    }

    /// True when the connection uses an `initialize`-era revision (which has, e.g., resource
    /// subscriptions and logging levels).
    pub(crate) fn is_legacy(&self) -> bool {
        self.connection().is_ok_and(|c| c.protocol.has_initialize())
    }

    /// The upstream's declared capabilities (untrusted; used to decide what to relay).
    pub(crate) fn capabilities(&self) -> Value {
        self.connection()
            .map(|c| c.capabilities)
            .unwrap_or(Value::Null)
    }

    /// The allowlisted tools the upstream currently offers.
    pub(crate) fn tools(&self) -> Arc<Vec<Offered>> {
        self.tools.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Allowlisted tools held back because their definitions are not the pinned ones.
    pub(crate) fn quarantined(&self, tool: &str) -> Option<Quarantined> {
        self.quarantine.read().ok()?.get(tool).cloned()
    }

    /// Every quarantined tool, by name (for the self-audit and the operator).
    pub(crate) fn quarantine(&self) -> Vec<(String, Quarantined)> {
        self.quarantine
            .read()
            .map(|q| {
                let mut v: Vec<_> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            })
            .unwrap_or_default()
    }

    /// The pin a tool's definition must match, or why there is none.
    fn expected_pin(&self, tool: &str, seen: &str) -> Result<String, &'static str> {
        if let Some(pins) = &self.config.pins {
            return pins
                .get(tool)
                .cloned()
                .ok_or("the tool is allowlisted but not pinned; run `portcullis pin`");
        }
        match (&self.config.source, self.profile) {
            (registry::ServerSource::Builtin(_), _) => Ok(seen.to_string()),
            (registry::ServerSource::Http { .. }, registry::Profile::Production) => {
                Err("the server has no `pin`; run `portcullis pin`")
            }
            _ => {
                // No pins in config: the first definition seen in this process is the one kept.
                let Ok(mut first) = self.first_seen.lock() else {
                    return Err("the gateway cannot track first-seen definitions");
                };
                Ok(first
                    .entry(tool.to_string())
                    .or_insert_with(|| seen.to_string())
                    .clone())
            }
        }
    }

    /// Replace the offered tools with the allowlisted part of `listed` whose definitions match
    /// their pins. A mismatch, an unpinned tool, or a definition with hidden characters is
    /// quarantined: not offered, calls refused, and an event written when that changes.
    pub(crate) fn set_tools(&self, listed: Vec<Tool>) {
        let mut held: HashMap<String, Quarantined> = HashMap::new();
        let offered: Vec<Offered> = listed
            .into_iter()
            .filter_map(|tool| {
                // Byte-exact match against the allowlist: no folding, no normalisation.
                let entry = self.config.tools.get(tool.name.as_ref())?;
                let def = serde_json::to_value(&tool).ok()?;
                let seen = registry::tool_pin(&def);
                let verdict = match registry::hidden_in_definition(&def) {
                    Some((at, why)) => Err((
                        None,
                        format!(
                            "the definition carries {why} at `{}`",
                            if at.is_empty() { "/" } else { &at }
                        ),
                    )),
                    None => match self.expected_pin(&tool.name, &seen) {
                        Ok(pin) if pin == seen => Ok(()),
                        Ok(pin) => {
                            Err((Some(pin), "the definition differs from its pin".to_string()))
                        }
                        Err(why) => Err((None, why.to_string())),
                    },
                };
                if let Err((pinned, why)) = verdict {
                    held.insert(tool.name.to_string(), Quarantined { pinned, seen, why });
                    return None;
                }
                let class = crate::catalog::effective_class(self, &tool)?;
                let federated = crate::catalog::present_tool(self, &tool, class, true);
                let own = crate::catalog::present_tool(self, &tool, class, false);
                let schema = Value::Object((*tool.input_schema).clone());
                let check = crate::authorize::ArgumentCheck::new(&schema, entry.arguments.as_ref());
                let fingerprint = crate::authorize::tool_fingerprint(&tool);
                Some(Offered {
                    fingerprint,
                    tool,
                    class,
                    federated,
                    own,
                    check,
                    rate: entry.rate,
                })
            })
            .collect();
        let before = self
            .quarantine
            .read()
            .map(|q| q.clone())
            .unwrap_or_default();
        for (tool, q) in &held {
            if before.get(tool) == Some(q) {
                continue;
            }
            tracing::warn!(server = %self.config.name, %tool, seen = %q.seen, pinned = ?q.pinned, why = %q.why, "tool quarantined");
            if let Some(audit) = &self.audit {
                let mut e = crate::audit::Event::new("tool.quarantine");
                e.server = Some(self.config.name.clone());
                e.tool = Some(tool.clone());
                e.outcome = Some("quarantined");
                e.reason = Some(q.why.clone());
                e.detail = Some(json!({ "pinned": q.pinned, "seen": q.seen }));
                audit.note(e);
            }
        }
        if let Ok(mut slot) = self.quarantine.write() {
            *slot = held;
        }
        if let Ok(mut slot) = self.tools.write() {
            *slot = Arc::new(offered);
        }
    }

    /// Send one request and wait for its result, with the server's timeout.
    ///
    /// `progress` forwards upstream progress to the downstream caller's token; `cancel` aborts
    /// the request and tells the upstream.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
        cancel: Option<CancellationToken>,
    ) -> Result<Value, UpstreamError> {
        let name = &self.config.name;
        let mut params = params;
        let span = crate::telemetry::client_span(
            name,
            self.address.as_ref().map(|(h, p)| (h.as_str(), *p)),
            method,
            &mut params,
        );
        let started = std::time::Instant::now();
        let outcome = self.send(method, params, progress, cancel).await;
        crate::metrics::get().upstream(name, outcome.is_ok(), started.elapsed());
        crate::telemetry::finish(
            &span,
            outcome.as_ref().map_err(|e| (e.code(), Some(e.kind()))),
        );
        outcome
    }

    async fn send(
        &self,
        method: &str,
        params: Option<Value>,
        progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
        cancel: Option<CancellationToken>,
    ) -> Result<Value, UpstreamError> {
        let name = &self.config.name;
        if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Err(UpstreamError::Cancelled(name.clone()));
        }
        let conn = self.connection()?;
        let mut msg = serde_json::Map::new();
        msg.insert("method".into(), Value::String(method.to_string()));
        if let Some(p) = params {
            msg.insert("params".into(), p);
        }
        let request: ClientRequest = serde_json::from_value(Value::Object(msg))
            .map_err(|_| UpstreamError::Unreadable(name.clone()))?;
        let timeout = self.config.timeout;
        let handle = conn
            .peer
            .send_cancellable_request(
                request,
                PeerRequestOptions::with_timeout(timeout).reset_timeout_on_progress(),
            )
            .await
            .map_err(|e| self.map_error(e))?;
        let route = progress.map(|(token, sink)| {
            let key = serde_json::to_value(&handle.progress_token).unwrap_or(Value::Null);
            self.progress.insert(key.clone(), token, sink);
            key
        });
        let id = handle.id.clone();
        let peer = conn.peer.clone();
        let cancel = cancel.unwrap_or_default();
        let outcome = tokio::select! {
            r = handle.await_response() => r.map_err(|e| self.map_error(e)),
            () = cancel.cancelled() => {
                let note = rmcp::model::CancelledNotificationParam::new(Some(id), Some("cancelled by client".into()));
                let _ = peer.notify_cancelled(note).await;
                Err(UpstreamError::Cancelled(name.clone()))
            }
        };
        if let Some(key) = route {
            self.progress.remove(&key);
        }
        let result = outcome?;
        result_value(&result).ok_or_else(|| UpstreamError::Unreadable(name.clone()))
    }

    fn map_error(&self, e: ServiceError) -> UpstreamError {
        let name = self.config.name.clone();
        match e {
            ServiceError::McpError(err) => UpstreamError::Rpc {
                server: name,
                error: serde_json::to_value(&err).unwrap_or_else(|_| json!({})),
            },
            ServiceError::Timeout { timeout } => UpstreamError::Timeout(name, timeout),
            ServiceError::Cancelled { .. } => UpstreamError::Cancelled(name),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                self.reconnect.notify_one();
                UpstreamError::Transport(name)
            }
            _ => UpstreamError::Transport(name),
        }
    }
}

fn result_value(r: &ServerResult) -> Option<Value> {
    serde_json::to_value(r).ok()
}
