//! Budgets of `limits:` entries: a call reserves its tool's `cost` from every budget that covers
//! it and its caller, in the store, before it runs (all of them or none, never overspent across
//! processes: `store::Store::reserve_budgets`), or spends units this process reserved there
//! ahead of it (`leases.rs`), unless a budget that covers the call is marked `exact`: then each
//! of the call's charges is reserved in the store and given back there. Units of a call that
//! never reached the upstream go back; so do those of a call the upstream could not answer,
//! where the budget says `refund_failed`.

use std::time::{Duration, Instant};

use registry::Registry;
use store::{Charge, Store};

pub(crate) mod leases;

pub(crate) use leases::Leases;

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
    /// Reserved for a call covered by a budget marked `exact`: its units go back to the store,
    /// never into units held ahead.
    pub(crate) exact: bool,
}

/// [`reserve_as`] for `identity`'s principals.
#[cfg(test)]
pub(crate) async fn reserve(
    (store, leases): (&Store, &Leases),
    reg: &Registry,
    identity: &policy::Identity,
    at: (&str, &str),
    cost: u64,
    now_s: i64,
) -> Result<Vec<Spent>, Over> {
    reserve_as(
        (store, leases),
        reg,
        &identity.principals(),
        at,
        cost,
        now_s,
    )
    .await
}

/// Reserve `cost` units for a call by a caller resolved to `principals` to `tool` on `server`
/// at Unix time `now_s` from every budget that covers it: what was spent, or why it is refused.
pub(crate) async fn reserve_as(
    (store, leases): (&Store, &Leases),
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
                exact: false,
            });
        }
    }
    if spent.is_empty() {
        return Ok(spent);
    }
    let mut charges: Vec<Charge> = spent.iter().map(|s| s.charge.clone()).collect();
    let now = Instant::now();
    // A budget marked `exact` holds nothing ahead: the call's charges all go to the store,
    // asking nothing ahead, and come back to it.
    let exact = hits.iter().any(|(_, b, _)| b.exact);
    let refused = match !exact && leases.take(&mut charges, now) {
        true => None,
        false => ahead_or_exact((store, leases), &mut charges, now, exact).await?,
    };
    let Some(i) = refused else {
        // Each charge as reserved, with the window's epoch its refund must match.
        for (s, c) in spent.iter_mut().zip(charges) {
            s.charge = c;
            s.exact = exact;
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

/// Reserve `charges` in the store, with units ahead where their budgets allow (held in
/// `leases` once reserved) and the call is not `exact`; if those do not fit, exactly the
/// charges: the index of the one that does not fit then, if any.
async fn ahead_or_exact(
    (store, leases): (&Store, &Leases),
    charges: &mut [Charge],
    asked: Instant,
    exact: bool,
) -> Result<Option<usize>, Over> {
    let ahead: Vec<i64> = match exact {
        true => vec![0; charges.len()],
        false => charges.iter().map(|c| leases.ahead(c, asked)).collect(),
    };
    let answer = match ahead.iter().any(|a| *a > 0) {
        // Nothing asked ahead: the charges as they are.
        false => in_store(store, charges).await,
        true => {
            let mut more = charges.to_vec();
            for (c, a) in more.iter_mut().zip(&ahead) {
                c.cost = c.cost.saturating_add(*a);
            }
            let answer = in_store(store, &mut more).await;
            if let Ok(None) = answer {
                // Held from when the store answered (a slow answer does not shorten the lease).
                let now = Instant::now();
                let mut back = Vec::new();
                for ((c, m), a) in charges.iter_mut().zip(more).zip(&ahead) {
                    c.epoch = m.epoch;
                    if *a > 0 {
                        back.extend(leases.hold(c, *a, (asked, now)));
                    }
                }
                leases.give_back_later(store, back);
            }
            answer
        }
    };
    let i = match answer {
        Ok(None) => return Ok(None),
        Err(e) => {
            leases.unask(charges, &ahead);
            return Err(e);
        }
        Ok(Some(i)) => i,
    };
    leases.unask(charges, &ahead);
    // The budget's end is near: this process lets go of what it holds of it (the store may
    // need those units for this very call), and the call reserves exactly its cost, unless it
    // asked for exactly that already and nothing came back.
    let back = charges.get(i).and_then(|c| leases.short(c, Instant::now()));
    if back.is_none() && ahead.get(i).is_none_or(|a| *a == 0) {
        return Ok(Some(i));
    }
    refund(store, back.as_slice()).await;
    in_store(store, charges).await
}

/// Reserve `charges` in the store, within its deadline.
async fn in_store(store: &Store, charges: &mut [Charge]) -> Result<Option<usize>, Over> {
    tokio::time::timeout(STORE_DEADLINE, store.reserve_budgets(charges))
        .await
        .map_err(|_| Over::Unavailable("the store did not answer in time".into()))?
        .map_err(|e| Over::Unavailable(e.to_string()))
}

/// Give `charges` back to the store, within its deadline; one that cannot be stays spent
/// (logged).
pub(crate) async fn refund(store: &Store, charges: &[Charge]) {
    for c in charges {
        let failed = match tokio::time::timeout(STORE_DEADLINE, store.refund_budget(c)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the store did not answer in time".to_string(),
        };
        tracing::error!(budget = %c.budget, principal = %c.principal, error = %failed, "budget refund failed; the units stay spent");
    }
}

/// Give back what a call spent: all of it when `reached` is false (the request was never sent
/// upstream), and the budgets with `refund_failed` when the upstream `failed` to answer; to the
/// units this process holds ahead where it still holds them (unless the call was `exact`), else
/// to the store.
pub(crate) async fn settle(
    (store, leases): (&Store, &Leases),
    spent: &[Spent],
    reached: bool,
    failed: bool,
) {
    let back: Vec<Charge> = spent
        .iter()
        .filter(|s| !reached || (failed && s.refund_failed))
        .filter(|s| s.exact || !leases.give_back(&s.charge))
        .map(|s| s.charge.clone())
        .collect();
    refund(store, &back).await;
}

#[cfg(test)]
mod tests;
