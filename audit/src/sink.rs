//! The sinks: a file (one `write` and one `fsync` per batch, see [`super::file`]), the store (one
//! transaction per batch, on SQLite through the store's one writing connection) and stdout, each
//! written by its own thread ([`SinkWorker`]).

use super::*;

pub(crate) enum Sink {
    File(SharedFile),
    Store(store::AuditWriter),
    Stdout,
}

/// A file sink, shared by its thread and the callers that write to it themselves
/// ([`crate::inline`]). Its `fsync` runs on a duplicate of the handle, outside the lock.
pub(crate) struct SharedFile {
    pub(crate) file: Arc<std::sync::Mutex<FileSink>>,
    /// What each flush returns instead of syncing, for tests (see [`super::flush_faults`]).
    #[cfg(test)]
    pub(crate) script: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
}

impl SharedFile {
    pub(crate) fn new(mut file: FileSink) -> SharedFile {
        #[cfg(test)]
        let script = file.script.take();
        #[cfg(not(test))]
        let _ = &mut file;
        SharedFile {
            file: Arc::new(std::sync::Mutex::new(file)),
            #[cfg(test)]
            script,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, FileSink>, String> {
        self.file
            .lock()
            .map_err(|_| "the audit file sink failed unexpectedly".to_string())
    }
}

/// One sink's thread: it writes each batch in order, tells the writer whether it took it,
/// answers the batch's callers, then makes it durable (a file sink's `fsync`). Once a flush has
/// failed it answers only after each flush, for good; the chain's last batch (see
/// [`Audit::close`]) is always answered after its flush.
///
/// A sink that fell behind (its queue holds more than one batch) writes what is queued (up to [`CATCH_UP`]
/// batches or about [`MAX_BATCH`] events) with one write or transaction and one `fsync`: catching
/// up costs one flush, not one per batch. Such a group is written or failed as a whole. Events
/// that callers wrote to a file themselves arrive as [`Work::Flush`] (a flush of events that
/// nobody waits for is put off up to [`LINGER`] for company); those that they passed on to the
/// other sinks as batches nobody waits for. The store holds such batches up to [`STORE_LINGER`]
/// for company (napping meanwhile, see [`crate::queue`]), so one transaction serves several
/// calls' events (at one call at a time, one per event otherwise); a batch from the writer
/// thread (which waits to learn whether the store took it) ends the wait. The store then lags the file by as much; another process sharing the sinks
/// that links its chain to the file's last event waits for the store to hold it (see
/// [`crate::link`]), so its first event comes after the one it links to in both sinks.
pub(crate) struct SinkWorker {
    pub(crate) sink: Sink,
    pub(crate) required: bool,
    pub(crate) index: usize,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    pub(crate) staged: std::sync::mpsc::Sender<(u64, bool)>,
    /// Whether every flush this sink made succeeded: only then are callers answered before it
    /// (for the file callers write themselves, in [`Shared::flushing`]).
    pub(crate) flushing: bool,
    /// For the file callers write themselves: what they share with this thread.
    pub(crate) shared: Option<Arc<Shared>>,
    /// For the store: it naps while it holds events for company ([`crate::queue`]).
    pub(crate) nap: Option<Arc<Nap>>,
}

/// How long after a caller wrote a request event to a file itself its `fsync` may wait for the
/// writes of other calls to share it. The caller does not wait for it (unless a flush has failed,
/// and then it does not write itself); this bounds how much a power loss can take.
pub(crate) const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// How long the store sink holds events nobody waits for (callers wrote them to the file
/// themselves) for more to share their transaction. A commit rewrites whole pages (the table's
/// last leaf, the pages above it, the database's header page when the file grows), whatever it
/// adds, so fewer, larger transactions cost the store's thread less CPU and the disk fewer
/// bytes per call: at one call at a time (about 5,000 events a second on two cores) a transaction
/// takes about 125 events in its 25 ms (as the writer's [`LINGER`]); under more load it fills to
/// [`CATCH_UP`] batches (a caller's event is a batch) sooner. A crash of the process meanwhile
/// leaves these events in the file only, and an export read from the store lags the file by as
/// much.
pub(crate) const STORE_LINGER: Duration = Duration::from_millis(25);

/// Batches a sink that fell behind writes together, whatever the sink (and the most the store's
/// transaction takes while it waits for company); it stops adding at [`MAX_BATCH`] events. The
/// group is written or failed as a whole.
pub(crate) const CATCH_UP: usize = 256;

/// The flush owed to events callers wrote to the file themselves.
///
/// Their count stays in [`Shared::unflushed`] until the flush claims it: while it is above
/// zero, later callers add to it without a message, so one message (and one wake-up of this
/// thread) serves a whole group, not each event. A caller whose count finds zero, or whose
/// request event first sets [`Shared::soon`], sends [`Work::Flush`].
#[derive(Default)]
struct Unflushed {
    /// A request event is among them.
    soon: bool,
    /// When the first of them was written: the flush is put off until [`GROUP_COMMIT`] (a
    /// request event among them) or [`LINGER`] after it.
    since: Option<Instant>,
}

impl Unflushed {
    /// A caller's [`Work::Flush`]: its events, the first written at `at`, are owed a flush.
    fn owed(&mut self, shared: &Shared, at: Instant) {
        self.soon |= shared.soon.load(Ordering::Acquire);
        self.since = Some(self.since.map_or(at, |s| s.min(at)));
    }

    /// When the owed flush is due.
    fn due(&self) -> Option<Instant> {
        let wait = if self.soon { GROUP_COMMIT } else { LINGER };
        self.since.map(|s| s + wait)
    }

    /// Claim every event counted so far for the flush about to start: how many. A caller that
    /// counts after this starts the next group (it finds zero and sends a message).
    fn claim(&mut self, shared: &Shared) -> u64 {
        *self = Unflushed::default();
        // `soon` first: a request event counted after it is either in these events or sets
        // it again for the next group (and sends a message for it).
        shared.soon.swap(false, Ordering::AcqRel);
        shared.unflushed.swap(0, Ordering::AcqRel)
    }
}

/// Ends callers' own writes to the file when its thread ends ([`SinkWorker::run`]).
struct Stopped(Option<Arc<Shared>>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(shared) = &self.0 {
            shared.flushing.store(false, Ordering::Release);
        }
    }
}

impl SinkWorker {
    pub(crate) fn run(mut self, rx: std::sync::mpsc::Receiver<Work>) {
        use std::sync::mpsc::RecvTimeoutError;
        // However this thread ends, callers stop writing the file themselves: nothing would
        // flush what they write (a caller messages it only for a group's first event, so a
        // failed send alone would not tell them soon).
        let _stopped = Stopped(self.shared.clone());
        let mut unflushed = Unflushed::default();
        if let Some(nap) = &self.nap {
            nap.register();
        }
        loop {
            // With events to flush: take what arrives until they are due, then flush them all
            // with one `fsync`.
            let next = match unflushed.due() {
                None => rx.recv().map_err(|_| true),
                Some(due) if Instant::now() >= due => Err(false),
                Some(due) => rx
                    .recv_timeout(due.saturating_duration_since(Instant::now()))
                    .map_err(|e| e == RecvTimeoutError::Disconnected),
            };
            if let (Ok(work), Some(nap)) = (&next, &self.nap) {
                nap.took(work);
            }
            match next {
                Ok(Work::Flush { at }) => {
                    if let Some(shared) = &self.shared {
                        unflushed.owed(shared, at);
                    }
                }
                Ok(Work::Batch(first)) => {
                    self.flush_written(&mut unflushed);
                    self.write(first, &rx, &mut unflushed);
                }
                Err(closed) => {
                    self.flush_written(&mut unflushed);
                    if closed {
                        return;
                    }
                }
            }
        }
    }

    /// Run `work` on the sink, marked under way meanwhile when `held` (callers cannot be
    /// answered until it returns: a write, or a flush once callers wait for their own). A panic
    /// in the sink (or a crate under it) fails this work, not the sink for good.
    fn busy(
        &mut self,
        held: bool,
        work: impl FnOnce(&mut Sink) -> Result<(), String>,
    ) -> Result<(), String> {
        let under = self
            .stats
            .get(self.index)
            .filter(|_| held)
            .map(|s| s.busy.during(Instant::now()));
        let sink = &mut self.sink;
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(sink)))
            .unwrap_or_else(|_| Err("the audit sink failed unexpectedly".to_string()));
        drop(under);
        done
    }

    /// Whether callers are answered before this sink's flush.
    fn early(&self) -> bool {
        match &self.shared {
            Some(shared) => shared.flushing.load(Ordering::Acquire),
            None => self.flushing,
        }
    }

    /// Flush what callers wrote themselves (they were answered already, and counted).
    fn flush_written(&mut self, unflushed: &mut Unflushed) {
        let Some(shared) = self.shared.as_ref().filter(|_| unflushed.since.is_some()) else {
            return;
        };
        // None left: a batch's flush since served them.
        let events = unflushed.claim(shared);
        if events == 0 {
            return;
        }
        let flushed = self.busy(!self.early(), |sink| sink.sync());
        self.flushed(&flushed, events, 0);
    }

    /// Count a flush's outcome: `late` events were waiting for it.
    fn flushed(&mut self, flushed: &Result<(), String>, events: u64, late: u64) {
        let stat = self.stats.get(self.index);
        match flushed {
            Ok(()) => {
                if let Some(s) = stat {
                    s.written.fetch_add(late, Ordering::Relaxed);
                    s.flushes.fetch_add(1, Ordering::Relaxed);
                    s.last_ok.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.flushing = false;
                if let Some(shared) = &self.shared {
                    shared.flushing.store(false, Ordering::Release);
                }
                if let Some(s) = stat {
                    // Events answered before the flush stay written; those it would answer
                    // now are refused, so failed.
                    s.failed.fetch_add(late, Ordering::Relaxed);
                    s.flush_failures.fetch_add(1, Ordering::Relaxed);
                    s.last_ok.store(false, Ordering::Relaxed);
                }
                tracing::error!(error = %e, required = self.required, events, "audit sink flush failed: from now on this sink answers a call only after its event's flush");
            }
        }
    }

    /// Take `first` and what queued behind it (see [`SinkWorker`]), write it and answer.
    fn write(
        &mut self,
        first: Arc<Batch>,
        rx: &std::sync::mpsc::Receiver<Work>,
        unflushed: &mut Unflushed,
    ) {
        let started = Instant::now();
        // A file bounded by size takes no more than its room in one write: the rest waits for
        // the next, after the file has turned, so a backlog does not swell one file.
        let room = match &self.sink {
            Sink::File(f) => f.lock().ok().and_then(|f| f.room()),
            _ => None,
        };
        // Nobody waits for a batch a caller passed on after writing it to the file itself.
        let unwaited = |b: &Batch| !b.report && !b.all;
        // The store (the one sink that naps) waits for company; it naps through the wait.
        let mut linger = match &self.nap {
            Some(nap) if unwaited(&first) => Some((nap, started + STORE_LINGER)),
            _ => None,
        };
        let mut taken = weight(&first);
        let mut lines = first.lines.len();
        let mut batches = vec![first];
        while batches.len() < CATCH_UP && lines < MAX_BATCH && room.is_none_or(|r| taken < r) {
            let wait =
                linger.map(|(nap, until)| (nap, until.saturating_duration_since(Instant::now())));
            let next = match wait {
                Some((nap, wait)) if !wait.is_zero() => nap.wait(rx, wait).map_err(|_| ()),
                _ => {
                    let next = rx.try_recv().map_err(|_| ());
                    if let (Ok(work), Some(nap)) = (&next, &self.nap) {
                        nap.took(work);
                    }
                    next
                }
            };
            match next {
                Ok(Work::Batch(b)) => {
                    if !unwaited(&b) {
                        linger = None;
                    }
                    lines += b.lines.len();
                    taken += weight(&b);
                    batches.push(b);
                }
                // Callers wrote before these batches were queued: the flush below serves them.
                Ok(Work::Flush { at }) => {
                    if let Some(shared) = &self.shared {
                        unflushed.owed(shared, at);
                    }
                }
                Err(_) => break,
            }
        }
        let staged = self.busy(true, |sink| sink.stage(&batches));
        if let Some(shared) = &self.shared {
            shared
                .behind
                .fetch_sub(batches.len() as u64, Ordering::AcqRel);
        }
        for b in batches.iter().filter(|b| b.report) {
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
            return;
        }
        // Written: the events survive the process, so while this sink's flushes succeed their
        // callers go on now and the flush follows. After one failed, callers wait for their
        // own flush for as long as the process runs: a later `fsync` that succeeds does not
        // prove the pages of the failed one reached the disk.
        let early = self.early();
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
        // One flush serves these batches and what callers wrote before it starts.
        if let Some(shared) = &self.shared {
            unflushed.claim(shared);
        }
        let flushed = self.busy(!self.early(), |sink| sink.sync());
        self.flushed(&flushed, count, late_count);
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

impl Sink {
    /// Write the batches' lines, all or none: after this the events survive the process (a file
    /// sink's are in the kernel, the store's are committed).
    pub(crate) fn stage(&mut self, batches: &[Arc<Batch>]) -> Result<(), String> {
        let mut lines = batches.iter().flat_map(|b| b.lines.iter());
        match self {
            Sink::File(f) => {
                let mut f = f.lock()?;
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
            Sink::File(f) => {
                // The lock is let go before the `fsync`: writers never wait for it.
                let handle = f.lock()?.flush_handle()?;
                #[cfg(test)]
                if let Some(script) = &f.script {
                    return script.recv().unwrap_or(Ok(()));
                }
                match handle {
                    Some((handle, path)) => handle
                        .sync_data()
                        .map_err(|e| format!("audit file `{path}`: fsync: {e}")),
                    None => Ok(()),
                }
            }
            Sink::Store(..) | Sink::Stdout => Ok(()),
        }
    }
}
