//! Step 1, resolve: what the caller names becomes an upstream and the upstream's own name for
//! it, on the caller's endpoint. A tool must be allowlisted in the registry and offered by the
//! upstream now, compared byte for byte; anything else answers exactly like a missing tool.

use std::sync::{Arc, LazyLock};

use policy::{ArgumentsDigest, Decision, Target};
use serde_json::{Map, Value};

use super::{Call, Trail};
use crate::authorize::digest_and_size;
use crate::catalog;
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::session::Scope;
use crate::tools::Offered;
use crate::upstream::Upstream;

/// A tool call, resolved.
pub(crate) struct ToolCall {
    /// The name the caller used (`server__tool` on `/mcp`, `tool` on `/mcp/<server>`).
    pub(crate) name: String,
    pub(crate) up: Arc<Upstream>,
    /// The definition it is decided on.
    pub(crate) offered: Arc<Offered>,
    /// The params the upstream gets: its own name for the tool, and no caller `_meta`.
    pub(crate) fwd: Map<String, Value>,
    pub(crate) digest: ArgumentsDigest,
    /// The caller's progress token, if it asked for progress.
    pub(crate) progress: Option<Value>,
    /// The client capabilities a 2026-07-28 request declares in its `_meta`.
    pub(crate) declared: Option<Value>,
    /// The caller's own deadline, from its `_meta`.
    pub(crate) deadline: Option<tokio::time::Instant>,
}

static NO_ARGUMENTS: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));

impl ToolCall {
    pub(crate) fn server(&self) -> &str {
        self.up.name()
    }

    /// The upstream's name for the tool.
    pub(crate) fn tool(&self) -> &str {
        self.offered.tool.name.as_ref()
    }

    /// The arguments; absent arguments are checked and digested as `{}`.
    pub(crate) fn arguments(&self) -> &Value {
        self.fwd.get("arguments").unwrap_or(&NO_ARGUMENTS)
    }
}

/// Resolve a `tools/call`.
pub(super) fn tool(
    gw: &Gateway,
    call: &Call,
    params: Option<Value>,
    trail: &mut Trail,
) -> Result<ToolCall, Refusal> {
    let name = str_param(&params, "name")?.to_string();
    // Until it resolves, the name is the caller's text: keep it bounded in the record.
    let mut shown = name.clone();
    crate::redact::shorten(&mut shown, 128);
    trail.tool = Some(shown);
    let Some((up, tool)) = name_on(gw, &call.scope, &name).map(|(u, t)| (u, t.to_string())) else {
        return Err(Refusal::UnknownTool(name));
    };
    let tool = tool.as_str();
    let tools = up.tools();
    let offered = tools.named(tool);
    let Some(offered) = offered.filter(|_| up.config().tools.contains_key(tool)) else {
        // An allowlisted tool held back is recorded under its own name, whoever asked.
        if up.quarantined(tool).is_some() && up.config().tools.contains_key(tool) {
            trail.server = Some(up.name().to_string());
            trail.tool = Some(tool.to_string());
        }
        return Err(quarantined(gw, call, &up, tool, name));
    };
    trail.server = Some(up.name().to_string());
    trail.tool = Some(tool.to_string());
    let progress = progress_token(&params);
    let declared = declared_capabilities(&params);
    let deadline = caller_deadline(&params)?;
    let mut fwd = forwardable(params);
    fwd.insert("name".into(), Value::String(tool.to_string()));
    let (digest, size) = match fwd.get("arguments") {
        None => digest_and_size(&NO_ARGUMENTS),
        Some(v @ Value::Object(_)) => digest_and_size(v),
        Some(_) => return Err(Refusal::Malformed("`arguments` must be an object".into())),
    };
    trail.digest = Some(registry::hex_lower(&digest.0));
    trail.request_bytes = Some(size);
    trail.arguments = Some(
        gw.audit
            .summary(fwd.get("arguments").unwrap_or(&NO_ARGUMENTS)),
    );
    Ok(ToolCall {
        name,
        up,
        offered: offered.clone(),
        fwd,
        digest,
        progress,
        declared,
        deadline,
    })
}

/// A tool that is allowlisted but not offered: named as quarantined only to a caller who may
/// call it; to anyone else it does not exist.
fn quarantined(gw: &Gateway, call: &Call, up: &Upstream, tool: &str, name: String) -> Refusal {
    if let (Some(q), Some(entry)) = (up.quarantined(tool), up.config().tools.get(tool)) {
        let digest = digest_and_size(&Value::Null).0;
        let target = Target::Tool(tool);
        let decided =
            crate::authorize::decide(gw, &call.caller, up.name(), target, entry.class, digest);
        if !matches!(decided, Decision::Deny(_)) {
            tracing::warn!(subject = %call.caller.subject, server = up.name(), tool, why = %q.why, "call to quarantined tool refused");
            return Refusal::Quarantined { name, why: q.why };
        }
    }
    tracing::info!(subject = %call.caller.subject, tool = %name, "call to unknown or unlisted tool refused");
    Refusal::UnknownTool(name)
}

/// The upstreams an endpoint reaches, in config order, as the config stands now.
pub(crate) fn scoped(gw: &Gateway, scope: &Scope) -> Vec<Arc<Upstream>> {
    let set = gw.upstreams();
    match scope {
        Scope::Federated => set.all().to_vec(),
        Scope::Server(s) => set.get(s).cloned().into_iter().collect(),
    }
}

/// A client-facing tool or prompt name as (upstream, upstream-side name) on this endpoint.
pub(crate) fn name_on<'a>(
    gw: &Gateway,
    scope: &Scope,
    name: &'a str,
) -> Option<(Arc<Upstream>, &'a str)> {
    let set = gw.upstreams();
    match scope {
        Scope::Federated => {
            let f = policy::split_federated(name)?;
            Some((set.get(f.server)?.clone(), f.name))
        }
        Scope::Server(s) => Some((set.get(s)?.clone(), name)),
    }
}

/// A client-facing resource URI as (upstream, upstream-side URI) on this endpoint.
pub(crate) fn uri_on<'a>(
    gw: &Gateway,
    scope: &Scope,
    uri: &'a str,
) -> Option<(Arc<Upstream>, &'a str)> {
    let set = gw.upstreams();
    match scope {
        Scope::Federated => {
            let (s, rest) = catalog::split_resource_uri(uri)?;
            Some((set.get(s)?.clone(), rest))
        }
        Scope::Server(s) => Some((set.get(s)?.clone(), uri)),
    }
}

/// Params to forward upstream: the caller's `_meta` never crosses the gateway.
pub(crate) fn forwardable(params: Option<Value>) -> Map<String, Value> {
    let mut p = match params {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    p.remove("_meta");
    // A task is the caller's arrangement with the gateway, never asked of an upstream.
    p.remove("task");
    p
}

/// The client capabilities a 2026-07-28 request declares in its `_meta`.
pub(crate) fn declared_capabilities(params: &Option<Value>) -> Option<Value> {
    params
        .as_ref()?
        .get("_meta")?
        .get("io.modelcontextprotocol/clientCapabilities")
        .filter(|c| c.is_object())
        .cloned()
}

/// The caller's own deadline, counted from now (the request's first step).
pub(crate) fn caller_deadline(
    params: &Option<Value>,
) -> Result<Option<tokio::time::Instant>, Refusal> {
    crate::upstream::caller_deadline(params.as_ref(), tokio::time::Instant::now())
        .map_err(Refusal::Malformed)
}

fn progress_token(params: &Option<Value>) -> Option<Value> {
    params
        .as_ref()?
        .get("_meta")?
        .get("progressToken")
        .filter(|t| t.is_string() || t.is_number())
        .cloned()
}

/// A required string parameter.
pub(crate) fn str_param<'a>(params: &'a Option<Value>, key: &str) -> Result<&'a str, Refusal> {
    params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::Malformed(format!("missing string parameter `{key}`")))
}
