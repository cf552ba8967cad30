//! The runtime worker the process holds asleep in reserve (see `audit::Reserve` and
//! `cli::workers`): set once by the commands that serve calls, before their runtime runs
//! anything else; the audit log wakes it when a caller's write hangs, and `/metrics` reports it.

use std::sync::{Arc, OnceLock};

static RESERVE: OnceLock<Arc<audit::Reserve>> = OnceLock::new();

/// Record the process's reserve (the first one set stands).
pub(crate) fn set(reserve: Arc<audit::Reserve>) {
    let _ = RESERVE.set(reserve);
}

/// The process's worker held in reserve, if it serves calls.
pub(crate) fn get() -> Option<Arc<audit::Reserve>> {
    RESERVE.get().cloned()
}
