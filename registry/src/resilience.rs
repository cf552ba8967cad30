//! What a server's answers may be and when the gateway stops asking it: the size and nesting
//! of one answer (`max_response`, `max_response_depth`) and the circuit breaker (`breaker`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigProblem;
use crate::source_map::{SourceMap, child};

/// The largest answer read from an upstream by default: a JSON body, or one SSE event.
pub const DEFAULT_MAX_RESPONSE: usize = 16 << 20;
/// The deepest nesting of arrays and objects an answer may have by default.
pub const DEFAULT_MAX_RESPONSE_DEPTH: usize = 64;
/// The deepest nesting the gateway can read at all (serde_json's own recursion limit).
const MOST_DEPTH: u64 = 120;
const DEFAULT_FAILURES: u32 = 5;
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// The bounds on a server's answers and its breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// The largest answer read, in bytes: a JSON body, or one event of an SSE answer.
    pub max_response: usize,
    /// The deepest nesting of arrays and objects an answer may have.
    pub max_depth: usize,
    /// The circuit breaker; `None` with `breaker: off`.
    pub breaker: Option<Breaker>,
}

impl Default for Resilience {
    fn default() -> Resilience {
        Resilience {
            max_response: DEFAULT_MAX_RESPONSE,
            max_depth: DEFAULT_MAX_RESPONSE_DEPTH,
            breaker: Some(Breaker::default()),
        }
    }
}

/// When a server's circuit opens, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// Failures in a row (a timeout, a broken connection, an unreadable answer, or a stdio
    /// process that exited soon after it started) that open the circuit.
    pub failures: u32,
    /// How long an open circuit refuses calls before one probe call is let through.
    pub cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker {
            failures: DEFAULT_FAILURES,
            cooldown: DEFAULT_COOLDOWN,
        }
    }
}

/// `breaker:` as written: `off`, or its settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBreaker {
    Word(String),
    Settings(RawBreakerSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreakerSettings {
    pub(crate) failures: Option<u32>,
    pub(crate) cooldown: Option<String>,
}

/// The server's resilience keys, checked.
pub(crate) fn resilience(
    base: &str,
    max_response: Option<&Value>,
    max_depth: Option<u64>,
    breaker: Option<RawBreaker>,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Resilience {
    let mut r = Resilience::default();
    if let Some(v) = max_response {
        match crate::validate::parse_size(v) {
            Some(n) => r.max_response = n,
            None => problems.push(map.problem(
                &child(base, "max_response"),
                format!("`{v}` is not a size"),
                "write bytes as a number or with a unit, e.g. `16MiB` or `512KiB`",
            )),
        }
    }
    if let Some(d) = max_depth {
        match usize::try_from(d) {
            Ok(n) if (1..=MOST_DEPTH).contains(&d) => r.max_depth = n,
            _ => problems.push(map.problem(
                &child(base, "max_response_depth"),
                format!("`{d}` is not a nesting depth the gateway reads"),
                &format!("write a depth from 1 to {MOST_DEPTH}, or remove it for {DEFAULT_MAX_RESPONSE_DEPTH}"),
            )),
        }
    }
    let at = child(base, "breaker");
    r.breaker = match breaker {
        None => Some(Breaker::default()),
        Some(RawBreaker::Word(w)) if w == "off" => None,
        Some(RawBreaker::Word(w)) => {
            problems.push(map.problem(
                &at,
                format!("`{w}` is not a breaker setting"),
                "write `breaker: { failures: 5, cooldown: 30s }` (either key), or `breaker: off`",
            ));
            None
        }
        Some(RawBreaker::Settings(s)) => {
            let failures = match s.failures {
                None => DEFAULT_FAILURES,
                Some(0) => {
                    problems.push(map.problem(
                        &child(&at, "failures"),
                        "a breaker that opens after 0 failures would never close".into(),
                        "write 1 or more, or `breaker: off` to turn it off",
                    ));
                    DEFAULT_FAILURES
                }
                Some(n) => n,
            };
            let cooldown = crate::validate::duration_or(
                s.cooldown.as_deref(),
                &child(&at, "cooldown"),
                DEFAULT_COOLDOWN,
                map,
                problems,
            );
            Some(Breaker { failures, cooldown })
        }
    };
    r
}

/// True when the JSON text `bytes` nests arrays and objects deeper than `max`: counted over the
/// bytes, outside strings, before anything is parsed, so an answer too deep is refused with that
/// reason (and costs one pass, not a parse). For text that is JSON, the count is the depth of
/// the value it parses to (the root array or object is depth 1).
pub fn nested_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The nesting depth of `value`: 0 for a scalar, 1 for an array or object of scalars.
pub fn nesting(value: &Value) -> usize {
    let inner = match value {
        Value::Array(items) => items.iter().map(nesting).max(),
        Value::Object(fields) => fields.values().map(nesting).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
}

#[cfg(test)]
mod tests;
