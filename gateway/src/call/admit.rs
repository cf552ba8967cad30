//! Step 5, admit: the tool's rate limit, then registration with the kill switch's registry of
//! running calls (from here the call can be cancelled, by its client or by a switch).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Call, ToolCall};
use crate::gateway::Gateway;
use crate::levers::RunningGuard;
use crate::refusal::Refusal;

/// Refused when the tool's rate is used up.
pub(super) fn rate(gw: &Gateway, call: &Call, req: &ToolCall) -> Result<(), Refusal> {
    let Some(rate) = req.offered.rate else {
        return Ok(());
    };
    gw.limits
        .admit(req.server(), req.tool(), rate, Instant::now())
        .map_err(|wait| {
            tracing::info!(subject = %call.caller.subject, server = req.server(), tool = req.tool(), %rate, "tool call refused: rate limited");
            Refusal::RateLimited {
                name: req.name.clone(),
                rate,
                wait_s: wait.as_secs().max(1),
            }
        })
}

/// A call the kill switch and its client can cancel, until it is dropped.
pub(crate) struct Running<'a> {
    guard: RunningGuard<'a>,
    _unregister: Unregister<'a>,
}

impl Running<'_> {
    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.guard.cancel
    }
}

type Inflight = Mutex<HashMap<(String, String), CancellationToken>>;

/// Removes a call from the client-cancellation map however the call ends.
struct Unregister<'a> {
    map: &'a Inflight,
    key: Option<(String, String)>,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let (Some(k), Ok(mut map)) = (&self.key, self.map.lock()) {
            map.remove(k);
        }
    }
}

/// Register the call; refused if the registry cannot take it (a call the kill switch could
/// not stop never runs).
pub(super) fn track<'a>(
    gw: &'a Gateway,
    call: &Call,
    id: &Value,
    req: &ToolCall,
) -> Result<Running<'a>, Refusal> {
    let identity = call.caller.identity.clone();
    let Some(guard) = gw.levers.start(identity, req.server(), req.tool()) else {
        tracing::error!(
            server = req.server(),
            tool = req.tool(),
            "in-flight registry unavailable; call refused"
        );
        return Err(Refusal::Untracked {
            name: req.name.clone(),
        });
    };
    let key = call.session_id().map(|s| (s.to_string(), id.to_string()));
    if let (Some(k), Ok(mut map)) = (&key, gw.inflight.lock()) {
        map.insert(k.clone(), guard.cancel.clone());
    }
    Ok(Running {
        guard,
        _unregister: Unregister {
            map: &gw.inflight,
            key,
        },
    })
}
