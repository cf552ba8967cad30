//! Tool classes: what a tool may do to the world, as the registry says.

use std::fmt;
use std::str::FromStr;

/// What a tool may do, as declared by the operator in the registry.
///
/// The class is the gateway's own belief; upstream annotations are untrusted and may only raise
/// it (see [`ToolClass::raised_by`]), never lower it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToolClass {
    /// Reads only; no change to any state outside the call.
    Read,
    /// Changes state that can be restored.
    Write,
    /// Changes state irreversibly (delete, pay, deploy, send).
    Destructive,
}

/// The behaviour hints an upstream claims for a tool. Untrusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamHints {
    /// `readOnlyHint` as sent by the upstream, if any.
    pub read_only: Option<bool>,
    /// `destructiveHint` as sent by the upstream, if any.
    pub destructive: Option<bool>,
}

// === impl ToolClass ===

impl ToolClass {
    /// The stable lowercase name used in config, audit events and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolClass::Read => "read",
            ToolClass::Write => "write",
            ToolClass::Destructive => "destructive",
        }
    }

    /// The class after taking the upstream's claims into account: claims can only raise it.
    ///
    /// An upstream that says a tool is destructive is believed; one that says a tool is read-only
    /// changes nothing, because the registry is the only source that can lower risk.
    pub fn raised_by(self, hints: UpstreamHints) -> ToolClass {
        // Per the MCP schema, `destructiveHint` defaults to true once a tool says it is not
        // read-only, so a bare `readOnlyHint: false` is a destructive claim.
        let claimed = match (hints.read_only, hints.destructive) {
            (_, Some(true)) | (Some(false), None) => ToolClass::Destructive,
            (Some(false), Some(false)) => ToolClass::Write,
            _ => ToolClass::Read,
        };
        self.max(claimed)
    }

    /// `readOnlyHint` the gateway shows to clients.
    pub fn read_only_hint(self) -> bool {
        self == ToolClass::Read
    }

    /// `destructiveHint` the gateway shows to clients.
    pub fn destructive_hint(self) -> bool {
        self == ToolClass::Destructive
    }
}

impl fmt::Display for ToolClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a class name that is not one of `read`, `write`, `destructive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownClassError;

impl FromStr for ToolClass {
    type Err = UnknownClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(ToolClass::Read),
            "write" => Ok(ToolClass::Write),
            "destructive" => Ok(ToolClass::Destructive),
            _ => Err(UnknownClassError),
        }
    }
}

#[cfg(test)]
mod tests;
