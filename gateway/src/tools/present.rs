//! A tool as a client sees it: renamed for the endpoint, annotations from the enforced class.

use policy::{ToolClass, UpstreamHints};
use rmcp::model::Tool;
use serde_json::{Map, Value, json};

/// The class the gateway enforces and shows for a tool: the registry's, raised by upstream claims.
pub(crate) fn effective_class(server: &registry::Server, tool: &Tool) -> Option<ToolClass> {
    let entry = server.tools.get(tool.name.as_ref())?;
    let hints = UpstreamHints {
        read_only: tool.annotations.as_ref().and_then(|a| a.read_only_hint),
        destructive: tool.annotations.as_ref().and_then(|a| a.destructive_hint),
    };
    Some(entry.class.raised_by(hints))
}

/// The tool as a client sees it: renamed for the endpoint, annotations from the class, no
/// upstream `_meta`, icons or annotations passed through.
pub(crate) fn present_tool(server: &str, tool: &Tool, class: ToolClass, federated: bool) -> Value {
    let mut out = Map::new();
    let name = match federated {
        true => format!("{server}__{}", tool.name),
        false => tool.name.to_string(),
    };
    out.insert("name".into(), Value::String(name));
    if let Some(t) = &tool.title {
        out.insert("title".into(), Value::String(t.clone()));
    }
    if let Some(d) = &tool.description {
        out.insert("description".into(), Value::String(d.to_string()));
    }
    out.insert(
        "inputSchema".into(),
        Value::Object((*tool.input_schema).clone()),
    );
    if let Some(s) = &tool.output_schema {
        out.insert("outputSchema".into(), Value::Object((**s).clone()));
    }
    out.insert(
        "annotations".into(),
        json!({ "readOnlyHint": class.read_only_hint(), "destructiveHint": class.destructive_hint() }),
    );
    Value::Object(out)
}
