//! Limits on calls, all on the `admit` step: each tool's own rate (`tools.<name>.rate`, here),
//! the `limits:` entries' rates and concurrency caps per principal (`principals.rs`, counted in
//! this process) and their budgets (`budgets.rs`, kept in the store, never overspent across
//! processes).
//!
//! Rates are GCRA on `governor`: a burst of the rate's count (or the entry's `burst`), then one
//! call per `per / count`. State that cannot be read refuses the call, never admits it.

pub(crate) mod budgets;
pub(crate) mod principals;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The `limits:` entry a call ran into, and the principal it was counted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    /// Its index in `limits:`.
    pub(crate) entry: usize,
    /// `level:name`.
    pub(crate) principal: String,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limits[{}] for {}", self.entry, self.principal)
    }
}

/// Why a call is not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Over {
    /// The principal used up the entry's rate; the next call fits in `wait`.
    Rate {
        hit: Hit,
        rate: registry::Rate,
        wait: Duration,
    },
    /// The principal already has `cap` calls running under the entry.
    Concurrency { hit: Hit, cap: u32 },
    /// The principal spent the entry's budget for this window, which ends in `wait`.
    Budget {
        hit: Hit,
        budget: registry::Budget,
        wait: Duration,
    },
    /// The limits' state cannot be read or written: refused, never unlimited.
    Unavailable(String),
}

/// A GCRA quota for `rate`: `burst` calls at once (default: the rate's count), then one per
/// `per / count`.
pub(crate) fn quota(rate: registry::Rate, burst: Option<u32>) -> Option<Quota> {
    let period = rate.per.checked_div(rate.count)?;
    let burst = NonZeroU32::new(burst.unwrap_or(rate.count))?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

/// How long until a limiter that said no would say yes.
pub(crate) fn wait(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

type Limiter = (registry::Rate, Arc<DefaultDirectRateLimiter>);

/// Each tool's own rate, per `(server, tool)`, and the `limits:` entries' rates and caps, in
/// this process.
#[derive(Default)]
pub(crate) struct Limits {
    tools: Mutex<HashMap<(String, String), Limiter>>,
    pub(crate) principals: principals::Principals,
    /// Budget units this process reserved ahead of its calls.
    pub(crate) leases: budgets::Leases,
}

impl Limits {
    /// Admit one call to `server/tool` under `rate`, or say how long until one would be.
    /// A rate changed by a reload starts a fresh allowance.
    pub(crate) fn admit(
        &self,
        server: &str,
        tool: &str,
        rate: registry::Rate,
    ) -> Result<(), Duration> {
        let limiter = {
            let Ok(mut tools) = self.tools.lock() else {
                return Err(rate.per);
            };
            let key = (server.to_string(), tool.to_string());
            match tools.get(&key) {
                Some((r, l)) if *r == rate => l.clone(),
                _ => {
                    let Some(q) = quota(rate, None) else {
                        return Err(rate.per);
                    };
                    let l = Arc::new(RateLimiter::direct(q));
                    tools.insert(key, (rate, l.clone()));
                    l
                }
            }
        };
        limiter.check().map_err(|n| wait(&n))
    }
}

#[cfg(test)]
mod tests;
