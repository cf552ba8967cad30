//! A runtime worker held in reserve: asleep inside a task, so the runtime's scheduler never
//! counts it as free, until a caller's audit write hangs.
//!
//! A caller writes its audit event to the file itself, on its worker ([`crate::inline`]). Were the
//! disk to freeze in that write, a runtime whose only worker it is would answer nothing, not even
//! refuse calls at the recording cap. With two workers serving, the second one carries on, but
//! the two wake each other on most calls: tokio hands a worker that was asleep every task woken
//! while the other's next-task slot is taken, and a worker that finds work wakes one more to
//! look. On two cores that costs more CPU per call than the call's own work in the gateway.
//!
//! So the gateway's runtime has one worker more than serve, and [`Reserve::hold`] puts one to
//! sleep in a task that blocks its thread on a condition variable. The scheduler takes a worker
//! running a task for a busy one and never wakes it; the others serve as if it were not there.
//! When a caller's write has lasted [`crate::stall`]'s `HELD`, the audit's watch thread wakes it
//! ([`Reserve::wake`]): the task ends, the worker goes back to the runtime, parks on its I/O
//! driver (the stuck worker is not parked, so the driver is free), and serves and refuses calls
//! at the cap.
//!
//! It is held once, when the runtime starts, before any other task, and never again once woken:
//! a worker that took the hold's task while running would leave behind the tasks it had put off
//! to its next park (a task that yielded, or used up its budget, waits in a list of that worker's
//! own, which no other worker takes from) until the next wake. At the start that list is empty,
//! and tasks in a worker's queue are taken by the others when they look for work, so nothing
//! waits behind the sleeping worker. After a wake every worker serves until the process restarts
//! (`portcullis_runtime_reserve_asleep` reads 0). [`Reserve::end`] lets it go before the
//! runtime shuts down, which waits for every worker.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// One worker held asleep, or none.
#[derive(Debug, Default)]
pub struct Reserve {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// A hold is in force.
    held: bool,
    /// A worker is asleep in the hold now.
    asleep: bool,
    /// Woken or ended: no worker is held again.
    over: bool,
}

impl Reserve {
    pub fn new() -> Arc<Reserve> {
        Arc::default()
    }

    /// Hold one of `runtime`'s workers asleep, once: before any other task is spawned on it (see
    /// the module's notes), on a multi-threaded runtime with a worker more than it needs to
    /// serve. A runtime of another kind, or of one worker, is not held (its only worker would
    /// sleep).
    pub fn hold(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let flavor = runtime.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::MultiThread
            || runtime.metrics().num_workers() < 2
        {
            return;
        }
        {
            let mut state = self.lock();
            if state.over || state.held {
                return;
            }
            state.held = true;
        }
        let reserve = self.clone();
        drop(runtime.spawn(async move { reserve.sleep() }));
    }

    /// Block this thread (a runtime worker, in the hold's task) until the hold is over.
    fn sleep(&self) {
        let mut state = self.lock();
        state.asleep = true;
        while state.held {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.asleep = false;
    }

    /// Give the held worker back to the runtime for good.
    pub fn wake(&self) {
        self.end();
    }

    /// Give the held worker back for good (also before the runtime shuts down).
    pub fn end(&self) {
        let mut state = self.lock();
        state.over = true;
        state.held = false;
        drop(state);
        self.changed.notify_all();
    }

    /// Whether a hold is in force (its worker asleep, or about to be).
    pub fn held(&self) -> bool {
        self.lock().held
    }

    /// Whether a worker is asleep in a hold now.
    pub fn asleep(&self) -> bool {
        self.lock().asleep
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Give the held worker back for good when dropped: declared after the runtime, it is dropped
/// before it, also when unwinding, so the runtime's shutdown does not wait on a sleeping worker.
pub struct EndOnDrop(pub Arc<Reserve>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests;
