//! Units reserved ahead: when a call's reservation goes to the store, it may reserve, in the
//! same conditional statement, units for the next calls of the same principal under the same
//! budget, and this process spends them without asking the store again.
//!
//! Every unit spent was reserved by the store's atomic statement first, so the budget holds
//! across processes: no interleaving spends more than it allows. What a process holds ahead is
//! small: at most [`AHEAD_CALLS`] times the asking call's cost and never more than 1/[`SHARE`]
//! of the budget's units, so a budget of fewer than `SHARE` units per call is reserved call by call, exactly,
//! as is every charge of a call that a budget marked `exact` covers (`budgets.rs`).
//! One call at a time asks for units ahead (the calls beside it reserve their own cost), and
//! one whose units ahead do not fit (the budget's end is near) stops the asking for [`FRESH`]:
//! the calls of that time reserve exactly what they spend.
//!
//! Units held ahead are spent for [`FRESH`] at most, from an ask answered within [`FRESH`]: then
//! the next call goes to the store again, so an operator's reset or a config change reaches every
//! process within twice that time (one made in this process, at once), and units
//! not spent by then go back to the store (`serve.rs` gives them back every [`FRESH`], and all
//! of them at shutdown). A process that dies holding units leaves them spent until the window
//! ends: too few calls, never too many. A call's refund goes back to its lease while that lease
//! is held (of the same epoch and units, with room for them), else to the store.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;
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
    /// The store reserved them (false: a call is asking, nothing is held yet, and the epoch is
    /// not known).
    reserved: bool,
    /// Units not yet spent.
    left: i64,
    /// When the store last reserved units for it, or found that none fit ahead.
    since: Instant,
    /// The reservation ahead did not fit: nothing is held, and nothing asked for ahead while
    /// the lease is [`FRESH`].
    short: bool,
    /// When a call began asking the store for units ahead, until it is answered: the calls
    /// beside it reserve their own cost only, so a burst does not ask once per call (an ask
    /// never answered holds the others back for [`FRESH`] at most).
    asked: Option<Instant>,
    /// When an operator's reset in this process forgot the lease: an answer to an ask that
    /// began before it is not held.
    forgot: Option<Instant>,
}

impl Lease {
    /// Whether `c`'s units may be held here: the same units and epoch, reserved.
    fn serves(&self, c: &Charge) -> bool {
        self.reserved && !self.short && self.of.units == c.units && self.of.epoch == c.epoch
    }

    fn fresh(&self, now: Instant, fresh: Duration) -> bool {
        now < self.since + fresh
    }

    fn asking(&self, now: Instant, fresh: Duration) -> bool {
        self.asked.is_some_and(|at| now < at + fresh)
    }

    /// What it holds, to go back to the store: nothing when it holds nothing.
    fn back(self) -> Option<Charge> {
        (self.reserved && self.left > 0).then_some(Charge {
            cost: self.left,
            ..self.of
        })
    }
}

/// The units this process holds ahead, by budget, principal and window.
#[derive(Debug)]
pub(crate) struct Leases {
    held: Mutex<Held>,
    /// At most this fraction of a budget's units is held ahead: [`SHARE`].
    share: i64,
    /// How long units held are spent: [`FRESH`].
    fresh: Duration,
    /// Units going back to the store on tasks of their own.
    returns: tokio_util::task::TaskTracker,
}

#[derive(Debug, Default)]
struct Held {
    leases: HashMap<String, Lease>,
    /// Shutting down: nothing more is held.
    closed: bool,
}

impl Default for Leases {
    fn default() -> Leases {
        Leases {
            held: Mutex::default(),
            share: SHARE,
            fresh: FRESH,
            returns: tokio_util::task::TaskTracker::new(),
        }
    }
}

/// The map's key for `c`: its budget, principal and window, each after its length, so no two
/// triples share a key whatever their text.
fn key(c: &Charge) -> String {
    let parts = [&c.budget, &c.principal, &c.window];
    let mut k = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        // Writing to a `String` cannot fail.
        let _ = write!(k, "{}:{p}", p.len());
    }
    k
}

impl Leases {
    /// Leases of at most 1/`share` of a budget, spent for `fresh` (tests: budgets small
    /// enough to use up, leases that go stale at once).
    #[cfg(test)]
    pub(crate) fn with(share: i64, fresh: Duration) -> Leases {
        Leases {
            share,
            fresh,
            ..Leases::default()
        }
    }

    /// Give `charges` back to the store on a task of its own, tracked (see [`Leases::settled`]).
    pub(crate) fn give_back_later(&self, store: &store::Store, charges: Vec<Charge>) {
        if charges.is_empty() {
            return;
        }
        let store = store.clone();
        self.returns
            .spawn(async move { super::refund(&store, &charges).await });
    }

    /// Wait up to `within` for the units going back on tasks of their own to be back.
    pub(crate) async fn settled(&self, within: Duration) {
        self.returns.close();
        let _ = tokio::time::timeout(within, self.returns.wait()).await;
        self.returns.reopen();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Nothing under the lock panics; a poisoned one holds a whole map.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most a lease for `c` holds: at most [`AHEAD_CALLS`] calls' cost and 1/`share` of its
    /// budget's units, a multiple of the cost (0: `c`'s budget is reserved call by call).
    fn most(&self, c: &Charge) -> i64 {
        if c.cost <= 0 {
            return 0;
        }
        let most = (c.units / self.share.max(1)).min(c.cost.saturating_mul(AHEAD_CALLS));
        most - most % c.cost
    }

    /// Spend every charge from the units held ahead, or none of them: true when all were (each
    /// charge's epoch then set).
    pub(crate) fn take(&self, charges: &mut [Charge], now: Instant) -> bool {
        // A budget reserved call by call is never held: no key built, no lock taken.
        if charges.iter().any(|c| self.most(c) == 0) {
            return false;
        }
        let keys: Vec<String> = charges.iter().map(key).collect();
        let mut held = self.lock();
        // What the call would spend from each lease (two charges could name one).
        let need = |k: &String| -> i64 {
            keys.iter()
                .zip(charges.iter())
                .filter(|(o, _)| *o == k)
                .fold(0i64, |n, (_, c)| n.saturating_add(c.cost))
        };
        let covers = |c: &Charge, k: &String| {
            held.leases.get(k).is_some_and(|l| {
                l.reserved
                    && !l.short
                    && l.of.units == c.units
                    && l.fresh(now, self.fresh)
                    && l.left >= need(k)
            })
        };
        if !charges.iter().zip(&keys).all(|(c, k)| covers(c, k)) {
            return false;
        }
        for (c, k) in charges.iter_mut().zip(&keys) {
            if let Some(l) = held.leases.get_mut(k) {
                l.left -= c.cost;
                c.epoch = l.of.epoch;
            }
        }
        true
    }

    /// Units to reserve ahead with `c` (0: none), as of `now`: none while its lease still
    /// covers it, while another call asks, near the budget's end, or at shutdown.
    pub(crate) fn ahead(&self, c: &Charge, now: Instant) -> i64 {
        let most = self.most(c);
        if most == 0 {
            return 0;
        }
        let k = key(c);
        let mut held = self.lock();
        if held.closed {
            return 0;
        }
        match held.leases.entry(k) {
            Entry::Occupied(mut o) => {
                let l = o.get_mut();
                let same = l.of.units == c.units;
                let fresh = l.fresh(now, self.fresh);
                let covered = same && l.reserved && !l.short && fresh && l.left >= c.cost;
                let near_end = same && l.short && fresh;
                if covered || near_end || l.asking(now, self.fresh) {
                    return 0;
                }
                l.asked = Some(now);
                most
            }
            Entry::Vacant(v) => {
                v.insert(Lease {
                    of: c.clone(),
                    reserved: false,
                    left: 0,
                    since: now,
                    short: false,
                    asked: Some(now),
                    forgot: None,
                });
                most
            }
        }
    }

    /// Hold `ahead` units reserved with `c` (as reserved: its epoch set) by an ask that began
    /// at `asked`. What cannot be held is returned, to go back to the store: what the process
    /// held for the same budget, principal and window in an older epoch, under other units or
    /// no longer fresh, what would take the lease past its most, or the units themselves when
    /// the lease is of a newer epoch, an operator's reset here forgot it after the ask began,
    /// the answer took [`FRESH`] or longer (nothing is asked ahead for [`FRESH`] then), or the
    /// process is shutting down.
    pub(crate) fn hold(
        &self,
        c: &Charge,
        ahead: i64,
        (asked, now): (Instant, Instant),
    ) -> Vec<Charge> {
        let most = self.most(c);
        let mut held = self.lock();
        let mine = Charge {
            cost: ahead,
            ..c.clone()
        };
        let k = key(c);
        let newer = held.leases.get(&k).is_some_and(|l| {
            (l.reserved && l.of.epoch > c.epoch) || l.forgot.is_some_and(|at| at >= asked)
        });
        // An answer that took a lease's life to come may predate a reset made since by another
        // process, which this one cannot see: its units are not spent.
        let slow = now >= asked + self.fresh;
        if held.closed || newer || slow {
            if let Some(l) = held.leases.get_mut(&k) {
                // This ask is over: the next call may ask (unless another ask is under way).
                if l.asked == Some(asked) {
                    l.asked = None;
                }
                // A store that slow: nothing is asked ahead for a while (the calls reserve
                // their own cost), as near the budget's end.
                if slow && !l.reserved {
                    l.short = most > 0;
                    l.since = now;
                }
            }
            return vec![mine].into_iter().filter(|m| m.cost > 0).collect();
        }
        let mut back = Vec::new();
        let mut left = ahead;
        match held.leases.remove(&k) {
            // Units still being spent join the new ones; stale ones go back.
            Some(old) if old.serves(c) && old.fresh(now, self.fresh) => {
                left = left.saturating_add(old.left);
            }
            Some(old) => back.extend(old.back()),
            None => {}
        }
        if left > most {
            back.push(Charge {
                cost: left - most,
                ..c.clone()
            });
            left = most;
        }
        let lease = Lease {
            of: c.clone(),
            reserved: true,
            left,
            since: now,
            short: false,
            asked: None,
            forgot: None,
        };
        held.leases.insert(k, lease);
        back
    }

    /// Note that units ahead of `c` did not fit: none are asked for while [`FRESH`]. What was
    /// held for it is returned, to go back to the store.
    pub(crate) fn short(&self, c: &Charge, now: Instant) -> Option<Charge> {
        let most = self.most(c);
        let mut held = self.lock();
        let k = key(c);
        // An operator's reset made here stays marked: answers to asks begun before it are
        // still not held.
        let forgot = held.leases.get(&k).and_then(|l| l.forgot);
        if most == 0 && forgot.is_none() {
            // Reserved call by call: nothing to stop asking for.
            return held.leases.remove(&k).and_then(Lease::back);
        }
        let marker = Lease {
            of: c.clone(),
            reserved: false,
            left: 0,
            since: now,
            short: most > 0,
            asked: None,
            forgot,
        };
        held.leases.insert(k, marker).and_then(Lease::back)
    }

    /// The asks for units ahead of `charges` (those `ahead` of more than 0) ended without an
    /// answer to hold (the store failed, or refused one of the call's charges): the next call
    /// may ask.
    pub(crate) fn unask(&self, charges: &[Charge], ahead: &[i64]) {
        let keys: Vec<String> = charges
            .iter()
            .zip(ahead)
            .filter(|(_, a)| **a > 0)
            .map(|(c, _)| key(c))
            .collect();
        let mut held = self.lock();
        for k in &keys {
            if let Some(l) = held.leases.get_mut(k) {
                l.asked = None;
            }
        }
    }

    /// Give `c`'s units back to the lease of its budget, principal, window and epoch, if this
    /// process holds one with room for them: false when it does not (they go back to the store
    /// then).
    pub(crate) fn give_back(&self, c: &Charge) -> bool {
        let most = self.most(c);
        let mut held = self.lock();
        if held.closed {
            return false;
        }
        match held.leases.get_mut(&key(c)) {
            Some(l) if l.serves(c) && l.left.saturating_add(c.cost) <= most => {
                l.left += c.cost;
                true
            }
            _ => false,
        }
    }

    /// Forget what is held for `budget`, `principal` and `window` (an operator reset it: the
    /// units held are forgiven with the rest), and what asks under way when it was reset bring.
    pub(crate) fn forget(&self, budget: &str, principal: &str, window: &str) {
        let c = Charge {
            budget: budget.into(),
            principal: principal.into(),
            window: window.into(),
            cost: 0,
            units: 0,
            epoch: 0,
        };
        let now = Instant::now();
        let marker = Lease {
            of: c,
            reserved: false,
            left: 0,
            since: now,
            short: false,
            asked: None,
            forgot: Some(now),
        };
        let k = key(&marker.of);
        self.lock().leases.insert(k, marker);
    }

    /// Let go of the leases no longer [`FRESH`] as of `now`, or, with `None`, of all of them
    /// and hold nothing more (shutdown): what they still hold, to go back to the store.
    pub(crate) fn release(&self, now: Option<Instant>) -> Vec<Charge> {
        let fresh = self.fresh;
        let mut held = self.lock();
        if now.is_none() {
            held.closed = true;
        }
        let gone: Vec<String> = held
            .leases
            .iter()
            .filter(|(_, l)| now.is_none_or(|n| !l.fresh(n, fresh) && !l.asking(n, fresh)))
            .map(|(k, _)| k.clone())
            .collect();
        gone.iter()
            .filter_map(|k| held.leases.remove(k))
            .filter_map(Lease::back)
            .collect()
    }

    /// Units held now for `budget` (tests).
    #[cfg(test)]
    pub(crate) fn held_of(&self, budget: &str) -> i64 {
        let held = self.lock();
        held.leases
            .values()
            .filter(|l| l.of.budget == budget)
            .map(|l| l.left)
            .sum()
    }

    /// Units held now, over every lease.
    pub(crate) fn held(&self) -> i64 {
        let held = self.lock();
        held.leases
            .values()
            .fold(0i64, |n, l| n.saturating_add(l.left))
    }
}

#[cfg(test)]
mod tests;
