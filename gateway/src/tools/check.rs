//! A tool's argument check, compiled once per tool-list refresh: the tool's size limits, the
//! upstream's `inputSchema` and the operator's narrower schema from the registry. A tool whose
//! schema cannot be compiled cannot be called.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Longest validation message returned to a caller.
const MAX_REASON: usize = 300;

/// Why arguments were refused: the message for the caller (it may quote the caller's own
/// values) and, for logs and the audit log, only where in the arguments the problem is.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) message: String,
    /// A JSON pointer into the arguments, or `schema` when the schema itself is the problem.
    pub(crate) at: String,
}

/// Compiled argument schemas for one tool.
#[derive(Debug)]
pub(crate) struct ArgumentCheck {
    upstream: Result<jsonschema::Validator, String>,
    operator: Option<Result<jsonschema::Validator, String>>,
    limits: registry::ArgumentLimits,
}

impl ArgumentCheck {
    /// Compile the upstream's `inputSchema` and the operator's schema, if any.
    pub(crate) fn new(
        input_schema: &Value,
        operator: Option<&Value>,
        limits: registry::ArgumentLimits,
    ) -> ArgumentCheck {
        let compile = |s: &Value| jsonschema::validator_for(s).map_err(|e| e.to_string());
        ArgumentCheck {
            upstream: compile(input_schema),
            operator: operator.map(compile),
            limits,
        }
    }

    /// `Ok` when `value` (a multi-round call's answers) is within the tool's size limits.
    pub(crate) fn within_limits(&self, value: &Value) -> Result<(), String> {
        self.limits
            .check(value)
            .map_err(|excess| excess.to_string())
    }

    /// `Ok` when the arguments are within the tool's size limits and satisfy both schemas;
    /// otherwise the reason, for the caller. The limits come first: a huge value is refused
    /// without being validated.
    pub(crate) fn check(&self, arguments: &Value) -> Result<(), Rejection> {
        self.limits.check(arguments).map_err(|excess| Rejection {
            message: format!("{excess} (the gateway's limit for this tool)"),
            at: "/".into(),
        })?;
        let schema = |message: String| Rejection {
            message,
            at: "schema".into(),
        };
        let validator = match &self.upstream {
            Ok(v) => v,
            Err(e) => {
                return Err(schema(format!(
                    "the tool's input schema cannot be checked ({e})"
                )));
            }
        };
        first_error(validator, arguments, "")?;
        match &self.operator {
            None => Ok(()),
            Some(Ok(v)) => first_error(v, arguments, "the gateway's policy: "),
            Some(Err(e)) => Err(schema(format!(
                "the gateway's argument schema cannot be checked ({e})"
            ))),
        }
    }
}

fn first_error(
    v: &jsonschema::Validator,
    arguments: &Value,
    prefix: &str,
) -> Result<(), Rejection> {
    match v.iter_errors(arguments).next() {
        None => Ok(()),
        Some(e) => {
            let at = e.instance_path().to_string();
            let mut msg = match at.is_empty() {
                true => format!("{prefix}{e}"),
                false => format!("{prefix}{e} (at `{at}`)"),
            };
            crate::redact::shorten(&mut msg, MAX_REASON);
            Err(Rejection {
                message: msg,
                at: if at.is_empty() { "/".into() } else { at },
            })
        }
    }
}

/// Hex SHA-256 over the canonical JSON of a tool definition as the upstream sent it.
pub(crate) fn tool_fingerprint(tool: &rmcp::model::Tool) -> String {
    // A definition that cannot be serialised fingerprints as its name alone, which no approval
    // filed against a full definition will match.
    let value = serde_json::to_value(tool).unwrap_or_else(|_| json!({ "name": tool.name }));
    hex::encode(Sha256::digest(registry::canonical_json(&value)))
}

#[cfg(test)]
mod tests;
