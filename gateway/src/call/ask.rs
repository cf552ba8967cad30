//! Step 1 for what is not a tool call: a resource, a prompt, or a completion of either,
//! resolved to an upstream and the upstream's own name or URI for it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Call;
use super::resolve::{declared_capabilities, forwardable, name_on, str_param, uri_on};
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::upstream::Upstream;

/// What a request names upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Resource,
    Prompt,
}

/// A request for a resource, a prompt, or a completion, resolved.
pub(crate) struct Ask {
    pub(crate) method: String,
    pub(crate) item: Item,
    pub(crate) up: Arc<Upstream>,
    /// The upstream's own name or URI (what the allowlist is matched against).
    pub(crate) inner: String,
    /// What the caller named.
    pub(crate) shown: String,
    /// The params the upstream gets.
    pub(crate) fwd: serde_json::Map<String, Value>,
    /// The client capabilities a 2026-07-28 request declares in its `_meta`.
    pub(crate) declared: Option<Value>,
    /// The caller's own deadline, from its `_meta`.
    pub(crate) deadline: Option<tokio::time::Instant>,
}

impl Ask {
    fn completion(&self) -> bool {
        self.method == "completion/complete"
    }

    /// What the record and a refusal name: the item, or for a completion the method.
    pub(crate) fn target(&self) -> &str {
        if self.completion() {
            &self.method
        } else {
            &self.shown
        }
    }

    /// The answer when there is nothing there this caller may use.
    pub(crate) fn absent(&self, call: &Call) -> Refusal {
        absent(&self.method, self.item, self.shown.clone(), call)
    }
}

fn absent(method: &str, item: Item, shown: String, call: &Call) -> Refusal {
    match (method, item) {
        ("completion/complete", _) => Refusal::NoCompletion,
        (_, Item::Prompt) => Refusal::UnknownPrompt(shown),
        (_, Item::Resource) => Refusal::UnknownResource {
            uri: shown,
            modern: call.modern(),
        },
    }
}

/// Resolve `resources/read`, `resources/(un)subscribe`, `prompts/get` or `completion/complete`.
pub(super) fn resolve(
    gw: &Gateway,
    call: &Call,
    method: &str,
    params: Option<Value>,
) -> Result<Ask, Refusal> {
    let (item, shown, field, new_value): (Item, String, &str, Option<Value>) = match method {
        "prompts/get" => (
            Item::Prompt,
            str_param(&params, "name")?.into(),
            "name",
            None,
        ),
        "completion/complete" => {
            let Some(r) = params.as_ref().and_then(|p| p.get("ref")) else {
                return Err(Refusal::Malformed("missing `ref`".into()));
            };
            let text = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            match r.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    (Item::Prompt, text("name"), "ref", Some(json!("ref/prompt")))
                }
                Some("ref/resource") => (
                    Item::Resource,
                    text("uri"),
                    "ref",
                    Some(json!("ref/resource")),
                ),
                _ => return Err(Refusal::Malformed("unknown `ref.type`".into())),
            }
        }
        _ => (
            Item::Resource,
            str_param(&params, "uri")?.into(),
            "uri",
            None,
        ),
    };
    let found = match item {
        Item::Prompt => name_on(gw, &call.scope, &shown),
        Item::Resource => uri_on(gw, &call.scope, &shown),
    };
    let Some((up, inner)) = found else {
        return Err(absent(method, item, shown, call));
    };
    let inner = inner.to_string();
    let declared = declared_capabilities(&params);
    let deadline = super::resolve::caller_deadline(&params)?;
    let mut fwd = forwardable(params);
    match new_value {
        // A completion's `ref`, rewritten to the upstream's own name or URI.
        Some(kind) => {
            let key = if item == Item::Prompt { "name" } else { "uri" };
            fwd.insert(field.into(), json!({ "type": kind, key: inner }));
        }
        None => {
            fwd.insert(field.into(), json!(inner));
        }
    }
    Ok(Ask {
        method: method.to_string(),
        item,
        up,
        inner,
        shown,
        fwd,
        declared,
        deadline,
    })
}
