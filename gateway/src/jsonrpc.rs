//! JSON-RPC 2.0 framing for the MCP front: parse what clients send, build what we answer.
//!
//! Parsing is strict and total: any byte string maps to a message or to a JSON-RPC error with the
//! right code (-32700 for bytes that are not JSON, -32600 for JSON that is not a message).

use serde_json::{Map, Value};

/// Parse error: the body is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// An interim message that carries nothing: it asks for the answer to go out as a stream now
/// (a held call that would otherwise send no byte until it is decided). The stream shows it as
/// an SSE comment, never as a message.
pub(crate) const OPEN_STREAM: serde_json::Value = serde_json::Value::Null;
/// The JSON is not a valid request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (also: unknown tool, bad cursor).
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: an `Mcp-*` header disagrees with the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported.
pub(crate) const UNSUPPORTED_VERSION: i64 = -32022;
/// 2026-07-28: the request needs a client capability its client did not declare.
pub(crate) const MISSING_CAPABILITY: i64 = -32021;
/// The 2026-07-28 tasks extension's name (`call/tasks.rs`).
pub(crate) const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// Resource not found (MCP).
pub(crate) const RESOURCE_NOT_FOUND: i64 = -32002;
/// Implementation-defined server error used for refusals by the gateway itself.
pub(crate) const GATEWAY_REFUSED: i64 = -32001;
/// Implementation-defined server error: an upstream failed or timed out.
pub(crate) const UPSTREAM_ERROR: i64 = -32003;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), self.code.into());
        e.insert("message".into(), Value::String(self.message.clone()));
        if let Some(d) = &self.data {
            e.insert("data".into(), d.clone());
        }
        Value::Object(e)
    }
}

/// A client-to-server message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Inbound {
    /// A request, expecting a response with the same id.
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// A notification: no id, no response.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to a request the gateway sent (sampling, elicitation, roots).
    Response {
        id: Value,
        outcome: Result<Value, Value>,
    },
}

impl Inbound {
    pub(crate) fn method(&self) -> Option<&str> {
        match self {
            Inbound::Request { method, .. } | Inbound::Notification { method, .. } => Some(method),
            Inbound::Response { .. } => None,
        }
    }
}

/// A POST body: one message, or a JSON-RPC batch (an array; only the 2025-03-26 and earlier
/// revisions have them), whose members are checked one by one.
#[derive(Debug)]
pub(crate) enum Body {
    One(Inbound),
    Batch(Vec<Value>),
}

/// Parse a POST body. Errors carry the code to answer with (id unknown, so `null`).
pub(crate) fn parse(body: &[u8]) -> Result<Body, RpcError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("parse error: {e}")))?;
    match value {
        Value::Array(items) => Ok(Body::Batch(items)),
        other => from_value(other).map(Body::One),
    }
}

fn invalid(why: &str) -> RpcError {
    RpcError::new(INVALID_REQUEST, format!("invalid request: {why}"))
}

pub(crate) fn from_value(value: Value) -> Result<Inbound, RpcError> {
    let Value::Object(mut obj) = value else {
        return Err(match value {
            Value::Array(_) => invalid("a batch cannot be a member of a batch"),
            _ => invalid("expected a JSON object"),
        });
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    let id = obj.remove("id");
    if let Some(id) = &id {
        let ok = matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some();
        if !ok {
            return Err(invalid("`id` must be a string or an integer"));
        }
    }
    let params = obj.remove("params");
    if let Some(p) = &params
        && !p.is_object()
    {
        return Err(invalid("`params` must be an object"));
    }
    match obj.remove("method") {
        Some(Value::String(method)) => match id {
            Some(id) => Ok(Inbound::Request { id, method, params }),
            None => Ok(Inbound::Notification { method, params }),
        },
        Some(_) => Err(invalid("`method` must be a string")),
        None => {
            let id = id.ok_or_else(|| invalid("a message needs `method` or `id`"))?;
            match (obj.remove("result"), obj.remove("error")) {
                (Some(r), None) => Ok(Inbound::Response { id, outcome: Ok(r) }),
                (None, Some(e)) if e.is_object() => Ok(Inbound::Response {
                    id,
                    outcome: Err(e),
                }),
                _ => Err(invalid(
                    "a response needs exactly one of `result` and `error`",
                )),
            }
        }
    }
}

/// A success response.
pub(crate) fn response(id: &Value, result: Value) -> Value {
    envelope(("id", id.clone()), ("result", result))
}

/// An error response; `id` is `null` when the request's id could not be read.
pub(crate) fn error_response(id: Option<&Value>, err: &RpcError) -> Value {
    envelope(
        ("id", id.cloned().unwrap_or(Value::Null)),
        ("error", err.to_value()),
    )
}

/// A notification to a client.
pub(crate) fn notification(method: &str, params: Value) -> Value {
    envelope(("method", Value::from(method)), ("params", params))
}

/// `{"jsonrpc": "2.0", a, b}`, taking the values as they are (`json!` would copy each through
/// the serializer: a whole result again, on every call).
fn envelope((ka, a): (&str, Value), (kb, b): (&str, Value)) -> Value {
    let mut m = Map::with_capacity(3);
    m.insert("jsonrpc".into(), Value::from("2.0"));
    m.insert(ka.into(), a);
    m.insert(kb.into(), b);
    Value::Object(m)
}

#[cfg(test)]
mod tests;
