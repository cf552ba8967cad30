//! The sinks: a file (one `write` and one `fsync` per batch, see [`super::file`]), the store (one
//! transaction on the sink's own connection) and stdout, each written by its own thread
//! ([`SinkWorker`]).

use super::*;

pub(crate) enum Sink {
    File(FileSink),
    Store(store::AuditWriter),
    Stdout,
}

/// One sink's thread: it writes each batch in order, tells the writer whether it took it,
/// answers the batch's callers, then makes it durable (a file sink's `fsync`). Once a flush has
/// failed it answers only after each flush, for good; the chain's last batch (see
/// [`Audit::close`]) is always answered after its flush.
///
/// A sink that fell behind (its queue holds more than one batch) writes what is queued (up to 64
/// batches or about [`MAX_BATCH`] events) with one write or transaction and one `fsync`: catching
/// up costs one flush, not one per batch. Such a group is written or failed as a whole.
pub(crate) struct SinkWorker {
    pub(crate) sink: Sink,
    pub(crate) required: bool,
    pub(crate) index: usize,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    pub(crate) staged: std::sync::mpsc::Sender<(u64, bool)>,
    /// Whether every flush this sink made succeeded: only then are callers answered before it.
    pub(crate) flushing: bool,
}

/// Batches a sink that fell behind writes together; it stops adding at [`MAX_BATCH`] events.
pub(crate) const CATCH_UP: usize = 64;

impl SinkWorker {
    pub(crate) fn run(mut self, rx: std::sync::mpsc::Receiver<Arc<Batch>>) {
        while let Ok(first) = rx.recv() {
            let started = Instant::now();
            let mut lines = first.lines.len();
            let mut batches = vec![first];
            while batches.len() < CATCH_UP && lines < MAX_BATCH {
                match rx.try_recv() {
                    Ok(b) => {
                        lines += b.lines.len();
                        batches.push(b);
                    }
                    Err(_) => break,
                }
            }
            // A panic in a sink (or a crate under it) fails these batches, not the sink for good.
            let staged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.sink.stage(&batches)
            }))
            .unwrap_or_else(|_| Err("the audit sink failed unexpectedly".to_string()));
            for b in &batches {
                let _ = self.staged.send((b.number, staged.is_ok()));
            }
            let count: u64 = batches.iter().map(|b| b.lines.len() as u64).sum();
            let stat = self.stats.get(self.index);
            if let Err(e) = staged {
                if let Some(s) = stat {
                    s.failed.fetch_add(count, Ordering::Relaxed);
                    s.last_ok.store(false, Ordering::Relaxed);
                }
                tracing::error!(error = %e, required = self.required, events = count, "audit sink write failed");
                for b in &batches {
                    b.settle(self.required, false);
                }
                continue;
            }
            // Written: the events survive the process, so while this sink's flushes succeed their
            // callers go on now and the flush follows. After one failed, callers wait for their
            // own flush for as long as the process runs: a later `fsync` that succeeds does not
            // prove the pages of the failed one reached the disk.
            let early = self.flushing;
            let late = |b: &&Arc<Batch>| !early || b.all;
            let late_count: u64 = batches
                .iter()
                .filter(late)
                .map(|b| b.lines.len() as u64)
                .sum();
            // Counted before their callers hear: a caller that goes on sees its event counted.
            if let Some(s) = stat {
                s.written.fetch_add(count - late_count, Ordering::Relaxed);
            }
            batches
                .iter()
                .filter(|b| !late(b))
                .for_each(|b| b.settle(self.required, true));
            let flushed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sink.sync()))
                    .unwrap_or_else(|_| Err("the audit sink failed unexpectedly".to_string()));
            match &flushed {
                Ok(()) => {
                    if let Some(s) = stat {
                        s.written.fetch_add(late_count, Ordering::Relaxed);
                        s.flushes.fetch_add(1, Ordering::Relaxed);
                        s.last_ok.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.flushing = false;
                    if let Some(s) = stat {
                        // Events answered before the flush stay written; those it would answer
                        // now are refused, so failed.
                        s.failed.fetch_add(late_count, Ordering::Relaxed);
                        s.flush_failures.fetch_add(1, Ordering::Relaxed);
                        s.last_ok.store(false, Ordering::Relaxed);
                    }
                    tracing::error!(error = %e, required = self.required, events = count, "audit sink flush failed: from now on this sink answers a call only after its event's flush");
                }
            }
            batches
                .iter()
                .filter(late)
                .for_each(|b| b.settle(self.required, flushed.is_ok()));
            tracing::trace!(
                sink = self.index,
                batches = batches.len(),
                events = count,
                elapsed_us = started.elapsed().as_micros() as u64,
                "audit batches written"
            );
        }
    }
}

impl Sink {
    /// Write the batches' lines, all or none: after this the events survive the process (a file
    /// sink's are in the kernel, the store's are committed).
    pub(crate) fn stage(&mut self, batches: &[Arc<Batch>]) -> Result<(), String> {
        let mut lines = batches.iter().flat_map(|b| b.lines.iter());
        match self {
            Sink::File(f) => {
                f.turn();
                let joined: String = lines.map(|l| l.text.as_str()).collect();
                f.write(joined.as_bytes())
            }
            Sink::Store(store) => {
                let rows: Vec<AuditRow<'_>> = batches
                    .iter()
                    .flat_map(|b| {
                        b.lines.iter().map(|l| AuditRow {
                            chain: &b.chain,
                            seq: l.seq,
                            at_ms: l.at_ms,
                            session: l.session.as_deref(),
                            trace_id: l.trace_id.as_deref(),
                            line: l.text.trim_end(),
                        })
                    })
                    .collect();
                store
                    .append(&rows)
                    .map_err(|e| format!("audit store sink: {e}"))
            }
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                lines
                    .try_for_each(|l| out.write_all(l.text.as_bytes()))
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("audit stdout sink: {e}"))
            }
        }
    }

    /// Make what [`Sink::stage`] wrote durable, where the sink is configured to.
    pub(crate) fn sync(&mut self) -> Result<(), String> {
        match self {
            Sink::File(f) => f.sync(),
            Sink::Store(..) | Sink::Stdout => Ok(()),
        }
    }
}
