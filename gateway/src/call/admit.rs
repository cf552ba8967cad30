//! Step 5, admit: the limits (the tool's own rate, then the `limits:` entries that cover the
//! caller: concurrency caps, rates, budgets), then registration with the kill switch's registry
//! of running calls (from here the call can be cancelled, by its client or by a switch).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Call, ToolCall, Trail};
use crate::gateway::{Gateway, Live};
use crate::levers::RunningGuard;
use crate::limits::{Over, budgets};
use crate::refusal::Refusal;

/// Refused when a limit is reached. The call keeps its concurrency permits and the budget
/// units it spent on the trail: the permits go when the upstream has answered, the units are
/// settled by `result`.
pub(super) async fn limits(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    under: &Live,
    t: &mut Trail,
) -> Result<(), Refusal> {
    let (server, tool) = (req.server(), req.tool());
    if let Some(rate) = req.offered.rate {
        gw.limits.admit(server, tool, rate).map_err(|wait| {
            tracing::info!(subject = %call.caller.subject, server, tool, %rate, "tool call refused: rate limited");
            Refusal::RateLimited {
                name: req.name.clone(),
                rate,
                wait_s: secs(wait),
                hit: None,
            }
        })?;
    }
    let reg = &under.registry;
    if reg.limits.is_empty() {
        return Ok(());
    }
    // Resolved once, for the caps and rates, the budgets and the metrics.
    let principals = call.caller.identity.principals();
    let over = |o| refused(call, req, o);
    t.permits = gw
        .limits
        .principals
        .admit_as(reg, &principals, server, tool)
        .map_err(over)?;
    let now_s = store::now_ms().div_euclid(1000);
    let cost = req.offered.cost;
    t.spent = budgets::reserve_as(
        (&gw.store, &gw.limits.leases),
        reg,
        &principals,
        (server, tool),
        cost,
        now_s,
    )
    .await
    .map_err(over)?;
    for l in reg.limits.iter().filter(|l| l.covers(server, tool)) {
        if !crate::limits::principals::matched(l, &principals).is_empty() {
            crate::metrics::get().limit(l.index, "admitted");
        }
    }
    Ok(())
}

/// Whole seconds until a retry can succeed, rounded up (at least 1).
fn secs(wait: std::time::Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

fn refused(call: &Call, req: &ToolCall, over: Over) -> Refusal {
    let refusal = refusal(call, req, over);
    if let (Some(hit), Some(reason)) = (refusal.limit(), refusal.face().reason) {
        crate::metrics::get().limit(hit.entry, reason);
    }
    refusal
}

fn refusal(call: &Call, req: &ToolCall, over: Over) -> Refusal {
    let name = req.name.clone();
    let (server, tool) = (req.server(), req.tool());
    let subject = &call.caller.subject;
    match over {
        Over::Rate { hit, rate, wait } => {
            tracing::info!(%subject, server, tool, %hit, %rate, "tool call refused: rate limited");
            let wait_s = secs(wait);
            let hit = Some(hit);
            Refusal::RateLimited {
                name,
                rate,
                wait_s,
                hit,
            }
        }
        Over::Concurrency { hit, cap } => {
            tracing::info!(%subject, server, tool, %hit, cap, "tool call refused: concurrency limited");
            Refusal::ConcurrencyLimited { name, cap, hit }
        }
        Over::Budget { hit, budget, wait } => {
            tracing::info!(%subject, server, tool, %hit, %budget, "tool call refused: budget exceeded");
            let wait_s = secs(wait);
            Refusal::BudgetExceeded {
                name,
                budget,
                wait_s,
                hit,
            }
        }
        Over::Unavailable(error) => {
            tracing::error!(%subject, server, tool, %error, "limits unavailable; call refused");
            Refusal::LimitsUnavailable { name, error }
        }
    }
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
