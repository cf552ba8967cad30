//! A server's circuit breaker: after `failures` in a row (timeouts, broken connections, a
//! process that exits soon after it started) calls are refused at once for `cooldown`; then one
//! call goes through as a probe, and its outcome closes the circuit or opens it again.
//!
//! An upstream's own JSON-RPC error, a cancelled call and an answer over its bounds are not
//! failures here: the upstream answered.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// Says nothing of the upstream's health (cancelled, refused before it was sent).
    Neutral,
}

/// What operators see of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Closed,
    Open,
    /// The cooldown is over: the next call is the probe (or is running).
    HalfOpen,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Failures in a row.
    failures: u32,
    /// Set while open: when the probe may go.
    open_until: Option<Instant>,
    /// The probe is running.
    probing: bool,
    /// Times the circuit has opened.
    opened: u64,
}

/// One server's circuit.
#[derive(Debug, Default)]
pub(crate) struct Circuit {
    state: Mutex<State>,
}

/// A call let through; its outcome is reported with [`Ticket::report`], and a ticket dropped
/// unreported (the call's future was dropped) reports [`Outcome::Neutral`].
pub(crate) struct Ticket<'a> {
    circuit: &'a Circuit,
    settings: Option<registry::Breaker>,
    probe: bool,
    reported: bool,
}

/// What a circuit says now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    pub(crate) phase: Phase,
    pub(crate) failures: u32,
    pub(crate) opened: u64,
    /// While open: how long until the probe may go.
    pub(crate) retry_in: Option<Duration>,
}

impl Circuit {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Let a call through, or say how long until one may go. With no breaker configured every
    /// call goes through.
    pub(crate) fn admit(
        &self,
        settings: Option<registry::Breaker>,
    ) -> Result<Ticket<'_>, Duration> {
        let mut probe = false;
        if settings.is_some() {
            let mut s = self.state();
            if let Some(until) = s.open_until {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                if s.probing {
                    // One probe at a time; the others are refused as if still open.
                    return Err(Duration::from_secs(1));
                }
                s.probing = true;
                probe = true;
            }
        }
        Ok(Ticket {
            circuit: self,
            settings,
            probe,
            reported: false,
        })
    }

    /// A failure outside any call (a process that exited soon after it started, a connection
    /// that failed): counted as a call's would be.
    pub(crate) fn failed(&self, settings: Option<registry::Breaker>, server: &str) {
        if let Some(b) = settings {
            self.record(b, Outcome::Failure, false, server);
        }
    }

    fn record(&self, b: registry::Breaker, outcome: Outcome, probe: bool, server: &str) {
        let mut s = self.state();
        match outcome {
            Outcome::Success => {
                let was_open = s.open_until.is_some();
                *s = State {
                    opened: s.opened,
                    ..State::default()
                };
                if was_open {
                    tracing::info!(server, "upstream circuit closed");
                }
            }
            Outcome::Failure => {
                s.failures = s.failures.saturating_add(1);
                if probe {
                    s.probing = false;
                }
                let now = Instant::now();
                let closed = s.open_until.is_none();
                // Past its cooldown with no probe out, a failure outside a call (a crash)
                // opens it again, as a failed probe would.
                let cooled = s.open_until.is_some_and(|until| now >= until) && !s.probing;
                if probe || cooled || (closed && s.failures >= b.failures) {
                    s.open_until = Some(now + b.cooldown);
                    s.opened += 1;
                    tracing::warn!(server, failures = s.failures, cooldown = ?b.cooldown, "upstream circuit opened: calls are refused until the cooldown ends");
                }
            }
            Outcome::Neutral if probe => s.probing = false,
            Outcome::Neutral => {}
        }
    }

    /// Closed again, as if new but for the times it opened (the breaker was turned off).
    pub(crate) fn reset(&self) {
        let mut s = self.state();
        *s = State {
            opened: s.opened,
            ..State::default()
        };
    }

    /// The circuit as operators see it.
    pub(crate) fn reading(&self) -> Reading {
        let s = self.state();
        let now = Instant::now();
        let (phase, retry_in) = match s.open_until {
            None => (Phase::Closed, None),
            Some(until) if now < until => (Phase::Open, Some(until - now)),
            Some(_) => (Phase::HalfOpen, None),
        };
        Reading {
            phase,
            failures: s.failures,
            opened: s.opened,
            retry_in,
        }
    }
}

impl Ticket<'_> {
    /// Report how the call ended.
    pub(crate) fn report(mut self, outcome: Outcome, server: &str) {
        self.reported = true;
        if let Some(b) = self.settings {
            self.circuit.record(b, outcome, self.probe, server);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.circuit.state().probing = false;
        }
    }
}

#[cfg(test)]
mod tests;
