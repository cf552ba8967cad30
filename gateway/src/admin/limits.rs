//! What operators see of the limits, and what they may change: each `limits:` entry with where
//! it is written, the calls each principal has running under its cap, and each principal's
//! spending in the budget's current window; an admin resets a window's usage or raises its
//! allowance, recorded before it is done.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::operate::{OpError, Operator};

/// The most units one change may add to a window.
const MAX_RAISE: u64 = 1_000_000_000_000;

/// Every entry of `limits:` in force, with usage now.
pub(crate) async fn state(gw: &Gateway) -> Result<Value, OpError> {
    let reg = gw.registry();
    let now_s = store::now_ms().div_euclid(1000);
    let windows: Vec<String> = reg
        .limits
        .iter()
        .filter_map(|l| l.budget.map(|b| b.per.window(now_s).0))
        .collect();
    let rows = match windows.is_empty() {
        true => Vec::new(),
        false => gw.store.budget_usage(&windows).await.map_err(|e| {
            tracing::error!(error = %e, "budget usage could not be read");
            OpError::Unavailable("the store cannot be reached".into())
        })?,
    };
    let running = gw.limits.principals.running(&reg);
    let entries: Vec<Value> = reg
        .limits
        .iter()
        .map(|l| {
            let path = format!("limits[{}]", l.index);
            let mut e = json!({
                "entry": path,
                "at": reg.source.key(&path).to_string(),
                "match": l.principal.to_string(),
                "server": l.server,
                "tool": l.tool,
                "rate": l.rate.map(|r| r.to_string()),
                "burst": l.burst,
                "concurrency": l.concurrency,
                "running": running.get(&l.index).cloned().unwrap_or_default().into_iter()
                    .map(|(p, n)| json!({ "principal": p, "running": n })).collect::<Vec<_>>(),
            });
            if let (Some(b), Some(o)) = (l.budget, e.as_object_mut()) {
                let (window, ends) = b.per.window(now_s);
                let key = l.budget_key();
                let used: Vec<Value> = rows
                    .iter()
                    .filter(|r| r.budget == key && r.window == window)
                    .map(|r| {
                        let allowed = i64::try_from(b.units)
                            .unwrap_or(i64::MAX)
                            .saturating_add(r.extra);
                        json!({
                            "principal": r.principal,
                            "used": r.used,
                            "raised": r.extra,
                            "allowed": allowed,
                            "remaining": allowed.saturating_sub(r.used).max(0),
                        })
                    })
                    .collect();
                o.insert(
                    "budget".into(),
                    json!({
                        "units": b.units,
                        "per": b.per.as_str(),
                        "refund_failed": b.refund_failed,
                        "exact": b.exact,
                        "window": window,
                        "resets_at_ms": ends.saturating_mul(1000),
                        "principals": used,
                    }),
                );
            }
            e
        })
        .collect();
    Ok(json!({
        "limits": entries,
        "counted": "rates and concurrency caps per process; budgets in the store, shared by every process on it",
    }))
}

/// An admin's change to one principal's budget in the current window.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Adjust {
    /// `limits[N]`, or N.
    entry: Value,
    /// `level:name`, matched by the entry.
    principal: String,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    raise: u64,
    reason: String,
}

/// Reset and/or raise a principal's budget for the current window; recorded first.
pub(crate) async fn adjust(gw: &Gateway, op: &Operator, a: Adjust) -> Result<Value, OpError> {
    if !op.roles.admin {
        return Err(OpError::Forbidden(
            "changing a budget needs the admin role".into(),
        ));
    }
    let reason = crate::operate::reason_of(&a.reason)?;
    let reg = gw.registry();
    let index = match &a.entry {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .strip_prefix("limits[")
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s)
            .parse()
            .ok(),
        _ => None,
    };
    let limit = index
        .and_then(|i| reg.limits.iter().find(|l| l.index as u64 == i))
        .ok_or_else(|| OpError::NotFound(format!("no `limits:` entry {}", a.entry)))?;
    let budget = limit
        .budget
        .ok_or_else(|| OpError::BadRequest(format!("limits[{}] sets no budget", limit.index)))?;
    let covered = crate::limits::principals::matched(limit, std::slice::from_ref(&a.principal));
    if covered.is_empty() {
        return Err(OpError::BadRequest(format!(
            "limits[{}] applies to {}, not to `{}`",
            limit.index, limit.principal, a.principal
        )));
    }
    if !a.reset && a.raise == 0 {
        return Err(OpError::BadRequest(
            "say `reset: true` and/or `raise: N`".into(),
        ));
    }
    let raise = i64::try_from(a.raise)
        .ok()
        .filter(|r| *r as u64 <= MAX_RAISE)
        .ok_or_else(|| {
            OpError::BadRequest(format!("`raise` is at most {MAX_RAISE} units at a time"))
        })?;
    let (window, _) = budget.per.window(store::now_ms().div_euclid(1000));
    let entry = format!("limits[{}]", limit.index);
    let detail = json!({
        "entry": entry, "principal": a.principal, "window": window,
        "reset": a.reset, "raise": raise, "reason": reason,
    });
    crate::operate::record_operator(gw, op, "budget.adjust", detail).await?;
    let row = gw
        .store
        .adjust_budget(&limit.budget_key(), &a.principal, &window, a.reset, raise)
        .await;
    if a.reset {
        // What this process held ahead is forgiven with the rest (even if only the reading
        // back failed; if the reset itself did, the units stay spent: never more calls); other
        // processes let go of theirs within a second (`limits/budgets/leases.rs`).
        gw.limits
            .leases
            .forget(&limit.budget_key(), &a.principal, &window);
    }
    let row = row.map_err(|e| {
        tracing::error!(error = %e, "budget change not made: store unavailable");
        OpError::Unavailable("the store cannot be reached; nothing was changed".into())
    })?;
    let allowed = i64::try_from(budget.units)
        .unwrap_or(i64::MAX)
        .saturating_add(row.extra);
    Ok(json!({
        "entry": entry,
        "principal": row.principal,
        "window": row.window,
        "used": row.used,
        "raised": row.extra,
        "allowed": allowed,
        "remaining": allowed.saturating_sub(row.used).max(0),
    }))
}
