//! `limits:` entries enforced per principal: rate limits on `governor` (GCRA, one keyed limiter
//! per entry, keyed by the principal the entry matched) and concurrency caps (a semaphore per
//! entry and principal, whose permit the call holds until it ends).
//!
//! The state follows the config in force: an entry a reload leaves as it was (whatever its
//! place in the list) keeps its counts and running calls; a new or changed entry starts fresh.
//! Idle principals' state is dropped as calls go by, so it stays as large as the principals
//! seen recently. Counts are per process (several replicas each allow the full rate).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultKeyedRateLimiter, RateLimiter};
#[cfg(test)]
use policy::Identity;
use registry::{Limit, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Hit, Over, quota, wait};

/// Admissions between two sweeps of idle principals' state.
const SWEEP_EVERY: u64 = 1024;

/// One entry's state, shared by every config that has the same entry.
struct Entry {
    /// As written, with `index` 0: what identifies the entry across reloads.
    limit: Limit,
    rate: Option<DefaultKeyedRateLimiter<String>>,
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Entry {
    /// Drop principals with nothing running and a full rate allowance.
    fn sweep(&self) {
        if let (Some(cap), Ok(mut running)) = (self.limit.concurrency, self.running.lock()) {
            running.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < cap as usize);
            running.shrink_to_fit();
        }
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }
}

/// The entries of one config, with their place in it and their state.
struct Entries {
    /// The config they serve.
    registry: Arc<Registry>,
    entries: Vec<(usize, Arc<Entry>)>,
}

/// Per-principal limits, for the config in force.
#[derive(Default)]
pub(crate) struct Principals {
    current: RwLock<Option<Arc<Entries>>>,
    admitted: AtomicU64,
}

impl Principals {
    /// [`Principals::admit_as`] for `identity`'s principals.
    #[cfg(test)]
    pub(crate) fn admit(
        &self,
        reg: &Arc<Registry>,
        identity: &Identity,
        server: &str,
        tool: &str,
    ) -> Result<Vec<OwnedSemaphorePermit>, Over> {
        self.admit_as(reg, &identity.principals(), server, tool)
    }

    /// Admit a call by a caller resolved to `principals` (`level:name`) to `tool` on `server`
    /// under every matching entry of `reg`: the permits of its concurrency caps (held until the
    /// call ends), or why it is refused. Caps are taken before rates are counted, so a call
    /// refused by a cap spends no allowance.
    pub(crate) fn admit_as(
        &self,
        reg: &Arc<Registry>,
        principals: &[String],
        server: &str,
        tool: &str,
    ) -> Result<Vec<OwnedSemaphorePermit>, Over> {
        if reg.limits.is_empty() {
            return Ok(Vec::new());
        }
        let entries = self.entries(reg)?;
        if self.admitted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.entries.iter().for_each(|(_, e)| e.sweep());
        }
        let applying: Vec<(usize, &Entry, Vec<String>)> = entries
            .entries
            .iter()
            .filter(|(_, e)| e.limit.covers(server, tool))
            .map(|(i, e)| (*i, e.as_ref(), matched(&e.limit, principals)))
            .filter(|(_, _, keys)| !keys.is_empty())
            .collect();
        let mut permits = Vec::new();
        for (index, e, keys) in &applying {
            let Some(cap) = e.limit.concurrency else {
                continue;
            };
            for key in keys {
                let slot = {
                    let mut running = e.running.lock().map_err(|_| unavailable())?;
                    let slot = running.entry(key.clone());
                    slot.or_insert_with(|| Arc::new(Semaphore::new(cap as usize)))
                        .clone()
                };
                match slot.try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => {
                        return Err(Over::Concurrency {
                            hit: Hit {
                                entry: *index,
                                principal: key.clone(),
                            },
                            cap,
                        });
                    }
                }
            }
        }
        for (index, e, keys) in &applying {
            let (limiter, rate) = match (&e.rate, e.limit.rate) {
                (Some(limiter), Some(rate)) => (limiter, rate),
                (_, None) => continue,
                // A rate the limiter could not take (load refuses those) refuses, never admits.
                (None, Some(rate)) => {
                    return Err(Over::Unavailable(format!(
                        "limits[{index}]: no limiter for {rate}"
                    )));
                }
            };
            for key in keys {
                if let Err(not_until) = limiter.check_key(key) {
                    return Err(Over::Rate {
                        hit: Hit {
                            entry: *index,
                            principal: key.clone(),
                        },
                        rate,
                        wait: wait(&not_until),
                    });
                }
            }
        }
        Ok(permits)
    }

    /// Calls running now under each entry's cap, by entry index and principal.
    pub(crate) fn running(&self, reg: &Arc<Registry>) -> HashMap<usize, Vec<(String, usize)>> {
        let Ok(entries) = self.entries(reg) else {
            return HashMap::new();
        };
        let mut out: HashMap<usize, Vec<(String, usize)>> = HashMap::new();
        for (index, e) in entries.entries.iter() {
            let (Some(cap), Ok(running)) = (e.limit.concurrency, e.running.lock()) else {
                continue;
            };
            let mut busy: Vec<(String, usize)> = running
                .iter()
                .map(|(p, s)| {
                    (
                        p.clone(),
                        (cap as usize).saturating_sub(s.available_permits()),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            busy.sort();
            out.insert(*index, busy);
        }
        out
    }

    /// The state for `reg`, built when the config in force is new.
    fn entries(&self, reg: &Arc<Registry>) -> Result<Arc<Entries>, Over> {
        if let Some(e) = self.current.read().map_err(|_| unavailable())?.as_ref()
            && Arc::ptr_eq(&e.registry, reg)
        {
            return Ok(e.clone());
        }
        let mut slot = self.current.write().map_err(|_| unavailable())?;
        if let Some(e) = slot.as_ref()
            && Arc::ptr_eq(&e.registry, reg)
        {
            return Ok(e.clone());
        }
        // Entries a reload left as they were keep their state, wherever they now are.
        let kept: Vec<Arc<Entry>> = slot
            .as_ref()
            .map(|e| e.entries.iter().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default();
        let entries = reg
            .limits
            .iter()
            .map(|l| {
                let content = Limit {
                    index: 0,
                    ..l.clone()
                };
                let state = kept
                    .iter()
                    .find(|e| e.limit == content)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(entry(&content)));
                (l.index, state)
            })
            .collect();
        let built = Arc::new(Entries {
            registry: reg.clone(),
            entries,
        });
        *slot = Some(built.clone());
        Ok(built)
    }
}

fn unavailable() -> Over {
    Over::Unavailable("the per-principal limits' state is poisoned".into())
}

fn entry(limit: &Limit) -> Entry {
    let rate = limit
        .rate
        .and_then(|r| quota(r, limit.burst))
        .map(RateLimiter::keyed);
    Entry {
        limit: limit.clone(),
        rate,
        running: Mutex::new(HashMap::new()),
    }
}

/// The principals of `principals` (`level:name`) an entry applies to, each counted on its own.
pub(crate) fn matched(limit: &Limit, principals: &[String]) -> Vec<String> {
    let level = limit.principal.level.as_str();
    principals
        .iter()
        .filter(|p| {
            p.split_once(':').is_some_and(|(l, name)| {
                l == level && limit.principal.name.as_deref().is_none_or(|n| n == name)
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
