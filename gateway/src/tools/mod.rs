//! What the gateway derives from an allowlisted tool's definition once per tool-list refresh,
//! never per call: its enforced class, its presentation on each endpoint, its compiled argument
//! check, its fingerprint and its 2026-07-28 `x-mcp-header` declarations.
//!
//! Below `upstream` (which keeps the current set per server) and above nothing of the gateway's
//! own: it knows neither the request path nor the MCP edge.

mod check;
pub(crate) mod param_headers;
mod present;

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::Tool;
use serde_json::Value;

pub(crate) use check::ArgumentCheck;

/// An allowlisted tool the upstream offers, with what the gateway derives from it.
pub(crate) struct Offered {
    /// The definition as the upstream sent it (untrusted).
    pub(crate) tool: Tool,
    /// The registry's class, raised by upstream hints.
    pub(crate) class: policy::ToolClass,
    /// As shown on `/mcp` (`<server>__<tool>`).
    pub(crate) federated: Value,
    /// As shown on `/mcp/<server>`.
    pub(crate) own: Value,
    /// Compiled argument schemas.
    pub(crate) check: ArgumentCheck,
    /// The tool's rate limit from the registry, read once per refresh.
    pub(crate) rate: Option<registry::Rate>,
    /// Units a call spends from the budgets that cover it.
    pub(crate) cost: u64,
    /// Hex SHA-256 of the definition's canonical JSON: an approval is bound to it, so a tool
    /// that changes after approval does not run on that approval.
    pub(crate) fingerprint: String,
    /// Its `x-mcp-header` declarations, checked against 2026-07-28 calls' `Mcp-Param-*` headers.
    pub(crate) param_headers: param_headers::Declarations,
}

impl Offered {
    /// Everything derived from `tool` on `server` under its registry entry; `None` if the tool is
    /// not allowlisted there.
    pub(crate) fn derive(server: &str, config: &registry::Server, tool: Tool) -> Option<Offered> {
        let entry = config.tools.get(tool.name.as_ref())?;
        let class = present::effective_class(config, &tool)?;
        let federated = present::present_tool(server, &tool, class, true);
        let own = present::present_tool(server, &tool, class, false);
        let schema = Value::Object((*tool.input_schema).clone());
        let check = ArgumentCheck::new(&schema, entry.arguments.as_ref(), entry.argument_limits);
        let fingerprint = check::tool_fingerprint(&tool);
        let param_headers = param_headers::Declarations::of(&schema);
        Some(Offered {
            param_headers,
            fingerprint,
            tool,
            class,
            federated,
            own,
            check,
            rate: entry.rate,
            cost: entry.cost,
        })
    }
}

/// The allowlisted tools an upstream offers now, in its listing's order, each found by name in
/// one lookup: a call looks its tool up three or four times on its way (resolve, the argument
/// headers, the rechecks), and an upstream may offer thousands.
#[derive(Default)]
pub(crate) struct OfferedTools {
    list: Vec<Arc<Offered>>,
    /// Each name's first place in `list`, as a search from the start would find it.
    by_name: HashMap<String, usize>,
}

impl OfferedTools {
    pub(crate) fn new(list: Vec<Arc<Offered>>) -> OfferedTools {
        let mut by_name = HashMap::with_capacity(list.len());
        for (i, o) in list.iter().enumerate() {
            by_name.entry(o.tool.name.to_string()).or_insert(i);
        }
        OfferedTools { list, by_name }
    }

    /// The offered tool the upstream calls `name`.
    pub(crate) fn named(&self, name: &str) -> Option<&Arc<Offered>> {
        self.list.get(*self.by_name.get(name)?)
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Arc<Offered>> {
        self.list.iter()
    }

    pub(crate) fn as_slice(&self) -> &[Arc<Offered>] {
        &self.list
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}
