//! The MCP listener: Streamable HTTP on `/mcp` and `/mcp/<server>`, both protocol eras.
//!
//! Order of checks on every request: Host and Origin (403), credentials (401), endpoint (404),
//! the body, read only now (413 past `http.max_body`, 408 past `http.body_timeout`), then the
//! JSON-RPC message. The era is chosen per request:
//! an `initialize` or an `Mcp-Session-Id` means the stateful revisions; a 2026-07-28
//! `MCP-Protocol-Version` or per-request `_meta` means the stateless one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry::context::FutureExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::{AuthError, Caller, END_USER_HEADER};
use crate::call::{Call, Era};
use crate::dispatch::{STATEFUL_VERSIONS, STATELESS_VERSION};
use crate::gateway::Gateway;
use crate::jsonrpc::{
    self, HEADER_MISMATCH, INVALID_REQUEST, Inbound, RpcError, UNSUPPORTED_VERSION,
};
use crate::session::Scope;
use crate::upstream::UpstreamEvent;
use audit::Event as AuditEvent;

/// Stateful revisions in which a POST may carry a JSON-RPC batch.
const BATCH_VERSIONS: &[&str] = &["2025-03-26"];
/// Most messages in one batch: each runs side by side with the others.
const MAX_BATCH: usize = 64;
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";

mod answer;
mod follow;
mod post;
mod streams;

use answer::answer;
use post::post;
use streams::{delete, listen, stream};

/// Build the MCP listener's router.
pub(crate) fn router(gw: Arc<Gateway>) -> Router {
    let limit = gw.registry().settings.max_body;
    Router::new()
        .route("/mcp", get(get_root).post(post_root).delete(delete_root))
        .route(
            "/mcp/{server}",
            get(get_server).post(post_server).delete(delete_server),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(resource_metadata_for),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gw)
}

// === handlers ===

async fn post_root(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    post(gw, None, headers, body).await
}

async fn post_server(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post(gw, Some(server), headers, body).await
}

async fn get_root(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    stream(gw, None, headers).await
}

async fn get_server(
    State(gw): State<Arc<Gateway>>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Response {
    stream(gw, Some(s), headers).await
}

async fn delete_root(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    delete(gw, None, headers).await
}

async fn delete_server(
    State(gw): State<Arc<Gateway>>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Response {
    delete(gw, Some(s), headers).await
}

/// Ready when this replica can decide and record calls and reach its upstreams: the store
/// answers, the kill-switch state is fresher than its lease, a required audit sink takes
/// events, and every upstream is connected. The answer is unauthenticated, so it says which of
/// these fails and gives a count of upstreams, never names: which servers sit behind the
/// gateway is not for anonymous callers (the operator page and `/metrics` name them).
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let mut not = Vec::new();
    let store = tokio::time::timeout(std::time::Duration::from_secs(2), gw.store.ping()).await;
    if !matches!(store, Ok(Ok(()))) {
        not.push("store unreachable".to_string());
    }
    if gw
        .levers
        .state_age()
        .is_none_or(|age| age > gw.levers.lease())
    {
        not.push("kill-switch state not fresh".to_string());
    }
    if !gw.audit.writable() && !audit_probe(&gw).await {
        not.push("audit log not writable".to_string());
    }
    let set = gw.upstreams();
    let all = set.all();
    let down = all.iter().filter(|u| !u.is_connected()).count();
    if down > 0 {
        not.push(format!("{down} of {} upstreams not connected", all.len()));
    }
    if not.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", not.join("; ")),
        )
            .into_response()
    }
}

/// Last time `/readyz` wrote a probe event (unix ms), so a balancer's checks write at most one
/// a second.
static LAST_PROBE_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// While no required sink counts as taking events (its last write failed, or a write callers
/// wait for has been waiting on the disk over a second), whether one takes an event now: one
/// `audit.probe` recorded like a call's request event. Without this a replica whose sink failed
/// while no calls came (they were sent elsewhere) would never be ready again.
async fn audit_probe(gw: &Gateway) -> bool {
    use std::sync::atomic::Ordering;
    let now = store::now_ms();
    let last = LAST_PROBE_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 1_000
        || LAST_PROBE_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    let mut e = AuditEvent::new("audit.probe");
    e.reason = Some("readiness: no required sink counted as taking events".into());
    let written = tokio::time::timeout(std::time::Duration::from_secs(2), gw.audit.record(e));
    matches!(written.await, Ok(Ok(())))
}

/// RFC 9728 metadata. The bare form describes the gateway (`public_url`); the path-suffixed form
/// describes the endpoint at that path (`/mcp` or `/mcp/<server>`), whose URL is its `resource`.
async fn resource_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    metadata_document(&gw, None)
}

async fn resource_metadata_for(
    State(gw): State<Arc<Gateway>>,
    Path(path): Path<String>,
) -> Response {
    metadata_document(&gw, Some(&path))
}

fn metadata_document(gw: &Gateway, path: Option<&str>) -> Response {
    let resource = match path.map(|p| p.trim_matches('/')) {
        None | Some("") => gw.public_url.clone(),
        Some("mcp") => format!("{}/mcp", gw.public_url),
        Some(p) => match p.strip_prefix("mcp/") {
            // Any name a server could have gets the same answer, configured or not: the
            // unauthenticated metadata must not tell which servers exist.
            Some(s) if registry::is_server_name(s) => format!("{}/{p}", gw.public_url),
            _ => return plain_error(StatusCode::NOT_FOUND, "no such resource"),
        },
    };
    let issuers = gw.auth.issuers();
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": issuers.urls(),
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis MCP gateway",
    });
    let scopes = issuers.scopes();
    if let (false, Some(o)) = (scopes.is_empty(), doc.as_object_mut()) {
        o.insert("scopes_supported".into(), json!(scopes));
    }
    axum::Json(doc).into_response()
}

// === request flow ===

/// Everything checked before the body is read as JSON-RPC.
struct Admitted {
    caller: Caller,
    scope: Scope,
}

/// An authentication's record: a success the first time a key is seen in a while, every
/// failure (rate-limited), never the credential itself.
fn record_auth(gw: &Gateway, server: Option<&str>, verified: &Result<(Caller, bool), AuthError>) {
    match verified {
        Ok((caller, true)) => {
            let mut e = AuditEvent::new("auth.success");
            e.identity = Some(crate::auth::who(caller));
            e.detail = Some(json!({ "endpoint": endpoint_label(gw, server) }));
            gw.audit.note(e);
        }
        Ok((_, false)) => {}
        Err(why) => {
            let mut e = AuditEvent::new("auth.failure");
            e.outcome = Some(match why {
                AuthError::Unavailable(_) => "unavailable",
                AuthError::Missing => "missing",
                _ => "refused",
            });
            // The reason names the failure, never the credential.
            e.reason = Some(why.to_string());
            e.detail = Some(json!({ "endpoint": endpoint_label(gw, server) }));
            gw.audit.note_limited(e);
        }
    }
}

async fn admit(
    gw: &Gateway,
    server: Option<String>,
    headers: &HeaderMap,
) -> Result<Admitted, Response> {
    if !gw.host_allowed(headers.get(header::HOST)) {
        return Err(plain_error(StatusCode::FORBIDDEN, "host not allowed"));
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !gw.origin_allowed(origin)
    {
        return Err(plain_error(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let end_user = match headers.get(END_USER_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(_)) => {
            return Err(plain_error(
                StatusCode::BAD_REQUEST,
                "the end-user header is not valid text",
            ));
        }
    };
    let verified = gw.auth.client_verified(auth, end_user).await;
    record_auth(gw, server.as_deref(), &verified);
    let caller = match verified.map(|(c, _)| c) {
        Ok(c) => c,
        Err(AuthError::Unavailable(e)) => {
            tracing::error!(error = %e, "credential check failed; refusing");
            crate::metrics::get().fail_closed("credentials_unavailable");
            // The store (keys) or an issuer (tokens) cannot answer: named for the client, who
            // may retry, without saying which.
            let mut err = RpcError::new(
                jsonrpc::GATEWAY_REFUSED,
                "credentials cannot be checked right now",
            );
            // An API key is checked in the store; a token against its issuer's keys.
            let api_key = auth.is_some_and(|a| a.trim_start_matches("Bearer ").starts_with("pcl_"));
            let why = if api_key {
                "store_unavailable"
            } else {
                "issuer_unavailable"
            };
            err.data = Some(serde_json::json!({ "reason": why }));
            return Err(rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, &err));
        }
        Err(AuthError::Scope(scope)) => {
            tracing::info!(%scope, "token without a required scope refused");
            return Err(insufficient_scope(gw, &scope, server.as_deref()));
        }
        Err(e @ (AuthError::EndUserNotAllowed | AuthError::EndUserInvalid)) => {
            tracing::info!(reason = %e, "end-user declaration refused");
            return Err(plain_error(StatusCode::FORBIDDEN, &e.to_string()));
        }
        Err(e) => {
            tracing::info!(reason = %e, "unauthenticated request refused");
            return Err(unauthorized(gw, server.as_deref()));
        }
    };
    let scope = match server {
        None => Scope::Federated,
        Some(s) if gw.upstreams().get(&s).is_some() => Scope::Server(s),
        Some(_) => return Err(plain_error(StatusCode::NOT_FOUND, "no such endpoint")),
    };
    // A token whose audience is one server's endpoint is not a token for any other endpoint.
    if let Some(only) = &caller.endpoint
        && scope != Scope::Server(only.clone())
    {
        tracing::info!(subject = %caller.subject, endpoint = %only, "token used outside its endpoint refused");
        let here = match &scope {
            Scope::Server(s) => Some(s.as_str()),
            Scope::Federated => None,
        };
        return Err(unauthorized(gw, here));
    }
    Ok(Admitted { caller, scope })
}

// === helpers ===

/// The endpoint a request came to, as records show it: a configured server or `/mcp`; a path
/// naming no server is the caller's text and is not repeated.
fn endpoint_label(gw: &Gateway, server: Option<&str>) -> String {
    match server {
        None => "/mcp".into(),
        Some(s) if gw.upstreams().get(s).is_some() => format!("/mcp/{s}"),
        Some(_) => "/mcp/(unknown)".into(),
    }
}

/// A fresh id for one inbound message.
fn request_id() -> String {
    registry::hex_lower(&rand::random::<[u8; 8]>())
}

/// The params of a request or notification.
fn msg_params(msg: &Inbound) -> Option<&Value> {
    match msg {
        Inbound::Request { params, .. } | Inbound::Notification { params, .. } => params.as_ref(),
        Inbound::Response { .. } => None,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(mime))
}

fn msg_id(msg: &Inbound) -> Option<&Value> {
    match msg {
        Inbound::Request { id, .. } | Inbound::Response { id, .. } => Some(id),
        Inbound::Notification { .. } => None,
    }
}

fn rpc_error(status: StatusCode, id: Option<&Value>, e: &RpcError) -> Response {
    (status, axum::Json(jsonrpc::error_response(id, e))).into_response()
}

/// An error for transport-level refusals: a JSON-RPC error object with no id.
/// A request body, read whole within `limit` bytes and `deadline` (408 when it trickles in
/// slower, 413 when it is larger).
async fn received(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, Response> {
    use crate::listen::BodyError;
    crate::listen::read_body(body, limit, deadline)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => too_large(limit),
            BodyError::Slow => plain_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {}s (http.body_timeout)",
                    deadline.as_secs_f64()
                ),
            ),
            BodyError::Broken => plain_error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ),
        })
}

fn too_large(limit: usize) -> Response {
    plain_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than {limit} bytes (http.max_body)"),
    )
}

fn plain_error(status: StatusCode, message: &str) -> Response {
    rpc_error(
        status,
        None,
        &RpcError::new(jsonrpc::GATEWAY_REFUSED, message),
    )
}

/// The RFC 9728 metadata URL for an endpoint: the well-known path suffixed with the endpoint's.
fn metadata_url(gw: &Gateway, server: Option<&str>) -> String {
    match server {
        None => format!("{}/.well-known/oauth-protected-resource/mcp", gw.public_url),
        Some(s) => format!(
            "{}/.well-known/oauth-protected-resource/mcp/{s}",
            gw.public_url
        ),
    }
}

fn unauthorized(gw: &Gateway, server: Option<&str>) -> Response {
    let mut r = plain_error(StatusCode::UNAUTHORIZED, "authentication required");
    let v = format!("Bearer resource_metadata=\"{}\"", metadata_url(gw, server));
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn insufficient_scope(gw: &Gateway, scope: &str, server: Option<&str>) -> Response {
    let mut r = plain_error(StatusCode::FORBIDDEN, "insufficient scope");
    let v = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{}\"",
        metadata_url(gw, server)
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
