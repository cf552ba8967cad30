//! How large and how complex a tool call's arguments may be (`tools.<name>.max_argument_bytes`,
//! `max_argument_nodes`, `max_argument_depth`), and the measure checked against them.
//!
//! The body limit (`http.max_body`) bounds a whole request; these bound what one tool receives,
//! well below it by default, so an upstream is never handed a 300,000-key object because the
//! body happened to fit.

use serde_json::Value;

/// Default: 64 KiB of arguments.
pub(crate) const DEFAULT_ARGUMENT_BYTES: usize = 64 * 1024;
/// Default: 4,096 JSON values (objects, arrays, strings, numbers, ...).
pub(crate) const DEFAULT_ARGUMENT_NODES: usize = 4096;
/// Default: 32 levels of nesting.
pub(crate) const DEFAULT_ARGUMENT_DEPTH: usize = 32;

/// Limits on one call's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgumentLimits {
    /// Approximate encoded size: string and key bytes plus a few bytes per value.
    pub bytes: usize,
    /// JSON values, containers included.
    pub nodes: usize,
    /// Nesting depth (the arguments object is depth 1).
    pub depth: usize,
}

impl Default for ArgumentLimits {
    fn default() -> ArgumentLimits {
        ArgumentLimits {
            bytes: DEFAULT_ARGUMENT_BYTES,
            nodes: DEFAULT_ARGUMENT_NODES,
            depth: DEFAULT_ARGUMENT_DEPTH,
        }
    }
}

/// Which limit a value exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgumentExcess {
    /// Larger than `bytes`.
    Bytes(usize),
    /// More values than `nodes`.
    Nodes(usize),
    /// Deeper than `depth`.
    Depth(usize),
}

impl std::fmt::Display for ArgumentExcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgumentExcess::Bytes(n) => write!(f, "arguments are larger than {n} bytes"),
            ArgumentExcess::Nodes(n) => write!(f, "arguments hold more than {n} values"),
            ArgumentExcess::Depth(n) => write!(f, "arguments nest deeper than {n} levels"),
        }
    }
}

impl ArgumentLimits {
    /// The first limit `value` exceeds, if any. Stops as soon as one is exceeded, so a huge
    /// value costs no more than the limit to refuse.
    pub fn check(&self, value: &Value) -> Result<(), ArgumentExcess> {
        let mut seen = Measure::default();
        self.walk(value, 1, &mut seen)
    }

    fn walk(&self, value: &Value, depth: usize, seen: &mut Measure) -> Result<(), ArgumentExcess> {
        if depth > self.depth {
            return Err(ArgumentExcess::Depth(self.depth));
        }
        seen.nodes += 1;
        if seen.nodes > self.nodes {
            return Err(ArgumentExcess::Nodes(self.nodes));
        }
        seen.bytes += match value {
            Value::String(s) => s.len() + 2,
            Value::Number(_) => 8,
            _ => 4,
        };
        if seen.bytes > self.bytes {
            return Err(ArgumentExcess::Bytes(self.bytes));
        }
        match value {
            Value::Array(items) => {
                for v in items {
                    self.walk(v, depth + 1, seen)?;
                }
            }
            Value::Object(members) => {
                for (k, v) in members {
                    seen.bytes += k.len() + 3;
                    self.walk(v, depth + 1, seen)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Default)]
struct Measure {
    bytes: usize,
    nodes: usize,
}

#[cfg(test)]
mod tests;
