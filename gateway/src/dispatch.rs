//! MCP methods: what the gateway answers itself and what it forwards, after deciding.
//!
//! Every item a caller names is resolved against the registry's allowlists and the upstream's
//! current catalogue. A tool that is not allowlisted and a tool that does not exist get the same
//! error, byte for byte, so discovery reveals nothing a caller may not use.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use policy::{ArgumentsDigest, Target};

use crate::call::{self, Call, Era, scoped};
use crate::catalog::{self, Cursor, PAGE_SIZE};
use crate::gateway::Gateway;
use crate::jsonrpc::RpcError;
use crate::refusal::{Face, Refusal};
use crate::session::Scope;
use crate::upstream::{Upstream, UpstreamEvent};

/// Stateful revisions the gateway speaks, oldest first.
pub(crate) const STATEFUL_VERSIONS: &[&str] =
    &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

/// A request's answer, with how a refusal shows (for the metrics and the span).
pub(crate) struct Answer {
    pub(crate) result: Result<Value, RpcError>,
    /// `None` when the request was answered as asked.
    pub(crate) face: Option<Face>,
}

impl Answer {
    /// The `portcullis_requests_total` label.
    pub(crate) fn label(&self) -> &'static str {
        match (&self.face, &self.result) {
            (Some(f), _) => f.label,
            (None, Ok(v)) if v.get("isError").and_then(Value::as_bool) == Some(true) => {
                "tool_error"
            }
            (None, _) => "ok",
        }
    }
}

fn server_info() -> Value {
    json!({ "name": "portcullis", "title": "Portcullis MCP gateway", "version": env!("CARGO_PKG_VERSION") })
}

fn capabilities(gw: &Gateway, scope: &Scope, version: &str) -> Value {
    let modern = version == STATELESS_VERSION;
    let mut caps = json!({
        "tools": { "listChanged": true },
        "resources": { "listChanged": true },
        "prompts": { "listChanged": true },
    });
    // Held calls follow as tasks (`tasks.rs`): the 2025-11-25 capability, or the extension.
    if let Some(obj) = caps.as_object_mut() {
        if version == "2025-11-25" {
            let tasks =
                json!({ "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } });
            obj.insert("tasks".into(), tasks);
        }
        if modern {
            let ext = json!({ crate::jsonrpc::TASKS_EXTENSION: {} });
            obj.insert("extensions".into(), ext);
        }
    }
    let ups = scoped(gw, scope);
    let any = |k: &str| ups.iter().any(|u| u.capabilities().get(k).is_some());
    if let Some(obj) = caps.as_object_mut() {
        if any("completions") {
            obj.insert("completions".into(), json!({}));
        }
        if any("logging") {
            obj.insert("logging".into(), json!({}));
        }
    }
    if let (Scope::Server(_), false) = (scope, modern) {
        // Subscriptions exist only in the initialize-era revisions, on both sides.
        let sub = ups.iter().any(|u| {
            u.is_legacy()
                && u.capabilities()
                    .get("resources")
                    .and_then(|r| r.get("subscribe"))
                    .and_then(Value::as_bool)
                    == Some(true)
        });
        if sub && let Some(r) = caps.get_mut("resources").and_then(Value::as_object_mut) {
            r.insert("subscribe".into(), Value::Bool(true));
        }
    }
    caps
}

/// The `initialize` result for a new stateful session.
pub(crate) fn initialize_result(gw: &Gateway, scope: &Scope, version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(gw, scope, version),
        "serverInfo": server_info(),
        "instructions": "Tools behind this gateway are allowlisted and every call is authorised by the gateway.",
    })
}

/// The notification a session should see for an upstream event, if it concerns its scope.
pub(crate) fn event_notification(
    ev: &UpstreamEvent,
    scope: &Scope,
    visible: impl Fn(&str) -> bool,
) -> Option<(&'static str, &'static str)> {
    let (server, kind, method) = match ev {
        UpstreamEvent::Tools(s) => (s, "toolsListChanged", "notifications/tools/list_changed"),
        UpstreamEvent::Resources(s) => (
            s,
            "resourcesListChanged",
            "notifications/resources/list_changed",
        ),
        UpstreamEvent::Prompts(s) => (
            s,
            "promptsListChanged",
            "notifications/prompts/list_changed",
        ),
        UpstreamEvent::Updated(..) => return None,
    };
    // A session hears of list changes only on servers it may see.
    if !visible(server) {
        return None;
    }
    match scope {
        Scope::Federated => Some((kind, method)),
        Scope::Server(s) if s == server => Some((kind, method)),
        Scope::Server(_) => None,
    }
}

/// Answer one request.
pub(crate) async fn request(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    method: &str,
    params: Option<Value>,
    sink: mpsc::UnboundedSender<Value>,
) -> Answer {
    let answered = route(gw, call, id, method, params, sink).await;
    let (result, face) = match answered {
        Ok(v) => (Ok(v), None),
        Err(refused) => {
            let face = refused.face();
            if let Some(cause) = face.fail_closed {
                crate::metrics::get().fail_closed(cause);
            }
            (refused.answer(), Some(face))
        }
    };
    let result = result.map(|v| finish(gw, call, method, v));
    Answer { result, face }
}

async fn route(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    method: &str,
    params: Option<Value>,
    sink: mpsc::UnboundedSender<Value>,
) -> Result<Value, Refusal> {
    let modern = call.modern();
    let list = |field, key| (method, field, key, params.as_ref());
    match method {
        "ping" if !modern => Ok(json!({})),
        "server/discover" if modern => Ok(discover(gw, &call.scope)),
        "tools/list" => list_tools(gw, call, params.as_ref()),
        "tools/call" => call::tool(gw, call, id, params, sink).await,
        "resources/list" => list_upstream(gw, call, list("resources", "uri")).await,
        "resources/templates/list" => {
            let what = list("resourceTemplates", "uriTemplate");
            list_upstream(gw, call, what).await
        }
        "prompts/list" => list_upstream(gw, call, list("prompts", "")).await,
        "resources/read" | "prompts/get" | "completion/complete" => {
            call::ask(gw, call, method, params, &sink).await
        }
        "resources/subscribe" | "resources/unsubscribe" if !modern => {
            call::ask(gw, call, method, params, &sink).await
        }
        "logging/setLevel" if !modern => Box::pin(call::set_level(gw, call, params)).await,
        // Boxed, as the other rare branches are: a branch's future is carried, at its full
        // size, by every request's future, and moved with it as it is awaited.
        m if m.starts_with("tasks/") => {
            Box::pin(crate::call::tasks::method(gw, call, id, m, params, sink)).await
        }
        _ => Err(Refusal::NoSuchMethod(method.to_string())),
    }
}

/// A result on its way out: listings recorded, 2026-07-28 results marked as such.
fn finish(gw: &Gateway, call: &Call, method: &str, mut result: Value) -> Value {
    let modern = call.modern();
    if let Some(key) = match method {
        "tools/list" => Some("tools"),
        "resources/list" => Some("resources"),
        "resources/templates/list" => Some("resourceTemplates"),
        "prompts/list" => Some("prompts"),
        _ => None,
    } {
        let mut e = call.event("mcp.list");
        e.method = Some(method.to_string());
        e.outcome = Some("allowed");
        e.detail = Some(json!({
            "items": result.get(key).and_then(Value::as_array).map_or(0, Vec::len),
            "endpoint": match &call.scope { Scope::Federated => "/mcp".to_string(), Scope::Server(s) => format!("/mcp/{s}") },
        }));
        gw.audit.note(e);
    }
    // A 2025-era client never sees the 2026-07-28 result fields an upstream of that revision
    // may have sent.
    if !modern && let Some(obj) = result.as_object_mut() {
        for key in ["resultType", "ttlMs", "cacheScope"] {
            obj.remove(key);
        }
    }
    if modern && let Some(obj) = result.as_object_mut() {
        obj.entry("resultType").or_insert_with(|| json!("complete"));
        // An `InputRequiredResult` is rebuilt by `call/input.rs` and carries no hints.
        let asks = obj.get("resultType").and_then(Value::as_str) == Some("input_required");
        if !asks
            && matches!(
                method,
                "server/discover"
                    | "tools/list"
                    | "prompts/list"
                    | "resources/list"
                    | "resources/templates/list"
                    | "resources/read"
            )
        {
            obj.entry("ttlMs").or_insert_with(|| json!(0));
            // What a caller sees depends on who it is: never cache across identities.
            obj.insert("cacheScope".into(), json!("private"));
        }
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
        }
    }
    result
}

fn discover(gw: &Gateway, scope: &Scope) -> Value {
    let mut versions = vec![STATELESS_VERSION];
    versions.extend(STATEFUL_VERSIONS.iter().rev());
    json!({
        "supportedVersions": versions,
        "capabilities": capabilities(gw, scope, STATELESS_VERSION),
        "instructions": "Tools behind this gateway are allowlisted and every call is authorised by the gateway.",
    })
}

/// Exactly the tools this caller may call (or may ask approval for), on this endpoint.
fn list_tools(gw: &Gateway, call: &Call, params: Option<&Value>) -> Result<Value, Refusal> {
    let cursor = Cursor::from_params(params)?;
    let federated = call.scope == Scope::Federated;
    let no_args = ArgumentsDigest([0; 32]);
    // A tool that is held for this caller may follow as a task, where its client can.
    let tasks = crate::call::tasks::flavor(call, params).is_some();
    let lists: Vec<_> = scoped(gw, &call.scope)
        .into_iter()
        .map(|u| {
            let tools = u.tools();
            (u, tools)
        })
        .collect();
    let mut all = Vec::new();
    for (up, tools) in &lists {
        for t in tools.iter() {
            let target = Target::Tool(t.tool.name.as_ref());
            let decision =
                crate::authorize::decide(gw, &call.caller, up.name(), target, t.class, no_args);
            if decision.is_visible() {
                let held = tasks && matches!(decision, policy::Decision::NeedsApproval { .. });
                all.push((if federated { &t.federated } else { &t.own }, held));
            }
        }
    }
    let page: Vec<Value> = all
        .iter()
        .skip(cursor.offset)
        .take(PAGE_SIZE)
        .map(|(v, held)| {
            let mut v = (*v).clone();
            // What the gateway offers (the presented definition never carries the upstream's
            // `execution`, `tools/present.rs`): a held tool may follow as the gateway's task.
            if *held && let Some(o) = v.as_object_mut() {
                o.insert("execution".into(), json!({ "taskSupport": "optional" }));
            }
            v
        })
        .collect();
    let mut out = json!({ "tools": page });
    let next = cursor.offset.saturating_add(PAGE_SIZE);
    if next < all.len() {
        let c = Cursor {
            server: 0,
            offset: next,
            upstream: None,
        }
        .encode();
        if let Some(o) = out.as_object_mut() {
            o.insert("nextCursor".into(), json!(c));
        }
    }
    Ok(out)
}

/// Resources, templates and prompts: fetched live, one upstream page per answer, with a
/// cursor that remembers the upstream and its own cursor.
async fn list_upstream(
    gw: &Gateway,
    call: &Call,
    (method, field, uri_key, params): (&str, &str, &str, Option<&Value>),
) -> Result<Value, Refusal> {
    let mut cursor = Cursor::from_params(params)?;
    // Resources and prompts are browsable only with `server/*` at every level.
    // A switch over the whole gateway or the caller (or an unknown state) refuses the
    // listing; a switch over one server leaves that server out of it.
    if let Some(killed) = gw.levers.killed(&call.caller.identity, "", "") {
        tracing::warn!(subject = %call.caller.subject, method, reason = %killed, "listing refused: killed");
        let what = method.to_string();
        return Err(Refusal::Killed { what, killed });
    }
    let ups: Vec<Arc<Upstream>> = scoped(gw, &call.scope)
        .into_iter()
        .filter(|u| crate::authorize::may_browse(gw, &call.caller, u.name()))
        .filter(|u| {
            gw.levers
                .killed(&call.caller.identity, u.name(), "")
                .is_none()
        })
        .collect();
    let mut items = Vec::new();
    let mut next = None;
    while let Some(up) = ups.get(cursor.server) {
        let p = match &cursor.upstream {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        match up.request(method, Some(p), None, None, None).await {
            Ok(page) => {
                items.extend(shown(up, &page, field, uri_key, &call.scope));
                match page.get("nextCursor").and_then(Value::as_str) {
                    Some(c) if !c.is_empty() => {
                        next = Some(Cursor {
                            server: cursor.server,
                            offset: 0,
                            upstream: Some(c.to_string()),
                        });
                    }
                    _ if cursor.server + 1 < ups.len() => {
                        next = Some(Cursor {
                            server: cursor.server + 1,
                            offset: 0,
                            upstream: None,
                        });
                    }
                    _ => next = None,
                }
            }
            Err(e) => {
                // A down upstream is skipped in a federated listing; alone, it is an error.
                if ups.len() == 1 {
                    return Err(e.into());
                }
                tracing::warn!(server = %up.name(), error = %e, "upstream skipped in listing");
                next = (cursor.server + 1 < ups.len()).then(|| Cursor {
                    server: cursor.server + 1,
                    offset: 0,
                    upstream: None,
                });
            }
        }
        // Keep going past upstreams that contributed nothing, so pages are not needlessly empty.
        match &next {
            Some(n) if items.is_empty() => cursor = n.clone(),
            _ => break,
        }
    }
    let mut out = json!({ field: items });
    if let Some(n) = next
        && let Some(o) = out.as_object_mut()
    {
        o.insert("nextCursor".into(), json!(n.encode()));
    }
    Ok(out)
}

/// The items of one upstream page a caller is shown: allowlisted ones only, named for the
/// endpoint.
fn shown(up: &Upstream, page: &Value, field: &str, uri_key: &str, scope: &Scope) -> Vec<Value> {
    let config = up.config();
    let items = page
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut out = Vec::new();
    for item in items {
        let named = |k: &str| item.get(k).and_then(Value::as_str);
        let allowed = match field {
            "prompts" => named("name").is_some_and(|n| config.allows_prompt(n)),
            _ => named(uri_key).is_some_and(|u| config.allows_resource(u)),
        };
        if !allowed {
            continue;
        }
        if field != "prompts" {
            out.push(catalog::present_resource(
                up.name(),
                item.clone(),
                scope,
                uri_key,
            ));
            continue;
        }
        let mut it = item.clone();
        if *scope == Scope::Federated
            && let Some(Value::String(n)) = it.get("name")
        {
            let renamed = json!(format!("{}__{}", up.name(), n));
            if let Some(o) = it.as_object_mut() {
                o.insert("name".into(), renamed);
            }
        }
        out.push(it);
    }
    out
}

/// A client notification: cancellation is acted on; the rest need nothing from the gateway.
pub(crate) fn notification(gw: &Gateway, call: &Call, method: &str, params: Option<&Value>) {
    if method == "notifications/cancelled" {
        let (Some(sid), Some(rid)) = (call.session_id(), params.and_then(|p| p.get("requestId")))
        else {
            return;
        };
        let token = gw
            .inflight
            .lock()
            .ok()
            .and_then(|m| m.get(&(sid.to_string(), rid.to_string())).cloned());
        if let Some(t) = token {
            tracing::info!(session = %audit::session_ref(sid), request = %rid, "request cancelled by client");
            t.cancel();
        }
    }
}

/// A client's response to a request the gateway sent it on an upstream's behalf (only over
/// a per-session upstream connection), handed to the waiting request. Any other response
/// is unexpected and dropped.
pub(crate) fn client_response(call: &Call, id: &Value, outcome: Result<Value, Value>) {
    let delivered = match &call.era {
        Era::Stateful(session) => session.client.pending.answer(id, outcome),
        Era::Stateless => false,
    };
    if !delivered {
        tracing::debug!(session = %call.session_id().map_or_else(|| "-".to_owned(), audit::session_ref), id = %id, "unexpected client response dropped");
    }
}
