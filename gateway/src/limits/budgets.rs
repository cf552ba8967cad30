//! Budgets of `limits:` entries: a call reserves its tool's `cost` from every budget that covers
//! it and its caller, in the store, before it runs (all of them or none, exact across processes:
//! `store::Store::reserve_budgets`). Units of a call that never reached the upstream go back;
//! so do those of a call the upstream could not answer, where the budget says `refund_failed`.

use std::time::Duration;

use registry::Registry;
use store::{Charge, Store};

use super::principals::matched;
use super::{Hit, Over};

/// How long a reservation may wait for the store before the call is refused.
const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// Units a call spent from one budget.
#[derive(Clone, Debug)]
pub(crate) struct Spent {
    pub(crate) charge: Charge,
    /// The units go back if the upstream could not answer.
    pub(crate) refund_failed: bool,
}

/// [`reserve_as`] for `identity`'s principals.
#[cfg(test)]
pub(crate) async fn reserve(
    store: &Store,
    reg: &Registry,
    identity: &policy::Identity,
    at: (&str, &str),
    cost: u64,
    now_s: i64,
) -> Result<Vec<Spent>, Over> {
    reserve_as(store, reg, &identity.principals(), at, cost, now_s).await
}

/// Reserve `cost` units for a call by a caller resolved to `principals` to `tool` on `server`
/// at Unix time `now_s` from every budget that covers it: what was spent, or why it is refused.
pub(crate) async fn reserve_as(
    store: &Store,
    reg: &Registry,
    principals: &[String],
    (server, tool): (&str, &str),
    cost: u64,
    now_s: i64,
) -> Result<Vec<Spent>, Over> {
    if cost == 0 {
        return Ok(Vec::new());
    }
    let mut spent = Vec::new();
    let mut hits = Vec::new();
    for limit in &reg.limits {
        let Some(budget) = limit.budget.filter(|_| limit.covers(server, tool)) else {
            continue;
        };
        let (window, ends) = budget.per.window(now_s);
        for principal in matched(limit, principals) {
            hits.push((limit.index, budget, ends));
            spent.push(Spent {
                charge: Charge {
                    budget: limit.budget_key(),
                    principal,
                    window: window.clone(),
                    cost: i64::try_from(cost).unwrap_or(i64::MAX),
                    units: i64::try_from(budget.units).unwrap_or(i64::MAX),
                    epoch: 0,
                },
                refund_failed: budget.refund_failed,
            });
        }
    }
    if spent.is_empty() {
        return Ok(spent);
    }
    let mut charges: Vec<Charge> = spent.iter().map(|s| s.charge.clone()).collect();
    let refused = tokio::time::timeout(STORE_DEADLINE, store.reserve_budgets(&mut charges))
        .await
        .map_err(|_| Over::Unavailable("the store did not answer in time".into()))?
        .map_err(|e| Over::Unavailable(e.to_string()))?;
    let Some(i) = refused else {
        // Each charge as reserved, with the window's epoch its refund must match.
        for (s, c) in spent.iter_mut().zip(charges) {
            s.charge = c;
        }
        return Ok(spent);
    };
    let (Some((entry, budget, ends)), Some(s)) = (hits.get(i), spent.get(i)) else {
        return Err(Over::Unavailable(
            "a budget the store named is not the call's".into(),
        ));
    };
    Err(Over::Budget {
        hit: Hit {
            entry: *entry,
            principal: s.charge.principal.clone(),
        },
        budget: *budget,
        wait: Duration::from_secs(u64::try_from(ends.saturating_sub(now_s)).unwrap_or(0)),
    })
}

/// Give back what a call spent: all of it when `reached` is false (the request was never sent
/// upstream), and the budgets with `refund_failed` when the upstream `failed` to answer.
pub(crate) async fn settle(store: &Store, spent: &[Spent], reached: bool, failed: bool) {
    for s in spent {
        if (!reached || (failed && s.refund_failed))
            && let Err(e) = store.refund_budget(&s.charge).await
        {
            tracing::error!(budget = %s.charge.budget, principal = %s.charge.principal, error = %e, "budget refund failed; the units stay spent");
        }
    }
}

#[cfg(test)]
mod tests;
