//! Events written by the caller itself: no thread hop on a call's way.
//!
//! When a required sink is a regular file, a caller links its event to the chain's head and
//! appends it to that file with one `write` (`O_APPEND`), both under the head's lock, which is
//! held for microseconds. Once `write` returns, the event survives the process, so the caller
//! goes on at once, as it would once the sink's thread had written it. The file's `fsync` runs on
//! the sink's thread ([`Work::Flush`]), serving every event written meanwhile; the event goes on
//! to the other sinks as a batch nobody waits for, in chain order.
//!
//! The caller leaves its event to the writer thread (the path every event took before, with the
//! same answers) whenever that path must decide:
//!
//! - the writer thread has a batch out whose fate it does not know (it may take it back);
//! - the file's thread has batches queued (the file must get lines in chain order);
//! - a flush of the file has failed: from then on a caller waits for its own flush, or for
//!   another required sink, as the writer thread arranges;
//! - the file is due to be rotated or reopened (its thread does that);
//! - the write fails: the event is taken back and the other sinks decide.
//!
//! A flush that fails while a caller is writing does not hold up that caller: its event was
//! written before the failure was known, like one answered just before it.
//!
//! A caller never waits for another caller's write: one that finds the head taken leaves its
//! event to the writer thread. A write that takes long (a disk that stalls) stops callers from
//! writing themselves for [`SLOW_PAUSE`]; until it returns, the writer thread cannot link either,
//! and calls are refused at the recording cap rather than held past it, on another worker that
//! [`crate::stall::watch`] wakes: the one held asleep in reserve ([`crate::reserve`]), or one
//! parked away from the runtime's I/O driver.

use std::sync::atomic::AtomicBool;

use super::*;

/// A caller's write that takes longer than this marks the file slow.
const SLOW_WRITE: Duration = Duration::from_millis(50);
/// How long callers leave their events to the writer thread after a slow write.
const SLOW_PAUSE: Duration = Duration::from_secs(10);
/// Attempts to take the head before leaving the event to the writer thread.
const TRIES: usize = 4;

/// The file sink callers write to themselves, and what they pass their events on to.
pub(crate) struct Inline {
    pub(crate) head: Arc<std::sync::Mutex<Head>>,
    pub(crate) file: Arc<std::sync::Mutex<FileSink>>,
    /// The file's index in the sinks.
    pub(crate) index: usize,
    /// What callers share with the file's thread.
    pub(crate) shared: Arc<Shared>,
    /// Every sink's queue, in config order (the file's takes its flushes).
    pub(crate) queues: Vec<Queue>,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    pub(crate) batches: Arc<AtomicU64>,
    /// Callers do not write themselves before this many milliseconds after `born` (a write
    /// was slow).
    pub(crate) slow_until: AtomicU64,
    pub(crate) born: Instant,
    /// The caller's write under way, if one is.
    pub(crate) writing: Arc<crate::stall::Under>,
    /// Tests hold a caller's write this long before it is made, as a stalled disk would.
    #[cfg(test)]
    pub(crate) stall: std::sync::Mutex<Duration>,
}

impl Inline {
    /// Write `event` to the file now; `false` when it is left to the writer thread (see the
    /// module's list). `request`: a call waits on it, so its flush is not put off.
    pub(crate) fn write(&self, event: &Event, request: bool) -> bool {
        let now_ms = || self.born.elapsed().as_millis() as u64;
        if self.slow_until.load(Ordering::Relaxed) > now_ms() {
            return false;
        }
        let Some(mut head) = (0..TRIES).find_map(|n| {
            if n > 0 {
                std::thread::yield_now();
            }
            match self.head.try_lock() {
                Ok(head) => Some(head),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }) else {
            return false;
        };
        if head.busy
            || self.shared.behind.load(Ordering::Acquire) > 0
            || !self.shared.flushing.load(Ordering::Acquire)
        {
            return false;
        }
        let Ok(mut file) = self.file.try_lock() else {
            return false;
        };
        if file.due() {
            return false;
        }
        let (seq, prev) = (head.seq, head.prev.clone());
        let line = head.link(event);
        let started = Instant::now();
        let under = self.writing.during(started);
        #[cfg(test)]
        if let Ok(stall) = self.stall.lock() {
            std::thread::sleep(*stall);
        }
        let written = file.write(line.text.as_bytes());
        drop(under);
        if started.elapsed() > SLOW_WRITE {
            tracing::warn!(
                took_ms = started.elapsed().as_millis() as u64,
                "audit file write was slow; events go through the writer thread for a while"
            );
            self.slow_until
                .store(now_ms() + SLOW_PAUSE.as_millis() as u64, Ordering::Relaxed);
        }
        if let Err(e) = written {
            // Taken back: the writer thread hands the event to every sink and they decide.
            (head.seq, head.prev) = (seq, prev);
            tracing::warn!(error = %e, "audit file write failed; the event goes to every sink");
            return false;
        }
        drop(file);
        if let Some(s) = self.stats.get(self.index) {
            s.written.fetch_add(1, Ordering::Relaxed);
        }
        let required = self
            .queues
            .iter()
            .enumerate()
            .filter(|(i, q)| q.required && *i != self.index)
            .count();
        let others = self.queues.len().saturating_sub(1);
        let batch = Arc::new(Batch {
            number: self.batches.fetch_add(1, Ordering::Relaxed) + 1,
            chain: head.chain.clone(),
            lines: vec![line],
            acks: std::sync::Mutex::new(Vec::new()),
            required_left: AtomicU64::new(required as u64),
            all: false,
            sinks_left: AtomicU64::new(others as u64),
            accepted: AtomicBool::new(true),
            report: false,
        });
        for (index, queue) in self.queues.iter().enumerate() {
            if index == self.index {
                continue;
            }
            // Nobody waits for it there: a napping store takes it when it wakes.
            if queue.try_send(Work::Batch(batch.clone()), false).is_err() {
                if let Some(s) = self.stats.get(index) {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                    s.last_ok.store(false, Ordering::Relaxed);
                }
                tracing::error!(
                    sink = index,
                    required = queue.required,
                    "audit sink skipped an event: it is too far behind"
                );
            }
        }
        self.ask_flush(request);
        true
    }

    /// Tell the file's thread an event needs its flush: once per group of events (and once
    /// more when the first request event joins a group of notes), so its queue never fills
    /// with these. A thread that has stopped ends callers' own writes: nothing would flush them.
    fn ask_flush(&self, request: bool) {
        let first = self.shared.unflushed.fetch_add(1, Ordering::AcqRel) == 0;
        let newly_soon = request && !self.shared.soon.swap(true, Ordering::AcqRel);
        if !(first || newly_soon) {
            return;
        }
        let Some(queue) = self.queues.get(self.index) else {
            return;
        };
        #[cfg(test)]
        self.shared.asked.fetch_add(1, Ordering::Relaxed);
        // Full: what is queued there ends in a flush that takes this event's count too.
        if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
            queue.try_send(Work::Flush { at: Instant::now() }, true)
        {
            self.shared.flushing.store(false, Ordering::Release);
            tracing::error!(
                "the audit file's thread has stopped: its events are no longer flushed"
            );
        }
    }
}
