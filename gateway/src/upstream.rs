//! Upstream MCP servers: one rmcp client connection per configured server.
//!
//! Each upstream negotiates its own protocol revision (the `server/discover` era first, the
//! `initialize` era as a fallback), independently of any client. The gateway keeps the
//! allowlisted part of each upstream's tool list, refreshed on connect and on `list_changed`.
//! A connection that fails is re-established in the background with backoff; while it is down,
//! calls to that server fail with an error that names it, and nothing else is affected.

mod bounds;
mod circuit;
mod client;
mod connect;
mod direct;
mod drain;
mod endpoint;
mod error;
mod handler;
mod http;
mod launch;
mod lean;
mod link;
mod listing;
mod relay;
mod rmcp_leg;
mod route;
mod scrub;
mod set;
mod supervise;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::{
    ClientRequest, MetaObject, ProtocolVersion, RequestMetaObject, ServerResult, Tool,
};
use rmcp::service::{PeerRequestOptions, RunningService, ServiceError};
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use bounds::{Bounds, Terms, caller_deadline};
pub(crate) use circuit::{Phase, Reading};
pub(crate) use client::ClientSide;
pub(crate) use connect::fetch_definitions;
pub(crate) use endpoint::Endpoint;
pub(crate) use error::UpstreamError;
pub(crate) use handler::{ProgressRoutes, UpstreamEvent};
pub(crate) use listing::{LISTED_TWICE, Quarantined, listed_twice};
pub(crate) use relay::declared_of;
pub(crate) use set::{Reconciled, UpstreamSetup, Upstreams};

use crate::tools::{Offered, OfferedTools};
use client::Link;
use handler::UpstreamHandler;
use relay::Relay;
use set::address;

/// The levels `logging/setLevel` takes (RFC 5424 severities, as MCP names them), least severe
/// first.
pub(crate) const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// Unique per [`Upstream`] in this process, so a session's link knows which one it belongs to.
static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whose request is forwarded, for a server with `connection: per_session`: the request goes
/// over that session's own upstream connection.
#[derive(Clone, Copy)]
pub(crate) struct On<'a> {
    pub(crate) session: &'a Arc<ClientSide>,
    pub(crate) caller: &'a crate::auth::Caller,
    /// The stream of the client's request, for what the upstream sends while it runs; `None`
    /// if the client takes no stream for it.
    pub(crate) sink: Option<&'a mpsc::UnboundedSender<Value>>,
    /// Checked before the upstream may ask the client anything.
    pub(crate) levers: &'a Arc<crate::levers::Levers>,
}

/// One upstream server and its live connection.
pub(crate) struct Upstream {
    /// The registry name (fixed for the life of this upstream).
    name: String,
    /// This upstream's [`SERIAL`].
    serial: u64,
    /// The server's entry; a reload that keeps the connection replaces it in place.
    config: RwLock<Arc<registry::Server>>,
    /// Stops this upstream's supervisor (a reload that removes or replaces it, or shutdown).
    stop: CancellationToken,
    /// Held from reading the entry to publishing the offered tools, so a listing refresh and
    /// a reload cannot interleave and leave tools built from the old entry in place.
    refreshing: std::sync::Mutex<()>,
    /// Host and port of an HTTP upstream, for spans (worked out once, not per call).
    address: Option<(String, u16)>,
    /// Its endpoints, each with its own connection, listing and breaker (fixed for the life
    /// of this upstream: a reload that changes them replaces it).
    endpoints: Vec<endpoint::Endpoint>,
    /// The balancer's turn counter.
    turn: std::sync::atomic::AtomicUsize,
    /// Extra attempts its reads may take.
    budget: endpoint::RetryBudget,
    tools: RwLock<Arc<OfferedTools>>,
    events: broadcast::Sender<UpstreamEvent>,
    /// Resolves the secrets the connection needs (credentials, child environment).
    secrets: Arc<crate::secrets::Secrets>,
    /// Mints the tokens of a server with `token_exchange` or `client_credentials`.
    minter: Arc<crate::credentials::Minter>,
    /// Where pinned packages are fetched and verified.
    cache: std::path::PathBuf,
    /// The profile: in production an HTTP server without pins offers no tools.
    profile: registry::Profile,
    /// Where quarantine events go.
    audit: Option<Arc<audit::Audit>>,
    /// Allowlisted tools held back, by name.
    quarantine: RwLock<HashMap<String, Quarantined>>,
    /// Definitions first seen on a server the config does not pin (stdio, or development):
    /// later changes within this process are quarantined.
    first_seen: std::sync::Mutex<HashMap<String, String>>,
    /// The secrets this gateway sent the upstream, never relayed back to a client.
    sent_secrets: scrub::Sent,
    /// The same secrets, oldest first (which go first past the bound).
    sent_order: std::sync::Mutex<Vec<String>>,
    /// The most verbose logging level any session asked of the shared connection, as an index
    /// into the levels (0 = `debug`).
    shared_level: std::sync::Mutex<Option<usize>>,
}

#[derive(Clone)]
struct Connection {
    peer: Peer<RoleClient>,
    protocol: ProtocolVersion,
    /// Shared: a connection is cloned for every call that uses it.
    capabilities: Arc<Value>,
    /// Where this connection's progress goes: its own, since rmcp numbers progress tokens per
    /// connection and another connection's tokens must never reach this one's callers.
    progress: Arc<ProgressRoutes>,
    /// The lean leg for callers' requests, on a stateless HTTP connection.
    direct: Option<Arc<direct::Direct>>,
    /// The server's endpoint it is made to (0 for a session's own connection).
    endpoint: usize,
    // Keeps the connection alive; dropped on reconnect.
    _service: Arc<RunningService<RoleClient, UpstreamHandler>>,
}

/// A request on its way to the upstream, after the connection is chosen.
struct Outgoing<'a> {
    method: &'a str,
    params: Option<Value>,
    /// The client capabilities it declares, on a 2026-07-28 connection.
    declared: Option<RequestMetaObject>,
    credential: Option<Arc<str>>,
    progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
}

impl Upstream {
    fn new(
        server: &registry::Server,
        setup: &UpstreamSetup,
        events: broadcast::Sender<UpstreamEvent>,
        stop: CancellationToken,
    ) -> Upstream {
        Upstream {
            name: server.name.clone(),
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            address: address(server),
            config: RwLock::new(Arc::new(server.clone())),
            stop,
            refreshing: std::sync::Mutex::new(()),
            endpoints: endpoint::Endpoint::of(server),
            turn: std::sync::atomic::AtomicUsize::new(0),
            budget: endpoint::RetryBudget::default(),
            tools: RwLock::new(Arc::default()),
            events,
            secrets: setup.secrets.clone(),
            minter: setup.minter.clone(),
            cache: setup.cache.clone(),
            profile: setup.profile,
            audit: setup.audit.clone(),
            quarantine: RwLock::new(HashMap::new()),
            first_seen: std::sync::Mutex::new(HashMap::new()),
            sent_secrets: scrub::Sent::default(),
            sent_order: std::sync::Mutex::new(Vec::new()),
            shared_level: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The server's registry entry in force.
    pub(crate) fn config(&self) -> Arc<registry::Server> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Apply a reloaded entry for the same connection: the allowlist and pins are re-checked
    /// against the last listing now, not at the next `list_changed`.
    fn reconfigure(&self, server: registry::Server) {
        let _serial = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A breaker turned off, on or changed starts from closed circuits.
        if server.resilience.breaker != self.config().resilience.breaker {
            for e in &self.endpoints {
                e.circuit.reset();
            }
        }
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(server),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(server),
        }
        // Without a readable last listing nothing is offered until the next one.
        let _changed = self.apply_listings();
    }

    /// True while any endpoint is connected.
    pub(crate) fn is_connected(&self) -> bool {
        self.endpoints.iter().any(endpoint::Endpoint::is_connected)
    }

    /// A connection of the server's (the first endpoint's that is connected), for what every
    /// endpoint is taken to share: its revision and capabilities.
    fn connection(&self) -> Result<Connection, UpstreamError> {
        self.endpoints
            .iter()
            .find_map(endpoint::Endpoint::connection)
            .ok_or_else(|| UpstreamError::Down(self.name.clone()))
    }

    /// True when the connection uses an `initialize`-era revision (which has, e.g., resource
    /// subscriptions and logging levels).
    pub(crate) fn is_legacy(&self) -> bool {
        self.connection().is_ok_and(|c| c.protocol.has_initialize())
    }

    /// The protocol revision the shared connection negotiated, while connected.
    pub(crate) fn protocol(&self) -> Option<String> {
        self.connection()
            .ok()
            .map(|c| c.protocol.as_str().to_owned())
    }

    /// The upstream's declared capabilities (untrusted; used to decide what to relay), `null`
    /// while not connected.
    pub(crate) fn capabilities(&self) -> Arc<Value> {
        self.connection()
            .map(|c| c.capabilities)
            .unwrap_or_else(|_| Arc::new(Value::Null))
    }

    /// The allowlisted tools the upstream currently offers.
    pub(crate) fn tools(&self) -> Arc<OfferedTools> {
        self.tools.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// The upstream answered that it does not know the session (it restarted, and may now run
    /// other code): close this connection and the shared one, and send nothing until the
    /// supervisor has reconnected and listed the tools again (`supervise::supervise`).
    fn forgot_session(&self, conn: &Connection) {
        tracing::warn!(server = %self.name, "the upstream no longer knows its session; reconnecting and listing its tools again");
        conn._service.cancellation_token().cancel();
        let Some(ep) = self.endpoint_of(conn) else {
            return;
        };
        ep.stale.store(true, std::sync::atomic::Ordering::Release);
        if let Some(shared) = ep.connection() {
            shared._service.cancellation_token().cancel();
        }
        ep.reconnect.notify_one();
    }

    /// True when `level` is more verbose than any level the shared connection was given so far
    /// (which it then becomes): the only `logging/setLevel` relayed to a shared connection.
    pub(crate) fn raise_shared_level(&self, level: &str) -> bool {
        // The levels are listed from the most verbose.
        let levels = LOG_LEVELS;
        let Some(rank) = levels.iter().position(|l| *l == level) else {
            return false;
        };
        let Ok(mut current) = self.shared_level.lock() else {
            return false;
        };
        match *current {
            Some(c) if c <= rank => false,
            _ => {
                *current = Some(rank);
                true
            }
        }
    }

    /// The tools were listed on a new connection: requests may go to the upstream again.
    pub(super) fn listed_again(&self, ep: &endpoint::Endpoint) {
        ep.stale.store(false, std::sync::atomic::Ordering::Release);
        // A new connection starts at the upstream's own level.
        if let Ok(mut level) = self.shared_level.lock() {
            *level = None;
        }
    }

    /// The secrets sent to this upstream so far.
    fn sent_secrets(&self) -> Arc<Vec<String>> {
        scrub::snapshot(&self.sent_secrets)
    }

    /// Remember secrets sent to this upstream, so that they are never relayed back.
    pub(super) fn sent(&self, secrets: impl IntoIterator<Item = String>) {
        if let Ok(mut slot) = self.sent_secrets.write() {
            let mut known = self
                .sent_order
                .lock()
                .map(|k| k.clone())
                .unwrap_or_default();
            scrub::remember(&mut known, secrets);
            *slot = Arc::new(scrub::by_length(&known));
            if let Ok(mut order) = self.sent_order.lock() {
                *order = known;
            }
        }
    }

    fn map_error(&self, e: ServiceError, conn: &Connection) -> UpstreamError {
        let name = self.name.clone();
        match e {
            ServiceError::McpError(err) => {
                let mut error = serde_json::to_value(&err).unwrap_or_else(|_| json!({}));
                scrub::scrub(&mut error, &name, &self.sent_secrets());
                UpstreamError::Rpc {
                    server: name,
                    error,
                }
            }
            ServiceError::Timeout { timeout } => UpstreamError::Timeout(name, timeout),
            ServiceError::Cancelled { .. } => UpstreamError::Cancelled(name),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                if let Some(ep) = self.endpoint_of(conn) {
                    ep.reconnect.notify_one();
                }
                UpstreamError::Transport(name)
            }
            _ => UpstreamError::Transport(name),
        }
    }
}

/// True when the error is the upstream's 404 for a session it no longer knows.
fn session_expired(e: &ServiceError) -> bool {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    let ServiceError::TransportSend(e) = e else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.error.as_ref());
    while let Some(err) = cause {
        if matches!(
            err.downcast_ref::<StreamableHttpError<reqwest::Error>>(),
            Some(StreamableHttpError::SessionExpired)
        ) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The client capabilities a request declares for itself (`call/input.rs`), taken out of its
/// `_meta`: on a 2026-07-28 connection they replace the connection's own for this request
/// (rmcp writes those into every request; these are applied after), on an older one they are
/// not sent.
fn own_capabilities(params: &mut Option<Value>, conn: &Connection) -> Option<RequestMetaObject> {
    const KEY: &str = "io.modelcontextprotocol/clientCapabilities";
    let meta = params.as_mut()?.get_mut("_meta")?.as_object_mut()?;
    let caps = meta.remove(KEY)?;
    if conn.protocol.has_initialize() {
        return None;
    }
    let mut own = serde_json::Map::new();
    own.insert(KEY.into(), caps);
    Some(RequestMetaObject(MetaObject(own)))
}

fn result_value(r: &ServerResult) -> Option<Value> {
    serde_json::to_value(r).ok()
}

#[cfg(test)]
mod tests;
