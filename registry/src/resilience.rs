//! How the gateway reaches a server and survives it: its endpoints (`url` as a list, or
//! `endpoints` with weights) and how calls are spread over them (`balance`), the active health
//! probe (`health`), the share of extra attempts calls may take (`retry_budget`), the size and
//! nesting of one answer (`max_response`, `max_response_depth`) and the circuit breaker
//! (`breaker`).

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
/// The most endpoints one server may have.
const MOST_ENDPOINTS: usize = 64;
const DEFAULT_FAILURES: u32 = 5;
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// How often each endpoint is probed by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// Extra attempts reads may take by default, as a percentage of calls.
pub const DEFAULT_RETRY_BUDGET: u8 = 20;

/// One endpoint of an HTTP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its Streamable HTTP URL.
    pub url: String,
    /// Its share of calls, relative to the others' (1 by default).
    pub weight: u32,
}

/// How calls are spread over a server's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The endpoint with the fewest calls running for its weight.
    #[default]
    LeastRequests,
    /// In turn, each endpoint as often as its weight.
    RoundRobin,
}

impl Balance {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LeastRequests => "least_requests",
            Balance::RoundRobin => "round_robin",
        }
    }
}

/// `url:` as written: one URL or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawUrls {
    One(String),
    Several(Vec<String>),
}

/// One of `endpoints:` as written: a URL, or a URL and its weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawEndpoint {
    Url(String),
    Weighted(RawWeighted),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeighted {
    pub(crate) url: String,
    pub(crate) weight: Option<u32>,
}

/// `health:` as written: `off`, or `{ interval: 30s }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawHealth {
    Word(String),
    Settings(RawHealthSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthSettings {
    pub(crate) interval: Option<String>,
}

/// The bounds on a server's answers, its breaker, and how its endpoints are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// The largest answer read, in bytes: a JSON body, or one event of an SSE answer.
    pub max_response: usize,
    /// The deepest nesting of arrays and objects an answer may have.
    pub max_depth: usize,
    /// The circuit breaker, one per endpoint; `None` with `breaker: off`.
    pub breaker: Option<Breaker>,
    /// How calls are spread over the endpoints.
    pub balance: Balance,
    /// How often each endpoint of an HTTP server is probed (a tool listing, checked against the
    /// pins); `None` with `health: off`.
    pub health: Option<Duration>,
    /// Extra attempts reads may take, as a percentage of calls; 0 turns retries off.
    pub retry_budget: u8,
}

impl Default for Resilience {
    fn default() -> Resilience {
        Resilience {
            max_response: DEFAULT_MAX_RESPONSE,
            max_depth: DEFAULT_MAX_RESPONSE_DEPTH,
            breaker: Some(Breaker::default()),
            balance: Balance::LeastRequests,
            health: Some(DEFAULT_HEALTH_INTERVAL),
            retry_budget: DEFAULT_RETRY_BUDGET,
        }
    }
}

/// When a server's circuit opens, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// Failures in a row that open the circuit: a timeout, a connection that failed or could not
    /// be made, a 502/503/504, a failed health probe, or a connection lost (a process exited)
    /// soon after it was made.
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

/// The endpoints `url` and `endpoints` name, each with where it is written; `None` when
/// neither is given (or after a problem).
pub(crate) fn endpoints(
    base: &str,
    url: Option<RawUrls>,
    endpoints: Option<Vec<RawEndpoint>>,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Vec<(String, Endpoint)>> {
    let at = |key: &str, i: Option<usize>| match i {
        None => child(base, key),
        Some(i) => format!("{}[{i}]", child(base, key)),
    };
    let listed: Vec<(String, Endpoint)> = match (url, endpoints) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            problems.push(map.problem(
                &child(base, "endpoints"),
                "`url` and `endpoints` both name this server's endpoints".into(),
                "keep one: `url` (one URL or a list), or `endpoints` with weights",
            ));
            return None;
        }
        (Some(RawUrls::One(url)), None) => vec![(at("url", None), Endpoint { url, weight: 1 })],
        (Some(RawUrls::Several(urls)), None) => urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| (at("url", Some(i)), Endpoint { url, weight: 1 }))
            .collect(),
        (None, Some(list)) => list
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (url, weight) = match e {
                    RawEndpoint::Url(url) => (url, 1),
                    RawEndpoint::Weighted(w) => (w.url, w.weight.unwrap_or(1)),
                };
                if weight == 0 {
                    problems.push(map.problem(
                        &format!("{}.weight", at("endpoints", Some(i))),
                        "an endpoint of weight 0 would take no calls".into(),
                        "give it a weight of 1 or more, or remove the endpoint",
                    ));
                    return None;
                }
                Some((at("endpoints", Some(i)), Endpoint { url, weight }))
            })
            .collect(),
    };
    if listed.len() > MOST_ENDPOINTS {
        problems.push(map.problem(
            base,
            format!("{} endpoints are listed", listed.len()),
            &format!("list at most {MOST_ENDPOINTS} endpoints of one server"),
        ));
        return None;
    }
    if listed.is_empty() {
        problems.push(map.problem(
            base,
            "no endpoint is listed".into(),
            "give at least one URL, e.g. `url: https://notes.example.com/mcp`",
        ));
        return None;
    }
    for (i, (at, e)) in listed.iter().enumerate() {
        if listed.iter().take(i).any(|(_, o)| o.url == e.url) {
            problems.push(map.problem(
                at,
                format!("`{}` is listed twice", e.url),
                "list each endpoint once; give it a `weight` for a larger share",
            ));
        }
    }
    Some(listed)
}

/// `balance`, `health` and `retry_budget`, checked into `r`.
pub(crate) fn routing(
    r: &mut Resilience,
    base: &str,
    balance: Option<Balance>,
    health: Option<RawHealth>,
    retry_budget: Option<&str>,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) {
    r.balance = balance.unwrap_or_default();
    let at = child(base, "health");
    r.health = match health {
        None => Some(DEFAULT_HEALTH_INTERVAL),
        Some(RawHealth::Word(w)) if w == "off" => None,
        Some(RawHealth::Word(w)) => {
            problems.push(map.problem(
                &at,
                format!("`{w}` is not a health setting"),
                "write `health: { interval: 30s }`, or `health: off`",
            ));
            None
        }
        Some(RawHealth::Settings(s)) => Some(crate::validate::duration_or(
            s.interval.as_deref(),
            &child(&at, "interval"),
            DEFAULT_HEALTH_INTERVAL,
            map,
            problems,
        )),
    };
    if let Some(text) = retry_budget {
        let parsed = match text.trim() {
            "off" => Some(0),
            t => t
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u8>().ok())
                .filter(|n| *n <= 100),
        };
        match parsed {
            Some(n) => r.retry_budget = n,
            None => problems.push(map.problem(
                &child(base, "retry_budget"),
                format!("`{text}` is not a retry budget"),
                "write a percentage of calls from 0% to 100%, e.g. `retry_budget: 20%`, or `retry_budget: off`",
            )),
        }
    }
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
