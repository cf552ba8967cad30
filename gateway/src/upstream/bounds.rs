//! What one request to an upstream may take: its deadlines (the tool's or the server's
//! `timeout`, the server's `max_timeout`, and the caller's own deadline) and the size and
//! nesting of its answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// The member of a request's `_meta` where a caller gives its own deadline: milliseconds from
/// when the gateway receives the request.
pub(crate) const CALLER_TIMEOUT: &str = "io.portcullis/timeoutMs";

/// What a request carries beside its params: the credential minted for it and the caller's
/// deadline.
#[derive(Clone, Debug, Default)]
pub(crate) struct Terms {
    /// A token minted for this call, sent as `Authorization: Bearer`.
    pub(crate) credential: Option<Arc<str>>,
    /// When the caller stops waiting.
    pub(crate) deadline: Option<Instant>,
}

impl Terms {
    pub(crate) fn minted(credential: Option<Arc<str>>) -> Terms {
        Terms {
            credential,
            deadline: None,
        }
    }
}

/// One request's deadlines and answer bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// How long it may take without progress.
    pub(crate) timeout: Duration,
    /// How long progress may extend it to.
    pub(crate) max_timeout: Duration,
    /// The largest answer read (a JSON body or one SSE event).
    pub(crate) max_response: usize,
    /// The deepest nesting an answer may have.
    pub(crate) max_depth: usize,
}

impl Bounds {
    /// The bounds of `method` to the server `config`, within `left` (what the caller's own
    /// deadline leaves, if it gave one).
    pub(crate) fn of(
        config: &registry::Server,
        method: &str,
        params: Option<&Value>,
        left: Option<Duration>,
    ) -> Bounds {
        let tool = match method {
            "tools/call" => params
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .and_then(|t| config.tools.get(t))
                .and_then(|e| e.timeout),
            _ => None,
        };
        let mut timeout = tool.unwrap_or(config.timeout);
        let mut max_timeout = config.max_timeout.max(timeout);
        if let Some(left) = left {
            timeout = timeout.min(left);
            max_timeout = max_timeout.min(left);
        }
        Bounds {
            timeout,
            max_timeout,
            max_response: config.resilience.max_response,
            max_depth: config.resilience.max_depth,
        }
    }
}

/// The caller's own deadline, from its request's `_meta`, counted from `received`; `Err` with
/// the reason when the member is there but is not a positive whole number of milliseconds.
pub(crate) fn caller_deadline(
    params: Option<&Value>,
    received: Instant,
) -> Result<Option<Instant>, String> {
    let Some(given) = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(CALLER_TIMEOUT))
    else {
        return Ok(None);
    };
    match given.as_u64().filter(|ms| *ms > 0) {
        Some(ms) => Ok(Some(received + Duration::from_millis(ms))),
        None => Err(format!(
            "`_meta.{CALLER_TIMEOUT}` must be a positive whole number of milliseconds"
        )),
    }
}

#[cfg(test)]
mod tests;
