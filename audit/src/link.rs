//! When a new chain starts while the store lags the file.
//!
//! A chain's first event links to the last event of the first sink that has one, often a file.
//! The store sink of the process that wrote that event may not have it yet: it waits up to
//! [`crate::sink::STORE_LINGER`] for company, or is catching up. Were the new chain's first event
//! committed first, the store would hold it before the event it links to, and a strict `verify`
//! of a store export would call that a break. So a chain that links to a recent event of a file
//! waits, for a moment at most, until the store holds that event too.
//!
//! The link is the file's either way, so removing a run from the file still shows. An event the
//! store never gets (its process crashed within the store's wait, the store sink failed, a run
//! with the file alone) costs the wait, and the store's export then holds a chain that links to
//! an event it lacks: a strict `verify` of that export reports it, and the hash it names is the
//! file's event.

use std::time::Duration;

use store::{Store, now_ms};
use tokio::time::Instant;

/// The longest a new chain waits for the store to hold the event it links to.
const WAIT: Duration = Duration::from_secs(1);

/// An event stamped longer ago than this is not waited for: a live process's store sink writes
/// it within milliseconds (a file from elsewhere, or a store that lost it, is not waited for).
const RECENT_MS: i64 = 2_000;

/// Wait until the store holds the event whose line (from a file) is `line` and hash `hash`, or
/// [`WAIT`] has passed, or the event is not recent. Never fails: a store that cannot be read is
/// not waited for (the store sink reports its own failures).
pub(crate) async fn await_in_store(store: &Store, line: &str, hash: &str) {
    let Some((chain, seq, at_ms)) = key_of(line) else {
        return;
    };
    if now_ms().saturating_sub(at_ms) > RECENT_MS {
        return;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        // One lookup by the chain's key, bounded by what is left of the wait.
        match tokio::time::timeout_at(deadline, store.audit_event_line(&chain, seq)).await {
            Ok(Ok(Some(stored))) if crate::hash_of_line(&stored).as_deref() == Some(hash) => {
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the audit store could not be read while starting a chain");
                return;
            }
            Err(_) => {}
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

/// The event's chain, sequence number and time (`time`, RFC 3339, in Unix milliseconds).
fn key_of(line: &str) -> Option<(String, i64, i64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let chain = v.get("chain")?.as_str()?.to_string();
    let seq = v.get("seq")?.as_i64()?;
    let at_ms = crate::clock::parse_time(v.get("time")?.as_str()?)?;
    Some((chain, seq, at_ms))
}
