//! POST: one message, or a 2025-03-26 batch, in either era.

use super::*;

pub(super) async fn post(
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
    if let Some(sid) = header_str(&headers, "mcp-session-id") {
        return stateful(gw, admitted, &headers, sid, msg, accepts_sse).await;
    }
    // `initialize` opens a stateful session, unless the request says it is 2026-07-28, where
    // there is no such method.
    let stateless_header = header_str(&headers, "mcp-protocol-version")
        .is_some_and(|v| !STATEFUL_VERSIONS.contains(&v));
    if msg.method() == Some("initialize") && !stateless_header && meta_version(&msg).is_none() {
        return initialize(&gw, admitted, msg);
    }
    stateless(gw, admitted, &headers, msg, accepts_sse).await
}

/// A message in an existing stateful session.
async fn stateful(
    gw: Arc<Gateway>,
    admitted: Admitted,
    headers: &HeaderMap,
    sid: &str,
    msg: Inbound,
    accepts_sse: bool,
) -> Response {
    let version_header = header_str(headers, "mcp-protocol-version");
    {
        let Some(session) = gw
            .sessions
            .find(&gw.store, sid, &admitted.caller, &admitted.scope)
            .await
        else {
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
            parent: crate::telemetry::extract(headers, msg_params(&msg)),
            param_headers: Vec::new(),
            streams: false,
        };
        answer(gw, call, msg, accepts_sse).await
    }
}

/// A 2026-07-28 message: everything it needs is in the request.
async fn stateless(
    gw: Arc<Gateway>,
    admitted: Admitted,
    headers: &HeaderMap,
    msg: Inbound,
    accepts_sse: bool,
) -> Response {
    let version_header = header_str(headers, "mcp-protocol-version");
    let meta_version = meta_version(&msg);
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
    // Every request carries its protocol version in `_meta`; the header only repeats it.
    if matches!(msg, Inbound::Request { .. }) && meta_version.is_none() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            msg_id(&msg),
            &RpcError::new(
                jsonrpc::INVALID_PARAMS,
                format!("missing `_meta` key `{META_VERSION}`"),
            ),
        );
    }
    if let Err(e) = check_stateless(headers, &msg, version_header, meta_version.as_deref()) {
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
        parent: crate::telemetry::extract(headers, msg_params(&msg)),
        param_headers: param_headers(headers),
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
    let Some(session) = gw
        .sessions
        .find(&gw.store, sid, &admitted.caller, &admitted.scope)
        .await
    else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            &RpcError::new(jsonrpc::GATEWAY_REFUSED, "session not found"),
        );
    };
    if let Err(why) = batch_shape(headers, &session.protocol_version, &items) {
        return refuse(why);
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

/// Why a batch is not taken, if it is not: the session's revision, its size, and requests and
/// responses not mixed, with distinct ids (or a cancellation could not tell the calls apart).
fn batch_shape(headers: &HeaderMap, protocol: &str, items: &[Value]) -> Result<(), String> {
    if let Some(v) = header_str(headers, "mcp-protocol-version")
        && !STATEFUL_VERSIONS.contains(&v)
    {
        return Err(format!("unsupported MCP-Protocol-Version `{v}`"));
    }
    if !BATCH_VERSIONS.contains(&protocol) {
        return Err(format!(
            "protocol {} has no JSON-RPC batches; send one message per POST",
            protocol
        ));
    }
    if items.is_empty() {
        return Err("an empty batch".into());
    }
    if items.len() > MAX_BATCH {
        return Err(format!(
            "a batch of {} messages; at most {MAX_BATCH} are taken in one POST",
            items.len()
        ));
    }
    let mut ids = std::collections::HashSet::new();
    let mut responses = false;
    for item in items {
        match (item.get("method"), item.get("id")) {
            (Some(_), Some(id)) if !ids.insert(id.to_string()) => {
                return Err(format!("the request id {id} appears twice in the batch"));
            }
            (None, Some(_)) => responses = true,
            _ => {}
        }
    }
    if responses && !ids.is_empty() {
        return Err("a batch holds either requests and notifications, or responses".into());
    }
    Ok(())
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
    // The header must say what the body says; only then is the version itself judged.
    if let (Some(h), Some(m)) = (version_header, meta_version)
        && h != m
    {
        return Err(mismatch(format!(
            "MCP-Protocol-Version `{h}` does not match _meta `{m}`"
        )));
    }
    let version = meta_version.or(version_header).unwrap_or_default();
    if version != STATELESS_VERSION {
        let mut e = RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version");
        let mut supported = vec![STATELESS_VERSION];
        supported.extend(STATEFUL_VERSIONS.iter().rev());
        e.data = Some(json!({ "supported": supported, "requested": version }));
        return Err(e);
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
        // `resources/subscribe` and `unsubscribe` do not exist in this revision: no name to
        // check, and the method is answered 404 / -32601.
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
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
    let Some(session) = gw.sessions.create(
        &admitted.caller,
        admitted.scope,
        version.to_string(),
        capabilities,
    ) else {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&id),
            &RpcError::new(jsonrpc::INTERNAL_ERROR, "cannot start a session"),
        );
    };
    tracing::info!(session = %audit::session_ref(&session.id), subject = %session.subject, protocol = version, "session started");
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

/// The protocol version a message's `_meta` names, if any.
fn meta_version(msg: &Inbound) -> Option<String> {
    match msg {
        Inbound::Request { params, .. } | Inbound::Notification { params, .. } => params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str)
            .map(str::to_string),
        Inbound::Response { .. } => None,
    }
}
