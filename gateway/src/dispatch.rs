//! MCP methods: what the gateway answers itself and what it forwards, after deciding.
//!
//! Every item a caller names is resolved against the registry's allowlists and the upstream's
//! current catalogue. A tool that is not allowlisted and a tool that does not exist get the same
//! error, byte for byte, so discovery reveals nothing a caller may not use.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use audit::Event;
use policy::{ArgumentsDigest, Decision, Target, ToolClass};
use registry::Mode;

use crate::approvals::refusal;
use crate::auth::Caller;
use crate::authorize::{digest_and_size, rejected_arguments};
use crate::catalog::{self, Cursor, PAGE_SIZE};
use crate::front::{STATEFUL_VERSIONS, STATELESS_VERSION};
use crate::gateway::Gateway;
use crate::jsonrpc::{
    INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, RpcError, UPSTREAM_ERROR,
};
use crate::session::{Scope, Session};
use crate::upstream::{On, Upstream, UpstreamError, UpstreamEvent};

/// Which protocol era a request arrived in.
pub(crate) enum Era {
    /// 2025-era: a session created by `initialize`.
    Stateful(Arc<Session>),
    /// 2026-07-28: everything is in the request.
    Stateless,
}

/// One inbound message's context.
pub(crate) struct Call {
    pub(crate) caller: Caller,
    pub(crate) scope: Scope,
    pub(crate) era: Era,
    /// This gateway's id for the inbound message, in its audit events and spans.
    pub(crate) request_id: String,
    /// The W3C trace this request belongs to (its SERVER span's trace id).
    pub(crate) trace_id: Option<String>,
    /// The caller's trace context, parent of the SERVER span.
    pub(crate) parent: opentelemetry::Context,
    /// `Mcp-Param-*` headers of a 2026-07-28 request, checked against a tool call's arguments.
    pub(crate) param_headers: Vec<crate::param_headers::Sent>,
    /// True if the client takes an SSE stream for this request's response (interim messages
    /// reach it); false for JSON-only requests and batch members.
    pub(crate) streams: bool,
}

impl Call {
    fn modern(&self) -> bool {
        matches!(self.era, Era::Stateless)
    }

    /// An audit event about this request: its ids, session and caller filled in.
    pub(crate) fn event(&self, kind: &'static str) -> Event {
        let mut e = Event::new(kind);
        e.request_id = Some(self.request_id.clone());
        e.trace_id = self.trace_id.clone();
        e.session = self.session_id().map(str::to_string);
        e.identity = Some(crate::auth::who(&self.caller));
        e
    }

    pub(crate) fn session_id(&self) -> Option<&str> {
        match &self.era {
            Era::Stateful(s) => Some(&s.id),
            Era::Stateless => None,
        }
    }
}

fn server_info() -> Value {
    json!({ "name": "portcullis", "title": "Portcullis MCP gateway", "version": env!("CARGO_PKG_VERSION") })
}

fn capabilities(gw: &Gateway, scope: &Scope) -> Value {
    let mut caps = json!({
        "tools": { "listChanged": true },
        "resources": { "listChanged": true },
        "prompts": { "listChanged": true },
    });
    let ups = gw.scoped(scope);
    let any = |k: &str| ups.iter().any(|u| u.capabilities().get(k).is_some());
    if let Some(obj) = caps.as_object_mut() {
        if any("completions") {
            obj.insert("completions".into(), json!({}));
        }
        if any("logging") {
            obj.insert("logging".into(), json!({}));
        }
    }
    if let Scope::Server(_) = scope {
        // Subscriptions exist only in the initialize-era revisions of the upstream protocol.
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
        "capabilities": capabilities(gw, scope),
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

/// The levels `logging/setLevel` takes (RFC 5424 severities, as MCP names them).
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

/// The single answer for a tool that is not allowlisted, not offered, or not there at all.
fn unknown_tool(name: &str) -> RpcError {
    let mut e = RpcError::new(INVALID_PARAMS, format!("Unknown tool: {name}"));
    e.data = Some(json!({ "reason": "not_found" }));
    e
}

/// What the audit log will say about one tool call, filled in as it is decided.
#[derive(Default)]
struct Trail {
    server: Option<String>,
    tool: Option<String>,
    digest: Option<String>,
    request_bytes: Option<u64>,
    arguments: Option<Value>,
    outcome: Option<&'static str>,
    reason: Option<String>,
    level: Option<String>,
    approval: Option<String>,
    /// Set when the request event is written and the upstream is called.
    started: Option<std::time::Instant>,
}

/// `data.reason` of a gateway refusal.
fn refusal_reason(e: &RpcError) -> Option<&str> {
    e.data.as_ref()?.get("reason")?.as_str()
}

/// The audit outcome of a refusal the trail did not name.
fn outcome_of(e: &RpcError) -> &'static str {
    match refusal_reason(e) {
        Some("not_found") => "not_found",
        Some("killed") => "killed",
        Some("read_only") => "read_only",
        Some("quarantined") => "quarantined",
        Some("rate_limited") => "rate_limited",
        Some("unavailable") => "unavailable",
        _ => "invalid_request",
    }
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_size(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Removes a call from the client-cancellation map however the call ends.
struct Unregister<'a> {
    map: &'a std::sync::Mutex<
        std::collections::HashMap<(String, String), tokio_util::sync::CancellationToken>,
    >,
    key: Option<(String, String)>,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let (Some(k), Ok(mut map)) = (&self.key, self.map.lock()) {
            map.remove(k);
        }
    }
}

/// What the mode does to an allowed call: `Err` refuses it (read-only), `Ok(Some)` answers it
/// without executing (shadow), `Ok(None)` lets it go on.
fn mode_gate(
    mode: Mode,
    name: &str,
    class: ToolClass,
    needs_approval: bool,
) -> Result<Option<Value>, RpcError> {
    match mode {
        Mode::Enforce => Ok(None),
        Mode::ReadOnly if class >= ToolClass::Write => Err(refusal(
            "read_only",
            format!(
                "`{name}` is a {class} tool and the gateway is in read-only mode; it was not executed"
            ),
            json!({ "class": class.as_str() }),
        )),
        Mode::ReadOnly => Ok(None),
        Mode::Shadow => Ok(Some(shadow_result(name, needs_approval))),
    }
}

fn killed_refusal(name: &str, killed: &crate::levers::Killed) -> RpcError {
    refusal(
        "killed",
        format!("`{name}` was not executed: {killed}"),
        json!({}),
    )
}

/// The answer to a call in shadow mode: decided and recorded, never executed.
fn shadow_result(name: &str, needs_approval: bool) -> Value {
    let mut text = format!(
        "Not executed: the gateway is in shadow mode. The call to `{name}` was allowed by policy and recorded; no upstream was called."
    );
    if needs_approval {
        text.push_str(" In enforce mode it would have been held for a human's approval.");
    }
    json!({
        "content": [{ "type": "text", "text": text }],
        "isError": false,
        "_meta": { "portcullis/shadow": true, "portcullis/executed": false },
    })
}

fn unknown_prompt(name: &str) -> RpcError {
    let mut e = RpcError::new(INVALID_PARAMS, format!("Unknown prompt: {name}"));
    e.data = Some(json!({ "reason": "not_found" }));
    e
}

fn unknown_resource(uri: &str, modern: bool) -> RpcError {
    let code = if modern {
        INVALID_PARAMS
    } else {
        RESOURCE_NOT_FOUND
    };
    let mut e = RpcError::new(code, "Resource not found");
    e.data = Some(json!({ "reason": "not_found", "uri": uri }));
    e
}

fn upstream_error(e: UpstreamError) -> RpcError {
    match e {
        UpstreamError::Rpc { server, error } => {
            let code = error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(UPSTREAM_ERROR);
            let msg = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let mut out = RpcError::new(code, format!("upstream `{server}`: {msg}"));
            out.data = Some(
                json!({ "reason": "upstream_error", "server": server, "upstream": error.get("data") }),
            );
            out
        }
        other => {
            tracing::warn!(error = %other, "upstream request failed");
            let server = match &other {
                UpstreamError::Down(s)
                | UpstreamError::Timeout(s, _)
                | UpstreamError::Transport(s)
                | UpstreamError::Cancelled(s)
                | UpstreamError::Unreadable(s) => s.clone(),
                UpstreamError::Rpc { server, .. } => server.clone(),
            };
            let mut out = RpcError::new(UPSTREAM_ERROR, other.to_string());
            out.data = Some(json!({ "reason": "upstream_unavailable", "server": server }));
            out
        }
    }
}

/// Params to forward upstream: the caller's `_meta` never crosses the gateway.
fn forwardable(params: Option<Value>) -> Map<String, Value> {
    let mut p = match params {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    p.remove("_meta");
    p
}

fn progress_token(params: &Option<Value>) -> Option<Value> {
    params
        .as_ref()?
        .get("_meta")?
        .get("progressToken")
        .filter(|t| t.is_string() || t.is_number())
        .cloned()
}

fn str_param<'a>(params: &'a Option<Value>, key: &str) -> Result<&'a str, RpcError> {
    params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("missing string parameter `{key}`")))
}

impl Gateway {
    /// The upstreams an endpoint reaches, in config order, as the config stands now.
    fn scoped(&self, scope: &Scope) -> Vec<Arc<Upstream>> {
        let set = self.upstreams();
        match scope {
            Scope::Federated => set.all().to_vec(),
            Scope::Server(s) => set.get(s).cloned().into_iter().collect(),
        }
    }

    /// The session a forwarded request belongs to, for servers with per-session connections;
    /// `sink` is the request's response stream, passed on only if the client takes a stream.
    fn on<'a>(
        &'a self,
        call: &'a Call,
        sink: Option<&'a mpsc::UnboundedSender<Value>>,
    ) -> Option<On<'a>> {
        match &call.era {
            Era::Stateful(session) => Some(On {
                session,
                caller: &call.caller,
                sink: sink.filter(|_| call.streams),
                levers: &self.levers,
            }),
            Era::Stateless => None,
        }
    }

    /// Resolve a client-facing name to (upstream, upstream-side name) for this scope.
    fn resolve<'a>(&self, scope: &Scope, name: &'a str) -> Option<(Arc<Upstream>, &'a str)> {
        let set = self.upstreams();
        match scope {
            Scope::Federated => {
                let f = policy::split_federated(name)?;
                Some((set.get(f.server)?.clone(), f.name))
            }
            Scope::Server(s) => Some((set.get(s)?.clone(), name)),
        }
    }

    /// Answer one request.
    pub(crate) async fn request(
        &self,
        call: &Call,
        id: &Value,
        method: &str,
        params: Option<Value>,
        sink: mpsc::UnboundedSender<Value>,
    ) -> Result<Value, RpcError> {
        let modern = call.modern();
        let mut result = match method {
            "ping" if !modern => Ok(json!({})),
            "server/discover" if modern => Ok(self.discover(&call.scope)),
            "tools/list" => self.list_tools(call, params.as_ref()),
            "tools/call" => self.call_tool(call, id, params, sink).await,
            "resources/list" => {
                self.list_upstream(call, "resources/list", "resources", "uri", params.as_ref())
                    .await
            }
            "resources/templates/list" => {
                self.list_upstream(
                    call,
                    "resources/templates/list",
                    "resourceTemplates",
                    "uriTemplate",
                    params.as_ref(),
                )
                .await
            }
            "resources/read" => self.read_resource(call, params, &sink).await,
            "resources/subscribe" | "resources/unsubscribe" if !modern => {
                self.subscribe(call, method, params).await
            }
            "prompts/list" => {
                self.list_upstream(call, "prompts/list", "prompts", "", params.as_ref())
                    .await
            }
            "prompts/get" => self.get_prompt(call, params, &sink).await,
            "completion/complete" => self.complete(call, params, &sink).await,
            "logging/setLevel" if !modern => self.set_level(call, params).await,
            _ => {
                let mut e = RpcError::new(METHOD_NOT_FOUND, format!("Method not found: {method}"));
                e.data = Some(Value::String(method.to_string()));
                Err(e)
            }
        }?;
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
            self.audit.note(e);
        }
        if modern && let Some(obj) = result.as_object_mut() {
            obj.entry("resultType").or_insert_with(|| json!("complete"));
            if matches!(
                method,
                "server/discover"
                    | "tools/list"
                    | "prompts/list"
                    | "resources/list"
                    | "resources/templates/list"
                    | "resources/read"
            ) {
                obj.entry("ttlMs").or_insert_with(|| json!(0));
                // What a caller sees depends on who it is: never cache across identities.
                obj.insert("cacheScope".into(), json!("private"));
            }
            let meta = obj.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
            }
        }
        Ok(result)
    }

    fn discover(&self, scope: &Scope) -> Value {
        let mut versions = vec![STATELESS_VERSION];
        versions.extend(STATEFUL_VERSIONS.iter().rev());
        json!({
            "supportedVersions": versions,
            "capabilities": capabilities(self, scope),
            "instructions": "Tools behind this gateway are allowlisted and every call is authorised by the gateway.",
        })
    }

    /// Exactly the tools this caller may call (or may ask approval for), on this endpoint.
    fn list_tools(&self, call: &Call, params: Option<&Value>) -> Result<Value, RpcError> {
        let cursor = Cursor::from_params(params)?;
        let federated = call.scope == Scope::Federated;
        let no_args = ArgumentsDigest([0; 32]);
        let lists: Vec<_> = self
            .scoped(&call.scope)
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
                if self
                    .decide(&call.caller, up.name(), target, t.class, no_args)
                    .is_visible()
                {
                    all.push(if federated { &t.federated } else { &t.own });
                }
            }
        }
        let page: Vec<Value> = all
            .iter()
            .skip(cursor.offset)
            .take(PAGE_SIZE)
            .map(|v| (*v).clone())
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

    /// `tools/call`, with its audit events: the decision (a request event written before the
    /// upstream is called, or a refusal), then the result.
    async fn call_tool(
        &self,
        call: &Call,
        id: &Value,
        params: Option<Value>,
        sink: mpsc::UnboundedSender<Value>,
    ) -> Result<Value, RpcError> {
        let mut trail = Trail::default();
        let result = self
            .call_tool_decided(call, id, params, sink, &mut trail)
            .await;
        let executed = trail.started.is_some();
        let mut event = self.call_event(
            call,
            if executed { "tool.result" } else { "tool.call" },
            &trail,
        );
        if let Some(started) = trail.started {
            event.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            match &result {
                Ok(v) => {
                    let failed = v.get("isError").and_then(Value::as_bool) == Some(true);
                    event.status = Some(if failed { "tool_error" } else { "ok" });
                    event.response_bytes = Some(json_size(v));
                }
                Err(e) => {
                    event.status = Some("error");
                    event.reason = Some(refusal_reason(e).unwrap_or("upstream_error").to_string());
                }
            }
        } else if let Err(e) = &result
            && trail.outcome.is_none()
        {
            event.outcome = Some(outcome_of(e));
        }
        if let (Some(server), Some(tool)) = (&trail.server, &trail.tool) {
            let outcome = event.status.or(event.outcome).unwrap_or("error");
            crate::metrics::get().tool_call(server, tool, outcome);
        }
        self.audit.note(event);
        result
    }

    /// An event about the call described by `trail`.
    fn call_event(&self, call: &Call, kind: &'static str, trail: &Trail) -> Event {
        let mut e = call.event(kind);
        e.method = Some("tools/call".into());
        e.server = trail.server.clone();
        e.tool = trail.tool.clone();
        e.arguments_digest = trail.digest.clone();
        e.request_bytes = trail.request_bytes;
        e.outcome = trail.outcome;
        e.reason = trail.reason.clone();
        e.level = trail.level.clone();
        // The summary goes into one event only: the decision, or the result of an executed call
        // whose decision event already carried it.
        e.arguments = if kind == "tool.call" {
            trail.arguments.clone()
        } else {
            None
        };
        if let Some(a) = &trail.approval {
            e.detail = Some(json!({ "approval_id": a }));
        }
        e
    }

    async fn call_tool_decided(
        &self,
        call: &Call,
        id: &Value,
        params: Option<Value>,
        sink: mpsc::UnboundedSender<Value>,
        trail: &mut Trail,
    ) -> Result<Value, RpcError> {
        // The config this call is decided under; a reload before it runs means deciding again.
        let generation = self.live();
        let name = str_param(&params, "name")?.to_string();
        // Until it resolves, the name is the caller's text: keep it bounded in the record.
        let mut shown = name.clone();
        crate::redact::shorten(&mut shown, 128);
        trail.tool = Some(shown);
        let Some((up, tool)) = self.resolve(&call.scope, &name) else {
            trail.outcome = Some("not_found");
            return Err(unknown_tool(&name));
        };
        // Allowlisted in the registry AND currently offered by the upstream, compared exactly.
        let tools = up.tools();
        let offered = tools.iter().find(|t| t.tool.name == tool);
        let Some(offered) = offered.filter(|_| up.config().tools.contains_key(tool)) else {
            // A quarantined tool is named as such only to a caller who may call it.
            if let (Some(q), Some(entry)) = (up.quarantined(tool), up.config().tools.get(tool)) {
                trail.server = Some(up.name().to_string());
                trail.tool = Some(tool.to_string());
                let digest = digest_and_size(&Value::Null).0;
                let allowed = !matches!(
                    self.decide(
                        &call.caller,
                        up.name(),
                        Target::Tool(tool),
                        entry.class,
                        digest
                    ),
                    Decision::Deny(_)
                );
                if allowed {
                    tracing::warn!(subject = %call.caller.subject, server = up.name(), tool, why = %q.why, "call to quarantined tool refused");
                    trail.outcome = Some("quarantined");
                    trail.reason = Some(q.why.clone());
                    return Err(refusal(
                        "quarantined",
                        format!(
                            "`{name}` is quarantined: its definition is not the pinned one; an operator must review and re-pin it"
                        ),
                        json!({}),
                    ));
                }
            }
            tracing::info!(subject = %call.caller.subject, tool = %name, "call to unknown or unlisted tool refused");
            trail.outcome = Some("not_found");
            return Err(unknown_tool(&name));
        };
        trail.server = Some(up.name().to_string());
        trail.tool = Some(tool.to_string());
        // Closed when the client is gone: a held call then stops waiting.
        let gone = sink.clone();
        let progress = progress_token(&params).map(|t| (t, sink));
        let mut fwd = forwardable(params);
        fwd.insert("name".into(), Value::String(tool.to_string()));
        // Absent arguments are checked and digested as `{}`; nothing is copied.
        let no_arguments = Value::Object(Map::new());
        let arguments = match fwd.get("arguments") {
            None => &no_arguments,
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                trail.outcome = Some("invalid_request");
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "`arguments` must be an object",
                ));
            }
        };
        let (digest, size) = digest_and_size(arguments);
        trail.digest = Some(hex::encode(digest.0));
        trail.request_bytes = Some(size);
        trail.arguments = Some(self.audit.summary(arguments));
        let target = Target::Tool(tool);
        let server = up.name();
        let subject = &call.caller.subject;
        let needs_approval = match self.decide(&call.caller, server, target, offered.class, digest)
        {
            Decision::Allow => false,
            Decision::Deny(denial) => {
                // Denied answers exactly like nonexistent; the reason goes to the operator.
                tracing::info!(%subject, server, tool, reason = %denial, "tool call denied");
                trail.outcome = Some("denied");
                if matches!(denial.reason, policy::DenyReason::Internal(_)) {
                    crate::metrics::get().fail_closed("policy_error");
                }
                trail.level = denial.level.map(|l| l.as_str().to_string());
                trail.reason = Some(denial.to_string());
                return Err(unknown_tool(&name));
            }
            Decision::NeedsApproval { .. } => true,
        };
        if let Some(killed) = self.levers.killed(&call.caller.identity, server, tool) {
            tracing::warn!(%subject, server, tool, reason = %killed, "tool call refused: killed");
            if killed == crate::levers::Killed::StateUnknown {
                crate::metrics::get().fail_closed("kill_switch_state_unknown");
            }
            trail.outcome = Some("killed");
            trail.reason = Some(killed.to_string());
            return Err(killed_refusal(&name, &killed));
        }
        if call.modern()
            && let Err(why) = offered.param_headers.check(arguments, &call.param_headers)
        {
            tracing::info!(%subject, server, tool, reason = %why, "tool call refused: Mcp-Param header mismatch");
            trail.outcome = Some("invalid_request");
            trail.reason = Some(why.clone());
            return Err(RpcError::new(
                crate::jsonrpc::HEADER_MISMATCH,
                format!("Header mismatch: {why}"),
            ));
        }
        if let Err(why) = offered.check.check(arguments) {
            // The message may quote argument values: logs and the audit log get its place only.
            tracing::info!(%subject, server, tool, at = %why.at, "tool call arguments rejected");
            trail.outcome = Some("invalid_arguments");
            trail.reason = Some(format!("arguments do not match the schema at `{}`", why.at));
            return Ok(rejected_arguments(&why.message));
        }
        if let Some(rate) = offered.rate
            && let Err(wait) = self
                .limits
                .admit(server, tool, rate, std::time::Instant::now())
        {
            tracing::info!(%subject, server, tool, %rate, "tool call refused: rate limited");
            trail.outcome = Some("rate_limited");
            trail.reason = Some(format!("more than {rate}"));
            return Err(refusal(
                "rate_limited",
                format!(
                    "`{name}` is limited to {rate}; try again in {} s",
                    wait.as_secs().max(1)
                ),
                json!({ "retry_after_s": wait.as_secs().max(1) }),
            ));
        }
        match mode_gate(self.levers.mode_now(), &name, offered.class, needs_approval) {
            Ok(None) => {}
            Ok(Some(answer)) => {
                tracing::info!(%subject, server, tool, arguments_digest = %hex::encode(digest.0), needs_approval, "shadow mode: call recorded, not executed");
                trail.outcome = Some("shadow");
                return Ok(answer);
            }
            Err(refused) => {
                tracing::info!(%subject, server, tool, class = %offered.class, "tool call refused: read-only mode");
                trail.outcome = Some("read_only");
                return Err(refused);
            }
        }
        // From here the call can be cancelled: by the client, or by a kill switch covering it.
        let Some(running) = self
            .levers
            .start(call.caller.identity.clone(), server, tool)
        else {
            tracing::error!(%subject, server, tool, "in-flight registry unavailable; call refused");
            crate::metrics::get().fail_closed("inflight_registry_unavailable");
            trail.outcome = Some("unavailable");
            return Err(refusal(
                "unavailable",
                format!(
                    "`{name}` was not executed: the gateway cannot track it for the kill switch"
                ),
                json!({}),
            ));
        };
        let cancel = running.cancel.clone();
        let key = call.session_id().map(|s| (s.to_string(), id.to_string()));
        if let (Some(k), Ok(mut map)) = (&key, self.inflight.lock()) {
            map.insert(k.clone(), cancel.clone());
        }
        let _unregister = Unregister {
            map: &self.inflight,
            key,
        };
        if needs_approval {
            let held = crate::approvals::HeldCall {
                caller: &call.caller,
                server,
                tool,
                name: &name,
                class: offered.class,
                fingerprint: &offered.fingerprint,
                arguments,
                digest: &digest,
            };
            let outcome = self.hold(&held, progress.clone(), &cancel, &gone).await;
            // The hold took time: a switch engaged or a mode switched meanwhile still applies.
            if let Some(killed) = self.levers.killed(&call.caller.identity, server, tool) {
                tracing::warn!(%subject, server, tool, reason = %killed, "held call refused: killed");
                trail.outcome = Some("killed");
                trail.reason = Some(killed.to_string());
                return Err(killed_refusal(&name, &killed));
            }
            let approval = match outcome {
                Ok(a) => a,
                Err(e) => {
                    trail.outcome = Some(match refusal_reason(&e) {
                        Some("approval_pending") => "held",
                        Some("approval_denied") => "approval_denied",
                        Some("cancelled") => "cancelled",
                        _ => {
                            crate::metrics::get().fail_closed("approval_state_unavailable");
                            "unavailable"
                        }
                    });
                    trail.approval = e
                        .data
                        .as_ref()
                        .and_then(|d| d.get("approval_id"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    return Err(e);
                }
            };
            trail.approval = Some(approval.clone());
            match mode_gate(self.levers.mode_now(), &name, offered.class, false) {
                Ok(None) => {}
                Ok(Some(answer)) => {
                    tracing::info!(%subject, server, tool, %approval, "shadow mode since approval: not executed");
                    trail.outcome = Some("shadow");
                    return Ok(answer);
                }
                Err(refused) => {
                    tracing::info!(%subject, server, tool, %approval, "read-only mode since approval: refused");
                    trail.outcome = Some("read_only");
                    return Err(refused);
                }
            }
        }
        // Audit before action: the request event is on a required sink, or nothing runs.
        trail.outcome = Some("allowed");
        let request_event = self.call_event(call, "tool.call", trail);
        if let Err(e) = self.audit.record(request_event).await {
            tracing::error!(%subject, server, tool, error = %e, "audit log cannot record the call; refused");
            crate::metrics::get().fail_closed("audit_unavailable");
            trail.outcome = Some("audit_unavailable");
            trail.reason = Some(e.to_string());
            return Err(refusal(
                "audit_unavailable",
                format!("`{name}` was not executed: the audit log cannot record it"),
                json!({}),
            ));
        }
        // Recording took time: a switch, a mode change or a cancellation meanwhile still applies.
        if let Some(killed) = self.levers.killed(&call.caller.identity, server, tool) {
            trail.outcome = Some("killed");
            trail.reason = Some(killed.to_string());
            return Err(killed_refusal(&name, &killed));
        }
        if let Err(refused) = mode_gate(self.levers.mode_now(), &name, offered.class, false)
            .and_then(|shadow| match shadow {
                None => Ok(()),
                Some(_) => Err(refusal(
                    "shadow",
                    format!("`{name}` was not executed: the gateway switched to shadow mode"),
                    json!({}),
                )),
            })
        {
            trail.outcome = Some(if refusal_reason(&refused) == Some("shadow") {
                "shadow"
            } else {
                "read_only"
            });
            return Err(refused);
        }
        if cancel.is_cancelled() {
            trail.outcome = Some("cancelled");
            return Err(refusal(
                "cancelled",
                format!("`{name}` was not executed: the call was cancelled"),
                json!({}),
            ));
        }
        // The definition may have changed while the call waited (approval hold, audit write):
        // it runs only if the tool is still offered exactly as it was decided on.
        let unchanged = up
            .tools()
            .iter()
            .any(|t| t.tool.name == tool && t.fingerprint == offered.fingerprint);
        if !unchanged {
            tracing::warn!(%subject, server, tool, "tool changed or quarantined before execution; call refused");
            trail.outcome = Some("quarantined");
            trail.reason = Some("the tool's definition changed before the call ran".into());
            return Err(refusal(
                "quarantined",
                format!(
                    "`{name}` was not executed: its definition changed; an operator must review and re-pin it"
                ),
                json!({}),
            ));
        }
        // A reload landed while the call was decided or waited: it runs only if the config now
        // in force allows it the same way.
        if !Arc::ptr_eq(&generation, &self.live())
            && let Err(why) = self.still_allowed(call, &up, offered, arguments, digest, trail)
        {
            tracing::warn!(%subject, server, tool, reason = %why, "config reloaded before execution; call refused");
            trail.outcome = Some("denied");
            trail.reason = Some(format!(
                "the config was reloaded before the call ran: {why}"
            ));
            return Err(unknown_tool(&name));
        }
        trail.arguments = None;
        trail.started = Some(std::time::Instant::now());
        let r = up
            .request(
                "tools/call",
                Some(Value::Object(fwd)),
                progress,
                Some(cancel),
                self.on(call, Some(&gone)),
            )
            .await;
        drop(running);
        if r.is_err()
            && let Some(killed) = self.levers.killed(&call.caller.identity, server, tool)
        {
            tracing::warn!(%subject, server, tool, reason = %killed, "tool call cancelled: killed");
            return Err(killed_refusal(&name, &killed));
        }
        r.map_err(upstream_error)
    }

    /// Whether a call decided under an earlier config still runs under the one now in force:
    /// the same upstream, the same definition and class, arguments that pass the current
    /// checks, and a decision that allows it (approval needed only if it already has one).
    fn still_allowed(
        &self,
        call: &Call,
        up: &Arc<Upstream>,
        decided: &crate::upstream::Offered,
        arguments: &Value,
        digest: ArgumentsDigest,
        trail: &Trail,
    ) -> Result<(), String> {
        let live = self.live();
        match live.upstreams.get(up.name()) {
            Some(now) if Arc::ptr_eq(now, up) => {}
            _ => return Err("its server was removed or reconnected".into()),
        }
        let tools = up.tools();
        let name = decided.tool.name.as_ref();
        let Some(now) = tools
            .iter()
            .find(|t| t.tool.name == name && t.fingerprint == decided.fingerprint)
            .filter(|_| up.config().tools.contains_key(name))
        else {
            return Err("the tool is no longer offered".into());
        };
        if now.class != decided.class {
            return Err(format!("its class is now {}", now.class));
        }
        if let Err(why) = now.check.check(arguments) {
            return Err(format!("its arguments no longer pass at `{}`", why.at));
        }
        match self.decide(
            &call.caller,
            up.name(),
            Target::Tool(name),
            now.class,
            digest,
        ) {
            Decision::Allow => Ok(()),
            Decision::NeedsApproval { .. } if trail.approval.is_some() => Ok(()),
            Decision::NeedsApproval { .. } => Err("it now needs approval".into()),
            Decision::Deny(d) => Err(d.to_string()),
        }
    }

    /// Resources, templates and prompts: fetched live, one upstream page per answer, with a
    /// cursor that remembers the upstream and its own cursor.
    async fn list_upstream(
        &self,
        call: &Call,
        method: &str,
        field: &str,
        uri_key: &str,
        params: Option<&Value>,
    ) -> Result<Value, RpcError> {
        let mut cursor = Cursor::from_params(params)?;
        // Resources and prompts are browsable only with `server/*` at every level.
        // A switch over the whole gateway or the caller (or an unknown state) refuses the
        // listing; a switch over one server leaves that server out of it.
        self.gate(call, "", method)?;
        let ups: Vec<Arc<Upstream>> = self
            .scoped(&call.scope)
            .into_iter()
            .filter(|u| self.may_browse(&call.caller, u.name()))
            .filter(|u| {
                self.levers
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
                    for item in page
                        .get(field)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let allowed = match field {
                            "prompts" => item
                                .get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| up.config().allows_prompt(n)),
                            _ => item
                                .get(uri_key)
                                .and_then(Value::as_str)
                                .is_some_and(|u| up.config().allows_resource(u)),
                        };
                        if !allowed {
                            continue;
                        }
                        let shown = if field == "prompts" {
                            let mut it = item.clone();
                            if call.scope == Scope::Federated
                                && let Some(Value::String(n)) = it.get("name")
                            {
                                let renamed = json!(format!("{}__{}", up.name(), n));
                                if let Some(o) = it.as_object_mut() {
                                    o.insert("name".into(), renamed);
                                }
                            }
                            it
                        } else {
                            catalog::present_resource(up.name(), item.clone(), &call.scope, uri_key)
                        };
                        items.push(shown);
                    }
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
                        return Err(upstream_error(e));
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

    fn resolve_uri<'a>(&self, scope: &Scope, uri: &'a str) -> Option<(Arc<Upstream>, &'a str)> {
        let set = self.upstreams();
        match scope {
            Scope::Federated => {
                let (s, rest) = catalog::split_resource_uri(uri)?;
                Some((set.get(s)?.clone(), rest))
            }
            Scope::Server(s) => Some((set.get(s)?.clone(), uri)),
        }
    }

    /// The kill switch for what is not a tool call (resources, prompts, completions): a switch
    /// over the gateway, the server or the caller, or an unknown state, refuses it.
    fn gate(&self, call: &Call, server: &str, what: &str) -> Result<(), RpcError> {
        match self.levers.killed(&call.caller.identity, server, "") {
            None => Ok(()),
            Some(killed) => {
                tracing::warn!(subject = %call.caller.subject, server, what, reason = %killed, "request refused: killed");
                Err(killed_refusal(what, &killed))
            }
        }
    }

    /// Audit before action for requests other than tool calls: the request event is on a
    /// required sink before the upstream is asked, or the request is refused.
    async fn recorded(
        &self,
        call: &Call,
        method: &str,
        server: &str,
        target: &str,
    ) -> Result<(), RpcError> {
        let mut e = call.event("mcp.request");
        e.method = Some(method.to_string());
        e.server = Some(server.to_string());
        e.outcome = Some("allowed");
        e.detail = Some(json!({ "target": crate::redact::uri_for_record(target) }));
        self.record_or_refuse(call, method, e).await
    }

    /// Record a request event, waiting for a required sink; if none takes it, the refusal the
    /// caller must answer with (the request is not executed).
    async fn record_or_refuse(
        &self,
        call: &Call,
        method: &str,
        event: Event,
    ) -> Result<(), RpcError> {
        let server = event.server.clone();
        self.audit.record(event).await.map_err(|e| {
            tracing::error!(subject = %call.caller.subject, ?server, %method, error = %e, "audit log cannot record the request; refused");
            crate::metrics::get().fail_closed("audit_unavailable");
            refusal(
                "audit_unavailable",
                format!("`{method}` was not executed: the audit log cannot record it"),
                json!({}),
            )
        })
    }

    /// Forward a request that is not a tool call, once decided: the kill switch, then its
    /// request event, then the upstream (on the session's own connection where the server has
    /// them). A refusal is the outer error; what the upstream answered is the inner result.
    async fn forward(
        &self,
        call: &Call,
        up: &Upstream,
        method: &str,
        target: &str,
        fwd: Map<String, Value>,
        sink: &mpsc::UnboundedSender<Value>,
    ) -> Result<Result<Value, UpstreamError>, RpcError> {
        self.gate(call, up.name(), target)?;
        self.recorded(call, method, up.name(), target).await?;
        Ok(up
            .request(
                method,
                Some(Value::Object(fwd)),
                None,
                None,
                self.on(call, Some(sink)),
            )
            .await)
    }

    async fn read_resource(
        &self,
        call: &Call,
        params: Option<Value>,
        sink: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, RpcError> {
        let modern = call.modern();
        let uri = str_param(&params, "uri")?.to_string();
        let (up, inner) = self
            .resolve_uri(&call.scope, &uri)
            .ok_or_else(|| unknown_resource(&uri, modern))?;
        if !up.config().allows_resource(inner) || !self.may_browse(&call.caller, up.name()) {
            return Err(unknown_resource(&uri, modern));
        }
        let mut fwd = forwardable(params);
        fwd.insert("uri".into(), json!(inner));
        let mut res = match self
            .forward(call, &up, "resources/read", &uri, fwd, sink)
            .await?
        {
            Ok(r) => r,
            Err(UpstreamError::Rpc { error, .. })
                if matches!(
                    error.get("code").and_then(Value::as_i64),
                    Some(RESOURCE_NOT_FOUND) | Some(INVALID_PARAMS)
                ) =>
            {
                return Err(unknown_resource(&uri, modern));
            }
            Err(e) => return Err(upstream_error(e)),
        };
        if call.scope == Scope::Federated {
            for c in res
                .get_mut("contents")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(Value::String(u)) = c.get("uri") {
                    let renamed = json!(format!("{}+{}", up.name(), u));
                    if let Some(o) = c.as_object_mut() {
                        o.insert("uri".into(), renamed);
                    }
                }
            }
        }
        Ok(res)
    }

    async fn subscribe(
        &self,
        call: &Call,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, RpcError> {
        let uri = str_param(&params, "uri")?.to_string();
        let (up, inner) = self
            .resolve_uri(&call.scope, &uri)
            .ok_or_else(|| unknown_resource(&uri, false))?;
        if !up.config().allows_resource(inner) || !self.may_browse(&call.caller, up.name()) {
            return Err(unknown_resource(&uri, false));
        }
        self.gate(call, up.name(), &uri)?;
        self.recorded(call, method, up.name(), &uri).await?;
        // The upstream subscription is shared by every session on the connection: it ends only
        // when no other session still holds it.
        if method == "resources/unsubscribe"
            && let Era::Stateful(session) = &call.era
        {
            let held = session
                .subscriptions
                .lock()
                .is_ok_and(|mut subs| subs.remove(&uri));
            if !held
                || self
                    .sessions
                    .subscribed_elsewhere(up.name(), inner, &session.id)
            {
                return Ok(json!({}));
            }
        }
        let mut fwd = forwardable(params);
        fwd.insert("uri".into(), json!(inner));
        up.request(method, Some(Value::Object(fwd)), None, None, None)
            .await
            .map_err(upstream_error)?;
        if method == "resources/subscribe"
            && let Era::Stateful(session) = &call.era
            && let Ok(mut subs) = session.subscriptions.lock()
        {
            subs.insert(uri);
        }
        Ok(json!({}))
    }

    async fn get_prompt(
        &self,
        call: &Call,
        params: Option<Value>,
        sink: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, RpcError> {
        let name = str_param(&params, "name")?.to_string();
        let (up, inner) = self
            .resolve(&call.scope, &name)
            .ok_or_else(|| unknown_prompt(&name))?;
        if !up.config().allows_prompt(inner) || !self.may_browse(&call.caller, up.name()) {
            return Err(unknown_prompt(&name));
        }
        let mut fwd = forwardable(params);
        fwd.insert("name".into(), json!(inner));
        self.forward(call, &up, "prompts/get", &name, fwd, sink)
            .await?
            .map_err(upstream_error)
    }

    async fn complete(
        &self,
        call: &Call,
        params: Option<Value>,
        sink: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, RpcError> {
        let none = || Ok(json!({ "completion": { "values": [], "hasMore": false } }));
        let Some(r) = params.as_ref().and_then(|p| p.get("ref")).cloned() else {
            return Err(RpcError::new(INVALID_PARAMS, "missing `ref`"));
        };
        let (up, new_ref) = match r.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some((up, inner)) = self.resolve(&call.scope, name) else {
                    return none();
                };
                if !up.config().allows_prompt(inner) || !self.may_browse(&call.caller, up.name()) {
                    return none();
                }
                (up, json!({ "type": "ref/prompt", "name": inner }))
            }
            Some("ref/resource") => {
                let uri = r.get("uri").and_then(Value::as_str).unwrap_or_default();
                let Some((up, inner)) = self.resolve_uri(&call.scope, uri) else {
                    return none();
                };
                if !up.config().allows_resource(inner) || !self.may_browse(&call.caller, up.name())
                {
                    return none();
                }
                (up, json!({ "type": "ref/resource", "uri": inner }))
            }
            _ => return Err(RpcError::new(INVALID_PARAMS, "unknown `ref.type`")),
        };
        if up.capabilities().get("completions").is_none() {
            return none();
        }
        let mut fwd = forwardable(params);
        fwd.insert("ref".into(), new_ref);
        let method = "completion/complete";
        self.forward(call, &up, method, method, fwd, sink)
            .await?
            .map_err(upstream_error)
    }

    /// `logging/setLevel`: recorded, kept for the session's own connections, relayed to the
    /// servers the caller may browse that log.
    async fn set_level(&self, call: &Call, params: Option<Value>) -> Result<Value, RpcError> {
        let level = str_param(&params, "level")?.to_string();
        if !LOG_LEVELS.contains(&level.as_str()) {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!(
                    "unknown logging level `{}`; one of: {}",
                    level.chars().take(32).collect::<String>(),
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        // It reaches upstreams (now, or when a session's connection opens): recorded first.
        let relayed: Vec<String> = self
            .scoped(&call.scope)
            .iter()
            .filter(|up| self.logs_to(call, up))
            .map(|up| up.name().to_string())
            .collect();
        let mut e = call.event("mcp.request");
        e.method = Some("logging/setLevel".to_string());
        e.outcome = Some("allowed");
        e.detail = Some(json!({ "level": level, "servers": relayed }));
        self.record_or_refuse(call, "logging/setLevel", e).await?;
        // Kept before the targets are chosen: a session connection that opens from now on
        // applies it itself; one already open is a target below.
        if let Era::Stateful(session) = &call.era
            && let Ok(mut l) = session.log_level.lock()
        {
            *l = Some(level.clone());
        }
        // A per-session server gets the level on the session's own connection if it has one;
        // shared connections get it now. Eligibility is checked again: a kill switch engaged
        // while the event was recorded still applies.
        let mut targets = Vec::new();
        for up in self.scoped(&call.scope) {
            if !self.logs_to(call, &up) {
                continue;
            }
            match up.config().connection {
                registry::Connection::PerSession => match &call.era {
                    Era::Stateful(session) if up.linked(session) => targets.push((up, true)),
                    _ => continue,
                },
                // A shared connection serves every session, and its log messages reach none:
                // one session may only make it more verbose, never quieter for the others.
                registry::Connection::Shared if up.raise_shared_level(&level) => {
                    targets.push((up, false));
                }
                registry::Connection::Shared => continue,
            }
        }
        for (up, own) in targets {
            let on = if own { self.on(call, None) } else { None };
            if let Err(e) = up
                .request(
                    "logging/setLevel",
                    Some(json!({ "level": level })),
                    None,
                    None,
                    on,
                )
                .await
            {
                tracing::warn!(server = %up.name(), error = %e, "logging/setLevel not relayed");
            }
        }
        Ok(json!({}))
    }

    /// Whether the caller's `logging/setLevel` goes to `up`: a server it may browse, not
    /// switched off, that declared logging.
    fn logs_to(&self, call: &Call, up: &Upstream) -> bool {
        self.may_browse(&call.caller, up.name())
            && self
                .levers
                .killed(&call.caller.identity, up.name(), "")
                .is_none()
            && up.capabilities().get("logging").is_some()
    }

    /// A client notification: cancellation is acted on; the rest need nothing from the gateway.
    pub(crate) fn notification(&self, call: &Call, method: &str, params: Option<&Value>) {
        if method == "notifications/cancelled" {
            let (Some(sid), Some(rid)) =
                (call.session_id(), params.and_then(|p| p.get("requestId")))
            else {
                return;
            };
            let token = self
                .inflight
                .lock()
                .ok()
                .and_then(|m| m.get(&(sid.to_string(), rid.to_string())).cloned());
            if let Some(t) = token {
                tracing::info!(session = sid, request = %rid, "request cancelled by client");
                t.cancel();
            }
        }
    }

    /// A client's response to a request the gateway sent it on an upstream's behalf (only over
    /// a per-session upstream connection), handed to the waiting request. Any other response
    /// is unexpected and dropped.
    pub(crate) fn client_response(&self, call: &Call, id: &Value, outcome: Result<Value, Value>) {
        let delivered = match &call.era {
            Era::Stateful(session) => session.pending.answer(id, outcome),
            Era::Stateless => false,
        };
        if !delivered {
            tracing::debug!(session = call.session_id().unwrap_or("-"), id = %id, "unexpected client response dropped");
        }
    }
}
