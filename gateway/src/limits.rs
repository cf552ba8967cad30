//! Per-tool rate limits (`tools.<name>.rate`), counted in this process.
//!
//! A sliding log of call times per tool: a call is admitted when fewer than `count` calls were
//! admitted in the last `per`. A lock that cannot be taken refuses the call.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The calls admitted recently, per `(server, tool)`.
#[derive(Default)]
pub(crate) struct Limits {
    log: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

impl Limits {
    /// Admit one call to `server/tool` under `rate` at `now`, or say how long until one would be.
    pub(crate) fn admit(
        &self,
        server: &str,
        tool: &str,
        rate: registry::Rate,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut log) = self.log.lock() else {
            return Err(rate.per);
        };
        let times = log
            .entry((server.to_string(), tool.to_string()))
            .or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= rate.per)
        {
            times.pop_front();
        }
        if times.len() >= rate.count as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(rate
                .per
                .saturating_sub(now.saturating_duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
