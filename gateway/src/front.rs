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

/// Ready when every upstream is connected. The answer is unauthenticated, so it gives a count,
/// never names: which servers sit behind the gateway is not for anonymous callers (the operator
/// page and `/metrics` name them).
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let set = gw.upstreams();
    let all = set.all();
    let down = all.iter().filter(|u| !u.is_connected()).count();
    if down == 0 {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {down} of {} upstreams not connected", all.len()),
        )
            .into_response()
    }
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
    match &verified {
        Ok((caller, true)) => {
            let mut e = AuditEvent::new("auth.success");
            e.identity = Some(crate::auth::who(caller));
            e.detail = Some(json!({ "endpoint": endpoint_label(gw, server.as_deref()) }));
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
            e.detail = Some(json!({ "endpoint": endpoint_label(gw, server.as_deref()) }));
            gw.audit.note_limited(e);
        }
    }
    let caller = match verified.map(|(c, _)| c) {
        Ok(c) => c,
        Err(AuthError::Unavailable(e)) => {
            tracing::error!(error = %e, "credential check failed; refusing");
            crate::metrics::get().fail_closed("credentials_unavailable");
            return Err(plain_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "credentials cannot be checked right now",
            ));
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

async fn post(
    gw: Arc<Gateway>,
    server: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = gw.registry().settings.max_body;
    let admitted = match admit(&gw, server, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // The body is read only for an admitted caller, within the size and time limits.
    let body = match received(body, limit, gw.registry().settings.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let msg = match jsonrpc::parse(&body) {
        Ok(jsonrpc::Body::One(m)) => m,
        Ok(jsonrpc::Body::Batch(items)) => return batch(gw, admitted, &headers, items).await,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, None, &e),
    };
    let accepts_sse = accepts(&headers, "text/event-stream");
    let session_id = header_str(&headers, "mcp-session-id");
    let version_header = header_str(&headers, "mcp-protocol-version");

    // Stateful: an existing session.
    if let Some(sid) = session_id {
        let Some(session) = gw.sessions.get(sid, &admitted.caller, &admitted.scope) else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                msg_id(&msg),
                &RpcError::new(jsonrpc::GATEWAY_REFUSED, "session not found"),
            );
        };
        if let Some(v) = version_header
            && !STATEFUL_VERSIONS.contains(&v)
        {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                msg_id(&msg),
                &RpcError::new(
                    INVALID_REQUEST,
                    format!("unsupported MCP-Protocol-Version `{v}`"),
                ),
            );
        }
        let call = Call {
            caller: admitted.caller,
            scope: admitted.scope,
            era: Era::Stateful(session),
            request_id: request_id(),
            trace_id: None,
            parent: crate::telemetry::extract(&headers, msg_params(&msg)),
            param_headers: Vec::new(),
            streams: false,
        };
        return answer(gw, call, msg, accepts_sse).await;
    }

    // Stateful: a new session.
    if msg.method() == Some("initialize") {
        return initialize(&gw, admitted, msg);
    }

    // Stateless (2026-07-28).
    let meta_version = match &msg {
        Inbound::Request { params, .. } | Inbound::Notification { params, .. } => params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str)
            .map(str::to_string),
        Inbound::Response { .. } => None,
    };
    let modern =
        version_header.is_some_and(|v| !STATEFUL_VERSIONS.contains(&v)) || meta_version.is_some();
    if !modern {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            msg_id(&msg),
            &RpcError::new(
                INVALID_REQUEST,
                "missing Mcp-Session-Id: send `initialize` first, or use protocol 2026-07-28",
            ),
        );
    }
    if let Err(e) = check_stateless(&headers, &msg, version_header, meta_version.as_deref()) {
        return rpc_error(StatusCode::BAD_REQUEST, msg_id(&msg), &e);
    }
    let has_caps = match &msg {
        Inbound::Request { params, .. } => params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_CAPS))
            .is_some(),
        _ => true,
    };
    if !has_caps {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            msg_id(&msg),
            &RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "missing `_meta` key `io.modelcontextprotocol/clientCapabilities`",
            ),
        );
    }
    let call = Call {
        caller: admitted.caller,
        scope: admitted.scope,
        era: Era::Stateless,
        request_id: request_id(),
        trace_id: None,
        parent: crate::telemetry::extract(&headers, msg_params(&msg)),
        param_headers: param_headers(&headers),
        streams: false,
    };
    answer(gw, call, msg, accepts_sse).await
}

/// A JSON-RPC batch, in a session of the revision that has them (2025-03-26). Members run side by side, each
/// through the same path as a message of its own; the answer is one JSON array with a response
/// for each request and each member that is not a valid message (202 if there are none).
async fn batch(
    gw: Arc<Gateway>,
    admitted: Admitted,
    headers: &HeaderMap,
    items: Vec<Value>,
) -> Response {
    let refuse = |why: String| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(INVALID_REQUEST, format!("invalid request: {why}")),
        )
    };
    let Some(sid) = header_str(headers, "mcp-session-id") else {
        return refuse(
            "a JSON-RPC batch needs a session of protocol 2025-03-26 or earlier (`initialize` cannot be batched); send one message per POST".into(),
        );
    };
    let Some(session) = gw.sessions.get(sid, &admitted.caller, &admitted.scope) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            &RpcError::new(jsonrpc::GATEWAY_REFUSED, "session not found"),
        );
    };
    if let Some(v) = header_str(headers, "mcp-protocol-version")
        && !STATEFUL_VERSIONS.contains(&v)
    {
        return refuse(format!("unsupported MCP-Protocol-Version `{v}`"));
    }
    if !BATCH_VERSIONS.contains(&session.protocol_version.as_str()) {
        return refuse(format!(
            "protocol {} has no JSON-RPC batches; send one message per POST",
            session.protocol_version
        ));
    }
    if items.is_empty() {
        return refuse("an empty batch".into());
    }
    if items.len() > MAX_BATCH {
        return refuse(format!(
            "a batch of {} messages; at most {MAX_BATCH} are taken in one POST",
            items.len()
        ));
    }
    // Requests (with their ids) and responses may not share a batch; ids must be distinct, or a
    // cancellation could not tell the calls apart.
    let mut ids = std::collections::HashSet::new();
    let mut responses = false;
    for item in &items {
        match (item.get("method"), item.get("id")) {
            (Some(_), Some(id)) if !ids.insert(id.to_string()) => {
                return refuse(format!("the request id {id} appears twice in the batch"));
            }
            (None, Some(_)) => responses = true,
            _ => {}
        }
    }
    if responses && !ids.is_empty() {
        return refuse("a batch holds either requests and notifications, or responses".into());
    }
    let parent = crate::telemetry::extract(headers, None);
    let members = items.into_iter().map(|item| {
        let gw = gw.clone();
        let call = Call {
            caller: admitted.caller.clone(),
            scope: admitted.scope.clone(),
            era: Era::Stateful(session.clone()),
            request_id: request_id(),
            trace_id: None,
            parent: parent.clone(),
            param_headers: Vec::new(),
            streams: false,
        };
        async move {
            let msg = match jsonrpc::from_value(item) {
                Ok(m) => m,
                Err(e) => return Some(jsonrpc::error_response(None, &e)),
            };
            if msg.method() == Some("initialize") {
                let e = RpcError::new(
                    INVALID_REQUEST,
                    "invalid request: `initialize` cannot be batched",
                );
                return Some(jsonrpc::error_response(msg_id(&msg), &e));
            }
            let is_request = matches!(msg, Inbound::Request { .. });
            let resp = answer(gw, call, msg, false).await;
            if !is_request {
                return None;
            }
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .ok()?;
            serde_json::from_slice::<Value>(&body).ok()
        }
    });
    let answers: Vec<Value> = futures::future::join_all(members)
        .await
        .into_iter()
        .flatten()
        .collect();
    match answers.is_empty() {
        true => StatusCode::ACCEPTED.into_response(),
        false => axum::Json(Value::Array(answers)).into_response(),
    }
}

/// 2026-07-28 header rules: `MCP-Protocol-Version` equals `_meta`, `Mcp-Method` equals the
/// method, `Mcp-Name` equals the name or URI the body targets. Headers are validated, never trusted.
fn check_stateless(
    headers: &HeaderMap,
    msg: &Inbound,
    version_header: Option<&str>,
    meta_version: Option<&str>,
) -> Result<(), RpcError> {
    let mismatch = |m: String| RpcError::new(HEADER_MISMATCH, format!("Header mismatch: {m}"));
    let version = meta_version.or(version_header).unwrap_or_default();
    if version != STATELESS_VERSION {
        let mut e = RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version");
        let mut supported = vec![STATELESS_VERSION];
        supported.extend(STATEFUL_VERSIONS.iter().rev());
        e.data = Some(json!({ "supported": supported, "requested": version }));
        return Err(e);
    }
    if let (Some(h), Some(m)) = (version_header, meta_version)
        && h != m
    {
        return Err(mismatch(format!(
            "MCP-Protocol-Version `{h}` does not match _meta `{m}`"
        )));
    }
    let (method, params) = match msg {
        Inbound::Request { method, params, .. } | Inbound::Notification { method, params } => {
            (method, params)
        }
        Inbound::Response { .. } => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "responses are not accepted in 2026-07-28",
            ));
        }
    };
    match header_str(headers, "mcp-method") {
        None => return Err(mismatch("missing required Mcp-Method header".into())),
        Some(h) if h != method => {
            return Err(mismatch(format!(
                "Mcp-Method `{h}` does not match body method `{method}`"
            )));
        }
        Some(_) => {}
    }
    let key = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    };
    if let Some(key) = key {
        let expected = params
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default();
        match header_str(headers, "mcp-name").map(decode_header_value) {
            None => {
                return Err(mismatch(format!(
                    "missing required Mcp-Name header for `{method}`"
                )));
            }
            Some(None) => return Err(mismatch("Mcp-Name header is not valid Base64".into())),
            Some(Some(v)) if v != expected => {
                return Err(mismatch(format!(
                    "Mcp-Name header value does not match body value for `{method}`"
                )));
            }
            Some(Some(_)) => {}
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers: (name after the prefix, lowercase; value if visible ASCII).
fn param_headers(headers: &HeaderMap) -> Vec<crate::tools::param_headers::Sent> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let suffix = name.as_str().strip_prefix("mcp-param-")?;
            Some((suffix.to_string(), value.to_str().ok().map(str::to_string)))
        })
        .collect()
}

fn decode_header_value(raw: &str) -> Option<String> {
    crate::tools::param_headers::decode(raw)
}

fn initialize(gw: &Gateway, admitted: Admitted, msg: Inbound) -> Response {
    let Inbound::Request { id, params, .. } = msg else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(INVALID_REQUEST, "`initialize` must be a request"),
        );
    };
    let requested = params
        .as_ref()
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = if STATEFUL_VERSIONS.contains(&requested) {
        requested
    } else {
        STATEFUL_VERSIONS.last().copied().unwrap_or("2025-11-25")
    };
    let result = crate::dispatch::initialize_result(gw, &admitted.scope, version);
    let capabilities = params
        .as_ref()
        .and_then(|p| p.get("capabilities"))
        .filter(|c| c.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let session = gw.sessions.create(
        &admitted.caller,
        admitted.scope,
        version.to_string(),
        capabilities,
    );
    tracing::info!(session = %session.id, subject = %session.subject, protocol = version, "session started");
    let mut e = AuditEvent::new("session.start");
    e.session = Some(session.id.clone());
    e.identity = Some(crate::auth::who(&admitted.caller));
    e.detail = Some(json!({ "protocol": version }));
    gw.audit.note(e);
    let mut resp = axum::Json(jsonrpc::response(&id, result)).into_response();
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert("mcp-session-id", v);
    }
    resp
}

/// Run one message and answer it: 202 for notifications and responses; for requests JSON, or an
/// SSE stream if the request produced messages (progress, logs) before its result.
async fn answer(gw: Arc<Gateway>, mut call: Call, msg: Inbound, accepts_sse: bool) -> Response {
    match msg {
        Inbound::Notification { method, params } => {
            crate::dispatch::notification(&gw, &call, &method, params.as_ref());
            StatusCode::ACCEPTED.into_response()
        }
        Inbound::Response { id, outcome } => {
            crate::dispatch::client_response(&call, &id, outcome);
            StatusCode::ACCEPTED.into_response()
        }
        Inbound::Request { id, method, params } => {
            let modern = matches!(call.era, Era::Stateless);
            if method == "subscriptions/listen" && modern {
                return listen(gw, call, id, params);
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
            call.streams = accepts_sse;
            let protocol = match &call.era {
                Era::Stateful(s) => s.protocol_version.clone(),
                Era::Stateless => STATELESS_VERSION.to_string(),
            };
            let span = crate::telemetry::server_span(
                &call.parent,
                &method,
                params.as_ref(),
                &id,
                call.session_id(),
                &protocol,
            );
            call.trace_id = Some(crate::telemetry::trace_id(&span));
            let fut = {
                let gw = gw.clone();
                let id = id.clone();
                let ended = span.clone();
                async move {
                    let started = std::time::Instant::now();
                    let answer =
                        crate::dispatch::request(&gw, &call, &id, &method, params, tx).await;
                    crate::metrics::get().request(&method, answer.label(), started.elapsed());
                    let why = answer.face.as_ref().and_then(|f| f.reason);
                    let r = answer.result;
                    crate::telemetry::finish(&ended, r.as_ref().map_err(|e| (e.code, why)));
                    r
                }
                .with_context(span)
            };
            // Polled here, not spawned: no hand-over to another thread and back on every call.
            let mut run = Finish::new(fut, gw.detached.clone());
            // Wait for either the result or a first message that needs a stream.
            let first = tokio::select! {
                r = &mut run => Err(r),
                m = rx.recv() => Ok(m),
            };
            match first {
                Err(done) => {
                    let (status, body) = finish(&id, done, modern);
                    (status, axum::Json(body)).into_response()
                }
                Ok(None) => {
                    // Every sender is gone without an interim message: the result is near.
                    let done = run.await;
                    let (status, body) = finish(&id, done, modern);
                    (status, axum::Json(body)).into_response()
                }
                Ok(first) if !accepts_sse => {
                    // The client cannot take a stream: drop interim messages, answer with the
                    // result.
                    drop(first);
                    let done = run.await;
                    let (status, body) = finish(&id, done, modern);
                    (status, axum::Json(body)).into_response()
                }
                Ok(first) => {
                    // Interim messages until every sender is gone (the request has finished),
                    // then the result. The request goes on in a task of its own: the stream
                    // only carries what it sends.
                    let task = gw.detached.spawn(run);
                    let head = futures::stream::iter(first);
                    let mids = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|m| (m, rx))
                    });
                    let last = futures::stream::once(async move {
                        let done = task.await.ok().flatten();
                        finish(&id, done, modern).1
                    });
                    let events = head.chain(mids).chain(last).map(|v| {
                        Ok::<_, Infallible>(match v.is_null() {
                            true => Event::default().comment("waiting"),
                            false => Event::default().event("message").data(v.to_string()),
                        })
                    });
                    // A comment whenever nothing else went out for a while: a call held for
                    // approval keeps the client's read timeout from running out.
                    Sse::new(events)
                        .keep_alive(KeepAlive::new().interval(STREAM_KEEPALIVE))
                        .into_response()
                }
            }
        }
    }
}

/// How long an answer's stream stays silent before a comment goes out.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(5);

/// A request's future, polled where its answer is awaited. Its output is `None` if it panicked.
///
/// Abandoned unfinished (the client went away and the connection dropped the handler), it is
/// finished in a task of its own, tracked so shutdown waits for it: a call that was let through
/// still runs to its end and its result is recorded, as when the client stays.
struct Finish<F: Future + Send + 'static>
where
    F::Output: Send,
{
    fut: Option<std::pin::Pin<Box<F>>>,
    detached: tokio_util::task::TaskTracker,
}

impl<F: Future + Send + 'static> Finish<F>
where
    F::Output: Send,
{
    fn new(fut: F, detached: tokio_util::task::TaskTracker) -> Finish<F> {
        Finish {
            fut: Some(Box::pin(fut)),
            detached,
        }
    }
}

impl<F: Future + Send + 'static> Future for Finish<F>
where
    F::Output: Send,
{
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let slot = &mut self.fut;
        let Some(fut) = slot.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        // No panic is expected on this path; if one happens anyway, the caller gets an
        // internal error, as from a failed task, and the connection survives. The future that
        // panicked is dropped inside the guard too.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match fut.as_mut().poll(cx) {
                std::task::Poll::Pending => None,
                std::task::Poll::Ready(out) => Some(out),
            }
        }));
        match polled {
            Ok(None) => std::task::Poll::Pending,
            Ok(Some(out)) => {
                *slot = None;
                std::task::Poll::Ready(Some(out))
            }
            Err(_) => {
                let failed = slot.take();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(failed)));
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Finish<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.detached.spawn_on(fut, &rt);
            }
            Err(_) => tracing::error!("a request was abandoned with no runtime to finish it"),
        }
    }
}

fn finish(id: &Value, done: Option<Result<Value, RpcError>>, modern: bool) -> (StatusCode, Value) {
    match done {
        Some(Ok(result)) => (StatusCode::OK, jsonrpc::response(id, result)),
        Some(Err(e)) => {
            let status = if modern {
                modern_status(e.code)
            } else {
                StatusCode::OK
            };
            (status, jsonrpc::error_response(Some(id), &e))
        }
        None => {
            tracing::error!("request failed unexpectedly");
            (
                StatusCode::OK,
                jsonrpc::error_response(
                    Some(id),
                    &RpcError::new(jsonrpc::INTERNAL_ERROR, "internal error"),
                ),
            )
        }
    }
}

fn modern_status(code: i64) -> StatusCode {
    match code {
        HEADER_MISMATCH | UNSUPPORTED_VERSION | -32021 => StatusCode::BAD_REQUEST,
        jsonrpc::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// 2026-07-28 `subscriptions/listen`: acknowledge, then relay list changes for this scope.
fn listen(gw: Arc<Gateway>, call: Call, id: Value, params: Option<Value>) -> Response {
    let wanted = params
        .as_ref()
        .and_then(|p| p.get("notifications"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let want = |k: &str| wanted.get(k).and_then(Value::as_bool).unwrap_or(false);
    let honoured = json!({
        "toolsListChanged": want("toolsListChanged"),
        "promptsListChanged": want("promptsListChanged"),
        "resourcesListChanged": want("resourcesListChanged"),
    });
    let sub_meta = json!({ "io.modelcontextprotocol/subscriptionId": id });
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        json!({ "notifications": honoured, "_meta": sub_meta }),
    );
    let rx = gw.upstreams().events.subscribe();
    let scope = call.scope;
    let caller = call.caller;
    let filter = honoured.clone();
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
async fn stream(gw: Arc<Gateway>, server: Option<String>, headers: HeaderMap) -> Response {
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
    let Some(session) = gw.sessions.get(sid, &admitted.caller, &admitted.scope) else {
        return plain_error(StatusCode::NOT_FOUND, "session not found");
    };
    let scope = session.scope.clone();
    let subscriber = session.clone();
    let caller = admitted.caller.clone();
    let seer = gw.clone();
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
                        jsonrpc::notification(
                            "notifications/resources/updated",
                            json!({ "uri": shown }),
                        )
                    })
                }
                _ => crate::dispatch::event_notification(&ev, &scope, |server| {
                    crate::authorize::may_browse(&seer, &caller, server)
                })
                .map(|(_, method)| jsonrpc::notification(method, json!({}))),
            };
            futures::future::ready(out)
        });
    let own = tokio_stream_from_broadcast(session.client.events.subscribe());
    let merged = futures::stream::select(upstream, own)
        .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Sse::new(merged)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn delete(gw: Arc<Gateway>, server: Option<String>, headers: HeaderMap) -> Response {
    let admitted = match admit(&gw, server, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(sid) = header_str(&headers, "mcp-session-id") else {
        return plain_error(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id");
    };
    if gw.sessions.remove(sid, &admitted.caller, &admitted.scope) {
        tracing::info!(session = %sid, "session ended by client");
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
    hex::encode(rand::random::<[u8; 8]>())
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
