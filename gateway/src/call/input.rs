//! Multi-round requests (2026-07-28, `InputRequiredResult`): a `tools/call`, `prompts/get` or
//! `resources/read` that an upstream answers with `resultType: "input_required"` and the input
//! it needs (`inputRequests`: elicitation, sampling, roots), which the client retries with its
//! answers (`inputResponses`) and the `requestState` it was given.
//!
//! The upstream's `requestState` never reaches the client as it is: the gateway seals it
//! (AES-256-GCM, the session key ring under its own prefix) together with what the round is
//! bound to: subject, endpoint, method, server, the upstream's name or URI, the arguments'
//! digest, and an expiry. A retry whose state does not open, or was issued for another caller,
//! request or arguments, is refused (and recorded so) before the call is allowed or sent; one that opens carries
//! the upstream's own state back to it. Each round is a whole request: decided, limited and
//! recorded again.
//!
//! Only what the client declared is asked of it: the upstream is told, per request, the
//! client's own `sampling` (without `context`), `elicitation` and `roots`; an input request
//! of another kind is dropped. A 2025-era client (which has no multi-round requests) is
//! declared nothing, and an upstream that asks it for input anyway fails the call.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ask::Ask;
use super::{Call, Hold, ToolCall, Trail};
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::session::Scope;
use crate::upstream::UpstreamError;

/// The prefix (and associated data) of a sealed `requestState`.
const PREFIX: &str = "prs1.";
/// How long a round's state stays good.
const LIFETIME_MS: i64 = 10 * 60 * 1000;
/// The longest upstream state the gateway carries for a client.
const MAX_UPSTREAM_STATE: usize = 64 * 1024;
/// The longest sealed state the gateway opens; anything longer is refused unread.
const MAX_SEALED: usize = 96 * 1024;
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
/// The most a read's or a prompt's answers may weigh (a tool's are held to its argument limits).
const MAX_ANSWERS: usize = 1 << 20;

/// What a round is bound to, and what its client may be asked.
pub(crate) struct Round {
    /// Whether the request may take part in rounds (a 2026-07-28 call, read or prompt).
    rounds: bool,
    method: &'static str,
    server: String,
    target: String,
    digest: String,
    /// The client capabilities declared to the upstream for this request.
    declared: Map<String, Value>,
}

/// A sealed state's contents.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Bound {
    #[serde(rename = "s")]
    subject: String,
    #[serde(rename = "e")]
    endpoint: Option<String>,
    #[serde(rename = "m")]
    method: String,
    #[serde(rename = "v")]
    server: String,
    #[serde(rename = "t")]
    target: String,
    #[serde(rename = "d")]
    digest: String,
    /// The upstream's own state, if it sent one.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    /// The keys of the input requests the client was asked: only their answers go upstream.
    #[serde(rename = "k", default)]
    asked: Vec<String>,
    #[serde(rename = "x")]
    expires_ms: i64,
}

/// A tool call's round: its state opened and checked, what its client may be asked declared.
pub(super) fn tool(
    gw: &Gateway,
    call: &Call,
    req: &mut ToolCall,
    hold: &Hold<'_>,
    t: &mut Trail,
) -> Result<Round, Refusal> {
    let round = Round {
        // A task's run has no client to ask: an upstream that asks then fails the task.
        rounds: call.modern() && !matches!(hold, Hold::Run { .. }),
        method: "tools/call",
        server: req.server().to_string(),
        target: req.tool().to_string(),
        digest: registry::hex_lower(&req.digest.0),
        declared: declared(call, req.declared.as_ref()),
    };
    let offered = req.offered.clone();
    let within = |answers: &Value| offered.check.within_limits(answers);
    t.input = open(gw, call, &round, &mut req.fwd, &within)?;
    Ok(round)
}

/// Whether a request continues a multi-round request (it carries answers or a state): such a
/// request is never held as a task, whose run would not carry them.
pub(super) fn continues(params: Option<&Value>) -> bool {
    params.is_some_and(|p| p.get("requestState").is_some() || p.get("inputResponses").is_some())
}

/// The same for a read or a prompt; anything else (completions, subscriptions) has no rounds.
pub(super) fn ask(gw: &Gateway, call: &Call, ask: &mut Ask) -> Result<Round, Refusal> {
    let method = match ask.method.as_str() {
        "prompts/get" => "prompts/get",
        "resources/read" => "resources/read",
        _ => "",
    };
    let arguments = ask
        .fwd
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let round = Round {
        rounds: call.modern() && !method.is_empty(),
        method,
        server: ask.up.name().to_string(),
        target: ask.inner.clone(),
        digest: registry::hex_lower(&crate::authorize::digest_and_size(&arguments).0.0),
        declared: declared(call, ask.declared.as_ref()),
    };
    let within = |answers: &Value| {
        let bytes = serde_json::to_vec(answers).map_or(usize::MAX, |b| b.len());
        match bytes <= MAX_ANSWERS {
            true => Ok(()),
            false => Err(format!("{bytes} bytes, over {MAX_ANSWERS}")),
        }
    };
    open(gw, call, &round, &mut ask.fwd, &within)?;
    Ok(round)
}

/// The capabilities the upstream is told this request's client has: for a 2026-07-28 request,
/// what it declared that the gateway relays, as objects; for any other, none.
fn declared(call: &Call, caps: Option<&Value>) -> Map<String, Value> {
    match caps.filter(|_| call.modern()) {
        Some(caps) => crate::upstream::declared_of(caps, &["sampling", "elicitation", "roots"]),
        None => Map::new(),
    }
}

fn endpoint(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Federated => None,
        Scope::Server(s) => Some(s.clone()),
    }
}

/// Check a retry's `inputResponses` and `requestState` and put the upstream's own state in its
/// place; for a request that may take part in rounds, tell the upstream what its client may be
/// asked (and that the gateway follows tasks itself, as the connection declares).
/// Only answers to what this gateway asked under the state go upstream, within `within`;
/// answers without a state are not passed on (the upstream asks again). What went is returned
/// for the record.
fn open(
    gw: &Gateway,
    call: &Call,
    round: &Round,
    fwd: &mut Map<String, Value>,
    within: &dyn Fn(&Value) -> Result<(), String>,
) -> Result<Option<Value>, Refusal> {
    let responses = fwd.remove("inputResponses");
    let sealed = fwd.remove("requestState");
    if !round.rounds {
        // Not this request's revision or method: nothing of it reaches the upstream, which is
        // told only what the connection declares (nothing the client could be asked).
        return Ok(None);
    }
    let mut caps = round.declared.clone();
    let mut extensions = Map::with_capacity(1);
    extensions.insert(
        crate::jsonrpc::TASKS_EXTENSION.into(),
        Value::Object(Map::new()),
    );
    caps.insert("extensions".into(), Value::Object(extensions));
    let mut meta = Map::with_capacity(1);
    meta.insert(META_CAPS.into(), Value::Object(caps));
    fwd.insert("_meta".into(), Value::Object(meta));
    let responses = match responses {
        None => None,
        // Each answer is the client's result for one input request: an object.
        Some(Value::Object(r)) if r.values().all(Value::is_object) => Some(r),
        Some(_) => {
            return Err(Refusal::Malformed(
                "`inputResponses` must be an object whose values are the client's results (objects)".into(),
            ));
        }
    };
    let Some(sealed) = sealed else {
        if responses.is_some() {
            tracing::debug!(server = %round.server, target = %round.target, "answers without a requestState not passed on");
        }
        return Ok(None);
    };
    let bound = checked(gw, call, round, &sealed)?;
    if let Some(state) = bound.upstream {
        fwd.insert("requestState".into(), Value::String(state));
    }
    let Some(mut responses) = responses else {
        return Ok(None);
    };
    // Answers to what was not asked are ignored, as a server ignores what it does not know.
    responses.retain(|key, _| bound.asked.contains(key));
    let answers = Value::Object(responses);
    within(&answers).map_err(|excess| {
        Refusal::Malformed(format!("`inputResponses` are too large: {excess}"))
    })?;
    let bytes = serde_json::to_vec(&answers).map_or(0, |b| b.len());
    let keys: Vec<&String> = answers
        .as_object()
        .map(|a| a.keys().collect())
        .unwrap_or_default();
    let record = json!({ "keys": keys, "bytes": bytes });
    fwd.insert("inputResponses".into(), answers);
    Ok(Some(record))
}

/// The state a retry brings, opened and checked against this round.
fn checked(gw: &Gateway, call: &Call, round: &Round, sealed: &Value) -> Result<Bound, Refusal> {
    let bound = sealed
        .as_str()
        .filter(|s| s.len() <= MAX_SEALED)
        .and_then(|s| gw.sessions.sealer().open_bytes(PREFIX, s))
        .and_then(|plain| serde_json::from_slice::<Bound>(&plain).ok());
    let Some(bound) = bound else {
        return Err(Refusal::InputStateInvalid {
            why: "it was not issued by this gateway, or was altered".into(),
        });
    };
    let expected = (
        call.caller.subject.as_str(),
        endpoint(&call.scope),
        round.method,
        round.server.as_str(),
        round.target.as_str(),
        round.digest.as_str(),
    );
    let got = (
        bound.subject.as_str(),
        bound.endpoint.clone(),
        bound.method.as_str(),
        bound.server.as_str(),
        bound.target.as_str(),
        bound.digest.as_str(),
    );
    if got != expected {
        return Err(Refusal::InputStateInvalid {
            why: "it was issued for another caller, endpoint, request or arguments".into(),
        });
    }
    if bound.expires_ms <= store::now_ms() {
        return Err(Refusal::InputStateInvalid {
            why: "it has expired".into(),
        });
    }
    Ok(bound)
}

/// The upstream's answer as the client gets it: an `InputRequiredResult` with what the client
/// may be asked and the upstream's state sealed to this round; anything else unchanged.
pub(super) fn seal(
    gw: &Gateway,
    call: &Call,
    round: &Round,
    answer: Value,
) -> Result<Value, Refusal> {
    match answer.get("resultType") {
        None => return Ok(answer),
        Some(Value::String(t)) if t == "complete" => return Ok(answer),
        Some(Value::String(t)) if t == "input_required" => {}
        Some(_) => {
            tracing::warn!(server = %round.server, "an upstream answered with a result type the gateway does not know");
            return Err(Refusal::Upstream(UpstreamError::Unreadable(
                round.server.clone(),
            )));
        }
    }
    let failed = |why: &str| {
        tracing::warn!(server = %round.server, target = %round.target, why, "an upstream's request for input refused");
        Refusal::Upstream(UpstreamError::Rpc {
            server: round.server.clone(),
            error: json!({ "code": crate::jsonrpc::INTERNAL_ERROR, "message": why }),
        })
    };
    if !round.rounds {
        return Err(failed(
            "the server asked for input, which this request cannot be asked for (multi-round requests are 2026-07-28 calls, reads and prompts; a 2025-era session is asked for input over `connection: per_session`)",
        ));
    }
    let upstream = match answer.get("requestState") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_UPSTREAM_STATE => Some(s.clone()),
        Some(_) => {
            return Err(failed(
                "the server's requestState is not a string the gateway carries (at most 64 KiB)",
            ));
        }
    };
    // Every input request is put to the client, or the call fails: a round that left some out
    // would only come back asking for them again.
    let mut asked = Map::new();
    let mut lacking = Map::new();
    if let Some(requests) = answer.get("inputRequests").and_then(Value::as_object) {
        for (key, request) in requests {
            match askable(&round.declared, request) {
                Ok(request) => {
                    asked.insert(key.clone(), request);
                }
                Err(Some((capability, needs))) => {
                    lacking.insert(capability.to_string(), needs);
                }
                Err(None) => {
                    return Err(failed(
                        "the server asked for input of a kind the gateway does not relay",
                    ));
                }
            }
        }
    }
    if !lacking.is_empty() {
        tracing::info!(server = %round.server, target = %round.target, "the server asked for input the client did not declare it can give");
        return Err(Refusal::Upstream(UpstreamError::Rpc {
            server: round.server.clone(),
            error: json!({
                "code": crate::jsonrpc::MISSING_CAPABILITY,
                "message": "the server asked for input this client did not declare it can give",
                "data": { "requiredCapabilities": lacking },
            }),
        }));
    }
    if asked.is_empty() && upstream.is_none() {
        return Err(failed("the server asked for no input and sent no state"));
    }
    let bound = Bound {
        subject: call.caller.subject.clone(),
        endpoint: endpoint(&call.scope),
        method: round.method.to_string(),
        server: round.server.clone(),
        target: round.target.clone(),
        digest: round.digest.clone(),
        upstream,
        asked: asked.keys().cloned().collect(),
        expires_ms: store::now_ms().saturating_add(LIFETIME_MS),
    };
    let sealed = serde_json::to_vec(&bound)
        .ok()
        .and_then(|plain| gw.sessions.sealer().seal_bytes(PREFIX, &plain))
        .filter(|s| s.len() <= MAX_SEALED)
        .ok_or_else(|| failed("the server's requestState is too large for the gateway to carry"))?;
    let mut out = Map::new();
    out.insert("resultType".into(), json!("input_required"));
    if !asked.is_empty() {
        out.insert("inputRequests".into(), Value::Object(asked));
    }
    out.insert("requestState".into(), Value::String(sealed));
    if let Some(meta) = answer.get("_meta").filter(|m| m.is_object()) {
        out.insert("_meta".into(), meta.clone());
    }
    Ok(Value::Object(out))
}

/// An input request as the client is asked it, if it declared the capability it needs:
/// sampling without the context of other servers, with tools only where declared; elicitation in
/// the modes declared; roots. Otherwise the capability it lacks and what would cover it, or
/// `None` for a kind the gateway does not relay.
fn askable(
    declared: &Map<String, Value>,
    request: &Value,
) -> Result<Value, Option<(&'static str, Value)>> {
    let method = request.get("method").and_then(Value::as_str).ok_or(None)?;
    let mut request = request.clone();
    let params = request.get_mut("params").and_then(Value::as_object_mut);
    match method {
        "elicitation/create" => {
            let url = params
                .as_ref()
                .and_then(|p| p.get("mode"))
                .and_then(Value::as_str)
                == Some("url");
            let needs = if url { json!({ "url": {} }) } else { json!({}) };
            let cap = declared
                .get("elicitation")
                .ok_or_else(|| Some(("elicitation", needs.clone())))?;
            // `{}` is form mode; a client that names its modes has only those.
            let form = cap.as_object().is_some_and(|c| c.is_empty()) || cap.get("form").is_some();
            if (url && cap.get("url").is_none()) || (!url && !form) {
                let needs = if url { needs } else { json!({ "form": {} }) };
                return Err(Some(("elicitation", needs)));
            }
        }
        "sampling/createMessage" => {
            let tools = params
                .as_ref()
                .is_some_and(|p| p.get("tools").is_some() || p.get("toolChoice").is_some());
            let needs = if tools {
                json!({ "tools": {} })
            } else {
                json!({})
            };
            let cap = declared
                .get("sampling")
                .ok_or_else(|| Some(("sampling", needs.clone())))?;
            if tools && cap.get("tools").is_none() {
                return Err(Some(("sampling", needs)));
            }
            if let Some(p) = params
                && p.get("includeContext").is_some_and(|c| c != "none")
            {
                p.insert("includeContext".into(), json!("none"));
            }
        }
        "roots/list" => {
            declared.get("roots").ok_or(Some(("roots", json!({}))))?;
        }
        _ => return Err(None),
    }
    Ok(request)
}

#[cfg(test)]
mod tests;
