//! Units reserved ahead: when a call's reservation goes to the store, it may reserve, in the
//! same conditional statement, units for the next calls of the same principal under the same
//! budget, and this process spends them without asking the store again.
//!
//! Every unit spent was reserved by the store's atomic statement first, so the budget holds
//! across processes: no interleaving spends more than it allows. What a process holds ahead is
//! small: at most [`AHEAD_CALLS`] calls' worth and never more than 1/[`SHARE`] of the budget's
//! units, so a budget of fewer than `SHARE` units per call is reserved call by call, exactly.
//! One call at a time asks for units ahead (the calls beside it reserve their own cost), and
//! one whose units ahead do not fit (the budget's end is near) stops the asking for [`FRESH`]:
//! the calls of that time reserve exactly what they spend.
//!
//! Units held ahead are spent for [`FRESH`] at most: then the next call goes to the store again,
//! so an operator's reset or a config change reaches every process within that time, and units
//! not spent by then go back to the store (`serve.rs` gives them back every [`FRESH`], and all
//! of them at shutdown). A process that dies holding units leaves them spent until the window
//! ends: too few calls, never too many. A call's refund goes back to its lease while that lease
//! is held, else to the store.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use store::Charge;

/// A lease holds at most this many calls' cost ahead.
pub(crate) const AHEAD_CALLS: i64 = 256;
/// ...and at most this fraction of its budget's units.
pub(crate) const SHARE: i64 = 1024;
/// How long units held ahead are spent before the store is asked again.
pub(crate) const FRESH: Duration = Duration::from_secs(1);

/// Units of one budget, principal and window held by this process.
#[derive(Debug)]
struct Lease {
    /// The charge that reserved them: its budget, principal and window, the budget's units then
    /// (a reload that changes them ends the lease) and the window's epoch (an operator's reset
    /// ends it).
    of: Charge,
    /// Units not yet spent.
    left: i64,
    /// When the store last reserved units for it, or found that none fit ahead.
    since: Instant,
    /// The reservation ahead did not fit: nothing is held, and nothing asked for ahead while
    /// the lease is [`FRESH`].
    short: bool,
    /// A call is asking the store for units ahead: the calls beside it reserve their own cost
    /// only, so a burst does not reserve ahead once per call.
    asking: bool,
}

impl Lease {
    /// Whether `c` is of this lease: its units and epoch.
    fn serves(&self, c: &Charge) -> bool {
        !self.short && self.of.units == c.units && self.of.epoch == c.epoch
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.since + FRESH
    }

    /// What it holds, to go back to the store: nothing when it holds nothing.
    fn back(self) -> Option<Charge> {
        (self.left > 0).then_some(Charge {
            cost: self.left,
            ..self.of
        })
    }
}

/// The units this process holds ahead, by budget, principal and window.
#[derive(Debug)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Lease>>,
    /// At most this fraction of a budget's units is held ahead: [`SHARE`].
    share: i64,
}

impl Default for Leases {
    fn default() -> Leases {
        Leases {
            held: Mutex::default(),
            share: SHARE,
        }
    }
}

/// The map's key for `c`: its budget, principal and window, each after its length, so no two
/// triples share a key whatever their text.
fn key(c: &Charge) -> String {
    let parts = [&c.budget, &c.principal, &c.window];
    let mut k = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        k.push_str(&p.len().to_string());
        k.push(':');
        k.push_str(p);
    }
    k
}

impl Leases {
    /// Spend every charge from the units held ahead, or none of them: true when all were (each
    /// charge's epoch then set).
    pub(crate) fn take(&self, charges: &mut [Charge], now: Instant) -> bool {
        let keys: Vec<String> = charges.iter().map(key).collect();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let covers = |c: &Charge, k: &String| {
            held.get(k).is_some_and(|l| {
                !l.short && l.of.units == c.units && l.left >= c.cost && l.fresh(now)
            })
        };
        if !charges.iter().zip(&keys).all(|(c, k)| covers(c, k)) {
            return false;
        }
        for (c, k) in charges.iter_mut().zip(&keys) {
            if let Some(l) = held.get_mut(k) {
                l.left -= c.cost;
                c.epoch = l.of.epoch;
            }
        }
        true
    }

    /// Leases of at most 1/`share` of a budget (tests: budgets small enough to use up).
    #[cfg(test)]
    pub(crate) fn with_share(share: i64) -> Leases {
        Leases {
            share,
            ..Leases::default()
        }
    }

    /// Units to reserve ahead with `c` (0: none), as of `now`.
    pub(crate) fn ahead(&self, c: &Charge, now: Instant) -> i64 {
        if c.cost <= 0 {
            return 0;
        }
        let most = (c.units / self.share.max(1)).min(c.cost.saturating_mul(AHEAD_CALLS));
        let most = most - most % c.cost;
        if most == 0 {
            return 0;
        }
        let k = key(c);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.entry(k) {
            Entry::Occupied(mut o) => {
                let l = o.get_mut();
                let near_end = l.short && l.of.units == c.units && l.fresh(now);
                if near_end || (l.asking && l.fresh(now)) {
                    return 0;
                }
                l.asking = true;
                most
            }
            Entry::Vacant(v) => {
                v.insert(Lease {
                    of: c.clone(),
                    left: 0,
                    since: now,
                    short: false,
                    asking: true,
                });
                most
            }
        }
    }

    /// Hold `ahead` units reserved with `c` (as reserved: its epoch set). What this process
    /// held for the same budget, principal and window in another epoch or under other units
    /// is returned, to go back to the store.
    pub(crate) fn hold(&self, c: &Charge, ahead: i64, now: Instant) -> Option<Charge> {
        self.put(c, ahead, now, false)
    }

    /// Note that units ahead of `c` did not fit: none are asked for while [`FRESH`]. What was
    /// held for it is returned, to go back to the store. (A call that asked for units ahead
    /// and got no answer leaves its lease asking until it is [`FRESH`] no more.)
    pub(crate) fn short(&self, c: &Charge, now: Instant) -> Option<Charge> {
        self.put(c, 0, now, true)
    }

    fn put(&self, c: &Charge, left: i64, now: Instant, short: bool) -> Option<Charge> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(c);
        let mut lease = Lease {
            of: c.clone(),
            left,
            since: now,
            short,
            asking: false,
        };
        let old = held.remove(&k);
        let back = match old {
            Some(old) if !short && old.serves(c) => {
                lease.left += old.left;
                None
            }
            Some(old) => old.back(),
            None => None,
        };
        held.insert(k, lease);
        back
    }

    /// Give `c`'s units back to the lease they came from, if this process still holds it:
    /// false when it does not (they go back to the store then).
    pub(crate) fn give_back(&self, c: &Charge) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get_mut(&key(c)) {
            Some(l) if l.serves(c) => {
                l.left += c.cost;
                true
            }
            _ => false,
        }
    }

    /// Let go of the leases no longer [`FRESH`] as of `now` (of all of them with `None`): what
    /// they still hold, to go back to the store.
    pub(crate) fn release(&self, now: Option<Instant>) -> Vec<Charge> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = held
            .iter()
            .filter(|(_, l)| now.is_none_or(|n| !l.fresh(n)))
            .map(|(k, _)| k.clone())
            .collect();
        gone.iter()
            .filter_map(|k| held.remove(k))
            .filter_map(Lease::back)
            .collect()
    }

    /// Units held now, over every lease.
    pub(crate) fn held(&self) -> i64 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.values().map(|l| l.left).sum()
    }
}

#[cfg(test)]
mod tests;
