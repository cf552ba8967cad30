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

use std::sync::atomic::AtomicBool;

use super::*;

/// The file sink callers write to themselves, and what they pass their events on to.
pub(crate) struct Inline {
    pub(crate) head: Arc<std::sync::Mutex<Head>>,
    pub(crate) file: Arc<std::sync::Mutex<FileSink>>,
    /// The file's index in the sinks.
    pub(crate) index: usize,
    /// Batches queued to the file's thread, not yet written or failed.
    pub(crate) behind: Arc<AtomicU64>,
    /// Whether every flush of the file has succeeded.
    pub(crate) flushing: Arc<AtomicBool>,
    /// Every sink's queue, in config order (the file's takes its flushes).
    pub(crate) queues: Vec<(std::sync::mpsc::SyncSender<Work>, bool)>,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    pub(crate) batches: Arc<AtomicU64>,
}

impl Inline {
    /// Write `event` to the file now; `false` when it is left to the writer thread (see the
    /// module's list). `request`: a call waits on it, so its flush is not put off.
    pub(crate) fn write(&self, event: &Event, request: bool) -> bool {
        let mut head = lock(&self.head);
        if head.busy
            || self.behind.load(Ordering::Acquire) > 0
            || !self.flushing.load(Ordering::Acquire)
        {
            return false;
        }
        let Ok(mut file) = self.file.lock() else {
            return false;
        };
        if file.due() {
            return false;
        }
        let (seq, prev) = (head.seq, head.prev.clone());
        let line = head.link(event);
        if let Err(e) = file.write(line.text.as_bytes()) {
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
            .filter(|(i, (_, r))| *r && *i != self.index)
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
        for (index, (queue, required)) in self.queues.iter().enumerate() {
            let work = match index == self.index {
                true => Work::Flush {
                    events: 1,
                    soon: request,
                },
                false => Work::Batch(batch.clone()),
            };
            // The file's queue full of flushes: one of those still to run covers this write.
            if queue.try_send(work).is_err() && index != self.index {
                if let Some(s) = self.stats.get(index) {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                    s.last_ok.store(false, Ordering::Relaxed);
                }
                tracing::error!(
                    sink = index,
                    required = *required,
                    "audit sink skipped an event: it is too far behind"
                );
            }
        }
        true
    }
}
