//! Why a request to an upstream failed, and how its circuit breaker counts that.

use std::time::Duration;

use serde_json::Value;

use super::circuit;

/// Why an upstream request failed. Every variant names the server in its message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream `{0}` is not connected")]
    Down(String),
    #[error("upstream `{0}` did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("upstream `{server}` returned an error")]
    Rpc { server: String, error: Value },
    #[error("upstream `{0}` connection failed")]
    Transport(String),
    #[error("the caller's deadline passed before the request to upstream `{0}` was sent")]
    Expired(String),
    #[error("upstream `{0}` could not be reached")]
    Unreached(String),
    #[error("upstream `{0}` answered with HTTP {1}")]
    Status(String, u16),
    #[error("request to upstream `{0}` was cancelled")]
    Cancelled(String),
    #[error("upstream `{0}` sent a response the gateway could not read")]
    Unreadable(String),
    #[error("upstream `{0}` sent an answer past its bounds: {1}")]
    Exceeded(String, String),
    #[error(
        "upstream `{0}` is unavailable: its circuit is open after repeated failures; calls resume within {1}s"
    )]
    Open(String, u64),
}

impl UpstreamError {
    /// The JSON-RPC code of an upstream's own error, else the gateway's upstream-error code.
    pub(crate) fn code(&self) -> i64 {
        match self {
            UpstreamError::Rpc { error, .. } => error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(crate::jsonrpc::UPSTREAM_ERROR),
            _ => crate::jsonrpc::UPSTREAM_ERROR,
        }
    }

    /// The server it concerns.
    pub(crate) fn server(&self) -> &str {
        match self {
            UpstreamError::Down(s)
            | UpstreamError::Timeout(s, _)
            | UpstreamError::Transport(s)
            | UpstreamError::Status(s, _)
            | UpstreamError::Unreached(s)
            | UpstreamError::Expired(s)
            | UpstreamError::Cancelled(s)
            | UpstreamError::Unreadable(s)
            | UpstreamError::Exceeded(s, _)
            | UpstreamError::Open(s, _)
            | UpstreamError::Rpc { server: s, .. } => s,
        }
    }

    /// A short name for the kind of failure (span attribute, never a label with free text).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Down(_) => "upstream_down",
            UpstreamError::Timeout(..) | UpstreamError::Expired(_) => "upstream_timeout",
            UpstreamError::Rpc { .. } => "upstream_error",
            UpstreamError::Transport(_)
            | UpstreamError::Unreached(_)
            | UpstreamError::Status(..) => "upstream_transport",
            UpstreamError::Cancelled(_) => "cancelled",
            UpstreamError::Unreadable(_) => "upstream_unreadable",
            UpstreamError::Exceeded(..) => "upstream_exceeded",
            UpstreamError::Open(..) => "upstream_circuit_open",
        }
    }

    /// True when the request may be tried again on another endpoint: any request that never
    /// left (no connection could be made, or the endpoint's connection went away before it was
    /// sent); a `read` also when the connection failed, or a gateway in front of the upstream
    /// said it is unavailable (502, 503, 504). A write that may have reached the upstream is
    /// never sent again.
    pub(super) fn retryable(&self, read: bool) -> bool {
        match self {
            UpstreamError::Unreached(_) | UpstreamError::Down(_) => true,
            UpstreamError::Transport(_) | UpstreamError::Status(_, 502..=504) => read,
            _ => false,
        }
    }

    /// How the breaker counts it: a timeout or a broken connection is a failure; an answer,
    /// even an error, is a success; the rest says nothing of the upstream's health.
    pub(super) fn outcome(r: &Result<Value, UpstreamError>) -> circuit::Outcome {
        use circuit::Outcome;
        match r {
            Ok(_) | Err(UpstreamError::Rpc { .. }) => Outcome::Success,
            Err(
                UpstreamError::Timeout(..)
                | UpstreamError::Transport(_)
                | UpstreamError::Unreached(_),
            ) => Outcome::Failure,
            Err(UpstreamError::Status(_, 502..=504)) => Outcome::Failure,
            Err(_) => Outcome::Neutral,
        }
    }
}
