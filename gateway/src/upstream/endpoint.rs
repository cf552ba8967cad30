//! A server's endpoints and the choice among them: each endpoint has its own connection,
//! listing, circuit breaker and count of calls running; a call goes to the endpoint the
//! server's `balance` picks among those connected, listed and admitted by their breakers; one
//! that never left, or a read whose connection failed (or that got 502, 503 or 504), is tried on
//! each other endpoint at most once while the server's retry budget allows (`route.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rmcp::model::Tool;
use tokio::sync::Notify;

use super::circuit::{Circuit, Ticket};
use super::{Connection, Upstream, UpstreamError};

/// Retry tokens (in thousandths) a server starts with and holds at most: a few retries are
/// always possible, and a long quiet spell does not bank more than this.
const TOKEN: u32 = 1000;
const BUDGET_START: u32 = 3 * TOKEN;
const BUDGET_CAP: u32 = 10 * TOKEN;

/// One endpoint of a server (a stdio or built-in server has one).
pub(crate) struct Endpoint {
    /// Its place in the server's `endpoints`.
    pub(super) index: usize,
    /// Its URL, for an HTTP server.
    pub(super) url: Option<String>,
    pub(super) weight: u32,
    pub(super) conn: RwLock<Option<Connection>>,
    /// Wakes its supervisor to check the connection.
    pub(super) reconnect: Notify,
    /// Set when the upstream forgot a session (it restarted): nothing is sent here until a new
    /// connection has listed its tools again and checked them against their pins.
    pub(super) stale: AtomicBool,
    /// Its last tool listing (untrusted); `None` until one succeeds, and after one fails.
    pub(super) listed: Mutex<Option<Vec<Tool>>>,
    pub(super) circuit: Circuit,
    /// Calls running on it now.
    pub(super) running: AtomicUsize,
    /// Connections re-established after one was lost (for a stdio server: restarts).
    pub(super) restarts: AtomicU64,
    /// Why the last connection attempt or health probe failed, until one succeeds.
    pub(super) last_error: Mutex<Option<String>>,
}

/// A call's hold on an endpoint: counted as running until dropped.
pub(super) struct Chosen<'a> {
    pub(super) endpoint: &'a Endpoint,
    ticket: Option<Ticket<'a>>,
}

impl Chosen<'_> {
    /// Report how the attempt ended to the endpoint's breaker.
    pub(super) fn report(&mut self, outcome: super::circuit::Outcome, server: &str) {
        if let Some(t) = self.ticket.take() {
            t.report(outcome, server);
        }
    }
}

impl Drop for Chosen<'_> {
    fn drop(&mut self) {
        self.endpoint.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    pub(super) fn new(index: usize, url: Option<String>, weight: u32) -> Endpoint {
        Endpoint {
            index,
            url,
            weight: weight.max(1),
            conn: RwLock::new(None),
            reconnect: Notify::new(),
            stale: AtomicBool::new(false),
            listed: Mutex::new(None),
            circuit: Circuit::default(),
            running: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The endpoints of `server`: one per URL, or the one process or built-in server.
    pub(super) fn of(server: &registry::Server) -> Vec<Endpoint> {
        match &server.source {
            registry::ServerSource::Http { endpoints, .. } => endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| Endpoint::new(i, Some(e.url.clone()), e.weight))
                .collect(),
            _ => vec![Endpoint::new(0, None, 1)],
        }
    }

    pub(super) fn connection(&self) -> Option<Connection> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    pub(super) fn set_connection(&self, conn: Option<Connection>) {
        if let Ok(mut slot) = self.conn.write() {
            *slot = conn;
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.conn.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// What it is called in records and metrics: its URL without credentials, or for a stdio
    /// or built-in server, `process`.
    pub(crate) fn label(&self) -> String {
        match &self.url {
            Some(u) => crate::redact::uri_for_record(u),
            None => "process".to_owned(),
        }
    }

    /// True when a call may go here now (before its breaker is asked).
    fn routable(&self, several: bool) -> bool {
        self.is_connected()
            && !self.stale.load(Ordering::Acquire)
            // Of several, only one whose tools were listed and checked.
            && (!several || self.listed.lock().is_ok_and(|l| l.is_some()))
    }

    pub(crate) fn circuit(&self) -> super::Reading {
        self.circuit.reading()
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub(super) fn set_last_error(&self, why: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = why;
        }
    }
}

/// Extra attempts a server's calls may take: each call adds `retry_budget`% of a token, each
/// retry takes a whole one.
#[derive(Debug)]
pub(super) struct RetryBudget {
    /// Thousandths of a retry.
    tokens: Mutex<u32>,
    /// Retries made, and retries the budget refused.
    pub(super) retried: AtomicU64,
    pub(super) refused: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget {
            tokens: Mutex::new(BUDGET_START),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

impl RetryBudget {
    /// A call was made.
    pub(super) fn deposit(&self, percent: u8) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = (*t + u32::from(percent) * TOKEN / 100).min(BUDGET_CAP);
        }
    }

    /// Take a retry, if the budget has one.
    pub(super) fn withdraw(&self, percent: u8) -> bool {
        let taken = percent > 0
            && self.tokens.lock().is_ok_and(|mut t| {
                let ok = *t >= TOKEN;
                if ok {
                    *t -= TOKEN;
                }
                ok
            });
        match taken {
            true => self.retried.fetch_add(1, Ordering::Relaxed),
            false => self.refused.fetch_add(1, Ordering::Relaxed),
        };
        taken
    }
}

/// The order in which endpoints of `(weight, calls running)` are asked, by `balance` on the
/// balancer's `turn`: positions into `loads`.
pub(super) fn ranked(
    loads: &[(u32, usize)],
    balance: registry::Balance,
    turn: usize,
) -> Vec<usize> {
    let n = loads.len();
    let mut order: Vec<usize> = (0..n).collect();
    if n == 0 {
        return order;
    }
    match balance {
        registry::Balance::LeastRequests => {
            // Fewest running for its weight; ties go round in turn.
            order.rotate_left(turn % n);
            order.sort_by_key(|i| {
                loads.get(*i).map_or(u64::MAX, |(w, running)| {
                    (*running as u64 + 1) * 1_000_000 / u64::from((*w).max(1))
                })
            });
        }
        registry::Balance::RoundRobin => {
            // Each endpoint as often as its weight: the turn picks a slot among the weights,
            // and the rest follow in order.
            let total: usize = loads.iter().map(|(w, _)| *w as usize).sum();
            let mut slot = turn % total.max(1);
            let first = loads
                .iter()
                .position(|(w, _)| {
                    let w = *w as usize;
                    if slot < w {
                        return true;
                    }
                    slot -= w;
                    false
                })
                .unwrap_or(0);
            order.rotate_left(first);
        }
    }
    order
}

impl Upstream {
    /// The endpoint a call goes to, none of `tried` (a bit per endpoint): the best by the
    /// server's `balance` among those connected, listed and admitted by their breakers. With
    /// none connected the server is down; with every connected one refused by its breaker, its
    /// circuit is open.
    pub(super) fn pick(
        &self,
        config: &registry::Server,
        tried: u64,
        way: super::route::Way,
    ) -> Result<Chosen<'_>, UpstreamError> {
        use super::route::Way;
        let several = self.endpoints.len() > 1;
        let free = |e: &&Endpoint| {
            tried & (1 << e.index.min(63)) == 0
                && match way {
                    // The session's own connection is opened on demand.
                    Way::Link => !e.stale.load(Ordering::Acquire),
                    Way::Balanced | Way::First => e.routable(several),
                }
        };
        // One endpoint (most servers): no ranking, nothing allocated.
        if let [only] = self.endpoints.as_slice()
            && free(&only)
            && let Ok(ticket) = only.circuit.admit(config.resilience.breaker)
        {
            only.running.fetch_add(1, Ordering::Relaxed);
            return Ok(Chosen {
                endpoint: only,
                ticket: Some(ticket),
            });
        }
        let free: Vec<&Endpoint> = self.endpoints.iter().filter(free).collect();
        if free.is_empty() {
            // Down, and said so; with every circuit open (a crash loop), with when calls resume.
            let open = self.circuit();
            return Err(match (open.phase, open.retry_in) {
                (super::Phase::Open, Some(wait)) if config.resilience.breaker.is_some() => {
                    UpstreamError::Open(self.name.clone(), wait.as_secs().max(1))
                }
                _ => UpstreamError::Down(self.name.clone()),
            });
        }
        let weights = match &config.source {
            registry::ServerSource::Http { endpoints, .. } => Some(endpoints),
            _ => None,
        };
        // The weights in force (a reload may change them in place).
        let loads: Vec<(u32, usize)> = free
            .iter()
            .map(|e| {
                let weight = weights
                    .and_then(|w| w.get(e.index))
                    .map_or(e.weight, |w| w.weight.max(1));
                (weight, e.running.load(Ordering::Relaxed))
            })
            .collect();
        let order = match way {
            Way::Balanced => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                ranked(&loads, config.resilience.balance, turn)
            }
            Way::First | Way::Link => (0..free.len()).collect(),
        };
        let mut wait: Option<Duration> = None;
        for e in order.into_iter().filter_map(|i| free.get(i).copied()) {
            match e.circuit.admit(config.resilience.breaker) {
                Ok(ticket) => {
                    e.running.fetch_add(1, Ordering::Relaxed);
                    return Ok(Chosen {
                        endpoint: e,
                        ticket: Some(ticket),
                    });
                }
                Err(w) => wait = Some(wait.map_or(w, |v| v.min(w))),
            }
        }
        let wait = wait.unwrap_or(Duration::from_secs(1));
        Err(UpstreamError::Open(
            self.name.clone(),
            wait.as_secs().max(1),
        ))
    }

    /// The endpoint a connection belongs to.
    pub(super) fn endpoint_of(&self, conn: &Connection) -> Option<&Endpoint> {
        self.endpoints.get(conn.endpoint)
    }

    /// Every endpoint, in config order.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The server's circuit as one: closed while any endpoint's is, open while every one's is
    /// (with the soonest probe), half-open otherwise.
    pub(crate) fn circuit(&self) -> super::Reading {
        use super::Phase;
        let all: Vec<super::Reading> = self.endpoints.iter().map(Endpoint::circuit).collect();
        let phase = if all.iter().any(|r| r.phase == Phase::Closed) {
            Phase::Closed
        } else if all.iter().all(|r| r.phase == Phase::Open) {
            Phase::Open
        } else {
            Phase::HalfOpen
        };
        super::Reading {
            phase,
            failures: all.iter().map(|r| r.failures).min().unwrap_or(0),
            opened: all.iter().map(|r| r.opened).sum(),
            retry_in: match phase {
                Phase::Open => all.iter().filter_map(|r| r.retry_in).min(),
                _ => None,
            },
        }
    }

    /// Connections re-established after one was lost, on every endpoint.
    pub(crate) fn restarts(&self) -> u64 {
        self.endpoints.iter().map(Endpoint::restarts).sum()
    }

    /// Why connecting failed, on the first endpoint where it did (named, of several).
    pub(crate) fn last_error(&self) -> Option<String> {
        let several = self.endpoints.len() > 1;
        self.endpoints.iter().find_map(|e| {
            let why = e.last_error()?;
            Some(match several {
                true => format!("{}: {why}", e.label()),
                false => why,
            })
        })
    }

    /// Retries made and refused by the budget, so far.
    pub(crate) fn retries(&self) -> (u64, u64) {
        (
            self.budget.retried.load(Ordering::Relaxed),
            self.budget.refused.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests;
