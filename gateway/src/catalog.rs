//! What a caller sees: tools, resources, templates and prompts, named for the endpoint.
//!
//! On `/mcp` every item carries its server: tools and prompts as `<server>__<name>`, resource
//! URIs as `<server>+<uri>` (reversible, and unambiguous because server names have no `+`). On
//! `/mcp/<server>` items keep their own names. Only allowlisted items are ever shown, and tool
//! annotations come from the registry's class, never from the upstream.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::refusal::Refusal;
use crate::session::Scope;

/// Items per page of a `*/list` answer.
pub(crate) const PAGE_SIZE: usize = 100;

/// Rename a resource (or template) for the federated endpoint.
pub(crate) fn present_resource(
    server: &str,
    mut item: Value,
    scope: &Scope,
    uri_key: &str,
) -> Value {
    if *scope == Scope::Federated
        && let Some(obj) = item.as_object_mut()
    {
        if let Some(Value::String(uri)) = obj.get(uri_key) {
            let u = format!("{server}+{uri}");
            obj.insert(uri_key.into(), Value::String(u));
        }
        if let Some(Value::String(name)) = obj.get("name") {
            let n = format!("{server}__{name}");
            obj.insert("name".into(), Value::String(n));
        }
    }
    item
}

/// Split a federated resource URI `<server>+<uri>`.
pub(crate) fn split_resource_uri(uri: &str) -> Option<(&str, &str)> {
    let (server, rest) = uri.split_once('+')?;
    (!server.is_empty() && !rest.is_empty()).then_some((server, rest))
}

/// An opaque cursor over the gateway's own pages: which server, and the upstream's cursor there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) server: usize,
    pub(crate) offset: usize,
    pub(crate) upstream: Option<String>,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let v = json!({ "s": self.server, "o": self.offset, "c": self.upstream });
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Decode a cursor from `params.cursor`; absent is the first page, garbage is -32602.
    pub(crate) fn from_params(params: Option<&Value>) -> Result<Cursor, Refusal> {
        let Some(c) = params.and_then(|p| p.get("cursor")) else {
            return Ok(Cursor::default());
        };
        let bad = || Refusal::Malformed("invalid cursor".into());
        let c = c.as_str().ok_or_else(bad)?;
        let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
        };
        Ok(Cursor {
            server: num("s").ok_or_else(bad)?,
            offset: num("o").ok_or_else(bad)?,
            upstream: v.get("c").and_then(Value::as_str).map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests;
