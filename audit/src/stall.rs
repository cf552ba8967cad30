//! Writes under way, and how long they have lasted: a write to a frozen disk does not fail, it
//! waits, so a sink that has not failed yet may still take nothing. Readiness asks this
//! ([`crate::Audit::writable`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A write under way longer than this is taken for a stalled one: a sink's writes take
/// microseconds, a busy disk's some milliseconds.
pub(crate) const STALLED: Duration = Duration::from_secs(1);

/// Whether a write is under way, and since when.
#[derive(Debug)]
pub(crate) struct Under {
    born: Instant,
    /// When the write under way began, in microseconds after `born`, plus one; zero when none is.
    since: AtomicU64,
}

impl Under {
    pub(crate) fn new() -> Under {
        Under {
            born: Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    /// A write that began at `at` is under way until the guard is dropped (also when the write
    /// panics).
    pub(crate) fn during(&self, at: Instant) -> During<'_> {
        let began = u64::try_from(at.saturating_duration_since(self.born).as_micros())
            .unwrap_or(u64::MAX - 1);
        self.since.store(began.saturating_add(1), Ordering::Release);
        During(self)
    }

    /// How long the write under way has lasted, if one is.
    pub(crate) fn lasting(&self) -> Option<Duration> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            began => Some(
                self.born
                    .elapsed()
                    .saturating_sub(Duration::from_micros(began - 1)),
            ),
        }
    }

    /// Whether the write under way has lasted past [`STALLED`].
    pub(crate) fn stalled(&self) -> bool {
        self.lasting().is_some_and(|d| d > STALLED)
    }
}

/// A write under way: it ends when this is dropped.
pub(crate) struct During<'a>(&'a Under);

impl Drop for During<'_> {
    fn drop(&mut self) {
        self.0.since.store(0, Ordering::Release);
    }
}

/// How often the watch looks at the callers' write under way.
const WATCH: Duration = Duration::from_millis(100);

/// A caller's write under way longer than this holds its runtime worker in the kernel.
const HELD: Duration = Duration::from_millis(200);

/// Watch the callers' writes to the audit file (`writing`) for as long as the log is open, from a
/// thread of its own. Whenever one has held its runtime worker longer than [`HELD`] (noticed
/// within [`WATCH`] after that), wake the worker held in `reserve` (when the process holds one,
/// see [`crate::reserve`]: it serves from then on) and another worker of `runtime`.
///
/// A worker that is not parked on the runtime's I/O driver does not poll it: while one worker
/// sits in `write` (a frozen disk), another may sit parked on its condition variable, and then
/// nothing polls sockets or fires timers, so no call is answered, not even refused at the
/// recording cap. A task spawned from outside the runtime wakes a parked worker; once it has run
/// it, that worker parks on the driver itself, and calls are served and refused again.
pub(crate) fn watch(
    writing: std::sync::Weak<Under>,
    reserve: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::Reserve>>>,
    runtime: tokio::runtime::Handle,
) {
    loop {
        std::thread::sleep(WATCH);
        let Some(under) = writing.upgrade() else {
            return;
        };
        if under.lasting().is_some_and(|d| d > HELD) {
            if let Some(r) = reserve.get() {
                r.wake();
            }
            drop(runtime.spawn(async {}));
        }
    }
}
