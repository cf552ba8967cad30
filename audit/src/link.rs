//! Where a new chain starts when the store lags the file.
//!
//! A chain's first event links to the last event of the first sink that has one, often a file.
//! The store sink of the process that wrote that event may not have it yet: it waits up to
//! [`crate::sink::STORE_LINGER`] for company, or is catching up. Were the new chain's first event
//! committed first, the store would hold it before the event it links to, and a strict `verify`
//! of a store export would call that a break. So a chain that links to a recent event of a file
//! waits, for a moment at most, until the store holds that event too. An event the store never
//! gets (its process crashed, the store sink failed, a run with the file alone) only costs the
//! wait; the link is the file's either way, so removing a run from the file still shows.

use std::time::{Duration, Instant};

use store::{Store, now_ms};

/// The longest a new chain waits for the store to hold the event it links to.
const WAIT: Duration = Duration::from_secs(1);

/// An event stamped longer ago than this is not waited for: a live process's store sink writes
/// within milliseconds (another replica's file event is never in this store, for instance).
const RECENT_MS: i64 = 2_000;

/// Rows read per query while looking.
const PAGE: i64 = 1_000;

/// Wait until the store holds the event whose line (from a file) is `line` and hash `hash`, or
/// [`WAIT`] has passed, or the event is not recent. Never fails: a store that cannot be read is
/// not waited for (the store sink reports its own failures).
pub(crate) async fn await_in_store(store: &Store, line: &str, hash: &str) {
    let Some(at_ms) = time_of(line) else {
        return;
    };
    if now_ms().saturating_sub(at_ms) > RECENT_MS {
        return;
    }
    // Stamps are taken before the writer orders events: look a little before this one's.
    let since = at_ms.saturating_sub(RECENT_MS);
    let needle = format!("\"hash\":\"{hash}\"");
    let deadline = Instant::now() + WAIT;
    let mut after = 0;
    loop {
        match store.audit_lines(since, None, None, after, PAGE).await {
            Ok(rows) => {
                if rows.iter().any(|(_, l)| l.contains(&needle)) {
                    return;
                }
                let full = rows.len() as i64 == PAGE;
                if let Some((id, _)) = rows.last() {
                    after = *id;
                }
                if full && Instant::now() < deadline {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the audit store could not be read while starting a chain");
                return;
            }
        }
        if Instant::now() >= deadline {
            tracing::info!(
                "the audit store does not hold the file's last event; the new chain links to it anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The event's time (`time`, RFC 3339) in Unix milliseconds.
fn time_of(line: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    crate::clock::parse_time(v.get("time")?.as_str()?)
}
